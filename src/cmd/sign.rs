//! `loisto-image sign`: the offline second stage of a release. It takes the output of a build
//! made without private keys, signs both UKIs (sbsign), remakes the boot image with them
//! (`loisto-image esp`'s recipe), writes it into the disk image's boot partitions, makes the
//! signed RAUC bundle and re-records manifest.json and SHA256SUMS. It needs no rootfs, no
//! bootstrap tools and no network; the OS image and its verity data are not touched.

use crate::cli::{Global, SignArgs};
use crate::cmd::bundle;
use crate::error::UsageError;
use crate::esp;
use crate::flash;
use crate::lock::Lock;
use crate::manifest::{self, Manifest};
use crate::project::Project;
use crate::{proc, ui};
use anyhow::{Context, Result, bail};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What the keys directory must hold (the layout `loisto-image keys` writes).
const DB_KEY: &str = "secureboot.key";
const DB_CERT: &str = "secureboot.crt";
const RELEASE_KEY: &str = "rauc-release.key";
const RELEASE_CERT: &str = "rauc-release.crt";
/// Where the image keeps the keyring RAUC checks bundles with.
const IMAGE_KEYRING: &str = "etc/rauc/keyring.pem";

pub fn run(g: &Global, args: &SignArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let output = match &args.output {
        Some(o) => std::path::absolute(o).with_context(|| format!("resolving {}", o.display()))?,
        None => Project::open(g)
            .map_err(|e| {
                UsageError::new(format!(
                    "no OUTPUT given and no image project here ({e:#}); pass the output directory to sign"
                ))
            })?
            .output
            .clone(),
    };
    let m = manifest::read(&output).map_err(|e| {
        UsageError::new(format!(
            "{}: no build to sign ({e:#}); give the output directory of a `loisto-image build`",
            output.display()
        ))
    })?;
    let _lock = Lock::acquire(&sibling(&output, ".lock"), &output)?;
    let stem = format!("{}_{}", m.image_id, m.image_version);
    let art = |suffix: &str| -> Result<PathBuf> {
        let name = format!("{stem}{suffix}");
        if m.artifacts.iter().any(|a| a.path == name) {
            Ok(output.join(name))
        } else {
            Err(UsageError::new(format!(
                "{}: the build recorded no {name}; `sign` needs a complete build of an image project with \
                 the 60-uki and 70-disk phases",
                output.display()
            ))
            .into())
        }
    };
    let ukis = [art(".slot-a.efi")?, art(".slot-b.efi")?];
    let boot = art(".boot.vfat")?;
    let disk = art(".img")?;
    let root = art(".root.squashfs").map_err(|_| {
        UsageError::new("sign needs ROOT_FORMAT=squashfs: RAUC 1.8 cannot install an erofs OS image")
    })?;

    // Everything is checked before anything is written: a refusal changes nothing.
    let problems = manifest::check(&output, &m)?;
    if let Some(p) = problems.first() {
        let (path, why) = match p {
            manifest::Problem::Missing(path) => (path, "missing".to_string()),
            manifest::Problem::Changed { path, why } => (path, why.clone()),
        };
        bail!(
            "{} does not match manifest.json ({why}): the output changed after the build; nothing was signed",
            output.join(path).display()
        );
    }
    let keys = Keys::find(&args.keys, args.db_key.as_deref(), args.release_key.as_deref())?;
    let work = tempfile::Builder::new()
        .prefix(".sign.")
        .tempdir_in(&output)
        .with_context(|| format!("creating a work directory in {}", output.display()))?;
    let w = work.path();
    let keyring = w.join("keyring.pem");
    image_keyring(&root, &keyring)?;
    keys.check(&keyring, &root)?;
    let mut signed_before = Vec::new();
    for uki in &ukis {
        if let Some(issuer) = signature_issuer(uki)? {
            signed_before.push(format!("{} ({issuer})", file_name(uki)));
        }
    }
    if !signed_before.is_empty() && !args.resign {
        return Err(UsageError::new(format!(
            "{} already signed: {}; nothing was changed. Pass --resign to replace the signatures",
            output.display(),
            signed_before.join(", ")
        ))
        .into());
    }

    // 1. The UKIs: from their unsigned bytes (a re-sign takes the old signature off first).
    let say = |line: String| {
        if !g.quiet {
            println!("{line}");
        }
    };
    let mut new_ukis = Vec::new();
    for uki in &ukis {
        let unsigned = w.join(format!("{}.unsigned", file_name(uki)));
        std::fs::copy(uki, &unsigned).with_context(|| format!("copying {}", uki.display()))?;
        if signature_issuer(&unsigned)?.is_some() {
            proc::output("sbattach", [path_arg("--remove"), path_arg(&unsigned)])?;
        }
        let signed = w.join(file_name(uki));
        // The signing time is SOURCE_DATE_EPOCH, as 60-uki signs: the same bytes as a one-stage build.
        let mut sbsign = vec![
            path_arg("-f"),
            path_arg(ui::utc_clock(m.source_date_epoch)),
            path_arg("sbsign"),
        ];
        if keys.db_key.is_pkcs11() {
            sbsign.extend([path_arg("--engine"), path_arg("pkcs11")]);
        }
        proc::output(
            "faketime",
            sbsign.into_iter().chain([
                path_arg("--key"),
                path_arg(keys.db_key.arg()),
                path_arg("--cert"),
                path_arg(keys.dir.join(DB_CERT)),
                path_arg("--output"),
                path_arg(&signed),
                path_arg(&unsigned),
            ]),
        )?;
        proc::output(
            "sbverify",
            [
                path_arg("--cert"),
                path_arg(keys.dir.join(DB_CERT)),
                path_arg(&signed),
            ],
        )
        .context("the signed UKI does not verify against the db certificate")?;
        set_mtime(&signed, m.source_date_epoch)?;
        say(format!("signed {}", file_name(uki)));
        new_ukis.push(signed);
    }

    // 2. The boot image: the same files, each UKI replaced by its signed self.
    let extracted = w.join("boot-files");
    std::fs::create_dir(&extracted)?;
    let mut spec = esp::read(&boot, &extracted)?;
    spec.epoch = m.source_date_epoch;
    let uki_hashes: Vec<String> = ukis
        .iter()
        .map(|u| crate::hash::hash_file(u).map(|(_, h)| h))
        .collect::<Result<_>>()?;
    let mut replaced = [false, false];
    for (dest, src) in spec.files.iter_mut() {
        let (_, h) = crate::hash::hash_file(src)?;
        if let Some(i) = uki_hashes.iter().position(|u| *u == h) {
            say(format!("boot image: {dest} <- {}", file_name(&new_ukis[i])));
            *src = new_ukis[i].clone();
            replaced[i] = true;
        }
    }
    if let Some(i) = replaced.iter().position(|r| !r) {
        bail!(
            "{} does not hold {} (the boot image and the UKIs are from different builds); nothing was signed",
            boot.display(),
            file_name(&ukis[i])
        );
    }
    let new_boot = w.join(file_name(&boot));
    esp::make(&spec, &new_boot)?;

    // 3. The disk: every partition that held the old boot image gets the new one.
    let new_disk = w.join(file_name(&disk));
    proc::output(
        "cp",
        [
            path_arg("--sparse=always"),
            path_arg("--reflink=auto"),
            path_arg(&disk),
            path_arg(&new_disk),
        ],
    )?;
    let written = replace_partitions(&new_disk, &boot, &new_boot)?;
    say(format!(
        "disk image: boot partition(s) {} rewritten",
        written.join(", ")
    ));
    // The flashable forms of the disk (80-flash), if the build made them: remade from it.
    let (zst, bmap) = flash::names(&disk);
    let listed = |p: &Path| m.artifacts.iter().any(|a| a.path == file_name(p));
    let flash = if listed(&zst) || listed(&bmap) {
        let (z, b) = (w.join(file_name(&zst)), w.join(file_name(&bmap)));
        flash::write(&new_disk, &z, &b, flash::DEFAULT_LEVEL)?;
        say(format!(
            "{} and {} remade from the signed disk",
            file_name(&z),
            file_name(&b)
        ));
        vec![z, b]
    } else {
        Vec::new()
    };

    // 4. The bundle, checked against the keyring the image itself carries.
    let bundle = if m.compatible.is_empty() {
        say("no bundle: the build recorded no COMPATIBLE (set it in image.conf to make bundles)".into());
        None
    } else {
        let out = w.join(format!("{stem}.raucb"));
        bundle::make(&bundle::Request {
            output_dir: &output,
            manifest: &m,
            compatible: &m.compatible,
            cert: &keys.dir.join(RELEASE_CERT),
            key: Path::new(keys.release_key.arg()),
            keyring: &keyring,
            out: &out,
            adaptive: !args.no_adaptive,
            boot: Some(&new_boot),
            made_by: "sign",
            quiet: true,
        })?;
        say(format!(
            "bundle {stem}.raucb signed and verified against the image's keyring"
        ));
        Some(out)
    };

    // 5. Publish: each file replaced whole, then the records.
    let mut made: Vec<(PathBuf, Option<&str>)> = new_ukis.iter().map(|u| (u.clone(), None)).collect();
    made.push((new_boot, None));
    made.push((new_disk, None));
    made.extend(flash.into_iter().map(|f| (f, None)));
    if let Some(b) = bundle {
        made.push((b, Some("sign")));
    }
    let mut m: Manifest = m;
    for (file, made_by) in &made {
        let name = file_name(file);
        let dest = output.join(&name);
        std::fs::rename(file, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
        let (size, sha256) = crate::hash::hash_file(&dest)?;
        m.artifacts.retain(|a| a.path != name);
        m.artifacts.push(manifest::Artifact {
            path: name,
            size,
            sha256,
            mtime_ns: manifest::mtime_ns(&dest),
            made_by: made_by.map(str::to_string),
        });
    }
    m.artifacts.sort_by(|a, b| a.path.cmp(&b.path));
    manifest::write(&output, &m)?;
    say(format!(
        "signed {} in {} with {} (db) and {} (bundle); manifest.json and SHA256SUMS re-recorded",
        output.display(),
        ui::secs(started.elapsed()),
        keys.db_key.arg(),
        keys.release_key.arg()
    ));
    Ok(())
}

/// A private key: a PEM file, or an object in a PKCS#11 token (an HSM) that sbsign, openssl
/// and RAUC reach through the OpenSSL pkcs11 engine (libp11, with p11-kit's module list).
#[derive(Debug, PartialEq)]
enum Key {
    File(PathBuf),
    Pkcs11(String),
}

impl Key {
    fn parse(s: &std::ffi::OsStr) -> Key {
        match s.to_str() {
            Some(uri) if uri.starts_with("pkcs11:") => Key::Pkcs11(uri.to_string()),
            _ => Key::File(PathBuf::from(s)),
        }
    }

    fn is_pkcs11(&self) -> bool {
        matches!(self, Key::Pkcs11(_))
    }

    fn arg(&self) -> &str {
        match self {
            Key::File(p) => p.to_str().unwrap_or_default(),
            Key::Pkcs11(uri) => uri,
        }
    }

    /// Its public key in PEM, to compare with a certificate's.
    fn public_pem(&self) -> Result<String> {
        match self {
            Key::File(p) => proc::output(
                "openssl",
                [
                    path_arg("pkey"),
                    path_arg("-pubout"),
                    path_arg("-in"),
                    path_arg(p),
                ],
            ),
            Key::Pkcs11(uri) => proc::output(
                "openssl",
                [
                    "pkey",
                    "-engine",
                    "pkcs11",
                    "-inform",
                    "engine",
                    "-pubout",
                    "-in",
                    uri.as_str(),
                ],
            )
            .context("reading the public key from the PKCS#11 token (needs libengine-pkcs11-openssl)"),
        }
    }
}

struct Keys {
    dir: PathBuf,
    db_key: Key,
    release_key: Key,
}

impl Keys {
    fn find(
        dir: &Path,
        db_key: Option<&std::ffi::OsStr>,
        release_key: Option<&std::ffi::OsStr>,
    ) -> Result<Keys> {
        if !dir.is_dir() {
            return Err(UsageError::new(format!(
                "--keys {}: no such directory; nothing was changed",
                dir.display()
            ))
            .into());
        }
        let db_key = db_key.map_or_else(|| Key::File(dir.join(DB_KEY)), Key::parse);
        let release_key = release_key.map_or_else(|| Key::File(dir.join(RELEASE_KEY)), Key::parse);
        let mut missing: Vec<String> = Vec::new();
        for (name, key) in [(DB_KEY, &db_key), (RELEASE_KEY, &release_key)] {
            if let Key::File(p) = key
                && !p.is_file()
            {
                missing.push(if p.starts_with(dir) {
                    name.to_string()
                } else {
                    p.display().to_string()
                });
            }
        }
        for cert in [DB_CERT, RELEASE_CERT] {
            if !dir.join(cert).is_file() {
                missing.push(cert.to_string());
            }
        }
        if !missing.is_empty() {
            return Err(UsageError::new(format!(
                "--keys {} lacks {}; nothing was changed. It needs {DB_KEY} + {DB_CERT} (Secure Boot db) and \
                 {RELEASE_KEY} + {RELEASE_CERT} (update signing), as `loisto-image keys` lays them out \
                 (--db-key/--release-key may name the keys elsewhere, or as pkcs11: URIs)",
                dir.display(),
                missing.join(", ")
            ))
            .into());
        }
        Ok(Keys {
            dir: dir.to_path_buf(),
            db_key,
            release_key,
        })
    }

    /// Each key belongs to its certificate, and the release certificate chains to the keyring
    /// the image trusts: otherwise the device would refuse every bundle signed with it.
    fn check(&self, keyring: &Path, root: &Path) -> Result<()> {
        for (key, cert) in [(&self.db_key, DB_CERT), (&self.release_key, RELEASE_CERT)] {
            let from_key = key.public_pem()?;
            let from_cert = proc::output(
                "openssl",
                [
                    path_arg("x509"),
                    path_arg("-noout"),
                    path_arg("-pubkey"),
                    path_arg("-in"),
                    path_arg(self.dir.join(cert)),
                ],
            )?;
            if from_key.trim() != from_cert.trim() {
                return Err(UsageError::new(format!(
                    "{} is not the key of {}; nothing was changed",
                    key.arg(),
                    self.dir.join(cert).display()
                ))
                .into());
            }
        }
        let verify = proc::output(
            "openssl",
            [
                path_arg("verify"),
                path_arg("-CAfile"),
                path_arg(keyring),
                path_arg(self.dir.join(RELEASE_CERT)),
            ],
        );
        if let Err(e) = verify {
            return Err(UsageError::new(format!(
                "{} does not chain to the keyring the image trusts (/{IMAGE_KEYRING} in {}); the device would \
                 refuse its bundles. Nothing was changed. Use the keys the image was built for: {e:#}",
                self.dir.join(RELEASE_CERT).display(),
                root.display()
            ))
            .into());
        }
        Ok(())
    }
}

/// The keyring inside the OS image, read with unsquashfs (no mount, no root needed).
fn image_keyring(root: &Path, out: &Path) -> Result<()> {
    let pem = proc::output(
        "unsquashfs",
        [path_arg("-cat"), path_arg(root), path_arg(IMAGE_KEYRING)],
    )
    .map_err(|e| {
        UsageError::new(format!(
            "{} has no readable /{IMAGE_KEYRING}: build the image with rauc/keyring.pem (`loisto-image keys`) \
             before signing releases ({e:#})",
            root.display()
        ))
    })?;
    if !pem.contains("BEGIN CERTIFICATE") {
        return Err(UsageError::new(format!(
            "/{IMAGE_KEYRING} in {} holds no certificate",
            root.display()
        ))
        .into());
    }
    std::fs::write(out, pem).with_context(|| format!("writing {}", out.display()))
}

/// The issuer of the first signature on a PE image, or None when it has none.
fn signature_issuer(pe: &Path) -> Result<Option<String>> {
    let (ok, text) = proc::probe("sbverify", [path_arg("--list"), path_arg(pe)])?;
    if text.contains("No signature table present") {
        return Ok(None);
    }
    if !ok {
        bail!("sbverify --list {} failed:\n{text}", pe.display());
    }
    Ok(Some(
        text.lines()
            .skip_while(|l| !l.contains("issuers"))
            .nth(1)
            .map(|l| l.trim().trim_start_matches("- ").to_string())
            .unwrap_or_else(|| "signed".into()),
    ))
}

/// Writes `new` over every partition of `disk` whose bytes equal `old`; returns their names.
fn replace_partitions(disk: &Path, old: &Path, new: &Path) -> Result<Vec<String>> {
    let table = crate::partitions::list(disk)?;
    let old_len = std::fs::metadata(old)?.len();
    let new_bytes = std::fs::read(new).with_context(|| format!("reading {}", new.display()))?;
    if new_bytes.len() as u64 != old_len {
        bail!(
            "the new boot image is {} bytes, the old one {old_len}",
            new_bytes.len()
        );
    }
    let (_, old_hash) = crate::hash::hash_file(old)?;
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let mut written = Vec::new();
    for p in &table {
        if p.size != old_len {
            continue;
        }
        let mut bytes = vec![0u8; old_len as usize];
        f.seek(SeekFrom::Start(p.start))?;
        f.read_exact(&mut bytes)
            .with_context(|| format!("reading a partition of {}", disk.display()))?;
        if crate::hash::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes)) != old_hash {
            continue;
        }
        f.seek(SeekFrom::Start(p.start))?;
        f.write_all(&new_bytes)
            .with_context(|| format!("writing a partition of {}", disk.display()))?;
        written.push(p.name.clone());
    }
    f.sync_all()?;
    if written.is_empty() {
        bail!(
            "no partition of {} holds {} (the disk and the boot image are from different builds); nothing was signed",
            disk.display(),
            old.display()
        );
    }
    Ok(written)
}

fn set_mtime(p: &Path, epoch: u64) -> Result<()> {
    let f = std::fs::File::options().write(true).open(p)?;
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .with_context(|| format!("setting the mtime of {}", p.display()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn path_arg(p: impl AsRef<std::ffi::OsStr>) -> std::ffi::OsString {
    p.as_ref().to_os_string()
}

fn sibling(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
