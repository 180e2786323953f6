//! `vm --direct-kernel`: QEMU starts the UKI's kernel itself (`-kernel`, `-initrd`,
//! `-append` from the UKI's own sections), skipping the UEFI firmware and its seconds of
//! start-up. For the development loop only: no firmware means no Secure Boot, no UEFI
//! variables, no boot entries and no A/B switching, which is not how a device boots.

use crate::proc;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub struct Kernel {
    linux: PathBuf,
    initrd: PathBuf,
    cmdline: String,
}

impl Kernel {
    /// Takes the sections out of `uki` into `work` with objcopy.
    pub fn extract(uki: &Path, work: &Path) -> Result<Kernel> {
        let section = |name: &str| -> Result<PathBuf> {
            let out = work.join(format!("uki{name}"));
            proc::output(
                "objcopy",
                [
                    "-O".into(),
                    "binary".into(),
                    format!("--only-section={name}").into(),
                    uki.as_os_str().to_owned(),
                    out.as_os_str().to_owned(),
                ],
            )
            .with_context(|| format!("taking the {name} section out of {}", uki.display()))?;
            Ok(out)
        };
        let (linux, initrd, cmdline) = (section(".linux")?, section(".initrd")?, section(".cmdline")?);
        let cmdline = std::fs::read_to_string(&cmdline)
            .with_context(|| format!("reading {}", cmdline.display()))?
            .trim_end_matches(['\0', '\n'])
            .to_string();
        if std::fs::metadata(&linux).map(|m| m.len()).unwrap_or(0) == 0 {
            anyhow::bail!("{} has no .linux section: is it a UKI?", uki.display());
        }
        Ok(Kernel {
            linux,
            initrd,
            cmdline,
        })
    }

    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-kernel".into(),
            self.linux.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            self.cmdline.clone(),
        ]
    }
}

/// Slot A's UKI beside a disk image: `NAME.img` -> `NAME.slot-a.efi` (as `build` names them).
pub fn uki_beside(image: &Path) -> PathBuf {
    let s = image.to_string_lossy();
    PathBuf::from(format!("{}.slot-a.efi", s.strip_suffix(".img").unwrap_or(&s)))
}
