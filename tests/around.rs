//! Fast checks of chroot, keys, bundle and sysext: bad input is refused clearly and writes
//! nothing; rauc/system.conf agrees with repart.d/. (The real runs are in tests/image.rs.)

mod common;

use common::TestProject;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A project whose one phase fakes the artifacts `bundle` reads.
fn fake_build(conf_extra: &str) -> TestProject {
    let p = TestProject::with_conf(&format!(
        "IMAGE_ID=t\nIMAGE_VERSION=1\nSOURCE_DATE_EPOCH=1\n{conf_extra}"
    ));
    p.phase(
        "10-fake",
        "for s in root.squashfs root.verity boot.vfat; do head -c 8192 /dev/urandom > \"$OUTPUT/t_1.$s\"; done",
    );
    p.run(&["build"]).ok();
    p
}

fn nothing_written(p: &TestProject) {
    let bundles: Vec<String> = common::names_in(&p.output())
        .into_iter()
        .filter(|n| n.contains("raucb"))
        .collect();
    assert!(bundles.is_empty(), "bundle files were written: {bundles:?}");
}

#[test]
fn bundle_refuses_no_build_missing_compatible_and_missing_keys() {
    let p = TestProject::new();
    p.file("image.conf", "IMAGE_ID=t\nIMAGE_VERSION=1\nCOMPATIBLE=t-dev\n");
    p.run(&["bundle"]).fails_with(2, "no build in");

    let p = fake_build("");
    p.run(&["bundle"])
        .fails_with(2, "image.conf: COMPATIBLE is not set");
    nothing_written(&p);

    let p = fake_build("COMPATIBLE=t-dev\n");
    p.run(&["bundle"]).fails_with(2, "run `loisto-image keys`");
    nothing_written(&p);
}

#[test]
fn keys_are_private_and_never_overwritten_without_force() {
    let p = TestProject::new();
    p.run(&["keys"]).ok();
    let mode = |f: &str| common::mode_of(&p.path().join(f));
    assert_eq!(mode("keys/rauc-release.key"), 0o600);
    assert_eq!(mode("keys/secureboot.key"), 0o600);
    assert_eq!(p.read("rauc/keyring.pem"), p.read("keys/ca.crt"));
    let before = p.read("keys/rauc-release.key");
    p.run(&["keys"]).fails_with(2, "Pass --force");
    assert_eq!(p.read("keys/rauc-release.key"), before);
    p.run(&["keys", "--force"]).ok();
    assert_ne!(p.read("keys/rauc-release.key"), before);
    assert!(
        !std::fs::read_dir(p.path().join("keys")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".new"))
    );
}

#[test]
fn chroot_and_sysext_need_a_built_rootfs() {
    let p = TestProject::new();
    p.run(&["chroot", "--", "true"])
        .fails_with(2, "build one with `loisto-image build`");
    p.file("sysext/x.conf", "SYSEXT_VERSION=1\nPACKAGES=(hello)\n");
    p.run(&["sysext"]).fails_with(2, "no built rootfs");
    p.file(
        "sysext/y.conf",
        "SYSEXT_VERSION=1\nPACKAGES=(hello)\nSURPRISE=1\n",
    );
    p.run(&["sysext", "y"])
        .fails_with(2, "y.conf:3: unknown key SURPRISE");
    p.run(&["sysext", "nope"])
        .fails_with(2, "no sysext named \"nope\"");
}

/// `device=/dev/disk/by-partlabel/X` of every slot in rauc/system.conf.
fn rauc_slot_labels(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("device=/dev/disk/by-partlabel/"))
        .map(str::to_string)
        .collect()
}

/// `Label=` of every definition in a repart.d directory.
fn repart_labels(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .filter_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("Label=").map(str::to_string))
        })
        .collect()
}

#[test]
fn rauc_slots_match_the_partition_labels_in_repart_d() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let slots = rauc_slot_labels(&std::fs::read_to_string(repo.join("rauc/system.conf")).unwrap());
    let build = repart_labels(&repo.join("repart.d/build"));
    let device = repart_labels(&repo.join("repart.d/device"));
    // The image has /data too (empty): its first boot must not make and format it.
    assert!(build.contains("data"), "repart.d/build does not make /data");
    assert_eq!(
        build, device,
        "repart.d/build and repart.d/device define different partitions"
    );
    let missing: Vec<_> = slots.difference(&build).collect();
    assert!(
        missing.is_empty(),
        "rauc/system.conf names partitions repart.d does not create: {missing:?}"
    );
    // /var and /data are shared by both slots: no update writes them.
    let unslotted: Vec<_> = build
        .difference(&slots)
        .filter(|l| *l != "var" && *l != "data")
        .collect();
    assert!(
        unslotted.is_empty(),
        "partitions no RAUC slot updates: {unslotted:?}"
    );
    assert_eq!(slots.len(), 6);
}

