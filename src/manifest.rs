//! `OUTPUT/manifest.json`: what a successful build produced, and how to check it later.

use crate::conf::hex;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub const FILE: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub tool: String,
    pub tool_version: String,
    pub image_id: String,
    pub image_version: String,
    pub config_digest: String,
    /// The last phase's cache fingerprint: equal on the next build means nothing changed.
    #[serde(default)]
    pub fingerprint: String,
    pub source_date_epoch: u64,
    pub built_at: u64,
    pub phases: Vec<PhaseRecord>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub id: String,
    pub duration_ms: u64,
    pub exit_code: i32,
    /// The rootfs after this phase came from a cache snapshot; the phase did not run.
    #[serde(default)]
    pub restored: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Artifact {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Every regular file under `dir`, except logs and the manifest itself, in path order.
pub fn collect_artifacts(dir: &Path) -> Result<Vec<Artifact>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .expect("walkdir stays below its root");
        let rel = rel.to_string_lossy().into_owned();
        if rel == FILE || rel.starts_with("logs/") {
            continue;
        }
        let (size, sha256) = hash_file(entry.path())?;
        out.push(Artifact {
            path: rel,
            size,
            sha256,
        });
    }
    Ok(out)
}

pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex(&h.finalize())))
}

pub fn write(dir: &Path, m: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(m).context("serializing the manifest")?;
    std::fs::write(dir.join(FILE), text + "\n").with_context(|| format!("writing {}/{FILE}", dir.display()))
}

pub fn read(dir: &Path) -> Result<Manifest> {
    let path = dir.join(FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (has a build finished in this output directory?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    Missing(String),
    Changed { path: String, why: String },
}

/// Re-hashes every recorded artifact.
pub fn check(dir: &Path, m: &Manifest) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for a in &m.artifacts {
        let p = dir.join(&a.path);
        if !p.is_file() {
            problems.push(Problem::Missing(a.path.clone()));
            continue;
        }
        let (size, sha) = hash_file(&p)?;
        if size != a.size {
            problems.push(Problem::Changed {
                path: a.path.clone(),
                why: format!("size {} -> {size}", a.size),
            });
        } else if sha != a.sha256 {
            problems.push(Problem::Changed {
                path: a.path.clone(),
                why: format!("sha256 {} -> {sha}", a.sha256),
            });
        }
    }
    Ok(problems)
}
