#!/usr/bin/python3
"""Refuses a rootfs tarball any of whose members could land outside the directory it is
unpacked into: absolute names, `..` components, members beneath a symlink of the archive,
hard links out, and relative symlinks that climb above the root.

Absolute symlinks stay allowed (etc/localtime -> /usr/share/zoneinfo/... is normal in a root
file system and resolves inside the image at run time); nothing is ever extracted through one.
Usage: check-rootfs-tar.py FILE.tar[.gz|.xz|.zst]   (exit 1 and one line per problem)
"""
import posixpath
import subprocess
import sys
import tarfile


def open_tar(path):
    if path.endswith((".zst", ".zstd")):
        # tarfile has no zstd; let zstd decompress into a pipe.
        proc = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE)
        return tarfile.open(fileobj=proc.stdout, mode="r|")
    return tarfile.open(path, mode="r|*")


def escapes(path):
    return path == ".." or path.startswith("../")


def main(path):
    problems = []
    symlinks = set()
    with open_tar(path) as tar:
        for m in tar:
            name = m.name
            rel = name[2:] if name.startswith("./") else name
            norm = posixpath.normpath(rel) if rel else "."
            if name.startswith("/"):
                problems.append(f"{name}: absolute member name")
            if ".." in name.split("/"):
                problems.append(f"{name}: `..` in the member name")
            parts = norm.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in symlinks:
                    problems.append(f"{name}: would be written through the symlink {'/'.join(parts[:i])}")
                    break
            if m.issym():
                symlinks.add(norm)
                if not m.linkname.startswith("/"):
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(norm), m.linkname))
                    if escapes(target):
                        problems.append(f"{name} -> {m.linkname}: symlink points outside the rootfs")
            if m.islnk():
                target = posixpath.normpath(m.linkname)
                if m.linkname.startswith("/") or escapes(target):
                    problems.append(f"{name} => {m.linkname}: hard link points outside the rootfs")
    for p in problems:
        print(f"{path}: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
