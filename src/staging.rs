//! Phases write into `OUTPUT.staging`; only a build whose every phase succeeded swaps it
//! into place, so a failed or interrupted build never replaces the last good artifacts.

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Empties the staging directory. A partial build (`--from`, `--only`, `--skip`) starts from
/// hard links to the last build's own artifacts (those its manifest.json lists), so later
/// phases find what earlier ones made; phases replace files rather than edit them in place,
/// which keeps those links harmless. What other commands made from that build (a bundle,
/// sysext images) is left out: it would be stale in the new one.
pub fn prepare(staging: &Path, output: &Path, seed_from_output: bool) -> Result<()> {
    if staging.exists() {
        std::fs::remove_dir_all(staging).with_context(|| format!("removing stale {}", staging.display()))?;
    }
    std::fs::create_dir_all(staging.join("logs"))
        .with_context(|| format!("creating {}", staging.display()))?;
    // Promoted, this becomes OUTPUT: marked as the runner's, so the next build may replace it.
    crate::owned::claim(staging)?;
    if !seed_from_output {
        return Ok(());
    }
    let Ok(last) = crate::manifest::read(output) else {
        return Ok(());
    };
    for a in last.artifacts.iter().filter(|a| a.made_by.is_none()) {
        let (src, dest) = (output.join(&a.path), staging.join(&a.path));
        if !src.is_file() {
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::hard_link(&src, &dest).with_context(|| format!("linking {} into staging", src.display()))?;
    }
    Ok(())
}

/// Makes every file in `staging` readable by everyone (0644, or 0755 if executable): artifacts
/// are public (SHA256SUMS lists them), whatever mode the tool that wrote them picked
/// (veritysetup writes its hash tree and root hash 0600).
pub fn publish_modes(staging: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(staging) {
        let entry = entry.with_context(|| format!("walking {}", staging.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let mode = if meta.permissions().mode() & 0o100 != 0 {
            0o755
        } else {
            0o644
        };
        if meta.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("making {} readable", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Puts `staging` where `output` was, atomically when `output` already exists.
pub fn promote(staging: &Path, output: &Path) -> Result<()> {
    if !output.exists() {
        return std::fs::rename(staging, output)
            .with_context(|| format!("moving {} to {}", staging.display(), output.display()));
    }
    let a = CString::new(staging.as_os_str().as_bytes())?;
    let b = CString::new(output.as_os_str().as_bytes())?;
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("swapping {} into {}: {err}", staging.display(), output.display());
    }
    // `staging` now holds the previous output.
    std::fs::remove_dir_all(staging)
        .with_context(|| format!("removing the previous output at {}", staging.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_swaps_and_partial_builds_start_from_the_last_output() {
        let d = tempfile::tempdir().unwrap();
        let (out, st) = (d.path().join("output"), d.path().join("output.staging"));
        prepare(&st, &out, false).unwrap();
        std::fs::write(st.join("a.img"), "one").unwrap();
        promote(&st, &out).unwrap();
        assert!(!st.exists());
        // What the build recorded is carried over; what came later (a bundle) is not.
        let recorded = crate::manifest::collect_artifacts(&out).unwrap();
        let m = crate::manifest::Manifest {
            tool: "t".into(),
            tool_version: "0".into(),
            image_id: "t".into(),
            image_version: "1".into(),
            compatible: String::new(),
            config_digest: String::new(),
            fingerprint: String::new(),
            source_date_epoch: 0,
            built_at: 0,
            phases: Vec::new(),
            artifacts: recorded,
        };
        crate::manifest::write(&out, &m).unwrap();
        std::fs::write(out.join("t_1.raucb"), "bundle").unwrap();
        crate::manifest::add_artifact(&out, "t_1.raucb", "bundle").unwrap();
        prepare(&st, &out, true).unwrap();
        assert_eq!(std::fs::read_to_string(st.join("a.img")).unwrap(), "one");
        assert!(!st.join("t_1.raucb").exists());
        std::fs::remove_file(st.join("a.img")).unwrap();
        std::fs::write(st.join("a.img"), "two").unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.img")).unwrap(), "one");
        promote(&st, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.img")).unwrap(), "two");
    }
}
