//! `loisto-image keys`: development signing keys under keys/ (git-ignored), the public keyring
//! the image ships, and a whole UEFI Secure Boot chain (PK, KEK, db) with the files that
//! enroll it in firmware. Production keys live elsewhere (CI secrets, an HSM, an offline
//! machine) and reach `bundle` through --cert/--key and `sign` through --keys.

use crate::cli::{Global, KeysArgs};
use crate::error::UsageError;
use crate::proc;
use crate::project::Project;
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Keys made together: a group is made whole or not at all.
struct Group {
    what: &'static str,
    /// Relative to the project.
    files: &'static [&'static str],
    make: fn(&Path, &str) -> Result<()>,
}

const GROUPS: &[Group] = &[
    Group {
        what: "update signing (RAUC CA, release key, keyring)",
        files: &[
            "keys/ca.key",
            "keys/ca.crt",
            "keys/rauc-release.key",
            "keys/rauc-release.crt",
            "rauc/keyring.pem",
        ],
        make: make_update_signing,
    },
    Group {
        what: "Secure Boot db (signs the UKIs)",
        files: &["keys/secureboot.key", "keys/secureboot.crt"],
        make: make_db,
    },
    Group {
        what: "Secure Boot owner (PK, KEK)",
        files: &["keys/pk.key", "keys/pk.crt", "keys/kek.key", "keys/kek.crt"],
        make: make_owner,
    },
];

/// Made from the groups' certificates whenever one is new: what a person enrolls in real
/// firmware. Public, but kept in keys/ (never in the image or the artifacts).
pub const ENROLL_DIR: &str = "keys/enroll";
const ENROLL: &[&str] = &[
    "owner.guid",
    "PK.esl",
    "KEK.esl",
    "db.esl",
    "PK.auth",
    "KEK.auth",
    "db.auth",
    "README",
];

/// Every file `keys` writes, relative to the project.
pub fn files() -> Vec<String> {
    GROUPS
        .iter()
        .flat_map(|g| g.files.iter().map(|f| f.to_string()))
        .chain(ENROLL.iter().map(|f| format!("{ENROLL_DIR}/{f}")))
        .collect()
}

