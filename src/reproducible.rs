//! `build --check-reproducible`: a second, uncached build into its own directories, and a
//! byte-for-byte comparison of every artifact the two produced.

use crate::manifest::{self, Manifest};
use crate::proc;
use crate::project::Project;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;

/// Builds again under BUILD_DIR/reproducible (no cache) and compares with `first`.
pub fn check(project: &Project, first: &Manifest, quiet: bool) -> Result<()> {
    let base = project.build_dir.join("reproducible");
    if base.exists() {
        std::fs::remove_dir_all(&base).with_context(|| format!("clearing {}", base.display()))?;
    }
    let exe = std::env::current_exe().context("locating loisto-image")?;
    let mut args: Vec<String> = vec!["-C".into(), project.dir.to_string_lossy().into_owned()];
    args.extend([
        "--config".into(),
        project.config.path.to_string_lossy().into_owned(),
    ]);
    for (key, dir) in [
        ("OUTPUT", "output"),
        ("BUILD_DIR", "build"),
        ("ROOTFS", "build/rootfs"),
    ] {
        args.extend(["--set".into(), format!("{key}={}", base.join(dir).display())]);
    }
    // The same values the first build resolved, so only the machine's behaviour can differ.
    for (k, v) in project.config.vars.iter() {
        if !["OUTPUT", "BUILD_DIR", "ROOTFS", "SOURCE_DATE_EPOCH"].contains(&k)
            && matches!(v, crate::conf::Value::Str(_))
        {
            args.extend(["--set".into(), format!("{k}={}", v.as_scalar())]);
        }
    }
    args.extend([
        "--set".into(),
        format!("SOURCE_DATE_EPOCH={}", first.source_date_epoch),
    ]);
    args.extend(["-q".into(), "build".into(), "--no-cache".into()]);
    if !quiet {
        eprintln!(
            "\nreproducibility: building again into {} without the cache",
            base.display()
        );
    }
    proc::output(&exe.to_string_lossy(), args).context("the second build for --check-reproducible failed")?;
    let second_dir = base.join("output");
    let second = manifest::read(&second_dir)?;

    let mut differ = 0;
    println!("{:<40}  result", "artifact");
    for a in &first.artifacts {
        let verdict = match second.artifacts.iter().find(|b| b.path == a.path) {
            None => "missing from the second build".to_string(),
            Some(b) if b.sha256 == a.sha256 => "identical".to_string(),
            Some(_) => describe(&project.output.join(&a.path), &second_dir.join(&a.path))?,
        };
        if verdict != "identical" {
            differ += 1;
        }
        println!("{:<40}  {verdict}", a.path);
    }
    for b in second
        .artifacts
        .iter()
        .filter(|b| !first.artifacts.iter().any(|a| a.path == b.path))
    {
        differ += 1;
        println!("{:<40}  only in the second build", b.path);
    }
    if differ > 0 {
        bail!(
            "{differ} artifacts differ between two builds of the same inputs (second build in {})",
            second_dir.display()
        );
    }
    println!("all {} artifacts are identical", first.artifacts.len());
    Ok(())
}

/// Where two files differ: the first offset, how many 4 KiB blocks, and for a GPT disk
/// image, which partitions those blocks are in.
fn describe(a: &Path, b: &Path) -> Result<String> {
    let blocks = differing_blocks(a, b)?;
    let first = blocks.first().map(|(_, off)| *off).unwrap_or(0);
    let mut s = format!("DIFFERS: {} blocks of 4 KiB, first at byte {first}", blocks.len());
    if a.extension().is_some_and(|e| e == "img")
        && let Ok(parts) = partitions(a)
    {
        let mut names: Vec<&str> = blocks
            .iter()
            .map(|(_, off)| {
                parts
                    .iter()
                    .find(|(_, start, size)| off >= start && *off < start + size)
                    .map_or("(outside partitions)", |p| p.0.as_str())
            })
            .collect();
        names.dedup();
        names.sort();
        names.dedup();
        s.push_str(&format!(" in {}", names.join(", ")));
    }
    Ok(s)
}

fn differing_blocks(a: &Path, b: &Path) -> Result<Vec<(u64, u64)>> {
    let mut fa = std::fs::File::open(a).with_context(|| format!("opening {}", a.display()))?;
    let mut fb = std::fs::File::open(b).with_context(|| format!("opening {}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut out = Vec::new();
    let mut n = 0u64;
    loop {
        let ra = fa.read(&mut ba)?;
        let rb = fb.read(&mut bb)?;
        if ra == 0 && rb == 0 {
            break;
        }
        if ba[..ra] != bb[..rb] {
            out.push((n, n * 4096));
        }
        n += 1;
    }
    Ok(out)
}

/// (name, byte offset, byte size) of each partition of a GPT image.
fn partitions(img: &Path) -> Result<Vec<(String, u64, u64)>> {
    let json = proc::output(
        "sfdisk",
        ["--json".to_string(), img.to_string_lossy().into_owned()],
    )?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    Ok(v["partitiontable"]["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("?").to_string(),
                        p["start"].as_u64().unwrap_or(0) * 512,
                        p["size"].as_u64().unwrap_or(0) * 512,
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}
