//! Secure Boot on real firmware, and the offline second stage of a release: the image is built
//! without private keys, `sign` signs a copy of its output elsewhere, and OVMF with the
//! project's PK/KEK/db enrolled boots it, while it refuses the unsigned image and one signed
//! by another db key. The offline result equals a one-stage build with the same keys.
//! Slow (a full build and QEMU boots under TCG), so ignored by a plain `cargo test`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

const STEM: &str = "loisto_0.1.0";

use common::{RepoProject, run_tcg};

fn copy(from: &Path, to: &Path) {
    common::host(
        "cp",
        &[&"-a", &"--sparse=always", &format!("{}/.", from.display()), &to],
    );
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// Boots `image` under Secure Boot with the certificates in `keys`; (exit code, stderr, seconds).
fn boot(project: &Path, keys: &Path, image: &Path, timeout: &str) -> (i32, String, f64) {
    let started = Instant::now();
    let r = run_tcg(
        project,
        &[
            "vm",
            "--secure-boot",
            "--keys",
            keys.to_str().unwrap(),
            image.to_str().unwrap(),
            "--expect",
            r"^LOISTO-HEALTH .*secureboot=on .*dm=verity$",
            "--timeout",
            timeout,
        ],
    );
    (r.code(), r.stderr(), started.elapsed().as_secs_f64())
}

/// `output`'s artifacts copied to `dest` and signed there with `keys`.
fn signed_copy(p: &RepoProject, output: &Path, keys: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    copy(output, dest);
    p.run(&["sign", "--keys", keys.to_str().unwrap(), dest.to_str().unwrap()])
        .ok();
}

#[test]
#[ignore = "a full build and three QEMU boots (minutes)"]
fn offline_signed_image_boots_under_secure_boot_and_anything_else_is_refused() {
    let p = RepoProject::fresh("secureboot");
    let (work, project) = (&p.work, &p.project);

    // The keys are made, then taken off the build machine: it keeps only the public keyring.
    let keys = work.join("offline-keys");
    p.keys_offline(&keys);
    let started = Instant::now();
    p.run(&["build"]).ok();
    eprintln!("build without keys: {:.1}s", started.elapsed().as_secs_f64());
    let unsigned = project.join("output");
    let log = std::fs::read_to_string(unsigned.join("logs/60-uki.log")).unwrap();
    assert!(log.contains("not signed"), "60-uki signed without keys:\n{log}");

    // The second stage, on a copy of the output alone.
    let release = work.join("release");
    let started = Instant::now();
    signed_copy(&p, &unsigned, &keys, &release);
    eprintln!("sign: {:.1}s", started.elapsed().as_secs_f64());
    for f in [".root.squashfs", ".root.verity", ".roothash"] {
        assert!(
            same(
                &unsigned.join(format!("{STEM}{f}")),
                &release.join(format!("{STEM}{f}"))
            ),
            "{f} changed by sign"
        );
    }
    let keyring = format!("--keyring={}", project.join("rauc/keyring.pem").display());
    common::host(
        "rauc",
        &[&"info", &keyring, &release.join(format!("{STEM}.raucb"))],
    );

    // Signed: boots to the health line, which says Secure Boot is on.
    let (code, err, secs) = boot(project, &keys, &release.join(format!("{STEM}.img")), "400");
    assert_eq!(code, 0, "the signed image did not boot under Secure Boot:\n{err}");
    assert!(err.contains("Secure Boot: enforced"), "{err}");
    eprintln!("signed image: health line after {secs:.1}s");

    // Unsigned: the firmware refuses it, and vm says so long before its timeout.
    let (code, err, secs) = boot(project, &keys, &unsigned.join(format!("{STEM}.img")), "400");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Access Denied") && err.contains("refused"), "{err}");
    assert!(secs < 120.0, "the refusal took {secs:.0}s");
    eprintln!("unsigned image: refused after {secs:.1}s");

    // Signed by another db key (the rest of the keys are right, so sign takes it).
    let other_project = work.join("other");
    std::fs::create_dir_all(&other_project).unwrap();
    std::fs::write(
        other_project.join("image.conf"),
        "IMAGE_ID=other\nIMAGE_VERSION=1\n",
    )
    .unwrap();
    run_tcg(&other_project, &["keys"]).ok();
    let foreign_keys = work.join("foreign-db-keys");
    std::fs::create_dir_all(&foreign_keys).unwrap();
    copy(&keys, &foreign_keys);
    for f in ["secureboot.key", "secureboot.crt"] {
        std::fs::copy(other_project.join("keys").join(f), foreign_keys.join(f)).unwrap();
    }
    let foreign = work.join("foreign");
    signed_copy(&p, &unsigned, &foreign_keys, &foreign);
    let (code, err, secs) = boot(project, &keys, &foreign.join(format!("{STEM}.img")), "400");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Access Denied"), "{err}");
    eprintln!("image signed by another db key: refused after {secs:.1}s");

    // One stage with the same keys in keys/: the same bytes as the offline result (sbsign's
    // signing time is SOURCE_DATE_EPOCH and RSA signatures are deterministic). Only the
    // bundle, which `sign` makes and `bundle` would, is left out.
    copy(&keys, &project.join("keys"));
    p.run(&["build", "--from", "60"]).ok();
    let one_stage: PathBuf = project.join("output");
    for f in [
        ".slot-a.efi",
        ".slot-b.efi",
        ".boot.vfat",
        ".img",
        ".root.squashfs",
        ".root.verity",
    ] {
        assert!(
            same(
                &one_stage.join(format!("{STEM}{f}")),
                &release.join(format!("{STEM}{f}"))
            ),
            "{f}: one-stage and offline signing differ"
        );
    }
}
