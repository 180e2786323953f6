//! `loisto-image keys`: development signing keys under keys/ (git-ignored) and the public
//! keyring the image ships. Production keys live elsewhere (CI secrets, an HSM) and reach
//! `bundle` through --cert/--key.

use crate::cli::{Global, KeysArgs};
use crate::error::UsageError;
use crate::proc;
use crate::project::Project;
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What `keys` writes, relative to the project.
pub const FILES: &[&str] = &[
    "keys/ca.key",
    "keys/ca.crt",
    "keys/rauc-release.key",
    "keys/rauc-release.crt",
    "keys/secureboot.key",
    "keys/secureboot.crt",
    "rauc/keyring.pem",
];

pub fn run(g: &Global, args: &KeysArgs) -> Result<()> {
    let project = Project::open(g)?;
    let dir = &project.dir;
    let existing: Vec<&str> = FILES.iter().copied().filter(|f| dir.join(f).exists()).collect();
    if !existing.is_empty() && !args.force {
        return Err(UsageError::new(format!(
            "keys exist already ({}); nothing was changed. Pass --force to replace them \
             (images and bundles signed with the old keys will no longer verify)",
            existing.join(", ")
        ))
        .into());
    }
    let id = &project.config.image_id;
    // Everything is made in a scratch directory and moved into place at the end, so a
    // failure leaves either the old keys or the new ones, never a mix.
    std::fs::create_dir_all(dir.join("keys")).context("creating keys/")?;
    let tmp = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(dir.join("keys"))
        .context("creating a scratch dir")?;
    let t = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let days = "3650";

    ec_key(&t("ca.key"))?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &t("ca.key"),
        "-days",
        days,
        "-out",
        &t("ca.crt"),
        "-subj",
        &format!("/O={id}/CN={id} development CA"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    ec_key(&t("rauc-release.key"))?;
    openssl(&[
        "req",
        "-new",
        "-key",
        &t("rauc-release.key"),
        "-out",
        &t("rauc-release.csr"),
        "-subj",
        &format!("/O={id}/CN={id} development update signing"),
    ])?;
    let ext = tmp.path().join("leaf.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &t("rauc-release.csr"),
        "-CA",
        &t("ca.crt"),
        "-CAkey",
        &t("ca.key"),
        "-CAcreateserial",
        "-days",
        days,
        "-out",
        &t("rauc-release.crt"),
        "-extfile",
        &ext.to_string_lossy(),
    ])?;
    // UEFI Secure Boot db keys are RSA.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &t("secureboot.key"),
        "-days",
        days,
        "-out",
        &t("secureboot.crt"),
        "-subj",
        &format!("/O={id}/CN={id} development Secure Boot db"),
    ])?;
    std::fs::copy(tmp.path().join("ca.crt"), tmp.path().join("keyring.pem"))
        .context("writing the keyring")?;

    for name in ["ca.key", "rauc-release.key", "secureboot.key"] {
        std::fs::set_permissions(tmp.path().join(name), std::fs::Permissions::from_mode(0o600))?;
    }
    for f in FILES {
        let src = tmp
            .path()
            .join(Path::new(f).file_name().expect("FILES entries name files"));
        let dest: PathBuf = dir.join(f);
        std::fs::create_dir_all(dest.parent().expect("parent"))
            .with_context(|| format!("creating {}", dest.display()))?;
        std::fs::rename(&src, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
    }
    if !g.quiet {
        println!(
            "wrote development keys to {}/keys (private keys mode 0600, git-ignored)",
            dir.display()
        );
        println!(
            "wrote the public keyring {}/rauc/keyring.pem (the image ships it as /etc/rauc/keyring.pem)",
            dir.display()
        );
        println!(
            "rebuild (`loisto-image build --from 20`) so the image carries the keyring and the UKI gets signed"
        );
    }
    Ok(())
}

/// A new P-256 private key (small and fast; RAUC and OpenSSL 3 take EC keys).
fn ec_key(path: &str) -> Result<()> {
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        path,
    ])
}

fn openssl(args: &[&str]) -> Result<()> {
    proc::output("openssl", args.iter().copied()).map(|_| ())
}
