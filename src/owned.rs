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

/// OUTPUT is replaced as a whole by a rename, which a mount point refuses ("Device or resource
/// busy") only after every phase ran: say so before anything runs.
pub fn refuse_mount_point(key: &str, dir: &Path) -> Result<()> {
    let Ok(real) = dir.canonicalize() else {
        return Ok(());
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mount_points(&mounts).any(|m| m == real) {
        return Err(UsageError::new(format!(
            "{key}={} is a mount point: a build replaces that directory as a whole when it succeeds,              which a mount point cannot be. Set {key} to a directory inside the mount (e.g. {}/output)",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// The mount points in /proc/self/mountinfo (field 5, with its octal escapes undone).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    use std::os::unix::ffi::OsStringExt;
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| {
            let b = field.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                let octal = b
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
                match (b[i], octal) {
                    (b'\\', Some(d)) => {
                        out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                        i += 4;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            std::ffi::OsString::from_vec(out).into()
        })
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
    fn mount_points_are_read_with_escapes_undone() {
        let info = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                    40 22 0:40 / /srv/my\\040out rw - tmpfs none rw\n";
        let found: Vec<_> = mount_points(info).collect();
        assert_eq!(found, [Path::new("/"), Path::new("/srv/my out")]);
    }

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
