//! The update round trip on real firmware: a device flashed with v1 installs a signed bundle
//! from a USB stick into its other slot, boots it and marks it good; a bad update rolls back by
//! itself; a bundle signed with another key is refused; /data survives all of it. QEMU (TCG)
//! with OVMF, one machine state (disk and UEFI variables) kept across every step.
//! Slow (about 15 minutes), so ignored by a plain `cargo test`.

mod common;

use common::{RepoProject, Run};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

struct Rig {
    p: RepoProject,
    /// The device: its disk and UEFI variables, kept across every power-on.
    state: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let p = RepoProject::fresh("update");
        Rig {
            state: p.work.join("machine"),
            p,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.p.run(args)
    }

    fn path(&self, name: &str) -> String {
        self.p.work.join(name).to_string_lossy().into_owned()
    }

    /// Builds IMAGE_VERSION `version` with `extra` settings; returns how long it took.
    fn build(&self, version: &str, extra: &[&str]) -> f64 {
        let started = Instant::now();
        let set = format!("IMAGE_VERSION={version}");
        let mut args = vec!["--set", set.as_str()];
        args.extend_from_slice(extra);
        args.push("build");
        self.run(&args).ok();
        started.elapsed().as_secs_f64()
    }

    /// Powers the machine on with `extra` arguments until the console matches `expect`;
    /// returns the serial console of the whole run and how long it took.
    fn boot(&self, extra: &[&str], expect: &str, reboots: u32) -> (String, f64) {
        let started = Instant::now();
        let state = self.state.to_string_lossy().into_owned();
        let reboots = reboots.to_string();
        let mut args = vec!["vm", "--state", &state, "--expect", expect, "--timeout", "900"];
        args.extend_from_slice(&["--reboots", &reboots]);
        args.extend_from_slice(extra);
        let r = self.run(&args);
        let serial = std::fs::read_to_string(self.state.join("serial.log")).unwrap_or_default();
        assert_eq!(
            r.code(),
            0,
            "{}\nconsole lines of the device:\n{}",
            r.stderr(),
            loisto_lines(&serial)
        );
        (serial, started.elapsed().as_secs_f64())
    }

