//! `loisto-image bundle`: a signed RAUC bundle (format=verity) from the last build's
//! artifacts, for the slots rauc/system.conf defines, checked with `rauc info` before it is
//! kept.

use crate::cli::{BundleArgs, Global};
use crate::error::UsageError;
use crate::project::Project;
use crate::{manifest, proc};
use anyhow::{Context, Result, bail};
use std::path::Path;

pub fn run(g: &Global, args: &BundleArgs) -> Result<()> {
    let project = Project::open(g)?;
    let conf = &project.config;
    let m = manifest::read(&project.output).map_err(|_| {
        UsageError::new(format!(
            "no build in {}: run `loisto-image build` first",
            project.output.display()
        ))
    })?;
    // What the build recorded decides, not what the config says today.
    let compatible = Some(m.compatible.as_str())
        .filter(|c| !c.is_empty())
        .or(conf.scalar("COMPATIBLE"))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            UsageError::new(format!(
                "{}: COMPATIBLE is not set; RAUC refuses bundles whose compatible string does not match the \
             device, so add e.g. COMPATIBLE=\"{}-device\" and rebuild",
                conf.path.display(),
                conf.image_id
            ))
        })?
        .to_string();
    let stem = format!("{}_{}", m.image_id, m.image_version);
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

    make(&Request {
        output_dir: &project.output,
        manifest: &m,
        compatible: &compatible,
        cert: &cert,
        key: &key,
        keyring: &keyring,
        out: &out,
        adaptive: !args.no_adaptive,
        boot: None,
        made_by: "bundle",
        quiet: g.quiet,
    })
}

/// A bundle of the build in `output_dir`, signed, checked, and recorded in its manifest when
/// it lands there.
pub struct Request<'a> {
    pub output_dir: &'a Path,
    pub manifest: &'a manifest::Manifest,
    pub compatible: &'a str,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub keyring: &'a Path,
    pub out: &'a Path,
    pub adaptive: bool,
    /// A boot image to ship instead of the recorded one (`sign`'s, made from signed UKIs).
    pub boot: Option<&'a Path>,
    /// The command recorded as its maker in manifest.json.
    pub made_by: &'a str,
    pub quiet: bool,
}

pub fn make(r: &Request) -> Result<()> {
    let m = r.manifest;
    let stem = format!("{}_{}", m.image_id, m.image_version);
    let recorded = |suffix: &str| m.artifacts.iter().find(|a| a.path == format!("{stem}{suffix}"));
    if recorded(".root.squashfs").is_none() && recorded(".root.erofs").is_some() {
        return Err(UsageError::new(
            "the last build made an erofs OS image, which RAUC 1.8 cannot install: it copies raw slot \
             images only for the names it knows (*.squashfs, *.ext4, *.vfat); build with ROOT_FORMAT=squashfs \
             to make bundles",
        )
        .into());
    }
    let mut inputs = Vec::new();
    for suffix in [".root.squashfs", ".root.verity", ".boot.vfat"] {
        let a = recorded(suffix).ok_or_else(|| {
            UsageError::new(format!(
                "the last build in {} recorded no {stem}{suffix} (rebuild with `loisto-image build`)",
                r.output_dir.display()
            ))
        })?;
        inputs.push(a);
    }
    // Sign only what the build made: a byte changed since would be signed as if it were ours.
    if let Some(p) = manifest::check_artifacts(r.output_dir, inputs.iter().copied())?.first() {
        let (path, why) = match p {
            manifest::Problem::Missing(path) => (path, "missing".to_string()),
            manifest::Problem::Changed { path, why } => (path, why.clone()),
        };
        bail!(
            "{} does not match manifest.json ({why}): it changed after the build; nothing was signed. \
             Rebuild with `loisto-image build`",
            r.output_dir.join(path).display()
        );
    }
    let [root, verity, recorded_boot] = [0, 1, 2].map(|i| r.output_dir.join(&inputs[i].path));
    let boot = r.boot.map_or(recorded_boot, Path::to_path_buf);

    let (compatible, out, keyring) = (r.compatible, r.out, r.keyring);
    let content = tempfile::Builder::new()
        .prefix("loisto-bundle.")
        .tempdir()
        .context("creating the bundle directory")?;
    let c = content.path();
    // RAUC 1.8 picks its install handler by file name and has none for a bare hash tree: as
    // *.squashfs the raw handler copies it byte for byte, which is all a verity slot needs.
    link_or_copy(&root, &c.join("root.squashfs"))?;
    link_or_copy(&verity, &c.join("root-verity.squashfs"))?;
    // The boot partition image holds both slots' UKIs; each slot's boot entry names its own.
    link_or_copy(&boot, &c.join("boot.vfat"))?;
    let adaptive = if !r.adaptive {
        ""
    } else {
        "adaptive=block-hash-index\n"
    };
    let raucm = format!(
        "[update]\ncompatible={compatible}\nversion={}\nbuild={}\n\n[bundle]\nformat=verity\n\n\
         [image.rootfs]\nfilename=root.squashfs\n{adaptive}\n[image.verity]\nfilename=root-verity.squashfs\n{adaptive}\n\
         [image.boot]\nfilename=boot.vfat\n",
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
            format!("--cert={}", s(r.cert)),
            format!("--key={}", s(r.key)),
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
            format!("--keyring={}", s(keyring)),
            s(&partial),
        ],
    ) {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "the new bundle does not verify against {}; nothing was written: {e:#}",
            keyring.display()
        );
    }
    std::fs::rename(&partial, out).with_context(|| format!("moving the bundle to {}", out.display()))?;
    // A bundle in the output is part of what `verify` and SHA256SUMS vouch for.
    if let Ok(rel) = out.strip_prefix(r.output_dir) {
        manifest::add_artifact(r.output_dir, &rel.to_string_lossy(), r.made_by)
            .context("recording the bundle in manifest.json")?;
    }
    if !r.quiet {
        let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
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
