//! Which directories the runner may delete or replace: only those it made itself. It writes a
//! marker file into every directory it creates for OUTPUT, its staging twin, BUILD_DIR and
//! CACHE_DIR, and refuses (exit 2) an existing, non-empty directory without one, so a mistyped
//! `OUTPUT=` can never swap away a user's files. The phases empty and refill ROOTFS, so a
//! ROOTFS outside BUILD_DIR gets its marker beside it (`ROOTFS.loisto-image`).

use crate::error::UsageError;
use anyhow::{Context, Result};
use std::path::Path;

pub const MARKER: &str = ".loisto-image";

const MARKER_TEXT: &str = "Made by loisto-image, which may delete or replace this directory.\n";

/// Ok when `dir` does not exist, is empty, or carries the marker. `default_place`: the
/// directory is where the runner puts it by default (output/, build/, cache/ of the project),
/// which builds from before the marker existed made without one.
pub fn check(key: &str, dir: &Path, default_place: bool) -> Result<()> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if !meta.is_dir() {
        return Err(UsageError::new(format!(
            "{key}={} is a file, not a directory; the build would replace it. Point {key} at a new directory",
            dir.display()
        ))
        .into());
    }
    if default_place || dir.join(MARKER).is_file() || beside(dir).is_file() {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    Err(UsageError::new(format!(
        "{key}={} exists and was not made by loisto-image (it has no {MARKER} file); the build would \
         delete or replace what is in it. Point {key} at a new directory, or empty this one yourself",
        dir.display()
    ))
    .into())
}

fn beside(dir: &Path) -> std::path::PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(MARKER);
    s.into()
}

/// Marks a ROOTFS outside BUILD_DIR as the runner's, beside it.
pub fn claim_beside(dir: &Path) -> Result<()> {
    let marker = beside(dir);
    if !marker.is_file() {
        std::fs::write(&marker, MARKER_TEXT).with_context(|| format!("writing {}", marker.display()))?;
    }
    Ok(())
}

/// Creates `dir` if needed and marks it as the runner's.
pub fn claim(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let marker = dir.join(MARKER);
    if !marker.is_file() {
        std::fs::write(&marker, MARKER_TEXT).with_context(|| format!("writing {}", marker.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_empty_marked_or_default_directories_pass() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        check("OUTPUT", &d, false).unwrap();
        std::fs::create_dir(&d).unwrap();
        check("OUTPUT", &d, false).unwrap();
        std::fs::write(d.join("mine"), "x").unwrap();
        assert!(check("OUTPUT", &d, false).is_err());
        check("OUTPUT", &d, true).unwrap();
        claim(&d).unwrap();
        check("OUTPUT", &d, false).unwrap();
        assert!(check("OUTPUT", &d.join("mine"), true).is_err());
    }
}
