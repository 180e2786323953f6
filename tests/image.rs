//! End to end with real tools: the shipped image project builds a bootable, verity-protected
//! disk, and QEMU (TCG here) boots it to the health line. Slow (minutes), so ignored by a
//! plain `cargo test`; the README's test command and CI run them with `--include-ignored`.

mod common;

use common::{RepoProject, Run, host, host_in, host_try};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const HEALTH: &str = r"^LOISTO-HEALTH id=loisto version=0\.1\.0 slot=A .*root=/dev/mapper/\S+ dm=verity$";

/// The repository's image project, copied into target/ and built once per test binary; tests
/// write keys and sysext confs into the copy.
fn built() -> &'static RepoProject {
    static BUILT: OnceLock<Result<RepoProject, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let b = RepoProject::fresh("e2e");
        // FLASH_FILES: the release forms of the disk too (flash test below).
        let r = Run(b
            .cmd(&["build"])
            .env("LOISTO_FLASH_FILES", "yes")
            .output()
            .unwrap());
        if r.code() != 0 {
            return Err(format!(
                "the image build failed (exit {}):\n{}",
                r.code(),
                r.stderr()
            ));
        }
        Ok(b)
    });
    built.as_ref().unwrap_or_else(|e| panic!("{e}"))
}

/// The shared build, for this test alone until it drops: the image tests share one build, some
/// rebuild parts of it, and two TCG guests on two cores only slow each other down.
struct Alone {
    b: &'static RepoProject,
    _one: MutexGuard<'static, ()>,
}

fn built_alone() -> Alone {
    static ONE: Mutex<()> = Mutex::new(());
    let one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    Alone {
        b: built(),
        _one: one,
    }
}

impl Deref for Alone {
    type Target = RepoProject;
    fn deref(&self) -> &RepoProject {
        self.b
    }
}

