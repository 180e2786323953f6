//! `loisto-image squashfs` against squashfs-tools' own reader: what unsquashfs extracts must be
//! the tree we packed, and a rebuild from the block cache must equal a build without it.

mod common;

use common::{BIN, Run, host};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `loisto-image squashfs ARGS` with the timestamps a build would give it.
fn squashfs_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("squashfs")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("NO_COLOR", "1");
    c
}

fn squashfs(args: &[&str]) -> Run {
    Run(squashfs_cmd(args).output().unwrap())
}

/// Extracts `img` into `out` with unsquashfs; returns `out`.
fn unsquash(img: &Path, out: &Path) -> PathBuf {
    host("unsquashfs", &[&"-q", &"-n", &"-d", &out, &img]);
    out.to_path_buf()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Bytes that do not repeat, so blocks are distinct and compress a little.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|i| {
            if i % 3 == 0 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
            (x >> 56) as u8 & 0x3f
        })
        .collect()
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), mode, dev) },
        0,
        "mknod {}",
        path.display()
    );
}

/// Every kind of entry squashfs has, with the awkward sizes and names.
fn awkward_tree(root: &Path) {
    let f = |rel: &str, bytes: Vec<u8>| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    for (i, size) in [0, 1, 4095, 131072, 131073, 3 * 131072 + 7].iter().enumerate() {
        f(&format!("sizes/{size}"), data(i as u64, *size));
    }
    f("sizes/copy-of-131073", data(4, 131073));
    f("links/a", data(9, 5000));
    std::fs::create_dir_all(root.join("links/deeper")).unwrap();
    std::fs::hard_link(root.join("links/a"), root.join("links/deeper/b")).unwrap();
    std::fs::hard_link(root.join("links/a"), root.join("links/c")).unwrap();
    std::os::unix::fs::symlink("../sizes/1", root.join("links/sym")).unwrap();
    std::os::unix::fs::symlink("x".repeat(4000), root.join("links/long-target")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    mknod(
        &root.join("dev/big"),
        libc::S_IFBLK | 0o600,
        libc::makedev(259, 70000),
    );
    mknod(&root.join("dev/fifo"), libc::S_IFIFO | 0o644, 0);
    let _socket = std::os::unix::net::UnixListener::bind(root.join("dev/socket")).unwrap();
    // 3000 entries with long names: a listing over 64 KiB (extended directory inode) and
    // more than 256 entries per header.
    for i in 0..3000 {
        f(
            &format!("many/{i:04}-{}", "n".repeat(40)),
            format!("{i}").into_bytes(),
        );
    }
    f("modes/setuid", b"#!/bin/sh\n".to_vec());
    std::fs::set_permissions(root.join("modes/setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir_all(root.join("modes/sticky")).unwrap();
    std::fs::set_permissions(root.join("modes/sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    f("modes/owned", b"x".to_vec());
    std::os::unix::fs::lchown(root.join("modes/owned"), Some(1000), Some(1001)).unwrap();
    std::fs::create_dir_all(root.join("empty/dir")).unwrap();
    f("left/out", b"excluded".to_vec());
    f("left/in", b"kept".to_vec());
    // Extended attributes on each kind of inode, one set shared by two files, and a file
    // capability (cap_net_raw, as ping has) in the v2 format the kernel checks.
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    setxattr(&root.join("modes/setuid"), "security.capability", &cap);
    setxattr(&root.join("sizes/4095"), "user.origin", b"test");
    setxattr(&root.join("sizes/4095"), "trusted.level", b"2");
    setxattr(&root.join("sizes/1"), "user.origin", b"test");
    setxattr(&root.join("sizes/1"), "trusted.level", b"2");
    setxattr(&root.join("modes/sticky"), "trusted.dir", &[0, 1, 2]);
    setxattr(&root.join("links/sym"), "trusted.link", b"");
    setxattr(&root.join("dev/null"), "trusted.dev", b"x");
}

fn cstr(s: &[u8]) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (cstr(path.as_os_str().as_encoded_bytes()), cstr(name.as_bytes()));
    // SAFETY: NUL-terminated path and name; `value` is valid for its length.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(
        rc,
        0,
        "setting {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let p = cstr(path.as_os_str().as_encoded_bytes());
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffers are valid for the lengths passed.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "{}", path.display());
    names.truncate(n as usize);
    let mut out: Vec<(String, Vec<u8>)> = names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let mut value = vec![0u8; 4096];
            let c = cstr(name);
            // SAFETY: as above.
            let len =
                unsafe { libc::lgetxattr(p.as_ptr(), c.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
            assert!(len >= 0);
            value.truncate(len as usize);
            (String::from_utf8_lossy(name).into_owned(), value)
        })
        .collect();
    out.sort();
    out
}

#[derive(Debug, PartialEq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    nlink: Option<u64>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn scan(root: &Path) -> HashMap<PathBuf, Seen> {
    let mut out = HashMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let ft = m.file_type();
        out.insert(
            e.path().strip_prefix(root).unwrap().to_path_buf(),
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                rdev: m.rdev(),
                content: ft.is_file().then(|| std::fs::read(e.path()).unwrap()),
                link: ft.is_symlink().then(|| std::fs::read_link(e.path()).unwrap()),
                nlink: ft.is_file().then(|| m.nlink()),
                xattrs: xattrs(e.path()),
            },
        );
    }
    out
}

