//! `vm --state DIR --refresh`: the development loop on a kept machine. The last build's slot A
//! (its boot partition, root and verity tree) is written into the machine's disk in place,
//! the way an update writes a slot: the partition table, slot B, /var, /data and the UEFI
//! variables stay. The next power-on is then a later boot of a known machine, not the first
//! boot of a new one (which makes boot entries and costs seconds more under emulation).

use crate::error::UsageError;
use crate::partitions::{self, Part};
use crate::proc;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// What an update writes into slot A, by GPT partition name.
pub const SLOT_A: [&str; 3] = ["boot-a", "root-a", "root-a-verity"];

/// Where each slot A partition is on both disks; they must match, because the machine's
/// other partitions stay where they are.
fn matching(image: &[Part], disk: &[Part], machine: &Path) -> Result<Vec<(Part, Part)>> {
    SLOT_A
        .iter()
        .map(|name| {
            let find = |parts: &[Part]| parts.iter().find(|p| p.name == *name).cloned();
            let (Some(src), Some(dst)) = (find(image), find(disk)) else {
                return Err(UsageError::new(format!(
                    "--refresh: {} or the build has no partition named {name}: remove the directory to \
                     make a new machine from the build",
                    machine.display()
                ))
                .into());
            };
            if src.start != dst.start || src.size != dst.size {
                return Err(UsageError::new(format!(
                    "--refresh: {name} is {} MiB at {} MiB in the build but {} MiB at {} MiB in {} (the \
                     layout changed, e.g. ROOT_SIZE): remove the directory to make a new machine",
                    src.size >> 20,
                    src.start >> 20,
                    dst.size >> 20,
                    dst.start >> 20,
                    machine.display()
                ))
                .into());
            }
            Ok((src, dst))
        })
        .collect()
}

/// Bytes of one partition that differed and were written, and the partition's size.
#[derive(Debug, PartialEq)]
pub struct Written {
    pub name: String,
    pub changed: u64,
    pub size: u64,
}

/// Writes the image's slot A partitions into the machine's disk. Only the 1 MiB blocks that
/// differ are written: an overlay edit changes a few blocks of the root and its hash tree, and
/// the boot partition's UKI (its command line carries the root hash).
pub fn write_slot_a(image: &Path, disk: &Path, machine: &Path) -> Result<Vec<Written>> {
    let pairs = matching(&partitions::list(image)?, &partitions::list(disk)?, machine)?;
    let mut src = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut dst = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let mut out = Vec::new();
    for (s, d) in pairs {
        let changed = copy_changed(&mut src, &mut dst, s.start, d.start, s.size).with_context(|| {
            format!(
                "writing {} of {} into {}",
                s.name,
                image.display(),
                disk.display()
            )
        })?;
        out.push(Written {
            name: s.name,
            changed,
            size: s.size,
        });
    }
    Ok(out)
}

/// Copies `len` bytes from `src` at `from` to `dst` at `to`, writing only the blocks whose
/// bytes differ; returns how many bytes were written.
fn copy_changed(src: &mut File, dst: &mut File, from: u64, to: u64, len: u64) -> Result<u64> {
    const BLOCK: usize = 1 << 20;
    let (mut a, mut b) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    let mut written = 0;
    let mut off = 0;
    while off < len {
        let n = (len - off).min(BLOCK as u64) as usize;
        // A hole on both sides reads as zeros on both: most of a root partition is unused.
        if is_hole(src, from + off, n as u64) && is_hole(dst, to + off, n as u64) {
            off += n as u64;
            continue;
        }
        src.seek(SeekFrom::Start(from + off))?;
        src.read_exact(&mut a[..n])?;
        dst.seek(SeekFrom::Start(to + off))?;
        dst.read_exact(&mut b[..n])?;
        if a[..n] != b[..n] {
            dst.seek(SeekFrom::Start(to + off))?;
            dst.write_all(&a[..n])?;
            written += n as u64;
        }
        off += n as u64;
    }
    Ok(written)
}

