//! `loisto-image bundle`: a signed RAUC bundle (format=verity) from the last build's
//! artifacts, for the slots rauc/system.conf defines, checked with `rauc info` before it is
//! kept.

use crate::cli::{BundleArgs, Global};
use crate::error::UsageError;
use crate::project::Project;
use crate::{manifest, proc};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub fn run(g: &Global, args: &BundleArgs) -> Result<()> {
    let project = Project::open(g)?;
    let conf = &project.config;
    let compatible = conf
        .scalar("COMPATIBLE")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            UsageError::new(format!(
                "{}: COMPATIBLE is not set; RAUC refuses bundles whose compatible string does not match the \
             device, so add e.g. COMPATIBLE=\"{}-device\"",
                conf.path.display(),
                conf.image_id
            ))
        })?;
    let m = manifest::read(&project.output).map_err(|_| {
        UsageError::new(format!(
            "no build in {}: run `loisto-image build` first",
            project.output.display()
        ))
    })?;
    let stem = format!("{}_{}", m.image_id, m.image_version);
    let format = conf.scalar("ROOT_FORMAT").unwrap_or("squashfs");
    let artifact = |suffix: &str| -> Result<PathBuf> {
        let p = project.output.join(format!("{stem}{suffix}"));
        if p.is_file() {
            Ok(p)
        } else {
            Err(UsageError::new(format!(
                "the last build has no {} (rebuild with `loisto-image build`)",
                p.display()
            ))
            .into())
        }
    };
    let (root, verity, uki) = (
        artifact(&format!(".root.{format}"))?,
        artifact(".root.verity")?,
        artifact(".efi")?,
    );

    let cert = args
        .cert
        .clone()
        .unwrap_or_else(|| project.dir.join("keys/rauc-release.crt"));
    let key = args
        .key
        .clone()
        .unwrap_or_else(|| project.dir.join("keys/rauc-release.key"));
    let keyring = args
        .keyring
        .clone()
        .unwrap_or_else(|| project.dir.join("rauc/keyring.pem"));
    for (what, p) in [
        ("signing certificate", &cert),
        ("signing key", &key),
        ("keyring", &keyring),
    ] {
        if !p.is_file() {
            return Err(UsageError::new(format!(
                "{what} {} does not exist: run `loisto-image keys` for development keys, or pass --cert/--key/--keyring",
                p.display()
            ))
            .into());
        }
    }
    let out = match &args.output {
        Some(o) => std::path::absolute(o)?,
        None => project.output.join(format!("{stem}.raucb")),
    };

    let content = tempfile::Builder::new()
        .prefix("loisto-bundle.")
        .tempdir()
        .context("creating the bundle directory")?;
    let c = content.path();
    link_or_copy(&root, &c.join(format!("root.{format}")))?;
    link_or_copy(&verity, &c.join("root.verity"))?;
    uki_tar(&uki, &c.join("boot.tar"), m.source_date_epoch)?;
    let adaptive = if args.no_adaptive {
        ""
    } else {
        "adaptive=block-hash-index\n"
    };
    let raucm = format!(
        "[update]\ncompatible={compatible}\nversion={}\nbuild={}\n\n[bundle]\nformat=verity\n\n\
         [image.rootfs]\nfilename=root.{format}\n{adaptive}\n[image.verity]\nfilename=root.verity\n{adaptive}\n\
         [image.boot]\nfilename=boot.tar\n",
        m.image_version, m.source_date_epoch
    );
    std::fs::write(c.join("manifest.raucm"), raucm).context("writing manifest.raucm")?;

    let partial = out.with_extension("raucb.partial");
    let _ = std::fs::remove_file(&partial);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    proc::output(
        "rauc",
        [
            "bundle".to_string(),
            format!("--cert={}", s(&cert)),
            format!("--key={}", s(&key)),
            s(c),
            s(&partial),
        ],
    )
    .context("creating the bundle")?;
    // A bundle that does not verify is worse than none: check it before it takes the name.
    if let Err(e) = proc::output(
        "rauc",
        [
            "info".to_string(),
            format!("--keyring={}", s(&keyring)),
            s(&partial),
        ],
    ) {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "the new bundle does not verify against {}; nothing was written: {e:#}",
            keyring.display()
        );
    }
    std::fs::rename(&partial, &out).with_context(|| format!("moving the bundle to {}", out.display()))?;
    if !g.quiet {
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!(
            "{} ({:.1} MiB, compatible={compatible}, version={}) in {}; verified against {}",
            out.display(),
            size as f64 / 1048576.0,
            m.image_version,
            crate::ui::secs(started.elapsed()),
            keyring.display()
        );
    }
    Ok(())
}

fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    if std::fs::hard_link(src, dest).is_err() {
        std::fs::copy(src, dest).with_context(|| format!("copying {}", src.display()))?;
    }
    Ok(())
}

/// The boot slot's content: the UKI where UEFI firmware looks for it, as a reproducible tar
/// (RAUC formats the vfat slot and unpacks it).
fn uki_tar(uki: &Path, tar: &Path, mtime: u64) -> Result<()> {
    let stage = tar.with_extension("d");
    let efi = stage.join("EFI/BOOT");
    std::fs::create_dir_all(&efi)?;
    link_or_copy(uki, &efi.join("BOOTX64.EFI"))?;
    proc::output(
        "tar",
        [
            "--create".to_string(),
            "--file".into(),
            tar.to_string_lossy().into_owned(),
            "--directory".into(),
            stage.to_string_lossy().into_owned(),
            "--sort=name".into(),
            format!("--mtime=@{mtime}"),
            "--owner=0".into(),
            "--group=0".into(),
            "--numeric-owner".into(),
            "EFI".into(),
        ],
    )?;
    std::fs::remove_dir_all(&stage)?;
    Ok(())
}