/// Every entry of `want` is in `got` with the same type, contents, metadata and xattrs, and
/// nothing else is.
fn assert_same_tree(want: &Path, got: &Path) {
    let (want, got) = (scan(want), scan(got));
    let mut paths: Vec<&PathBuf> = want.keys().chain(got.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        assert_eq!(want.get(p), got.get(p), "{}", p.display());
    }
}

#[test]
fn unsquashfs_extracts_exactly_the_tree_that_was_packed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    awkward_tree(&src);
    let img = tmp.path().join("out.sqfs");
    let run = squashfs(&[
        s(&src),
        s(&img),
        "--level",
        "3",
        "--exclude",
        "/left/out",
        "--exclude",
        "no/such",
    ]);
    run.ok().stderr_has("--exclude no/such matched nothing");
    run.stdout_has("(1 duplicates stored once)");
    assert_eq!(
        std::fs::metadata(&img).unwrap().len() % 4096,
        0,
        "padded to 4 KiB"
    );

    let back = tmp.path().join("back");
    host("unsquashfs", &[&"-d", &back, &img]);
    std::fs::remove_file(src.join("left/out")).unwrap();
    assert_same_tree(&src, &back);
    let ino = |rel: &str| back.join(rel).metadata().unwrap().ino();
    assert_eq!(ino("links/a"), ino("links/deeper/b"), "hard links stay one inode");
    assert_eq!(ino("links/a"), ino("links/c"));

    // Every timestamp is SOURCE_DATE_EPOCH (2023-11-14 22:13:20 UTC).
    let listing = host("unsquashfs", &[&"-lln", &"-UTC", &img]).stdout();
    let entries: Vec<&str> = listing.lines().filter(|l| l.contains("squashfs-root")).collect();
    assert!(entries.len() > 3000);
    assert!(
        entries.iter().all(|l| l.contains("2023-11-14 22:13")),
        "{listing}"
    );
    assert!(listing.contains(" 1000/1001 "), "{listing}");

    // --all-root: the same tree, every entry owned by 0/0.
    squashfs(&[s(&src), s(&img), "--all-root"]).ok();
    let listing = host("unsquashfs", &[&"-lln", &img]).stdout();
    let entries: Vec<&str> = listing.lines().filter(|l| l.contains("squashfs-root")).collect();
    assert!(
        entries.len() > 3000 && entries.iter().all(|l| l.contains(" 0/0 ")),
        "{listing}"
    );
}

#[test]
fn an_lz4hc_image_is_lz4_with_the_hc_option_to_unsquashfs_and_holds_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let [src, img, back] = ["src", "lz4.sqfs", "back"].map(|name| tmp.path().join(name));
    awkward_tree(&src);
    squashfs(&[s(&src), s(&img), "--compression", "lz4hc"])
        .ok()
        .stdout_has("with lz4hc");
    let about = host("unsquashfs", &[&"-s", &img]).stdout();
    assert!(
        about.contains("Compression lz4\n\tHigh Compression option"),
        "{about}"
    );
    host("unsquashfs", &[&"-d", &back, &img]);
    assert_same_tree(&src, &back);
}

