//! The boot partition image (FAT32, an EFI system partition): one recipe for the build's
//! 70-disk phase (through `loisto-image esp`) and for `sign`, which remakes it with signed UKIs.
//! Same inputs, same bytes: mtools under a clock frozen at SOURCE_DATE_EPOCH, directories and
//! files always added in path order.

use crate::error::UsageError;
use crate::{proc, ui};
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub struct Spec {
    pub size: u64,
    /// FAT volume label (up to 11 characters).
    pub label: String,
    /// FAT volume serial number, 8 hex digits.
    pub volume_id: String,
    /// Every timestamp in the file system.
    pub epoch: u64,
    /// (path inside the image, file to copy there); the order given does not matter.
    pub files: Vec<(String, PathBuf)>,
}

/// Writes the image to `out`, replacing it only once it is complete.
pub fn make(spec: &Spec, out: &Path) -> Result<()> {
    check(spec)?;
    let tmp = PathBuf::from(format!("{}.tmp", out.display()));
    let _ = std::fs::remove_file(&tmp);
    let result = fill(spec, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::rename(&tmp, out).with_context(|| format!("moving {} into place", out.display()))?;
    let f = std::fs::File::options().write(true).open(out)?;
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(spec.epoch))
        .with_context(|| format!("setting the mtime of {}", out.display()))?;
    Ok(())
}

fn check(spec: &Spec) -> Result<()> {
    if spec.label.is_empty() || spec.label.len() > 11 || !spec.label.is_ascii() {
        return Err(UsageError::new(format!("FAT label {:?}: 1 to 11 ASCII characters", spec.label)).into());
    }
    if spec.volume_id.len() != 8 || !spec.volume_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(UsageError::new(format!("FAT volume id {:?}: 8 hex digits", spec.volume_id)).into());
    }
    for (dest, src) in &spec.files {
        if dest.is_empty() || dest.starts_with('/') || dest.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(UsageError::new(format!(
                "{dest:?}: a path inside the image is relative, like EFI/BOOT/BOOTX64.EFI"
            ))
            .into());
        }
        if !src.is_file() {
            return Err(UsageError::new(format!("{}: no such file", src.display())).into());
        }
    }
    Ok(())
}

fn fill(spec: &Spec, tmp: &Path) -> Result<()> {
    let f = std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.set_len(spec.size)
        .with_context(|| format!("sizing {}", tmp.display()))?;
    drop(f);
    let clock = ui::utc_clock(spec.epoch);
    let img = tmp.to_string_lossy().into_owned();
    // faketime -f stops the clock (without -f it only starts there and runs on, so a slow
    // moment changes a FAT timestamp).
    let frozen = |tool: &str, args: Vec<String>| {
        let mut all = vec!["-f".to_string(), clock.clone(), tool.to_string()];
        all.extend(args);
        proc::output("faketime", all)
    };
    frozen(
        "mkfs.vfat",
        vec![
            "-F".into(),
            "32".into(),
            "-n".into(),
            spec.label.clone(),
            "-i".into(),
            spec.volume_id.clone(),
            img.clone(),
        ],
    )?;
    let mut files: Vec<&(String, PathBuf)> = spec.files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let dirs: BTreeSet<String> = files
        .iter()
        .flat_map(|(dest, _)| {
            let parts: Vec<&str> = dest.split('/').collect();
            (1..parts.len()).map(move |n| parts[..n].join("/"))
        })
        .collect();
    if !dirs.is_empty() {
        let mut args = vec!["-i".to_string(), img.clone()];
        args.extend(dirs.iter().map(|d| format!("::{d}")));
        frozen("mmd", args)?;
    }
    for (dest, src) in files {
        let copied = frozen(
            "mcopy",
            vec![
                "-i".into(),
                img.clone(),
                src.to_string_lossy().into_owned(),
                format!("::{dest}"),
            ],
        );
        if let Err(e) = copied {
            let total: u64 = spec
                .files
                .iter()
                .filter_map(|(_, s)| std::fs::metadata(s).ok())
                .map(|m| m.len())
                .sum();
            if total + (2 << 20) > spec.size {
                bail!(
                    "the files ({} MiB) do not fit in a {} MiB boot partition: raise BOOT_SIZE in image.conf",
                    total.div_ceil(1 << 20),
                    spec.size >> 20
                );
            }
            return Err(e.context(format!("copying {} into the boot image", src.display())));
        }
    }
    Ok(())
}

/// What an existing boot image holds: its size, label, volume id and files (extracted into
/// `into`), read with mtools, so `make` can remake it with some files replaced.
pub fn read(image: &Path, into: &Path) -> Result<Spec> {
    let img = image.to_string_lossy().into_owned();
    let info = proc::output("minfo", ["-i", img.as_str(), "::"])?;
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').trim().to_string())
            .with_context(|| format!("minfo printed no {key:?} for {}", image.display()))
    };
    let label = field("disk label=")?;
    let volume_id = field("serial number:")?.to_ascii_lowercase();
    let listing = proc::output("mdir", ["-/", "-b", "-i", img.as_str(), "::"])?;
    let mut files = Vec::new();
    for (i, line) in listing.lines().enumerate() {
        let Some(path) = line.trim().strip_prefix("::/") else {
            continue;
        };
        if path.is_empty() || path.ends_with('/') {
            continue;
        }
        let dest = into.join(format!("{i}"));
        proc::output(
            "mcopy",
            [
                "-n".to_string(),
                "-i".into(),
                img.clone(),
                format!("::{path}"),
                dest.to_string_lossy().into_owned(),
            ],
        )?;
        files.push((path.to_string(), dest));
    }
    Ok(Spec {
        size: std::fs::metadata(image)
            .with_context(|| format!("reading {}", image.display()))?
            .len(),
        label,
        volume_id,
        epoch: 0,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(files: Vec<(String, PathBuf)>) -> Spec {
        Spec {
            size: 8 << 20,
            label: "BOOT".into(),
            volume_id: "1dbefe70".into(),
            epoch: 1_700_000_000,
            files,
        }
    }

    #[test]
    fn bad_specs_are_refused_before_anything_is_written() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("boot.vfat");
        let mut s = spec(vec![("/EFI/x".into(), t.path().join("nope"))]);
        assert!(make(&s, &out).is_err());
        s.files.clear();
        s.volume_id = "xyz".into();
        assert!(make(&s, &out).is_err());
        s.volume_id = "12345678".into();
        s.label = "A LABEL LONGER THAN 11".into();
        assert!(make(&s, &out).is_err());
        assert!(!out.exists());
    }
}
