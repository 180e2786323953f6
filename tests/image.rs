//! End to end with real tools: the shipped image project builds a bootable, verity-protected
//! disk, and QEMU (TCG here) boots it to the health line. Slow (minutes), so ignored by a
//! plain `cargo test`; the README's test command and CI run them with `--include-ignored`.

mod common;

use common::{BIN, Run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const HEALTH: &str = r"^LOISTO-HEALTH id=loisto version=0\.1\.0 root=/dev/mapper/\S+ dm=verity$";

struct Built {
    work: PathBuf,
    output: PathBuf,
}

/// Builds the repository's own image project once per test binary, into target/e2e/.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
        let output = work.join("output");
        let r = Run(project_cmd(&work, &["build"]).output().unwrap());
        if r.code() != 0 {
            return Err(format!(
                "the image build failed (exit {}):\n{}",
                r.code(),
                r.stderr()
            ));
        }
        Ok(Built { work, output })
    });
    built.as_ref().unwrap_or_else(|e| panic!("{e}"))
}

/// The binary on the repository's project, with every build directory under `work`.
fn project_cmd(work: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-C").arg(env!("CARGO_MANIFEST_DIR"));
    for (key, dir) in [
        ("OUTPUT", "output"),
        ("BUILD_DIR", "build"),
        ("CACHE_DIR", "cache"),
    ] {
        c.arg("--set").arg(format!("{key}={}", work.join(dir).display()));
    }
    c.args(args).env("NO_COLOR", "1").env_remove("GITHUB_ACTIONS");
    c
}

/// Boots one VM at a time: two TCG guests on two cores only slow each other down.
fn boot(args: &[&str], env: &[(&str, &str)]) -> (Run, Duration) {
    static ONE_VM: Mutex<()> = Mutex::new(());
    let _guard = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let b = built();
    let mut c = project_cmd(&b.work, &["vm", "--headless"]);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let start = Instant::now();
    let out = c.output().unwrap();
    (Run(out), start.elapsed())
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn default_image_builds_and_boots_to_the_health_line() {
    let (r, _) = boot(
        &["--expect", HEALTH, "--timeout", "180"],
        &[("LOISTO_VM_ACCEL", "auto")],
    );
    r.ok();
    let err = r.stderr();
    // Auto never trusts /dev/kvm blindly: either a guest ran on it, or TCG with the reason.
    assert!(err.contains("(kvm,") || err.contains("note: using TCG"), "{err}");
    assert!(err.contains("matched after"), "{err}");
    let serial = std::fs::read_to_string(built().output.join("logs/vm-serial.log")).unwrap();
    assert!(
        serial.contains("LOISTO-HEALTH id=loisto"),
        "serial log lacks the health line"
    );
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn a_flipped_byte_in_the_os_partition_stops_the_boot() {
    let b = built();
    let image = b.output.join("loisto_0.1.0.img");
    let bad = b.work.join("corrupt.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(&bad)
        .status()
        .unwrap();
    assert!(st.success());
    let (start, _) = partition(&bad, "root-a");
    // Block 1 of the squashfs is read while mounting the root, so the boot must hit it.
    flip_byte(&bad, start + 4096 + 17);
    let (r, took) = boot(
        &[bad.to_str().unwrap(), "--expect", HEALTH, "--timeout", "180"],
        &[("LOISTO_VM_ACCEL", "tcg")],
    );
    assert_ne!(r.code(), 0, "a corrupted image booted:\n{}", r.stderr());
    assert!(
        took < Duration::from_secs(150),
        "the failure took {took:?}, close to the timeout"
    );
    let err = r.stderr();
    assert!(
        err.contains("the VM stopped") && err.contains("kernel panic"),
        "{err}"
    );
    assert!(
        err.contains("dm-verity device corrupted") || err.contains("is corrupted"),
        "{err}"
    );
}

#[test]
#[ignore = "builds a real image (minutes)"]
fn the_build_records_split_artifacts_checksums_and_verity_layout() {
    let b = built();
    let o = &b.output;
    for name in ["img", "efi", "root.squashfs", "root.verity", "roothash"] {
        assert!(
            o.join(format!("loisto_0.1.0.{name}")).is_file(),
            "missing loisto_0.1.0.{name}"
        );
    }
    let sums = Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(o)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", String::from_utf8_lossy(&sums.stdout));
    Run(project_cmd(&b.work, &["verify"]).output().unwrap()).ok();
    let manifest = std::fs::read_to_string(o.join("manifest.json")).unwrap();
    for name in ["loisto_0.1.0.img", "loisto_0.1.0.efi", "SHA256SUMS"] {
        assert!(
            manifest.contains(&format!("\"path\": \"{name}\"")),
            "manifest lacks {name}"
        );
    }

    // The initrd finds the verity pair by the UUIDs derived from the root hash.
    let roothash = std::fs::read_to_string(o.join("loisto_0.1.0.roothash")).unwrap();
    let uuid = |h: &str| {
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    let table = sfdisk_json(&o.join("loisto_0.1.0.img"));
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let by_name = |n: &str| {
        parts
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no partition {n}"))
    };
    assert_eq!(
        by_name("root-a")["uuid"].as_str().unwrap().to_lowercase(),
        uuid(&roothash[..32])
    );
    assert_eq!(
        by_name("root-a-verity")["uuid"].as_str().unwrap().to_lowercase(),
        uuid(&roothash[32..64])
    );
    for label in ["boot-a", "boot-b", "root-b", "root-b-verity", "var"] {
        by_name(label);
    }

    // The UKI pins that root hash on its command line.
    let cmdline = Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.cmdline"])
        .arg(o.join("loisto_0.1.0.efi"))
        .arg(b.work.join("cmdline.txt"))
        .status()
        .unwrap();
    assert!(cmdline.success());
    let cmdline = std::fs::read_to_string(b.work.join("cmdline.txt")).unwrap();
    assert!(
        cmdline.contains(&format!("roothash={}", roothash.trim())),
        "{cmdline}"
    );
    assert!(cmdline.contains("panic-on-corruption"), "{cmdline}");
}

fn sfdisk_json(img: &Path) -> serde_json::Value {
    let out = Command::new("sfdisk").arg("--json").arg(img).output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (byte offset, byte size) of the partition with GPT name `label`.
fn partition(img: &Path, label: &str) -> (u64, u64) {
    let t = sfdisk_json(img);
    let p = t["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == label)
        .unwrap_or_else(|| panic!("no partition {label}"))
        .clone();
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
}