/// Whether `[at, at + len)` of `f` holds no data (a hole in a sparse file).
fn is_hole(f: &File, at: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SEEK_DATA: where the next data is at or after `at`; ENXIO when there is none.
    // Any other failure: not known to be a hole, so the block is read and compared.
    let next = unsafe { libc::lseek(f.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
    if next < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    next as u64 >= at + len
}

const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Makes slot A's boot entry the one the firmware starts next: first in BootOrder, and no
/// BootNext pointing elsewhere (a machine updated into slot B boots B otherwise, and the
/// refreshed slot A only if B fails). The variables are read and written by virt-fw-vars.
/// Returns what was changed, or None when A already boots next or there is no entry yet (the
/// firmware then boots the disk's default path, slot A's UKI).
pub fn boot_slot_a_next(vars: &Path, work: &Path) -> Result<Option<String>> {
    let dump = work.join("vars.json");
    proc::output(
        "virt-fw-vars",
        [
            "--input".as_ref(),
            vars.as_os_str(),
            "--output-json".as_ref(),
            dump.as_os_str(),
        ],
    )
    .with_context(|| {
        format!(
            "reading the UEFI variables in {} (virt-fw-vars; Debian: apt install python3-virt-firmware)",
            vars.display()
        )
    })?;
    let json = std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    let Some(change) = plan_boot_order(&json)? else {
        return Ok(None);
    };
    let set = work.join("bootorder.json");
    let body = serde_json::json!({
        "version": 2,
        "variables": [{"name": "BootOrder", "guid": GLOBAL, "attr": 7, "data": change.data}],
    });
    std::fs::write(&set, body.to_string()).with_context(|| format!("writing {}", set.display()))?;
    let mut args = vec![
        "--inplace".into(),
        vars.as_os_str().to_owned(),
        "--set-json".into(),
        set.into_os_string(),
    ];
    if change.drop_boot_next {
        args.extend(["--delete".into(), "BootNext".into()]);
    }
    proc::output("virt-fw-vars", args)
        .with_context(|| format!("writing the UEFI variables in {}", vars.display()))?;
    Ok(Some(change.what))
}

#[derive(Debug, PartialEq)]
struct OrderChange {
    /// The new BootOrder, as virt-fw-vars' hex.
    data: String,
    drop_boot_next: bool,
    what: String,
}

/// From virt-fw-vars' JSON: the BootOrder that starts with slot A's entry (the Boot#### whose
/// description is "A", RAUC's bootname for the slot), if the current one does not.
fn plan_boot_order(json: &str) -> Result<Option<OrderChange>> {
    let v: serde_json::Value = serde_json::from_str(json).context("virt-fw-vars printed no JSON")?;
    let vars = v["variables"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let get = |name: &str| {
        vars.iter()
            .find(|x| x["name"] == name && x["guid"] == GLOBAL)
            .and_then(|x| x["data"].as_str())
            .and_then(unhex)
    };
    let a = vars.iter().find_map(|x| {
        let name = x["name"].as_str()?;
        let num = u16::from_str_radix(name.strip_prefix("Boot")?, 16).ok()?;
        (name.len() == 8 && description(&unhex(x["data"].as_str()?)?)? == "A").then_some(num)
    });
    let Some(a) = a else { return Ok(None) };
    let order: Vec<u16> = get("BootOrder")
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let next = get("BootNext")
        .map(|d| d.first().copied().unwrap_or(0) as u16 | (d.get(1).copied().unwrap_or(0) as u16) << 8);
    let drop_boot_next = next.is_some_and(|n| n != a);
    if order.first() == Some(&a) && !drop_boot_next {
        return Ok(None);
    }
    let mut new = vec![a];
    new.extend(order.iter().copied().filter(|n| *n != a));
    let data = new
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect();
    let show = |o: &[u16]| o.iter().map(|n| format!("{n:04X}")).collect::<Vec<_>>().join(",");
    let mut what = format!("BootOrder {} -> {}", show(&order), show(&new));
    if let Some(n) = next.filter(|_| drop_boot_next) {
        what.push_str(&format!(", BootNext {n:04X} removed"));
    }
    Ok(Some(OrderChange {
        data,
        drop_boot_next,
        what,
    }))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

/// The description of an EFI_LOAD_OPTION: after the attributes (4 bytes) and the device path
/// length (2), a NUL-terminated UTF-16LE string.
fn description(option: &[u8]) -> Option<String> {
    let units: Vec<u16> = option
        .get(6..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EFI_LOAD_OPTION with description `d` and no device path, in hex.
    fn option(d: &str) -> String {
        let mut b = vec![1, 0, 0, 0, 0, 0];
        b.extend(d.encode_utf16().chain([0]).flat_map(u16::to_le_bytes));
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn dump(order: &str, next: Option<&str>) -> String {
        let mut vars = vec![
            serde_json::json!({"name": "Boot0001", "guid": GLOBAL, "attr": 7, "data": option("UEFI Misc Device")}),
            serde_json::json!({"name": "Boot1A0A", "guid": GLOBAL, "attr": 7, "data": option("A")}),
            serde_json::json!({"name": "Boot1A0B", "guid": GLOBAL, "attr": 7, "data": option("B")}),
            serde_json::json!({"name": "BootOrder", "guid": GLOBAL, "attr": 7, "data": order}),
        ];
        if let Some(n) = next {
            vars.push(serde_json::json!({"name": "BootNext", "guid": GLOBAL, "attr": 7, "data": n}));
        }
        serde_json::json!({"version": 2, "variables": vars}).to_string()
    }

    #[test]
    fn slot_a_goes_first_and_a_boot_next_elsewhere_goes() {
        // A first already: nothing to write.
        assert_eq!(plan_boot_order(&dump("0a1a0b1a0100", None)).unwrap(), None);
        // Updated into B, A marked bad (out of BootOrder): A comes back, first.
        let c = plan_boot_order(&dump("0b1a0100", None)).unwrap().unwrap();
        assert_eq!(c.data, "0a1a0b1a0100");
        assert!(!c.drop_boot_next);
        assert_eq!(c.what, "BootOrder 1A0B,0001 -> 1A0A,1A0B,0001");
        // A trial boot of B pending: BootNext goes too.
        let c = plan_boot_order(&dump("0a1a0100", Some("0b1a"))).unwrap().unwrap();
        assert_eq!(c.data, "0a1a0100");
        assert!(c.drop_boot_next);
        assert!(c.what.ends_with("BootNext 1A0B removed"), "{}", c.what);
        // A machine that never wrote its entries boots the disk's default path: slot A.
        let fresh = serde_json::json!({"version": 2, "variables": [
            {"name": "BootOrder", "guid": GLOBAL, "attr": 7, "data": "0100"}]});
        assert_eq!(plan_boot_order(&fresh.to_string()).unwrap(), None);
    }

    #[test]
    fn only_differing_blocks_are_written() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let mut src = vec![0u8; 3 << 20];
        src[(1 << 20) + 5] = 9;
        std::fs::write(&a, &src).unwrap();
        std::fs::write(&b, vec![0u8; 4 << 20]).unwrap();
        let mut s = File::open(&a).unwrap();
        let mut d = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&b)
            .unwrap();
        // Into the disk 1 MiB further on: one block differs.
        assert_eq!(
            copy_changed(&mut s, &mut d, 0, 1 << 20, 3 << 20).unwrap(),
            1 << 20
        );
        let got = std::fs::read(&b).unwrap();
        assert_eq!(&got[1 << 20..], &src[..]);
        assert_eq!(copy_changed(&mut s, &mut d, 0, 1 << 20, 3 << 20).unwrap(), 0);
        // A hole in the image over data in the disk is written as the zeros it reads as.
        let sparse = t.path().join("sparse");
        File::create(&sparse).unwrap().set_len(3 << 20).unwrap();
        let mut s = File::open(&sparse).unwrap();
        assert_eq!(
            copy_changed(&mut s, &mut d, 0, 1 << 20, 3 << 20).unwrap(),
            1 << 20
        );
        assert!(std::fs::read(&b).unwrap().iter().all(|x| *x == 0));
    }

    #[test]
    fn a_changed_layout_is_refused_with_what_to_do() {
        let p = |name: &str, start, size| Part {
            name: name.into(),
            start,
            size,
        };
        let image = vec![p("boot-a", 1, 2), p("root-a", 3, 4), p("root-a-verity", 7, 1)];
        let mut disk = image.clone();
        assert_eq!(matching(&image, &disk, Path::new("m")).unwrap().len(), 3);
        disk[1].size = 5;
        let e = matching(&image, &disk, Path::new("m")).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(format!("{e}").contains("root-a") && format!("{e}").contains("remove the directory"));
    }
}
