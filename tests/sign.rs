//! `sign` on a small build made of real pieces (PE images, a squashfs with the keyring, a FAT
//! boot image, a GPT disk), checked with sbverify, rauc, mtools and sfdisk: seconds, not
//! minutes. The whole image signed offline and booted under Secure Boot is in tests/secureboot.rs.

mod common;

use common::{Run, TestProject, host, host_in, host_try};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Two different PE images stand in for the two slots' UKIs (sbsign signs any PE image).
const PE_A: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const PE_B: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// A project whose phase writes what 60-uki and 70-disk would: unsigned UKIs, the boot image
/// (`loisto-image esp`), a disk with it in boot-a, and an OS image carrying the keyring. The
/// private keys are moved out of the project to `keys` (as an offline machine would hold them).
struct Build {
    p: TestProject,
    keys: tempfile::TempDir,
}

fn build() -> Build {
    let p = TestProject::with_conf(
        "IMAGE_ID=t\nIMAGE_VERSION=1\nSOURCE_DATE_EPOCH=1700000000\nCOMPATIBLE=t-dev\n",
    );
    p.run(&["keys"]).ok();
    let keys = tempfile::tempdir().unwrap();
    common::take_keys_offline(p.path(), keys.path());
    p.phase(
        "70-fake-disk",
        &format!(
            r#"a="$OUTPUT/t_1"
mkdir -p "$BUILD_DIR/tree/etc/rauc"
cp "$PROJECT_DIR/rauc/keyring.pem" "$BUILD_DIR/tree/etc/rauc/"
"$LOISTO_IMAGE" squashfs "$BUILD_DIR/tree" "$a.root.squashfs" --all-root > /dev/null
head -c 8192 /dev/zero > "$a.root.verity"
cp {PE_A} "$a.slot-a.efi"
cp {PE_B} "$a.slot-b.efi"
"$LOISTO_IMAGE" esp "$a.boot.vfat" --size 34M --volume-id 0badcafe \
    EFI/BOOT/BOOTX64.EFI="$a.slot-a.efi" EFI/loisto/slot-b.efi="$a.slot-b.efi" README.txt="$PROJECT_DIR/image.conf"
truncate -s 80M "$a.img"
printf 'label: gpt\nname=boot-a, size=34M, type=U\nname=boot-b, size=34M, type=U\n' | sfdisk -q "$a.img"
dd if="$a.boot.vfat" of="$a.img" bs=512 seek=2048 conv=notrunc status=none
"$LOISTO_IMAGE" flash-files "$a.img" > /dev/null"#
        ),
    );
    p.run(&["build"]).ok();
    Build { p, keys }
}

fn hashes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir(dir)
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&f).unwrap())
        })
        .collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `rauc info --keyring` verifies the bundle's signature.
fn rauc_accepts(bundle: &Path, keyring: &Path) {
    host(
        "rauc",
        &[&"info", &format!("--keyring={}", keyring.display()), &bundle],
    );
}

fn sbverify(cert: &Path, pe: &Path) -> bool {
    host_try("sbverify", &[&"--cert", &cert, &pe]).code() == 0
}

