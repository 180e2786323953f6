//! Bootstrap backends: pacstrap against a local pacman repository this test builds itself
//! (no Arch mirror needed), and refusing rootfs tarballs that would escape.
//! They need the host tools from scripts/install-host-deps.sh, hence `#[ignore]`.

mod common;

use common::{RepoProject, Run};
use std::path::Path;

fn sh(script: &str) {
    common::host("bash", &[&"-euo", &"pipefail", &"-c", &script]);
}

/// makepkg refuses to run as root; the packages are built as `nobody`.
fn make_package(dir: &Path, name: &str, depends: &str, files: &str) {
    let src = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("PKGBUILD"),
        format!(
            "pkgname={name}\npkgver=1.0\npkgrel=1\npkgdesc='loisto test package'\narch=(any)\nlicense=(MIT)\n\
             depends=({depends})\npackage() {{\n{files}\n}}\n"
        ),
    )
    .unwrap();
    sh(&format!(
        "chown -R nobody {d} && cd {s} && runuser -u nobody -- env PKGDEST={d} SRCDEST={s} BUILDDIR={s}/build \
         PKGEXT=.pkg.tar.gz makepkg --nodeps --noconfirm >/dev/null",
        d = dir.display(),
        s = src.display()
    ));
}

#[test]
#[ignore = "needs pacman, makepkg and arch-install-scripts (scripts/install-host-deps.sh)"]
fn pacstrap_installs_exactly_the_requested_packages_from_a_local_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    make_package(
        &repo,
        "loisto-test-base",
        "",
        "  mkdir -p \"$pkgdir\"/usr/lib \"$pkgdir\"/usr/share/doc/base \"$pkgdir\"/etc \"$pkgdir\"/usr/bin\n\
         printf 'NAME=\"Arch Linux\"\\nID=arch\\n' > \"$pkgdir/usr/lib/os-release\"\n\
         echo 'docs' > \"$pkgdir/usr/share/doc/base/README\"\n\
         printf 'root:x:0:0::/root:/bin/sh\\n' > \"$pkgdir/etc/passwd\"\n\
         printf 'root:$6$x:19000::::::\\n' > \"$pkgdir/etc/shadow\"",
    );
    make_package(
        &repo,
        "loisto-test-hello",
        "loisto-test-base",
        "  install -Dm755 /dev/null \"$pkgdir/usr/bin/hello\"",
    );
    make_package(
        &repo,
        "loisto-test-unrequested",
        "",
        "  install -Dm644 /dev/null \"$pkgdir/usr/share/unrequested\"",
    );
    sh(&format!(
        "cd {} && repo-add -q loisto-test.db.tar.gz *.pkg.tar.gz",
        repo.display()
    ));

    let p = RepoProject::at(&tmp.path().join("image"));
    let project = &p.project;
    std::fs::write(
        project.join("test-pacman.conf"),
        format!(
            "[options]\nArchitecture = auto\nSigLevel = Never\n\n[loisto-test]\nSigLevel = Never\nServer = file://{}\n",
            repo.display()
        ),
    )
    .unwrap();
    p.run(&[
        "--set",
        "DISTRO=arch",
        "--set",
        "PACMAN_CONF=test-pacman.conf",
        "--set",
        "ARCH_PACKAGES=loisto-test-base loisto-test-hello",
        "build",
        "--to",
        "30-configure",
        "--skip",
        "15-initrd",
    ])
    .ok();
    let log = std::fs::read_to_string(project.join("output/logs/00-bootstrap.log")).unwrap();
    assert!(log.contains("pacstrap") || log.contains("Installing"), "{log}");

    let rootfs = project.join("build/rootfs");
    let installed: Vec<String> = common::host("pacman", &[&"--root", &rootfs, &"-Q"])
        .stdout()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(installed, vec!["loisto-test-base", "loisto-test-hello"]);
    assert!(
        project
            .join("cache/pacman/pkg/loisto-test-hello-1.0-1-any.pkg.tar.gz")
            .is_file(),
        "no cached package"
    );

    // The later phases ran on the Arch tree.
    let osr = std::fs::read_to_string(rootfs.join("usr/lib/os-release")).unwrap();
    assert!(
        osr.contains("ID=arch") && osr.contains("IMAGE_ID=loisto"),
        "{osr}"
    );
    assert!(
        rootfs.join("usr/lib/loisto/health-report").is_file(),
        "overlay not installed"
    );
    assert!(
        rootfs
            .join("etc/systemd/system/multi-user.target.wants/loisto-health.service")
            .symlink_metadata()
            .is_ok()
    );
    assert!(
        std::fs::read_to_string(rootfs.join("etc/shadow"))
            .unwrap()
            .starts_with("root:!:")
    );
    assert!(!rootfs.join("usr/share/doc").exists(), "strip did not run");
}

/// Writes a tar with Python's tarfile, whose members may be as hostile as we like.
fn evil_tar(path: &Path, members: &str) {
    let script = format!(
        "import tarfile, io\nt = tarfile.open('{}', 'w')\n\
         def f(name, data=b'x'):\n    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n\
         def l(name, target):\n    i = tarfile.TarInfo(name); i.type = tarfile.SYMTYPE; i.linkname = target; t.addfile(i)\n\
         f('usr/lib/os-release', b'ID=debian\\n')\n{members}\nt.close()\n",
        path.display()
    );
    common::host("/usr/bin/python3", &[&"-c", &script]);
}

/// The bootstrap phase alone, importing `tar`.
fn build_from(p: &RepoProject, tar: &Path) -> Run {
    let tar = format!("ROOTFS_TAR={}", tar.display());
    p.run(&[
        "--set",
        "BOOTSTRAP=rootfs",
        "--set",
        &tar,
        "build",
        "--only",
        "00",
    ])
}

#[test]
#[ignore = "needs bsdtar (scripts/install-host-deps.sh)"]
fn rootfs_tarballs_that_escape_are_refused_and_write_nothing_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let p = RepoProject::at(&tmp.path().join("image"));
    let project = &p.project;
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let cases = [
        (
            "traversal",
            format!(
                "f('../../{}/pwned')",
                outside.file_name().unwrap().to_str().unwrap()
            ),
            "`..` in the member name",
        ),
        (
            "absolute",
            format!("f('{}/pwned')", outside.display()),
            "absolute member name",
        ),
        (
            "symlink-out",
            format!("l('escape', '{}')\nf('escape/pwned')", outside.display()),
            "through the symlink escape",
        ),
        (
            "relative-link",
            "l('up', '../../..')".to_string(),
            "points outside the rootfs",
        ),
    ];
    for (name, members, why) in cases {
        let tar = tmp.path().join(format!("{name}.tar"));
        evil_tar(&tar, &members);
        build_from(&p, &tar).fails_with(1, why);
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{name}: something was written outside"
        );
        assert!(
            !project.join("build/rootfs/usr").exists(),
            "{name}: the tar was unpacked"
        );
    }
    // A harmless absolute symlink (as in every Debian rootfs) is fine.
    let ok = tmp.path().join("ok.tar");
    evil_tar(&ok, "l('etc/localtime', '/usr/share/zoneinfo/Etc/UTC')");
    build_from(&p, &ok).ok();
    assert!(project.join("build/rootfs/usr/lib/os-release").is_file());
}