impl Alone {
    /// `vm --headless` on the build's disk with `args`; the run and how long it took.
    fn boot(&self, args: &[&str], env: &[(&str, &str)]) -> (Run, Duration) {
        let mut c = self.cmd(&["vm", "--headless"]);
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let start = Instant::now();
        let out = c.output().unwrap();
        (Run(out), start.elapsed())
    }
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn default_image_builds_and_boots_to_the_health_line() {
    let b = built_alone();
    let (r, _) = b.boot(
        &["--expect", HEALTH, "--timeout", "180"],
        &[("LOISTO_VM_ACCEL", "auto")],
    );
    r.ok();
    let err = r.stderr();
    // Auto never trusts /dev/kvm blindly: either a guest ran on it, or TCG with the reason.
    assert!(err.contains("(kvm,") || err.contains("note: using TCG"), "{err}");
    assert!(err.contains("matched after"), "{err}");
    // The guest's account of its boot, with the time before its kernel as vm saw it.
    assert!(
        err.lines().any(|l| l.starts_with("boot: power-on to kernel ")
            && l.contains(" kernel=")
            && l.contains(" initrd=")
            && l.contains(" userspace=")
            && l.contains(" slowest=")),
        "{err}"
    );
    let serial = std::fs::read_to_string(b.output.join("logs/vm-serial.log")).unwrap();
    assert!(
        serial.contains("LOISTO-HEALTH id=loisto"),
        "serial log lacks the health line"
    );
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn direct_kernel_boot_skips_the_firmware_and_still_reaches_the_health_line() {
    let b = built_alone();
    let (r, _) = b.boot(&["--direct-kernel", "--expect", HEALTH, "--timeout", "180"], &[]);
    r.ok();
    let err = r.stderr();
    assert!(err.contains("not how a device boots"), "{err}");
    let serial = std::fs::read_to_string(b.output.join("logs/vm-serial.log")).unwrap();
    assert!(!serial.contains("BdsDxe"), "the firmware ran");
    assert!(serial.contains("secureboot=none"), "UEFI variables were there");
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn a_flipped_byte_in_the_os_partition_stops_the_boot() {
    let b = built_alone();
    let bad = b.work.join("corrupt.img");
    host(
        "cp",
        &[&"--sparse=always", &b.output.join("loisto_0.1.0.img"), &bad],
    );
    let (start, _) = partition(&bad, "root-a");
    // Block 0 of the squashfs (its superblock) is read while mounting the root, so the boot
    // must hit it. (Block 1 was read only by udev probing the verity device in dracut's
    // initrd; verity checks a block when something reads it, and nothing reads block 1 now.)
    flip_byte(&bad, start + 17);
    let (r, took) = b.boot(
        &[bad.to_str().unwrap(), "--expect", HEALTH, "--timeout", "180"],
        &[],
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
#[ignore = "builds and boots a real image (minutes)"]
fn an_initrd_that_cannot_find_its_slot_says_so_and_reboots() {
    let b = built_alone();
    let bad = b.work.join("no-root-a.img");
    host(
        "cp",
        &[&"--sparse=always", &b.output.join("loisto_0.1.0.img"), &bad],
    );
    // The GPT name is how slot A's UKI finds its OS partition; without it the initrd has
    // nothing to open.
    let table = sfdisk_json(&bad);
    let n = table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["name"] == "root-a")
        .unwrap()
        + 1;
    host(
        "sfdisk",
        &[&"-q", &"--part-label", &bad, &n.to_string(), &"renamed"],
    );
    let (r, _) = b.boot(
        &[bad.to_str().unwrap(), "--expect", HEALTH, "--timeout", "180"],
        &[],
    );
    assert_ne!(r.code(), 0, "it booted without its OS partition:\n{}", r.stderr());
    let err = r.stderr();
    assert!(
        err.contains("the VM stopped") && err.contains("kernel panic"),
        "{err}"
    );
    // vm keeps the serial log of a disk outside output/ beside it.
    let serial = std::fs::read_to_string(b.work.join("no-root-a.img.serial.log")).unwrap();
    assert!(
        serial.contains("loisto-initrd: no PARTLABEL=root-a and PARTLABEL=root-a-verity after 30 s"),
        "{err}"
    );
}

#[test]
#[ignore = "builds a real image (minutes)"]
fn the_build_records_split_artifacts_checksums_and_verity_layout() {
    let b = built_alone();
    let o = &b.output;
    for name in [
        "img",
        "slot-a.efi",
        "slot-b.efi",
        "boot.vfat",
        "root.squashfs",
        "root.verity",
        "roothash",
    ] {
        assert!(
            o.join(format!("loisto_0.1.0.{name}")).is_file(),
            "missing loisto_0.1.0.{name}"
        );
    }
    host_in(o, "sha256sum", &[&"-c", &"SHA256SUMS"]);
    b.run(&["verify"]).ok();
    let manifest = std::fs::read_to_string(o.join("manifest.json")).unwrap();
    let sums = std::fs::read_to_string(o.join("SHA256SUMS")).unwrap();
    for name in [
        "loisto_0.1.0.img",
        "loisto_0.1.0.slot-a.efi",
        "loisto_0.1.0.boot.vfat",
        "loisto_0.1.0.root.squashfs",
    ] {
        assert!(
            manifest.contains(&format!("\"path\": \"{name}\"")),
            "manifest lacks {name}"
        );
        assert!(sums.contains(&format!(" *{name}\n")), "SHA256SUMS lacks {name}");
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

    // Each slot's UKI pins that root hash and names its own partitions and slot.
    let roothash = roothash.trim();
    for slot in ["a", "b"] {
        let cmdline = b.work.join(format!("cmdline-{slot}.txt"));
        let uki = o.join(format!("loisto_0.1.0.slot-{slot}.efi"));
        host(
            "objcopy",
            &[&"-O", &"binary", &"--only-section=.cmdline", &uki, &cmdline],
        );
        let cmdline = std::fs::read_to_string(&cmdline).unwrap();
        for want in [
            format!("roothash={roothash}"),
            format!("systemd.verity_root_data=PARTLABEL=root-{slot} "),
            format!("systemd.verity_root_hash=PARTLABEL=root-{slot}-verity "),
            format!("rauc.slot={} ", slot.to_uppercase()),
            "panic-on-corruption".to_string(),
            "panic=10".to_string(),
        ] {
            assert!(cmdline.contains(&want), "slot {slot} lacks {want:?}: {cmdline}");
        }
    }
    // The boot partition (in the disk and in bundles) holds both UKIs where the boot entries
    // point: mtools reads the FAT, not our code.
    let listing = host(
        "mdir",
        &[&"-/", &"-b", &"-i", &o.join("loisto_0.1.0.boot.vfat"), &"::"],
    )
    .stdout()
    .to_lowercase();
    for name in ["::/efi/boot/bootx64.efi", "::/efi/loisto/slot-b.efi"] {
        assert!(listing.contains(name), "no {name} in:\n{listing}");
    }
}

#[test]
#[ignore = "builds a real image (minutes)"]
fn the_flash_files_give_the_disk_back_through_bmaptool_and_the_disk_holds_only_data() {
    let b = built_alone();
    let o = &b.output;
    // 80-flash alone, on the last build's disk (other tests rebuild without FLASH_FILES).
    let r = Run(b
        .cmd(&["build", "--only", "80"])
        .env("LOISTO_FLASH_FILES", "yes")
        .output()
        .unwrap());
    r.ok();
    let img = o.join("loisto_0.1.0.img");
    let copy = b.work.join("flashed.img");
    let _ = std::fs::remove_file(&copy);
    // bmaptool (bmap-tools) finds loisto_0.1.0.bmap beside the .img.zst, checks the bmap's own
    // checksum and every range's, and writes only the mapped blocks.
    let err = host("bmaptool", &[&"copy", &o.join("loisto_0.1.0.img.zst"), &copy]).stderr();
    assert!(err.contains("discovered bmap file"), "{err}");
    host("cmp", &[&img, &copy]);
    std::fs::remove_file(&copy).unwrap();
    let sums = std::fs::read_to_string(o.join("SHA256SUMS")).unwrap();
    for f in ["loisto_0.1.0.img.zst", "loisto_0.1.0.bmap"] {
        assert!(sums.contains(&format!(" *{f}\n")), "SHA256SUMS lacks {f}");
    }
    // The frame header records the size (`zstd -l` reads it without decompressing).
    let list = host("zstd", &[&"-lv", &o.join("loisto_0.1.0.img.zst")]).stdout();
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(list.contains(&format!("({size} B)")), "{list}");
    // Holes where the disk holds zeros: the boot partition's free space, /var's, slot B.
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&img).unwrap().blocks() * 512;
    let (squashfs, boot) = (
        std::fs::metadata(o.join("loisto_0.1.0.root.squashfs"))
            .unwrap()
            .len(),
        std::fs::metadata(o.join("loisto_0.1.0.slot-a.efi"))
            .unwrap()
            .len()
            * 2,
    );
    assert!(
        allocated < squashfs + boot + (16 << 20),
        "{} MiB allocated for a {} MiB OS image and {} MiB of UKIs",
        allocated >> 20,
        squashfs >> 20,
        boot >> 20
    );
}

/// QEMU's -icount: a guest clock of 8 ns per executed instruction, with idle time skipped.
/// It makes a slow CPU (or a busy host) that the guest cannot tell from a real one, and the
/// same on every run, because the guest's timeouts count its own instructions.
const SLOW_CPU: [&str; 2] = ["--qemu-arg=-icount", "--qemu-arg=shift=3,sleep=off"];

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn a_slow_first_boot_still_mounts_var_and_data_and_is_healthy() {
    let b = built_alone();
    let mut args = vec!["--accel", "tcg", "--memory", "2G"];
    args.extend(SLOW_CPU);
    args.extend(["--expect", HEALTH, "--timeout", "600"]);
    let (r, _) = b.boot(&args, &[]);
    let serial = std::fs::read_to_string(b.output.join("logs/vm-serial.log")).unwrap();
    assert!(
        !serial.contains("Timed out waiting for device"),
        "a device on the boot disk was given up on:\n{}",
        r.stderr()
    );
    // HEALTH_UNITS has var.mount and data.mount: a healthy slot has both.
    r.ok();
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn first_boot_on_an_8_gib_disk_ends_with_every_partition_in_place() {
    let b = built_alone();
    let state = b.scratch("state-8g");
    let (r, _) = b.boot(
        &[
            "--state",
            state.to_str().unwrap(),
            "--disk-size",
            "8G",
            "--expect",
            HEALTH,
            "--timeout",
            "300",
        ],
        &[],
    );
    r.ok();
    let disk = state.join("disk.img");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 8 << 30);
    let table = sfdisk_json(&disk);
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap_or("")).collect();
    assert_eq!(
        names,
        [
            "boot-a",
            "boot-b",
            "root-a",
            "root-a-verity",
            "root-b",
            "root-b-verity",
            "var",
            "data"
        ]
    );
    // /data takes the rest of the disk (the backup GPT's 33 sectors at the end).
    let data = parts.last().unwrap();
    let end = data["start"].as_u64().unwrap() + data["size"].as_u64().unwrap();
    let sectors = (8u64 << 30) / 512;
    assert!(
        sectors - end < 2048 + 34,
        "data ends at sector {end} of {sectors}"
    );
    // ...and its file system with it: the image's 256 MiB ext4, grown by the kernel while
    // mounted (systemd-growfs), before the health line.
    let serial = std::fs::read_to_string(state.join("serial.log")).unwrap();
    assert!(
        serial.contains("EXT4-fs (vda8): resized filesystem to"),
        "/data's file system was not grown:\n{}",
        r.stderr()
    );
    let _ = std::fs::remove_dir_all(&state);
}

fn sfdisk_json(img: &Path) -> serde_json::Value {
    serde_json::from_str(&host("sfdisk", &[&"--json", &img]).stdout()).unwrap()
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

fn mounted_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = format!(" {}", dir.display());
    info.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs a real built rootfs (minutes)"]
fn chroot_runs_in_the_rootfs_passes_the_exit_code_and_leaves_nothing_mounted() {
    let b = built_alone();
    let rootfs = b.project.join("build/rootfs");
    let probe = "test -r /proc/self/status && test -d /sys/class && test -c /dev/null && test -d /dev/pts \
                 && grep -q ' /run tmpfs ' /proc/mounts && grep -q '^ID=debian' /usr/lib/os-release; exit $((3 + $?))";
    let r = b.run(&["chroot", "--", "sh", "-c", probe]);
    assert_eq!(r.code(), 3, "{}", r.stderr());
    assert_eq!(mounted_below(&rootfs), Vec::<String>::new());

    // The host's resolv.conf is visible (read-only), unless --no-network.
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let inside = b.run(&["chroot", "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(inside.stdout(), host);
    assert_ne!(
        b.run(&["chroot", "--", "sh", "-c", "echo x >> /etc/resolv.conf"])
            .code(),
        0
    );

    let killed = b.run(&["chroot", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.code(), 137);
    assert_eq!(mounted_below(&rootfs), Vec::<String>::new());

    b.run(&["chroot", "--rootfs", "/nonexistent/tree", "--", "true"])
        .fails_with(2, "build one with");
}

#[test]
#[ignore = "needs a real build (minutes)"]
fn keys_sign_the_uki_and_a_verified_bundle_and_stay_out_of_every_artifact() {
    let b = built_alone();
    b.run(&["keys"]).ok();
    for k in ["ca.key", "rauc-release.key", "secureboot.key"] {
        assert_eq!(common::mode_of(&b.project.join("keys").join(k)), 0o600, "{k}");
    }
    let before = std::fs::read(b.project.join("keys/ca.key")).unwrap();
    b.run(&["keys"]).fails_with(2, "keys exist already");
    assert_eq!(
        std::fs::read(b.project.join("keys/ca.key")).unwrap(),
        before,
        "keys changed without --force"
    );

    // With keys in place the UKI phase signs, and the keyring goes into the image.
    b.run(&["build", "--from", "20"]).ok();
    for slot in ["a", "b"] {
        let uki = b.output.join(format!("loisto_0.1.0.slot-{slot}.efi"));
        host(
            "sbverify",
            &[&"--cert", &b.project.join("keys/secureboot.crt"), &uki],
        );
    }
    assert!(b.project.join("build/rootfs/etc/rauc/keyring.pem").is_file());

    let r = b.run(&["bundle"]);
    r.ok();
    let bundle = b.output.join("loisto_0.1.0.raucb");
    // Recorded beside the build's artifacts: verify and sha256sum vouch for it too.
    b.run(&["verify"]).ok();
    let keyring = b.project.join("rauc/keyring.pem");
    let info = |bundle: &Path, keyring: &Path| {
        host_try(
            "rauc",
            &[&"info", &format!("--keyring={}", keyring.display()), &bundle],
        )
    };
    let text = info(&bundle, &keyring).ok().stdout();
    assert!(
        text.contains("Compatible:     'loisto-console'") || text.contains("'loisto-console'"),
        "{text}"
    );
    assert!(
        text.contains("'0.1.0'") && text.contains("block-hash-index"),
        "{text}"
    );

    // One flipped byte: in the signature, `rauc info` refuses the bundle; in the payload,
    // dm-verity refuses it as soon as it is read (`rauc extract`, as `rauc install` would).
    let len = std::fs::metadata(&bundle).unwrap().len();
    let flipped = b.work.join("flipped.raucb");
    std::fs::copy(&bundle, &flipped).unwrap();
    flip_byte(&flipped, len - 200);
    assert!(
        info(&flipped, &keyring).code() != 0,
        "a bundle with a flipped signature byte verified"
    );
    std::fs::copy(&bundle, &flipped).unwrap();
    flip_byte(&flipped, len / 2);
    let extract_to = b.scratch("extracted");
    let extract = host_try(
        "rauc",
        &[
            &"extract",
            &format!("--keyring={}", keyring.display()),
            &flipped,
            &extract_to,
        ],
    );
    assert_ne!(
        extract.code(),
        0,
        "a bundle with a flipped payload byte was extracted"
    );
    assert!(extract.stderr().contains("corrupted"), "{}", extract.stderr());

    // Another CA's keyring must refuse it.
    let other = tempfile::tempdir().unwrap();
    let (_, c) = common::foreign_signing_pair(other.path());
    assert!(
        info(&bundle, &c).code() != 0,
        "a bundle verified against a foreign keyring"
    );

    // No private key material in the rootfs, the artifacts, the bundle or any log.
    for key in ["ca.key", "rauc-release.key", "secureboot.key"] {
        let pem = std::fs::read_to_string(b.project.join("keys").join(key)).unwrap();
        let line = pem
            .lines()
            .find(|l| !l.starts_with("-----") && l.len() > 20)
            .unwrap();
        let grep = host_try(
            "grep",
            &[
                &"-r",
                &"-l",
                &"-F",
                &"-a",
                &"--",
                &line,
                &b.project.join("build/rootfs"),
                &b.output,
            ],
        );
        assert_eq!(grep.stdout(), "", "{key} material found");
    }
}

#[test]
#[ignore = "needs a real built rootfs (minutes)"]
fn sysext_images_merge_onto_the_rootfs_and_a_wrong_id_is_refused() {
    let b = built_alone();
    std::fs::write(
        b.project.join("sysext/wrongid.conf"),
        "SYSEXT_VERSION=1\nID=fedora\nVERSION_ID=40\nFILES=sysext/emulators\n",
    )
    .unwrap();
    std::fs::write(
        b.project.join("sysext/bogus.conf"),
        "SYSEXT_VERSION=1\nPACKAGES=(no-such-package-loisto)\n",
    )
    .unwrap();
    b.run(&["sysext", "emulators", "gpu-mesa", "wrongid"]).ok();
    for name in ["emulators", "gpu-mesa", "wrongid"] {
        assert!(
            b.output.join(format!("sysext/{name}.raw")).is_file(),
            "{name}.raw"
        );
    }
    b.run(&["verify"]).ok();
    let bogus = b.run(&["sysext", "bogus"]);
    bogus.fails_with(1, "sysext bogus failed");
    assert!(
        bogus
            .stderr()
            .contains("package 'no-such-package-loisto' is not in the base image's apt sources")
    );
    assert!(!b.output.join("sysext/bogus.raw").exists());

    let rootfs = b.project.join("build/rootfs");
    let merge = |names: &[&str], check: &str| -> Run {
        let copies: Vec<String> = names
            .iter()
            .map(|n| format!("cp {}/sysext/{n}.raw \"$R/run/extensions/\"", b.output.display()))
            .collect();
        // systemd-sysext mounts from a namespace of its own: the rootfs must be a shared mount
        // (a new peer group, private to this namespace) for the result to show up here.
        let script = format!(
            "set -e; R={root}; mount --bind /run /run; mount --bind \"$R\" \"$R\"; mount --make-rshared \"$R\"; \
             mount -t tmpfs tmpfs \"$R/run\"; mkdir \"$R/run/extensions\"; {copies}; \
             systemd-sysext merge --root=\"$R\" 2>&1; {check}",
            root = rootfs.display(),
            copies = copies.join("; ")
        );
        Run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash", "-c", &script])
            .output()
            .unwrap())
    };
    let ok = merge(
        &["emulators", "gpu-mesa"],
        "chroot \"$R\" /usr/bin/loisto-emulators; ls \"$R\"/usr/lib/x86_64-linux-gnu/libdrm_amdgpu.so.1",
    );
    ok.ok();
    assert!(ok.stdout().contains("loisto emulator pack 1"), "{}", ok.stdout());
    let refused = merge(&["wrongid"], "test ! -e \"$R/usr/bin/loisto-emulators\"");
    refused.ok();
    assert!(
        !refused.stdout().contains("Merged extensions"),
        "{}",
        refused.stdout()
    );
    assert!(!rootfs.join("usr/bin/loisto-emulators").exists());
    assert_eq!(mounted_below(&rootfs), Vec::<String>::new());
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn an_exported_rootfs_rebuilds_with_bootstrap_rootfs_and_boots() {
    let b = built_alone();
    let tar = b.work.join("exported-rootfs.tar");
    let rootfs = b.project.join("build/rootfs");
    host(
        "tar",
        &[
            &"--create",
            &"--xattrs",
            &"--acls",
            &"--numeric-owner",
            &"--file",
            &tar,
            &"--directory",
            &rootfs,
            &".",
        ],
    );
    let other = RepoProject::at(&b.work.join("from-rootfs"));
    let tar_set = format!("ROOTFS_TAR={}", tar.display());
    let r = other.run(&["--set", "BOOTSTRAP=rootfs", "--set", &tar_set, "build"]);
    r.ok();
    let log = std::fs::read_to_string(other.output.join("logs/00-bootstrap.log")).unwrap();
    assert!(
        log.contains("imported a debian tree") && !log.contains("mmdebstrap"),
        "{log}"
    );

    other
        .run(&["vm", "--headless", "--expect", HEALTH, "--timeout", "180"])
        .ok();
}

/// The cache end to end: an overlay change restores the expensive phases and still equals a
/// clean build byte for byte; a PACKAGES change reruns package install and initrd; a
/// corrupted snapshot is detected and not used.
#[test]
#[ignore = "several real builds (minutes)"]
fn rebuilds_restore_what_did_not_change_and_equal_a_clean_build() {
    let b = built_alone();
    let extra = b.project.join("overlay/etc/loisto-note");
    std::fs::write(&extra, format!("changed at {:?}\n", std::time::SystemTime::now())).unwrap();
    let _cleanup = Cleanup(extra.clone());
    // The default image is unsigned: Authenticode signatures carry their signing time, so a
    // signed UKI (after the keys test) can never be byte-identical.
    let keys = b.project.join("keys");
    let _keys_back = keys.exists().then(|| {
        std::fs::rename(&keys, b.project.join("keys.aside")).unwrap();
        MoveBack(b.project.join("keys.aside"), keys.clone())
    });

    let plan = b.run(&["plan", "--explain"]);
    let text = plan.ok().stdout();
    for cached in [
        "00-bootstrap: restored",
        "10-packages: restored",
        "15-initrd: restored",
        "18-strip: restored",
    ] {
        assert!(text.contains(cached), "{text}");
    }
    assert!(text.contains("20-overlay: run (not cached"), "{text}");

    // Whatever other tests built before, after this build the rootfs stamp is this snapshot's.
    b.run(&["build"]).ok();
    std::fs::write(&extra, "changed once more\n").unwrap();

    // The cached rebuild, then a clean uncached one, compared artifact by artifact. The cached
    // one undoes only what overlay and configure changed (resync), and must still be identical.
    let r = b.run(&["build", "--check-reproducible"]);
    r.ok();
    let err = r.stderr();
    assert!(
        err.contains("restored [1/10] 00-bootstrap") && err.contains("restored [4/10] 18-strip"),
        "{err}"
    );
    assert!(err.contains("rootfs resynced: "), "{err}");
    assert!(
        !err.contains("==> [1/10] 00-bootstrap"),
        "bootstrap ran again:\n{err}"
    );
    let log = std::fs::read_to_string(b.output.join("logs/15-initrd.log")).unwrap();
    assert!(log.contains("restored from snapshot"), "{log}");
    let log = std::fs::read_to_string(b.output.join("logs/18-strip.log")).unwrap();
    assert!(log.contains("resynced"), "{log}");
    // Sealing took the unchanged blocks from the last image and compressed only a few.
    let log = std::fs::read_to_string(b.output.join("logs/50-verity.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with("block cache: "))
        .unwrap_or_else(|| panic!("{log}"));
    let counts: Vec<usize> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert!(counts[0] > 1000 && counts[1] <= 10, "{line}");
    // The second build compressed everything itself, so "identical" covers the block cache.
    let log = b.project.join("build/reproducible/output/logs/50-verity.log");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("block cache: not used"), "{log}");
    let report = r.stdout();
    assert!(
        report.contains("all ") && report.contains("artifacts are identical"),
        "{report}"
    );
    assert!(
        report.contains("loisto_0.1.0.img") && !report.contains("DIFFERS"),
        "{report}"
    );

    // A PACKAGES change reruns package install and the initrd, not the bootstrap.
    let plan = b
        .run(&["--set", "PACKAGES=hello", "plan", "--explain"])
        .ok()
        .stdout();
    assert!(plan.contains("00-bootstrap: restored"), "{plan}");
    assert!(
        plan.contains("10-packages: run (PACKAGES changed: +hello)"),
        "{plan}"
    );
    assert!(
        plan.contains("15-initrd: run (an earlier phase changed)"),
        "{plan}"
    );
    let r = b.run(&["--set", "PACKAGES=hello", "build"]);
    r.ok();
    let log = std::fs::read_to_string(b.output.join("logs/10-packages.log")).unwrap();
    assert!(!log.contains("restored") && log.contains("hello"), "{log}");
    assert!(b.project.join("build/rootfs/usr/bin/hello").is_file());

    // A corrupted snapshot is reported, removed and not used: the build falls back to the
    // one before it and runs the phase instead.
    let snapshots = b.project.join("cache/snapshots");
    let strip = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("18-strip-"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::write(&extra, "changed again\n").unwrap();
    let tarball = strip.join("rootfs.tar.zst");
    flip_byte(&tarball, std::fs::metadata(&tarball).unwrap().len() / 2);
    let plan = b.run(&["--set", "PACKAGES=hello", "plan", "--explain"]);
    assert!(plan.ok().stderr().contains("is corrupted"), "{}", plan.stderr());
    let r = b.run(&["--set", "PACKAGES=hello", "build"]);
    r.ok();
    assert!(
        r.stderr().contains("is corrupted") && r.stderr().contains("removed it, not used"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("restored [3/10] 15-initrd") && r.stderr().contains("==> [4/10] 18-strip"),
        "the build did not fall back to the snapshot before the corrupted one:\n{}",
        r.stderr()
    );
    assert!(!r.stderr().contains("==> [1/10] 00-bootstrap"));

    // Nothing changed since: the build says so and runs nothing.
    let r = b.run(&["--set", "PACKAGES=hello", "build"]);
    assert!(r.ok().stderr().contains("up to date"), "{}", r.stderr());
    assert!(!r.stderr().contains("==>"), "{}", r.stderr());
}

struct Cleanup(PathBuf);

struct MoveBack(PathBuf, PathBuf);

impl Drop for MoveBack {
    fn drop(&mut self) {
        let _ = std::fs::rename(&self.0, &self.1);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Nothing of the build host in the sealed OS image: its nameservers, hostname, machine-id
/// or mmdebstrap's apt options. Read with unsquashfs, not through our own writer.
#[test]
#[ignore = "needs a real build (minutes)"]
fn the_os_image_carries_nothing_of_the_build_host() {
    let b = built_alone();
    let tree = b.scratch("sealed-tree");
    let root = b.output.join("loisto_0.1.0.root.squashfs");
    host("unsquashfs", &[&"-q", &"-n", &"-d", &tree, &root, &"etc"]);
    let link = std::fs::read_link(tree.join("etc/resolv.conf")).expect("etc/resolv.conf is a link into /run");
    assert!(link.to_string_lossy().contains("run/"), "{link:?}");
    assert!(!tree.join("etc/apt/apt.conf.d/99mmdebstrap").exists());

    let mut host_values: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(|v| v.trim().to_string())
        .collect();
    for f in ["/etc/hostname", "/etc/machine-id"] {
        if let Ok(v) = std::fs::read_to_string(f) {
            host_values.push(v.trim().to_string());
        }
    }
    host_values.retain(|v| v.len() >= 4 && v != "localhost" && v != "loisto");
    for v in &host_values {
        let grep = host_try("grep", &[&"-r", &"-l", &"-F", &"-w", &"--", v, &tree.join("etc")]);
        assert_eq!(grep.stdout(), "", "the build host's {v:?} is in these files");
    }
    std::fs::remove_dir_all(&tree).unwrap();
}
