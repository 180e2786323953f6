//! One build per output directory at a time: an flock(2) on `OUTPUT.lock`, released by the
//! kernel when the process ends, however it ends.

use crate::error::UsageError;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

pub struct Lock {
    _file: File,
}

impl Lock {
    /// For a build (the output, build and cache directories).
    pub fn acquire(path: &Path, what: &Path) -> Result<Lock> {
        Lock::acquire_for("build", path, what)
    }

    /// For `holder`, the word the refusal names the other process by ("build", "vm").
    pub fn acquire_for(holder: &str, path: &Path, what: &Path) -> Result<Lock> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(UsageError::new(format!(
                "another {holder} (pid {}) is using {}; wait for it to finish or stop it (lock: {})",
                if pid.is_empty() { "unknown" } else { pid },
                what.display(),
                path.display()
            ))
            .into());
        }
        file.set_len(0).context("truncating lock file")?;
        file.rewind().context("rewinding lock file")?;
        write!(file, "{}", std::process::id()).context("writing lock file")?;
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let take = || Lock::acquire(&dir.path().join("out.lock"), dir.path());
        let first = take().unwrap();
        let err = take().err().unwrap();
        assert!(
            format!("{err}").contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        take().unwrap();
    }
}
