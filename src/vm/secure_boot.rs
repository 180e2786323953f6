//! `vm --secure-boot`: a UEFI variable store with the project's PK, KEK and db enrolled and
//! Secure Boot on, made with virt-fw-vars (virt-firmware) from the firmware's empty template.

use crate::error::UsageError;
use crate::proc;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The public half of a Secure Boot chain, as `keys` lays it out.
pub struct Keys {
    pub dir: PathBuf,
    pub pk: PathBuf,
    pub kek: PathBuf,
    pub db: PathBuf,
    pub owner: String,
}

/// Owner GUID when keys/enroll/owner.guid is absent (keys from elsewhere): any GUID works
/// for the firmware; this one spells "loisto".
const DEFAULT_OWNER: &str = "6c6f6973-746f-4000-8000-000000000000";

pub fn keys(dir: &Path) -> Result<Keys> {
    let missing: Vec<&str> = ["pk.crt", "kek.crt", "secureboot.crt"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(UsageError::new(format!(
            "--secure-boot needs the certificates pk.crt, kek.crt and secureboot.crt (db) in {}; missing: {}. \
             Run `loisto-image keys` for a development chain, or pass --keys DIR",
            dir.display(),
            missing.join(", ")
        ))
        .into());
    }
    let owner = std::fs::read_to_string(dir.join("enroll/owner.guid"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| DEFAULT_OWNER.to_string());
    Ok(Keys {
        dir: dir.to_path_buf(),
        pk: dir.join("pk.crt"),
        kek: dir.join("kek.crt"),
        db: dir.join("secureboot.crt"),
        owner,
    })
}

/// Writes `out`: `template` with PK, KEK and db set and Secure Boot enabled.
pub fn enroll(template: &Path, k: &Keys, out: &Path) -> Result<()> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    proc::output(
        "virt-fw-vars",
        [
            "--input".to_string(),
            s(template),
            "--output".into(),
            s(out),
            "--set-pk".into(),
            k.owner.clone(),
            s(&k.pk),
            "--add-kek".into(),
            k.owner.clone(),
            s(&k.kek),
            "--add-db".into(),
            k.owner.clone(),
            s(&k.db),
            "--secure-boot".into(),
        ],
    )
    .context("enrolling the Secure Boot keys (virt-fw-vars; Debian: apt install python3-virt-firmware)")?;
    Ok(())
}

/// A certificate's subject, for the line that says which db the firmware trusts.
pub fn subject(cert: &Path) -> String {
    proc::output(
        "openssl",
        [
            "x509".as_ref(),
            "-noout".as_ref(),
            "-subject".as_ref(),
            "-in".as_ref(),
            cert.as_os_str(),
        ],
    )
    .map(|s| s.trim().trim_start_matches("subject=").trim().to_string())
    .unwrap_or_else(|_| cert.display().to_string())
}