/// A fake build with development keys, bundled once.
fn bundled() -> TestProject {
    let p = fake_build("COMPATIBLE=t-dev\n");
    p.run(&["keys"]).ok();
    p.run(&["bundle"]).ok();
    p
}

#[test]
fn bundle_refuses_artifacts_that_changed_since_the_build() {
    let p = bundled();
    std::fs::remove_file(p.output().join("t_1.raucb")).unwrap();
    let img = p.output().join("t_1.root.squashfs");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&img, bytes).unwrap();
    p.run(&["bundle"])
        .fails_with(1, "t_1.root.squashfs does not match manifest.json");
    nothing_written(&p);
}

#[test]
fn bundle_takes_compatible_and_version_from_the_build_and_keys_in_pairs() {
    let p = bundled();
    let r = p.run(&["--set", "COMPATIBLE=other", "--set", "IMAGE_VERSION=9", "bundle"]);
    r.ok().stdout_has("compatible=t-dev, version=1");
    let cert = p.path().join("keys/rauc-release.crt");
    p.run(&["bundle", "--cert", cert.to_str().unwrap()])
        .fails_with(2, "--key");
    let key = p.path().join("keys/rauc-release.key");
    p.run(&["bundle", "--key", key.to_str().unwrap()])
        .fails_with(2, "--cert");
}

#[test]
fn a_partial_build_does_not_carry_an_old_bundle_into_its_record() {
    let p = bundled();
    assert!(p.output().join("t_1.raucb").is_file());
    // The bundle is vouched for as long as it belongs to the build in the output.
    assert!(p.read("output/SHA256SUMS").contains(" *t_1.raucb\n"));
    p.run(&["verify"]).ok();
    p.run(&["build", "--from", "10"]).ok();
    let manifest = p.read("output/manifest.json");
    assert!(!manifest.contains("raucb"), "{manifest}");
    assert!(!p.read("output/SHA256SUMS").contains("raucb"));
    assert!(!p.output().join("t_1.raucb").exists());
    p.run(&["verify"]).ok();
}

/// A root file system of one static busybox: enough for `chroot` to run shell commands.
/// A root file system of busybox alone, in a temporary directory (kept while the first half lives).
fn busybox_rootfs() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("root");
    for d in ["usr/bin", "proc", "sys", "dev", "run", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("usr/bin/busybox")).unwrap();
    for tool in ["sh", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join("usr/bin").join(tool)).unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
    (t, dir)
}

#[test]
fn chroot_no_network_has_its_own_network_namespace() {
    let (_t, root) = busybox_rootfs();
    let p = TestProject::new();
    let r = root.to_str().unwrap();
    // /proc/net/dev lists the interfaces of the namespace the command runs in.
    let own = p.run(&[
        "chroot",
        "--rootfs",
        r,
        "--no-network",
        "--",
        "cat",
        "/proc/net/dev",
    ]);
    own.ok();
    let names: Vec<String> = own
        .stdout()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect();
    assert_eq!(names, ["lo"], "{}", own.stdout());
    let shared = p.run(&["chroot", "--rootfs", r, "--", "cat", "/proc/net/dev"]);
    shared.ok();
    assert!(
        shared.stdout().lines().count() > own.stdout().lines().count(),
        "without --no-network the host's interfaces are there: {}",
        shared.stdout()
    );
}

/// Host processes whose root directory is `root`: what runs inside a chroot there.
fn processes_in(root: &Path) -> Vec<String> {
    let root = root.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| std::fs::read_link(e.path().join("root")).is_ok_and(|r| r == root))
        .map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        })
        .collect()
}

#[test]
fn chroot_stopped_with_sigterm_takes_its_command_along() {
    let (_t, root) = busybox_rootfs();
    let p = TestProject::new();
    let mut child = p
        .cmd(&[
            "chroot",
            "--rootfs",
            root.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "sleep 300 & touch /tmp/started; wait",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !root.join("tmp/started").exists() {
        assert!(std::time::Instant::now() < until, "the command never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let inside = processes_in(&root);
    assert!(inside.iter().any(|c| c.starts_with("sleep 300")), "{inside:?}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !processes_in(&root).is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(processes_in(&root), Vec::<String>::new(), "outlived chroot");
}

/// The window between starting the namespace and watching for signals: a SIGTERM that lands
/// while the command is still being set up must end it just the same, not kill us alone.
#[test]
fn chroot_stopped_while_its_command_starts_still_takes_it_along() {
    let (_t, root) = busybox_rootfs();
    let p = TestProject::new();
    for attempt in 0..5 {
        let mut child = p
            .cmd(&["chroot", "--rootfs", root.to_str().unwrap(), "--", "sleep", "300"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        // No sleep: signal the moment the first process has entered the root.
        while processes_in(&root).is_empty() {
            assert!(std::time::Instant::now() < until, "the command never started");
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "attempt {attempt}: {status:?}");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !processes_in(&root).is_empty() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            processes_in(&root),
            Vec::<String>::new(),
            "attempt {attempt}: outlived chroot"
        );
    }
}
