//! `vm --state DIR`: a machine that keeps its disk and its UEFI variables between runs, so
//! boot entries, BootNext and BootOrder carry over the way they do across a power cycle.

use crate::error::UsageError;
use crate::lock::Lock;
use crate::proc;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub struct State {
    /// Held while the machine runs: a second `vm` on the same DIR would write into (or boot)
    /// a disk that a running QEMU uses.
    pub lock: Lock,
    pub disk: PathBuf,
    pub vars: PathBuf,
    pub serial_log: PathBuf,
    /// The disk was made from the image in this run (the machine's first power-on).
    pub fresh: bool,
}

/// Present in a machine made with --secure-boot: its variables hold enrolled keys and need
/// the firmware build that enforces them.
const SECURE_MARK: &str = "secure-boot";

/// Opens the machine in `dir`, making it from `image` when it has no disk yet. `image` is
/// asked for only then: a machine that exists boots what its disk holds now.
pub fn open(
    dir: &Path,
    image: impl FnOnce() -> Result<PathBuf>,
    size: Option<u64>,
    vars_template: &Path,
    secure: bool,
) -> Result<State> {
    if dir.exists() && !dir.is_dir() {
        return Err(UsageError::new(format!("--state {}: not a directory", dir.display())).into());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let state = State {
        lock: Lock::acquire_for("vm", &dir.join("lock"), dir)?,
        disk: dir.join("disk.img"),
        vars: dir.join("vars.fd"),
        serial_log: dir.join("serial.log"),
        fresh: false,
    };
    let fresh = !state.disk.exists();
    let marked = dir.join(SECURE_MARK).exists();
    if !fresh && marked != secure {
        return Err(UsageError::new(format!(
            "the machine in {} was made {} --secure-boot: run it {} the option, or remove the directory \
             to make a new machine",
            dir.display(),
            if marked { "with" } else { "without" },
            if marked { "with" } else { "without" },
        ))
        .into());
    }
    if fresh {
        let image = image()?;
        // Made under a temporary name: an interrupted copy must not pass for a machine later.
        let partial = dir.join("disk.img.partial");
        proc::output(
            "cp",
            ["--sparse=always".as_ref(), image.as_os_str(), partial.as_os_str()],
        )
        .with_context(|| format!("copying {} into the VM state", image.display()))?;
        std::fs::rename(&partial, &state.disk).context("keeping the VM disk")?;
        // New disk, new machine: variables from an older disk would point at other partitions.
        let _ = std::fs::remove_file(&state.vars);
        if secure {
            std::fs::write(dir.join(SECURE_MARK), "made with vm --secure-boot\n")?;
        } else {
            let _ = std::fs::remove_file(dir.join(SECURE_MARK));
        }
    }
    if let Some(want) = size {
        let have = std::fs::metadata(&state.disk)?.len();
        if want < have {
            return Err(UsageError::new(format!(
                "--disk-size is smaller than the disk in {} ({} MiB); disks only grow",
                dir.display(),
                have >> 20
            ))
            .into());
        }
        let f = std::fs::OpenOptions::new().write(true).open(&state.disk)?;
        f.set_len(want)
            .with_context(|| format!("growing {}", state.disk.display()))?;
    }
    if !state.vars.exists() {
        std::fs::copy(vars_template, &state.vars)
            .with_context(|| format!("copying {} to {}", vars_template.display(), state.vars.display()))?;
    }
    // A variable store is laid out for one firmware build's flash: another build (a machine
    // made when vm picked the 4 MB OVMF) would not find its variables, or not start.
    let have = std::fs::metadata(&state.vars)
        .with_context(|| format!("reading {}", state.vars.display()))?
        .len();
    let want = std::fs::metadata(vars_template)
        .with_context(|| format!("reading {}", vars_template.display()))?
        .len();
    if have != want {
        return Err(UsageError::new(format!(
            "the UEFI variables in {} ({} KiB) are for another firmware build than {} ({} KiB): remove \
             the directory to make a new machine, or pass --firmware with the build it was made with",
            state.vars.display(),
            have >> 10,
            vars_template.display(),
            want >> 10
        ))
        .into());
    }
    Ok(State { fresh, ..state })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory with an image, a variable template and where the machine goes.
    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("image.img");
        std::fs::write(&image, vec![7u8; 8192]).unwrap();
        let vars = t.path().join("VARS.fd");
        std::fs::write(&vars, b"template").unwrap();
        let dir = t.path().join("machine");
        (t, image, vars, dir)
    }

    #[test]
    fn a_machine_is_made_once_and_then_kept() {
        let (_t, image, vars, dir) = fixture();

        let s = open(&dir, || Ok(image.clone()), Some(16384), &vars, false).unwrap();
        assert!(s.fresh);
        assert_eq!(std::fs::metadata(&s.disk).unwrap().len(), 16384);
        std::fs::write(&s.vars, b"entries!").unwrap();
        drop(s);

        // The second run boots the same disk and variables and never needs the image.
        let s = open(&dir, || panic!("image asked for"), None, &vars, false).unwrap();
        assert!(!s.fresh);
        assert_eq!(std::fs::read(&s.vars).unwrap(), b"entries!");
        drop(s);
        let refused = |size, secure| {
            let e = open(&dir, || panic!(), size, &vars, secure).err().unwrap();
            format!("{e}")
        };
        assert!(refused(Some(4096), false).contains("disks only grow"));
        // Its variables hold no Secure Boot keys: it cannot be run with --secure-boot.
        assert!(refused(None, true).contains("made without --secure-boot"));
    }

    #[test]
    fn a_running_machine_is_not_opened_twice() {
        let (_t, image, vars, dir) = fixture();
        let running = open(&dir, || Ok(image.clone()), None, &vars, false).unwrap();
        let e = open(&dir, || panic!("image asked for"), None, &vars, false)
            .err()
            .unwrap();
        assert!(e.downcast_ref::<UsageError>().is_some());
        assert!(format!("{e}").contains("another vm (pid "), "{e}");
        drop(running);
        open(&dir, || panic!("image asked for"), None, &vars, false).unwrap();
    }

    #[test]
    fn variables_made_for_another_firmware_build_are_refused_with_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("image.img");
        std::fs::write(&image, vec![7u8; 8192]).unwrap();
        let (small, large) = (t.path().join("VARS.fd"), t.path().join("VARS_4M.fd"));
        std::fs::write(&small, vec![0u8; 128]).unwrap();
        std::fs::write(&large, vec![0u8; 540]).unwrap();
        let dir = t.path().join("machine");
        open(&dir, || Ok(image.clone()), None, &large, false).unwrap();

        let e = open(&dir, || panic!("image asked for"), None, &small, false)
            .err()
            .unwrap();
        let msg = format!("{e:#}");
        assert!(e.downcast_ref::<UsageError>().is_some(), "{msg}");
        assert!(
            msg.contains("another firmware build") && msg.contains("remove"),
            "{msg}"
        );
        // The machine is left as it was.
        assert_eq!(std::fs::metadata(dir.join("vars.fd")).unwrap().len(), 540);
    }
}