pub fn run(g: &Global, args: &KeysArgs) -> Result<()> {
    let project = Project::open(g)?;
    let dir = &project.dir;
    let exists = |f: &&str| dir.join(f).exists();
    let mut todo = Vec::new();
    for group in GROUPS {
        let have: Vec<&str> = group.files.iter().copied().filter(exists).collect();
        if args.force || have.is_empty() {
            todo.push(group);
        } else if have.len() != group.files.len() {
            let missing: Vec<&str> = group.files.iter().copied().filter(|f| !exists(f)).collect();
            return Err(UsageError::new(format!(
                "{}: {} exist but {} do not; nothing was changed. Restore the missing files, or pass \
                 --force to replace every key (what the old keys signed will no longer verify)",
                group.what,
                have.join(", "),
                missing.join(", ")
            ))
            .into());
        }
    }
    let enroll_missing = ENROLL.iter().any(|f| !dir.join(ENROLL_DIR).join(f).exists());
    if todo.is_empty() && !enroll_missing {
        return Err(UsageError::new(format!(
            "keys exist already ({}); nothing was changed. Pass --force to replace them \
             (images and bundles signed with the old keys will no longer verify)",
            GROUPS
                .iter()
                .flat_map(|g| g.files.iter().copied())
                .collect::<Vec<_>>()
                .join(", ")
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
    for group in &todo {
        (group.make)(tmp.path(), id).with_context(|| format!("making the {} keys", group.what))?;
    }
    // The enrollment files need every certificate: the new ones, and the kept ones.
    let cert = |name: &str| {
        let new = tmp.path().join(name);
        if new.exists() {
            new
        } else {
            dir.join("keys").join(name)
        }
    };
    let enroll = tmp.path().join("enroll");
    make_enrollment(
        &enroll,
        &Chain {
            pk: (cert("pk.crt"), cert("pk.key")),
            kek: (cert("kek.crt"), cert("kek.key")),
            db: cert("secureboot.crt"),
        },
        &owner_guid(&dir.join(ENROLL_DIR), args.force)?,
    )
    .context("making the Secure Boot enrollment files")?;

    for group in &todo {
        for f in group.files {
            let name = Path::new(f).file_name().expect("group entries name files");
            let src = tmp.path().join(name);
            if f.ends_with(".key") {
                std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600))?;
            }
            let dest: PathBuf = dir.join(f);
            std::fs::create_dir_all(dest.parent().expect("parent"))
                .with_context(|| format!("creating {}", dest.display()))?;
            std::fs::rename(&src, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
        }
    }
    let enroll_dest = dir.join(ENROLL_DIR);
    let _ = std::fs::remove_dir_all(&enroll_dest);
    std::fs::rename(&enroll, &enroll_dest)
        .with_context(|| format!("moving {} into place", enroll_dest.display()))?;

    if !g.quiet {
        for group in GROUPS {
            let made = todo.iter().any(|t| std::ptr::eq(*t, group));
            println!("{} {}", if made { "made" } else { "kept" }, group.what);
        }
        println!(
            "wrote {} (private keys mode 0600, keys/ is git-ignored)",
            dir.join("keys").display()
        );
        println!(
            "wrote {}: EFI signature lists and signed updates to enroll PK, KEK and db on a real machine (see its README)",
            enroll_dest.display()
        );
        println!(
            "the image ships {}/rauc/keyring.pem as /etc/rauc/keyring.pem",
            dir.display()
        );
        println!(
            "rebuild (`loisto-image build --from 20`) so the image carries the keyring and the UKIs get signed"
        );
    }
    Ok(())
}

fn make_update_signing(t: &Path, id: &str) -> Result<()> {
    let p = |name: &str| t.join(name).to_string_lossy().into_owned();
    ec_key(&p("ca.key"))?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p("ca.key"),
        "-days",
        DAYS,
        "-out",
        &p("ca.crt"),
        "-subj",
        &format!("/O={id}/CN={id} development CA"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    ec_key(&p("rauc-release.key"))?;
    openssl(&[
        "req",
        "-new",
        "-key",
        &p("rauc-release.key"),
        "-out",
        &p("rauc-release.csr"),
        "-subj",
        &format!("/O={id}/CN={id} development update signing"),
    ])?;
    let ext = t.join("leaf.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("rauc-release.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        DAYS,
        "-out",
        &p("rauc-release.crt"),
        "-extfile",
        &ext.to_string_lossy(),
    ])?;
    std::fs::copy(t.join("ca.crt"), t.join("keyring.pem")).context("writing the keyring")?;
    Ok(())
}

fn make_db(t: &Path, id: &str) -> Result<()> {
    rsa_cert(t, "secureboot", &format!("{id} development Secure Boot db"), id)
}

fn make_owner(t: &Path, id: &str) -> Result<()> {
    rsa_cert(t, "pk", &format!("{id} development Platform Key"), id)?;
    rsa_cert(t, "kek", &format!("{id} development Key Exchange Key"), id)
}

const DAYS: &str = "3650";

/// A self-signed RSA 2048 certificate: what UEFI firmware is required to take for PK, KEK and db.
fn rsa_cert(t: &Path, name: &str, cn: &str, org: &str) -> Result<()> {
    let p = |ext: &str| t.join(format!("{name}.{ext}")).to_string_lossy().into_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("key"),
        "-days",
        DAYS,
        "-out",
        &p("crt"),
        "-subj",
        &format!("/O={org}/CN={cn}"),
    ])
}

struct Chain {
    /// (certificate, private key)
    pk: (PathBuf, PathBuf),
    kek: (PathBuf, PathBuf),
    db: PathBuf,
}

/// The GUID that owns the enrolled certificates; kept across runs unless keys are replaced.
fn owner_guid(enroll: &Path, force: bool) -> Result<String> {
    let kept = std::fs::read_to_string(enroll.join("owner.guid")).ok();
    if let Some(g) = kept.filter(|_| !force) {
        let g = g.trim().to_string();
        if is_guid(&g) {
            return Ok(g);
        }
    }
    let g = std::fs::read_to_string("/proc/sys/kernel/random/uuid").context("making a GUID")?;
    Ok(g.trim().to_string())
}

fn is_guid(g: &str) -> bool {
    let parts: Vec<&str> = g.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// EFI signature lists (cert-to-efi-sig-list) and time-based authenticated updates
/// (sign-efi-sig-list): PK signs itself and KEK, KEK signs db, as the UEFI spec requires.
fn make_enrollment(out: &Path, c: &Chain, guid: &str) -> Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("owner.guid"), format!("{guid}\n"))?;
    let o = |name: &str| out.join(name).to_string_lossy().into_owned();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    for (var, cert) in [("PK", &c.pk.0), ("KEK", &c.kek.0), ("db", &c.db)] {
        proc::output(
            "cert-to-efi-sig-list",
            ["-g", guid, &s(cert), &o(&format!("{var}.esl"))],
        )?;
    }
    let now = crate::ui::utc_clock(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    for (var, signer) in [("PK", &c.pk), ("KEK", &c.pk), ("db", &c.kek)] {
        proc::output(
            "sign-efi-sig-list",
            [
                "-g",
                guid,
                "-t",
                &now,
                "-k",
                &s(&signer.1),
                "-c",
                &s(&signer.0),
                var,
                &o(&format!("{var}.esl")),
                &o(&format!("{var}.auth")),
            ],
        )?;
    }
    std::fs::write(
        out.join("README"),
        format!(
            "Enrolling this project's Secure Boot keys in a machine's firmware\n\n\
             Owner GUID: {guid}\n\n\
             1. In the firmware setup, clear the Secure Boot keys (\"Setup Mode\", or \"Delete all keys\").\n\
             2. Enroll db.auth (or db.esl), then KEK.auth (KEK.esl), and PK.auth (PK.esl) last: setting PK\n   \
             ends Setup Mode and turns Secure Boot enforcement on.\n   \
             From Linux in Setup Mode: efi-updatevar -f db.auth db; efi-updatevar -f KEK.auth KEK;\n   \
             efi-updatevar -f PK.auth PK (efitools). Firmware menus take the .esl or .auth files from a\n   \
             FAT stick; KeyTool.efi (efitools) does the same from a UEFI shell.\n\
             3. Boot the image: its UKIs are signed with the db key. A machine that should still boot\n   \
             other systems needs their db certificates too (e.g. Microsoft's UEFI CA).\n\n\
             `loisto-image vm --secure-boot` enrolls the same certificates in a QEMU machine.\n"
        ),
    )?;
    // Public files: sign-efi-sig-list writes its output 0600.
    for f in ENROLL {
        std::fs::set_permissions(out.join(f), std::fs::Permissions::from_mode(0o644))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_checked_before_reuse() {
        assert!(is_guid("7f4a1c2e-0000-4000-8000-6c6f6973746f"));
        assert!(!is_guid("7f4a1c2e-0000-4000-8000"));
        assert!(!is_guid("zzzzzzzz-0000-4000-8000-6c6f6973746f"));
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("owner.guid"),
            "7f4a1c2e-0000-4000-8000-6c6f6973746f\n",
        )
        .unwrap();
        assert_eq!(
            owner_guid(t.path(), false).unwrap(),
            "7f4a1c2e-0000-4000-8000-6c6f6973746f"
        );
        assert_ne!(
            owner_guid(t.path(), true).unwrap(),
            "7f4a1c2e-0000-4000-8000-6c6f6973746f"
        );
    }
}