#[test]
fn a_rebuild_compresses_only_changed_blocks_and_equals_a_build_without_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..600 {
        let size = if i % 100 == 0 { 300_000 } else { 700 + i * 13 };
        let p = src.join(format!("d{}/f{i:03}", i % 7));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data(i as u64, size)).unwrap();
    }
    let cache = tmp.path().join("cache");
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let first = squashfs(&[s(&src), s(&a), "--block-cache", s(&cache)]);
    first.ok().stdout_has("block cache: 0 blocks reused");

    // One file grows a lot, one appears: only their fragment runs are compressed again (one
    // stream of tails would move every fragment after the grown file).
    std::fs::write(src.join("d0/f007"), data(1000, 60_000)).unwrap();
    std::fs::write(src.join("d1/new"), b"new file").unwrap();
    let again = squashfs(&[s(&src), s(&b), "--block-cache", s(&cache)]);
    again.ok();
    let out = again.stdout();
    let line = out.lines().find(|l| l.starts_with("block cache:")).unwrap();
    let numbers: Vec<usize> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    let (reused, compressed) = (numbers[0], numbers[1]);
    assert!(reused >= 20 && compressed <= 4, "{line}");

    squashfs(&[s(&src), s(&c)]).ok();
    assert!(
        std::fs::read(&b).unwrap() == std::fs::read(&c).unwrap(),
        "cached build differs from a clean one"
    );

    // A damaged pack: caught by the checksums, compressed again, same image.
    let pack = cache.join("pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    for at in (0..bytes.len()).step_by(20_000) {
        bytes[at] ^= 0x55;
    }
    std::fs::write(&pack, bytes).unwrap();
    let d = tmp.path().join("d");
    let healed = squashfs(&[s(&src), s(&d), "--block-cache", s(&cache)]);
    healed.ok().stdout_has("cached blocks failed their checksum");
    assert!(std::fs::read(&d).unwrap() == std::fs::read(&c).unwrap());

    // In a `build --no-cache` the runner says LOISTO_CACHE=off: the block cache is left alone.
    let untouched = tmp.path().join("untouched");
    let e = tmp.path().join("e");
    let run = Run(squashfs_cmd(&[s(&src), s(&e), "--block-cache", s(&untouched)])
        .env("LOISTO_CACHE", "off")
        .output()
        .unwrap());
    run.ok().stdout_has("block cache: not used (LOISTO_CACHE=off");
    assert!(!untouched.exists());
    assert!(std::fs::read(&e).unwrap() == std::fs::read(&c).unwrap());
}

#[test]
fn bad_input_is_refused_and_leaves_no_image() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.sqfs");
    squashfs(&["/nonexistent/tree", s(&img)]).fails_with(2, "/nonexistent/tree is not a directory");
    squashfs(&[s(tmp.path()), s(&img), "--block-size", "1000"]).fails_with(2, "power of two");

    assert_eq!(common::names_in(tmp.path()), Vec::<String>::new(), "left behind");
}

#[test]
fn ctrl_c_stops_between_blocks_and_leaves_no_image_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..40 {
        std::fs::write(src.join(format!("f{i}")), data(i, 1 << 20)).unwrap();
    }
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut child = squashfs_cmd(&[s(&src), s(&out.join("x.sqfs")), "--level", "19"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the "compressing" line, so the signal lands in the slow part.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("compressing 320"), "{line}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "something was left in {}",
        out.display()
    );
}

#[test]
fn hard_links_of_every_kind_stay_one_inode() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    mknod(&src.join("fifo"), libc::S_IFIFO | 0o644, 0);
    mknod(&src.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    std::os::unix::fs::symlink("target", src.join("sym")).unwrap();
    for name in ["fifo", "null", "sym"] {
        std::fs::hard_link(src.join(name), src.join(format!("{name}2"))).unwrap();
    }
    let img = tmp.path().join("x.sqfs");
    squashfs(&[s(&src), s(&img)]).ok();
    // Extracted by squashfs-tools: the names that share an inode come out as hard links.
    let out = unsquash(&img, &tmp.path().join("out"));
    for name in ["fifo", "null", "sym"] {
        let a = std::fs::symlink_metadata(out.join(name)).unwrap();
        let b = std::fs::symlink_metadata(out.join(format!("{name}2"))).unwrap();
        assert_eq!(a.ino(), b.ino(), "{name}: two inodes");
        assert_eq!(a.nlink(), 2, "{name}: link count");
    }
}

#[test]
fn more_ids_than_squashfs_holds_are_refused_before_compressing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 32768 files with distinct uid and gid: 65536 ids, one more than the u16 count can hold.
    for i in 0..32768u32 {
        let f = src.join(format!("{i}"));
        std::fs::write(&f, b"").unwrap();
        std::os::unix::fs::lchown(&f, Some(100_000 + i), Some(200_000 + i)).unwrap();
    }
    let img = tmp.path().join("x.sqfs");
    let r = squashfs(&[s(&src), s(&img)]);
    r.fails_with(2, "65535");
    assert!(!r.stdout().contains("compressing"), "{}", r.stdout());
    assert!(!img.exists());
}

#[test]
fn acls_and_a_directory_in_the_way_are_refused_before_compressing_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), data(1, 300_000)).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // The output path is an existing directory.
    let in_the_way = out.join("x.sqfs");
    std::fs::create_dir(&in_the_way).unwrap();
    let r = squashfs(&[s(&src), s(&in_the_way)]);
    r.fails_with(2, "is a directory");
    assert!(!r.stdout().contains("compressing"), "{}", r.stdout());
    assert_eq!(
        common::names_in(&out),
        ["x.sqfs"],
        "something was left in {}",
        out.display()
    );

    // A POSIX ACL (system.* xattrs have no place in squashfs).
    host("setfacl", &[&"-m", &"u:1234:r", &src.join("f")]);
    let r = squashfs(&[s(&src), s(&out.join("y.sqfs"))]);
    r.fails_with(2, "system.posix_acl_access");
    assert!(!r.stdout().contains("compressing"), "{}", r.stdout());
    assert!(!out.join("y.sqfs").exists());
}

