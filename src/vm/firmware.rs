//! Finding OVMF (UEFI firmware for QEMU) where each distribution installs it.

use crate::error::UsageError;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// (code, vars template) pairs, most specific first: Debian/Ubuntu, Arch, Fedora, Homebrew.
/// Debian's 2 MB build before its 4 MB one: under emulation it reaches the kernel ~0.6 s
/// sooner (less firmware to unpack and start), and its 128 KiB of variables hold the boot
/// entries. The Secure Boot builds below stay at 4 MB (room for the enrolled keys).
const CANDIDATES: &[(&str, &str)] = &[
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.fd",
        "/usr/share/edk2/x64/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2-ovmf/x64/OVMF_CODE.fd",
        "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/opt/homebrew/share/qemu/edk2-x86_64-code.fd",
        "/opt/homebrew/share/qemu/edk2-i386-vars.fd",
    ),
    (
        "/usr/local/share/qemu/edk2-x86_64-code.fd",
        "/usr/local/share/qemu/edk2-i386-vars.fd",
    ),
];

/// Builds that enforce Secure Boot (they need SMM, so the variables cannot be written around
/// the firmware); the vars templates have no keys: `vm --secure-boot` enrolls the project's.
const SECURE_CANDIDATES: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars: PathBuf,
    /// A build that enforces Secure Boot once keys are enrolled.
    pub secure: bool,
}

impl Firmware {
    /// QEMU's two flash drives: the read-only code and a writable copy of the variables.
    pub fn qemu_args(&self, vars_copy: &Path) -> Vec<String> {
        let mut args = Vec::new();
        if self.secure {
            // Only code running in SMM may write the variable store: the guest cannot enroll
            // its own keys or switch Secure Boot off.
            args.extend([
                "-global".into(),
                "driver=cfi.pflash01,property=secure,value=on".into(),
            ]);
        }
        args.extend([
            "-drive".into(),
            format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                self.code.display()
            ),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display()),
        ]);
        args
    }

    /// The -machine value: the Secure Boot builds need System Management Mode.
    pub fn machine(&self) -> &'static str {
        if self.secure { "q35,smm=on" } else { "q35" }
    }
}

/// `explicit` (from --firmware) wins; its vars file is looked for beside it. `secure`: a
/// build that enforces Secure Boot.
pub fn find(explicit: Option<&Path>, secure: bool) -> Result<Firmware> {
    let table = if secure { SECURE_CANDIDATES } else { CANDIDATES };
    if let Some(code) = explicit {
        if !code.is_file() {
            return Err(UsageError::new(format!("--firmware {}: no such file", code.display())).into());
        }
        let vars = table
            .iter()
            .find(|(c, _)| Path::new(c) == code)
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| sibling_vars(code))
            .ok_or_else(|| UsageError::new(format!("no OVMF vars file next to {}", code.display())))?;
        return Ok(Firmware {
            code: code.to_path_buf(),
            vars,
            secure,
        });
    }
    find_in(
        table.iter().map(|(c, v)| (PathBuf::from(c), PathBuf::from(v))),
        secure,
    )
}

fn find_in(candidates: impl Iterator<Item = (PathBuf, PathBuf)>, secure: bool) -> Result<Firmware> {
    for (code, vars) in candidates {
        if code.is_file() && vars.is_file() {
            return Ok(Firmware { code, vars, secure });
        }
    }
    if secure {
        return Err(anyhow::anyhow!(
            "no OVMF build that enforces Secure Boot found (OVMF_CODE*.secboot.fd); install it (Debian/Ubuntu: \
             apt install ovmf; Arch: pacman -S edk2-ovmf; Fedora: dnf install edk2-ovmf) or pass --firmware PATH"
        ));
    }
    Err(anyhow::anyhow!(
        "no OVMF UEFI firmware found; install it (Debian/Ubuntu: apt install ovmf; Arch: pacman -S edk2-ovmf; \
         Fedora: dnf install edk2-ovmf; macOS: brew install qemu) or pass --firmware PATH"
    ))
}

fn sibling_vars(code: &Path) -> Option<PathBuf> {
    let name = code.file_name()?.to_str()?;
    let vars = name.replace("CODE", "VARS").replace("code", "vars");
    let p = code.with_file_name(vars);
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_complete_pair_wins() {
        let d = tempfile::tempdir().unwrap();
        let f = |n: &str| {
            let p = d.path().join(n);
            std::fs::write(&p, "").unwrap();
            p
        };
        let (c1, v2, c2) = (f("a_CODE.fd"), f("b_VARS.fd"), f("b_CODE.fd"));
        let fw = find_in(
            [(c1, d.path().join("a_VARS.fd")), (c2.clone(), v2.clone())].into_iter(),
            false,
        )
        .unwrap();
        assert_eq!(
            fw,
            Firmware {
                code: c2,
                vars: v2,
                secure: false
            }
        );
        assert!(find_in(std::iter::empty(), true).is_err());
    }

    #[test]
    fn vars_are_found_beside_an_explicit_code_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("OVMF_CODE.fd"), "").unwrap();
        std::fs::write(d.path().join("OVMF_VARS.fd"), "").unwrap();
        let fw = find(Some(&d.path().join("OVMF_CODE.fd")), false).unwrap();
        assert_eq!(fw.vars, d.path().join("OVMF_VARS.fd"));
    }
}
