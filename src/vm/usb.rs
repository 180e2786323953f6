//! `vm --usb FILE`: a USB mass-storage stick holding FILE (a FAT file system made offline with
//! mtools, the way a person copies an update bundle onto a stick).

use crate::error::UsageError;
use crate::proc;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// FAT32 cannot hold a file of 4 GiB or more.
const FAT_FILE_MAX: u64 = (4 << 30) - 1;

/// Makes `work/usbN.img` holding `file` at its top level.
pub fn stick(file: &Path, work: &Path, n: usize) -> Result<PathBuf> {
    let meta =
        std::fs::metadata(file).map_err(|e| UsageError::new(format!("--usb {}: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(UsageError::new(format!("--usb {}: not a file", file.display())).into());
    }
    if meta.len() > FAT_FILE_MAX {
        return Err(UsageError::new(format!(
            "--usb {}: a FAT stick cannot hold a file of 4 GiB or more",
            file.display()
        ))
        .into());
    }
    let name = file
        .file_name()
        .context("--usb FILE has no file name")?
        .to_string_lossy()
        .into_owned();
    let img = work.join(format!("usb{n}.img"));
    // The file, the FAT tables and some slack; 64 MiB at least so mkfs can pick FAT32.
    let kib = (meta.len() / 1024 + 16 * 1024).max(64 * 1024);
    proc::output(
        "mkfs.vfat",
        [
            "-n".to_string(),
            "LOISTO-USB".into(),
            "-C".into(),
            img.to_string_lossy().into_owned(),
            kib.to_string(),
        ],
    )
    .context("making the USB stick's file system")?;
    proc::output(
        "mcopy",
        [
            "-i".to_string(),
            img.to_string_lossy().into_owned(),
            file.to_string_lossy().into_owned(),
            format!("::{name}"),
        ],
    )
    .with_context(|| format!("copying {} onto the USB stick", file.display()))?;
    Ok(img)
}

/// QEMU arguments for the sticks: one xHCI controller, one usb-storage device each. No
/// bootindex: with one, OVMF would rewrite BootOrder, which the A/B boot entries live in.
pub fn qemu_args(sticks: &[PathBuf]) -> Vec<String> {
    if sticks.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["-device".to_string(), "qemu-xhci,id=xhci".to_string()];
    for (i, img) in sticks.iter().enumerate() {
        args.push("-drive".into());
        args.push(format!("if=none,id=stick{i},format=raw,file={}", img.display()));
        args.push("-device".into());
        args.push(format!("usb-storage,bus=xhci.0,drive=stick{i},removable=on"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stick_is_a_usb_disk_and_nothing_asks_for_a_boot_order() {
        assert!(qemu_args(&[]).is_empty());
        let args = qemu_args(&[PathBuf::from("/w/usb0.img"), PathBuf::from("/w/usb1.img")]);
        assert_eq!(args.iter().filter(|a| a.starts_with("usb-storage,")).count(), 2);
        assert!(args.contains(&"if=none,id=stick1,format=raw,file=/w/usb1.img".to_string()));
        assert!(!args.iter().any(|a| a.contains("bootindex")), "{args:?}");
    }
}