#[test]
fn a_path_longer_than_path_max_is_named_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Made with *at() calls relative to an open directory, the only way below PATH_MAX.
    let script = "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nfor i in range(25):\n    os.mkdir('d'*200,dir_fd=fd); fd=os.open('d'*200,os.O_RDONLY,dir_fd=fd)\nos.close(os.open('leaf',os.O_CREAT|os.O_WRONLY,dir_fd=fd))";
    host("python3", &[&"-c", &script, &src]);
    let img = tmp.path().join("x.sqfs");
    let r = squashfs(&[s(&src), s(&img)]);
    r.fails_with(2, "more than the 4096 the system calls take");
    assert!(
        r.stderr().len() < 600,
        "the whole path was printed: {} bytes",
        r.stderr().len()
    );
    assert!(!img.exists());
    // tempdir's cleanup cannot remove what is that deep either.
    let _ = Command::new("rm").arg("-rf").arg(&src).status();
}

#[test]
fn zero_blocks_are_stored_as_holes_and_read_back_as_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 64 MiB: holes, one written block of zeros, and real data in between.
    let f = std::fs::File::create(src.join("disk")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&data(7, 300_000), 10 << 20).unwrap();
    f.write_all_at(&vec![0u8; 1 << 20], 20 << 20).unwrap();
    drop(f);
    let img = tmp.path().join("x.sqfs");
    let r = squashfs(&[s(&src), s(&img), "--level", "3"]);
    r.ok().stdout_has("509 all-zero blocks stored as holes");
    assert!(std::fs::metadata(&img).unwrap().len() < 400_000);
    // unsquashfs reads zeros back, and makes holes again (the inode says it is sparse).
    let out = unsquash(&img, &tmp.path().join("out"));
    assert!(std::fs::read(out.join("disk")).unwrap() == std::fs::read(src.join("disk")).unwrap());
    let allocated = std::fs::metadata(out.join("disk")).unwrap().blocks() * 512;
    assert!(allocated < 4 << 20, "{allocated} bytes allocated: no holes");
}

#[test]
fn memory_stays_bounded_by_the_blocks_in_flight_not_the_file_size() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 1 GiB that does not compress (and no zero blocks): every block is kept raw.
    host(
        "sh",
        &[&"-c", &format!("head -c 1G /dev/urandom > {}/big", src.display())],
    );
    let img = tmp.path().join("x.sqfs");
    // Reaped with wait4, which also reports its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = squashfs_cmd(&[s(&src), s(&img), "--level", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let peak_mib = usage.ru_maxrss / 1024;
    eprintln!("peak RSS for a 1 GiB file: {peak_mib} MiB");
    assert!(peak_mib < 200, "peak RSS {peak_mib} MiB for a 1 GiB file");
    assert!(std::fs::metadata(&img).unwrap().len() > 1 << 30);
}

/// A directory whose listing is longer than one metadata block gets the directory index
/// (squashfs-tools-ng's rdsquashfs reads it), and the kernel, which looks names up through
/// it, finds every name and no other.
#[test]
fn a_big_directory_gets_an_index_the_kernel_finds_every_name_through() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    let names: Vec<String> = (0..3000)
        .map(|i| format!("entry-{i:05}-{}", "n".repeat(i % 30)))
        .collect();
    for n in &names {
        std::fs::write(src.join("big").join(n), n).unwrap();
    }
    let img = tmp.path().join("x.sqfs");
    squashfs(&[s(&src), s(&img)]).ok();
    let stat = host("rdsquashfs", &[&"-s", &"/big", &img]).stdout();
    assert!(stat.contains("Inode type: extended directory"), "{stat}");
    let count: usize = stat
        .lines()
        .find_map(|l| l.strip_prefix("Directory index entries: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no directory index:\n{stat}"));
    assert!(count >= 5, "{stat}");

    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    host("mount", &[&"-o", &"loop,ro", &img, &mnt]);
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| std::fs::read_to_string(mnt.join("big").join(n)).ok().as_deref() != Some(n.as_str()))
        .collect();
    let phantom: Vec<&str> = ["entry-00000", "entry-01500-nn", "entry-99999", "a", "zzz"]
        .into_iter()
        .filter(|n| mnt.join("big").join(n).exists())
        .collect();
    host("umount", &[&mnt]);
    assert!(
        missing.is_empty(),
        "{} names not found, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(phantom.is_empty(), "found names that are not there: {phantom:?}");
}