#[test]
fn sign_signs_the_ukis_rewrites_the_boot_partition_and_makes_a_verified_bundle() {
    let b = build();
    let out = b.p.output();
    let before = hashes(&out);
    let k = b.keys.path();
    let keys = k.to_str().unwrap();
    b.p.run(&["sign", "--keys", keys]).ok();

    for slot in ["a", "b"] {
        let uki = out.join(format!("t_1.slot-{slot}.efi"));
        assert!(
            sbverify(&k.join("secureboot.crt"), &uki),
            "slot {slot} UKI not signed"
        );
    }
    // The boot image holds the signed UKIs (read back with mtools) and what else it held.
    let extracted = tempfile::tempdir().unwrap();
    let mcopy = |path: &str, dest: &Path| {
        host("mcopy", &[&"-n", &"-i", &out.join("t_1.boot.vfat"), &path, &dest]);
    };
    mcopy("::EFI/BOOT/BOOTX64.EFI", &extracted.path().join("a.efi"));
    mcopy("::README.txt", &extracted.path().join("readme"));
    assert_eq!(
        std::fs::read(extracted.path().join("a.efi")).unwrap(),
        std::fs::read(out.join("t_1.slot-a.efi")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(extracted.path().join("readme")).unwrap(),
        b.p.read("image.conf")
    );
    // boot-a in the disk is the new boot image, byte for byte; boot-b is untouched.
    let disk = std::fs::read(out.join("t_1.img")).unwrap();
    let boot = std::fs::read(out.join("t_1.boot.vfat")).unwrap();
    assert!(
        disk[2048 * 512..2048 * 512 + boot.len()] == boot[..],
        "boot-a was not rewritten"
    );
    let old_disk = &before["t_1.img"];
    let b_start = (2048 + 34 * 2048) * 512;
    assert!(disk[b_start..] == old_disk[b_start..], "more than boot-a changed");
    // The flash files are the signed disk's: bmaptool gives back its bytes.
    let flashed = tempfile::tempdir().unwrap();
    host(
        "bmaptool",
        &[&"copy", &out.join("t_1.img.zst"), &flashed.path().join("disk")],
    );
    assert!(
        std::fs::read(flashed.path().join("disk")).unwrap() == disk,
        "the .img.zst is not the signed disk"
    );
    assert_ne!(
        before["t_1.img.zst"],
        std::fs::read(out.join("t_1.img.zst")).unwrap()
    );
    // The OS image is not touched.
    for f in ["t_1.root.squashfs", "t_1.root.verity"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), before[f], "{f} changed");
    }
    // RAUC accepts the bundle with the project's keyring; the records vouch for everything.
    rauc_accepts(&out.join("t_1.raucb"), &b.p.path().join("rauc/keyring.pem"));
    b.p.run(&["verify"]).ok();
    host_in(&out, "sha256sum", &[&"-c", &"--quiet", &"SHA256SUMS"]);
    let leftovers: Vec<_> = walkdir(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".sign."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Signed already: refused, nothing changed; --resign gives the same bytes again (the
    // signature time is SOURCE_DATE_EPOCH, and RSA signatures are deterministic).
    let signed = hashes(&out);
    b.p.run(&["sign", "--keys", keys]).fails_with(2, "already signed");
    assert!(hashes(&out) == signed, "a refused sign changed the output");
    b.p.run(&["sign", "--keys", keys, "--resign"]).ok();
    let resigned = hashes(&out);
    for f in ["t_1.slot-a.efi", "t_1.slot-b.efi", "t_1.boot.vfat", "t_1.img"] {
        assert!(resigned[f] == signed[f], "{f} differs after --resign");
    }
}

#[test]
fn sign_refuses_missing_mismatched_and_foreign_keys_and_changes_nothing() {
    let b = build();
    let out = b.p.output();
    let before = hashes(&out);
    let unchanged = || assert!(hashes(&out) == before, "a refused sign changed the output");
    let k = b.keys.path();

    let missing = tempfile::tempdir().unwrap();
    std::fs::copy(k.join("secureboot.crt"), missing.path().join("secureboot.crt")).unwrap();
    b.p.run(&["sign", "--keys", missing.path().to_str().unwrap()])
        .fails_with(2, "lacks secureboot.key, rauc-release.key, rauc-release.crt");
    unchanged();
    b.p.run(&["sign", "--keys", "/nonexistent/keys"])
        .fails_with(2, "no such directory");
    unchanged();

    // A release key the image's keyring does not trust: the device would refuse its bundles.
    let foreign = tempfile::tempdir().unwrap();
    copy_dir(k, foreign.path());
    let (key, cert) = common::foreign_signing_pair(foreign.path());
    std::fs::rename(key, foreign.path().join("rauc-release.key")).unwrap();
    std::fs::rename(cert, foreign.path().join("rauc-release.crt")).unwrap();
    b.p.run(&["sign", "--keys", foreign.path().to_str().unwrap()])
        .fails_with(2, "does not chain to the keyring the image trusts");
    unchanged();

    // A key that is not its certificate's.
    let swapped = tempfile::tempdir().unwrap();
    copy_dir(k, swapped.path());
    std::fs::copy(k.join("pk.key"), swapped.path().join("secureboot.key")).unwrap();
    b.p.run(&["sign", "--keys", swapped.path().to_str().unwrap()])
        .fails_with(2, "is not the key of");
    unchanged();

    // Bytes changed after the build are never signed.
    let disk = out.join("t_1.img");
    let mut bytes = std::fs::read(&disk).unwrap();
    bytes[4096] ^= 1;
    std::fs::write(&disk, &bytes).unwrap();
    b.p.run(&["sign", "--keys", k.to_str().unwrap()])
        .fails_with(1, "changed after the build");
}

fn copy_dir(from: &Path, to: &Path) {
    host("cp", &[&"-a", &format!("{}/.", from.display()), &to]);
}

#[test]
fn esp_makes_the_same_bytes_every_time_and_refuses_what_does_not_fit() {
    let t = tempfile::tempdir().unwrap();
    let esp = |out: &Path, size: &str, file: &str| {
        host_try(
            common::BIN,
            &[
                &"esp",
                &out,
                &"--size",
                &size,
                &"--volume-id=12ab34cd",
                &"--mtime=1700000000",
                &format!("EFI/BOOT/BOOTX64.EFI={file}"),
                &format!("EFI/loisto/b.efi={PE_B}"),
            ],
        )
    };
    let (one, two) = (t.path().join("one.vfat"), t.path().join("two.vfat"));
    esp(&one, "34M", PE_A).ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    esp(&two, "34M", PE_A).ok();
    assert!(
        std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
        "two runs differ"
    );
    // dosfstools' checker finds nothing wrong with it.
    host("fsck.vfat", &[&"-n", &one]);

    let big = t.path().join("big.efi");
    std::fs::File::create(&big).unwrap().set_len(40 << 20).unwrap();
    let out = t.path().join("small.vfat");
    esp(&out, "34M", big.to_str().unwrap()).fails_with(1, "raise BOOT_SIZE");
    let left: Vec<String> = common::names_in(t.path())
        .into_iter()
        .filter(|n| n.starts_with("small"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Imports `key` (PEM) with its public key and certificate into a SoftHSM token as `label`.
fn import_into_token(conf: &Path, key: &Path, cert: &Path, id: &str, label: &str) {
    let dir = conf.parent().unwrap();
    let der = |args: &[&str], out: &str| {
        let out = dir.join(out);
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> =
            args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
        all.push(&"-out");
        all.push(&out);
        host("openssl", &all);
    };
    let k = key.to_str().unwrap();
    der(
        &["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in", k],
        "priv.der",
    );
    der(&["pkey", "-pubout", "-outform", "DER", "-in", k], "pub.der");
    der(
        &["x509", "-outform", "DER", "-in", cert.to_str().unwrap()],
        "cert.der",
    );
    for (file, kind) in [
        ("priv.der", "privkey"),
        ("pub.der", "pubkey"),
        ("cert.der", "cert"),
    ] {
        host(
            "env",
            &[
                &format!("SOFTHSM2_CONF={}", conf.display()),
                &"pkcs11-tool",
                &"--module=/usr/lib/softhsm/libsofthsm2.so",
                &"--login",
                &"--pin=1234",
                &"--token-label=loisto-test",
                &"--write-object",
                &dir.join(file),
                &format!("--type={kind}"),
                &format!("--id={id}"),
                &format!("--label={label}"),
            ],
        );
    }
}

#[test]
fn sign_takes_keys_from_a_pkcs11_token_and_signs_as_with_key_files() {
    let b = build();
    let k = b.keys.path();
    // A SoftHSM token holding both keys, reached through p11-kit as a real HSM would be.
    let hsm = tempfile::tempdir().unwrap();
    let conf = hsm.path().join("softhsm2.conf");
    std::fs::create_dir(hsm.path().join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}/tokens\n", hsm.path().display()),
    )
    .unwrap();
    host(
        "env",
        &[
            &format!("SOFTHSM2_CONF={}", conf.display()),
            &"softhsm2-util",
            &"--init-token",
            &"--free",
            &"--label=loisto-test",
            &"--pin=1234",
            &"--so-pin=5678",
        ],
    );
    for (name, id, label) in [("secureboot", "01", "db"), ("rauc-release", "02", "release")] {
        let (key, cert) = (k.join(format!("{name}.key")), k.join(format!("{name}.crt")));
        import_into_token(&conf, &key, &cert, id, label);
    }
    // Only the certificates stay on disk.
    let public = tempfile::tempdir().unwrap();
    for f in ["secureboot.crt", "rauc-release.crt"] {
        std::fs::copy(k.join(f), public.path().join(f)).unwrap();
    }
    let by_file = tempfile::tempdir().unwrap();
    host(
        "cp",
        &[
            &"-a",
            &"--sparse=always",
            &format!("{}/.", b.p.output().display()),
            &by_file.path(),
        ],
    );

    let uri = |label: &str| format!("pkcs11:token=loisto-test;object={label};type=private;pin-value=1234");
    let r = Run(b
        .p
        .cmd(&["sign", "--keys", public.path().to_str().unwrap()])
        .args(["--db-key", &uri("db"), "--release-key", &uri("release")])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap());
    r.ok();
    let out = b.p.output();
    rauc_accepts(&out.join("t_1.raucb"), &b.p.path().join("rauc/keyring.pem"));

    // The same keys as files sign the same bytes.
    b.p.run(&[
        "sign",
        "--keys",
        k.to_str().unwrap(),
        by_file.path().to_str().unwrap(),
    ])
    .ok();
    for f in ["t_1.slot-a.efi", "t_1.slot-b.efi", "t_1.boot.vfat", "t_1.img"] {
        assert!(
            std::fs::read(out.join(f)).unwrap() == std::fs::read(by_file.path().join(f)).unwrap(),
            "{f}: the token and the key file signed differently"
        );
    }
    // A token key that is not the certificate's is refused.
    std::fs::copy(k.join("rauc-release.crt"), public.path().join("secureboot.crt")).unwrap();
    let r = Run(b
        .p
        .cmd(&["sign", "--resign", "--keys", public.path().to_str().unwrap()])
        .args(["--db-key", &uri("db"), "--release-key", &uri("release")])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap());
    r.fails_with(2, "is not the key of");
}