    /// The firmware's boot entries and BootOrder/BootNext (name -> hex data), read from the
    /// machine's UEFI variable store by virt-fw-vars, not by the guest.
    fn boot_variables(&self) -> BTreeMap<String, String> {
        let json = self.p.work.join("vars.json");
        common::host(
            "virt-fw-vars",
            &[&"--input", &self.state.join("vars.fd"), &"--output-json", &json],
        );
        let dump: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        dump["variables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["name"].as_str().unwrap().starts_with("Boot"))
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["data"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// sha256 of every partition of the machine's disk, by GPT name (sfdisk reads the table).
    fn partition_hashes(&self) -> Vec<(String, String)> {
        partition_hashes(&self.state.join("disk.img"))
    }
}

/// sha256 of every partition of `disk`, by GPT name (sfdisk reads the table, dd and
/// sha256sum the bytes).
fn partition_hashes(disk: &std::path::Path) -> Vec<(String, String)> {
    let table: serde_json::Value =
        serde_json::from_str(&common::host("sfdisk", &[&"--json", &disk]).stdout()).unwrap();
    table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("?").to_string();
            let script = format!(
                "dd if={} bs=512 skip={} count={} status=none | sha256sum",
                disk.display(),
                p["start"],
                p["size"]
            );
            let h = Command::new("sh").args(["-c", &script]).output().unwrap();
            (name, String::from_utf8_lossy(&h.stdout)[..64].to_string())
        })
        .collect()
}

/// The serial log as lines on a terminal: escape sequences gone, and what a carriage return
/// overwrote gone too (systemd erases its status line that way before the next line).
fn console_lines(serial: &str) -> Vec<String> {
    let ansi = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    serial
        .lines()
        .map(|l| {
            let l = ansi.replace_all(l.trim_end_matches('\r'), "");
            l.rsplit('\r')
                .find(|p| !p.trim().is_empty())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

fn loisto_lines(serial: &str) -> String {
    console_lines(serial)
        .into_iter()
        .filter(|l| l.starts_with("LOISTO-") || l.starts_with("--- loisto-image"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
fn has_line(serial: &str, re: &str) -> String {
    let re = regex::Regex::new(re).unwrap();
    console_lines(serial)
        .into_iter()
        .find(|l| re.is_match(l))
        .unwrap_or_else(|| panic!("no console line matches /{re}/:\n{}", loisto_lines(serial)))
}

/// BootOrder as entry numbers (the variable is an array of little-endian u16).
fn boot_order(vars: &BTreeMap<String, String>) -> Vec<u16> {
    let hex = vars.get("BootOrder").map(String::as_str).unwrap_or("");
    (0..hex.len() / 4)
        .map(|i| {
            let b = |j: usize| u16::from_str_radix(&hex[i * 4 + j..i * 4 + j + 2], 16).unwrap();
            b(0) | (b(2) << 8)
        })
        .collect()
}

#[test]
#[ignore = "builds three images and boots them about eight times under TCG (15 minutes)"]
fn a_device_updates_from_usb_rolls_back_a_bad_update_and_keeps_its_data() {
    let rig = Rig::new();
    rig.run(&["keys"]).ok();

    // v1 is what the factory flashes; v2 a good update; v3 installs fine but its boots are not
    // healthy (a unit the appliance needs does not exist), so its trial boot must roll back.
    let t_v1 = rig.build("0.1.0", &[]);
    let v1 = rig.path("v1.img");
    std::fs::copy(rig.p.project.join("output/loisto_0.1.0.img"), &v1).unwrap();
    let v1_roothash = std::fs::read_to_string(rig.p.project.join("output/loisto_0.1.0.roothash")).unwrap();
    let t_v2 = rig.build("0.2.0", &[]);
    let v2 = rig.path("v2.raucb");
    let started = Instant::now();
    rig.run(&["--set", "IMAGE_VERSION=0.2.0", "bundle", "--output", &v2])
        .ok();
    let t_bundle = started.elapsed().as_secs_f64();
    let t_v3 = rig.build(
        "0.3.0",
        &["--set", "HEALTH_UNITS=data.mount loisto-appliance.service"],
    );
    let v3 = rig.path("v3.raucb");
    rig.run(&["--set", "IMAGE_VERSION=0.3.0", "bundle", "--output", &v3])
        .ok();

    // The same v3, signed by a CA the device does not trust.
    let (key, cert) = common::foreign_signing_pair(&rig.p.work);
    let (key, cert) = (key.to_string_lossy(), cert.to_string_lossy());
    let foreign = rig.path("foreign.raucb");
    rig.run(&[
        "--set",
        "IMAGE_VERSION=0.3.0",
        "bundle",
        "--output",
        &foreign,
        "--cert",
        &cert,
        "--key",
        &key,
        "--keyring",
        &cert,
    ])
    .ok();
    let bundle_mib = std::fs::metadata(&v2).unwrap().len() as f64 / 1048576.0;

    // First power-on of a flashed disk: boot entries and /data are created, slot A is good.
    let (serial, t_first) = rig.boot(
        &[&v1, "--disk-size", "3G"],
        r"^LOISTO-HEALTH id=loisto version=0\.1\.0 slot=A ",
        0,
    );
    has_line(
        &serial,
        r"^LOISTO-ENTRIES entries A=Boot1A0A:created B=Boot1A0B:created booted=A ",
    );
    let data_id = has_line(&serial, r"^LOISTO-DATA created id=[0-9a-f]{8} ")
        .split("id=")
        .nth(1)
        .unwrap()[..8]
        .to_string();
    has_line(&serial, r"^LOISTO-SLOTS A=good:\S+ B=bad:\S+ booted=A$");
    let vars_first = rig.boot_variables();
    let order = boot_order(&vars_first);
    assert!(
        order.first() == Some(&0x1A0A) && !order.contains(&0x1A0B) && vars_first.contains_key("Boot1A0B"),
        "A first in BootOrder, B out of it but present: {vars_first:?}"
    );
    let parts_first = rig.partition_hashes();
    assert!(
        parts_first.iter().any(|(name, _)| name == "data"),
        "first boot made no data partition: {parts_first:?}"
    );

    // Second power-on, with a stick holding a bundle signed by someone else: refused, and
    // nothing changes: same boot entries and BootOrder, same partitions, same bytes in every
    // partition but the mounted /var and /data.
    let (serial, t_second) = rig.boot(
        &["--usb", &foreign],
        r"^LOISTO-UPDATE refused foreign\.raucb: ",
        0,
    );
    has_line(
        &serial,
        r"^LOISTO-ENTRIES entries A=Boot1A0A:unchanged B=Boot1A0B:unchanged booted=A ",
    );
    has_line(&serial, &format!(r"^LOISTO-DATA kept id={data_id} "));
    assert!(
        !serial.contains("LOISTO-UPDATE installing"),
        "{}",
        loisto_lines(&serial)
    );
    // The firmware adds entries of its own for a plugged-in stick (and renumbers the disk's,
    // whose PCI slot the USB controller takes); what the device wrote must be untouched: its
    // two entries and their place in BootOrder.
    let ours = |v: &BTreeMap<String, String>| {
        let order = boot_order(v);
        let mine: Vec<u16> = order
            .iter()
            .copied()
            .filter(|n| *n == 0x1A0A || *n == 0x1A0B)
            .collect();
        (
            v.get("Boot1A0A").cloned(),
            v.get("Boot1A0B").cloned(),
            mine,
            order.first().copied(),
        )
    };
    assert_eq!(
        ours(&rig.boot_variables()),
        ours(&vars_first),
        "the second boot changed the boot entries or their order"
    );
    let parts_second = rig.partition_hashes();
    let names = |p: &[(String, String)]| p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&parts_second),
        names(&parts_first),
        "the partition table changed"
    );
    for ((name, before), (_, after)) in parts_first.iter().zip(&parts_second) {
        if name != "var" && name != "data" {
            assert_eq!(before, after, "partition {name} was written");
        }
    }

    // A stick with v2: installed into B, trial boot of B, healthy, marked good; /data kept.
    let (serial, t_v2_round) = rig.boot(
        &["--usb", &v2],
        &format!(r"^LOISTO-HEALTH id=loisto version=0\.2\.0 slot=B data={data_id} update=0\.2\.0:good "),
        2,
    );
    let installed = has_line(
        &serial,
        r"^LOISTO-UPDATE installed version 0\.2\.0 into slot B in \d+ s",
    );
    has_line(
        &serial,
        r"^LOISTO-UPDATE version 0\.2\.0 on slot B is healthy: marked good$",
    );
    has_line(&serial, r"^LOISTO-SLOTS A=good:\S+ B=good:0\.2\.0 booted=B$");
    has_line(&serial, &format!(r"^LOISTO-DATA kept id={data_id} "));
    assert_eq!(
        boot_order(&rig.boot_variables())[..2],
        [0x1A0B, 0x1A0A],
        "B good and first, A good"
    );

    // A stick with v3: installed into A, its trial boot is not healthy and reboots, and the
    // firmware comes back on B by itself. With the stick still in, v3 is not installed again.
    let (serial, t_v3_round) = rig.boot(
        &["--usb", &v3],
        r"^LOISTO-UPDATE skipping v3\.raucb: 0\.3\.0 failed its trial boot here before$",
        3,
    );
    has_line(&serial, r"^LOISTO-UPDATE installed version 0\.3\.0 into slot A ");
    has_line(
        &serial,
        r"^LOISTO-UNHEALTHY id=loisto version=0\.3\.0 slot=A problems=loisto-appliance\.service:\S+ ",
    );
    has_line(
        &serial,
        r"^LOISTO-UPDATE rolled back from slot A: version 0\.3\.0 never became healthy; running 0\.2\.0 on slot B$",
    );
    has_line(
        &serial,
        &format!(
            r"^LOISTO-HEALTH id=loisto version=0\.2\.0 slot=B data={data_id} update=0\.3\.0:rolled-back "
        ),
    );
    has_line(&serial, r"^LOISTO-SLOTS A=bad:0\.3\.0 B=good:0\.2\.0 booted=B$");
    let vars = rig.boot_variables();
    let order = boot_order(&vars);
    assert!(
        order.first() == Some(&0x1A0B) && !order.contains(&0x1A0A),
        "B first, A out of BootOrder (bad): {order:x?}"
    );
    assert!(!vars.contains_key("BootNext"), "{vars:?}");

    // The development loop on this machine: `vm --refresh` writes v1's slot A into the disk
    // in place of v3's and puts A first again (it is out of BootOrder, and B boots); /data,
    // slot B and the other entries stay. The kernel's own command line shows v1's root hash.
    let started = Instant::now();
    let state = rig.state.to_string_lossy().into_owned();
    let r = rig.run(&[
        "vm",
        "--state",
        &state,
        "--refresh",
        &v1,
        "--expect",
        &format!(r"^LOISTO-HEALTH id=loisto version=0\.1\.0 slot=A data={data_id} "),
        "--timeout",
        "900",
    ]);
    let t_refresh = started.elapsed().as_secs_f64();
    let serial = std::fs::read_to_string(rig.state.join("serial.log")).unwrap_or_default();
    assert_eq!(r.code(), 0, "{}\n{}", r.stderr(), loisto_lines(&serial));
    let line = r
        .stderr()
        .lines()
        .find(|l| l.starts_with("refresh: "))
        .unwrap_or_else(|| panic!("no refresh line:\n{}", r.stderr()))
        .to_string();
    assert!(
        line.contains("BootOrder 1A0B") && line.contains("-> 1A0A,1A0B"),
        "{line}"
    );
    assert!(
        serial.contains(&format!("Command line: roothash={} ", v1_roothash.trim())),
        "the refreshed slot A did not boot v1's root:\n{}",
        loisto_lines(&serial)
    );
    has_line(&serial, &format!(r"^LOISTO-DATA kept id={data_id} "));
    assert_eq!(boot_order(&rig.boot_variables())[..2], [0x1A0A, 0x1A0B]);
    // Slot A now holds v1's bytes, partition for partition; the table is the machine's.
    let parts_refreshed = rig.partition_hashes();
    assert_eq!(names(&parts_refreshed), names(&parts_first));
    let v1_parts = partition_hashes(std::path::Path::new(&v1));
    for name in ["boot-a", "root-a", "root-a-verity"] {
        let of = |p: &[(String, String)]| p.iter().find(|(n, _)| n == name).map(|(_, h)| h.clone());
        assert_eq!(of(&parts_refreshed), of(&v1_parts), "{name} is not v1's");
    }

    eprintln!(
        "figures (TCG): build v1 {t_v1:.0} s, v2 {t_v2:.0} s, v3 {t_v3:.0} s; bundle {bundle_mib:.1} MiB in \
         {t_bundle:.1} s; first boot {t_first:.0} s; second boot with refused stick {t_second:.0} s; \
         v2 install + reboot + trial {t_v2_round:.0} s ({installed}); v3 install + failed trial + rollback \
         {t_v3_round:.0} s; vm --refresh with v1 + boot {t_refresh:.0} s ({line})"
    );
}
