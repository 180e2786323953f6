//! `OUTPUT/manifest.json`: what a successful build produced, and how to check it later.

use crate::hash::hash_file;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub tool: String,
    pub tool_version: String,
    pub image_id: String,
    pub image_version: String,
    /// COMPATIBLE as the build saw it: a bundle of this build carries this one, whatever the
    /// config says by the time it is made.
    #[serde(default)]
    pub compatible: String,
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
    /// Modification time (ns): a cheap "untouched since" check for up-to-date builds.
    #[serde(default)]
    pub mtime_ns: u128,
    /// The command that made it from the build afterwards (`bundle`, `sysext`); none for what
    /// the build's phases made. A later build does not carry these over: they would be stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_by: Option<String>,
}

/// The checksum list beside the manifest, in `sha256sum -c` format.
pub const SUMS: &str = "SHA256SUMS";

/// Every regular file under `dir`, except logs and the records themselves, in path order.
/// Files are hashed on all cores at once: the disk image alone is ~1 s of SHA-256.
pub fn collect_artifacts(dir: &Path) -> Result<Vec<Artifact>> {
    let files = recordable(dir)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut hashed: Vec<(usize, Result<Artifact>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(files.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((rel, path)) = files.get(i) else {
                            return done;
                        };
                        let a = hash_file(path).map(|(size, sha256)| Artifact {
                            path: rel.clone(),
                            size,
                            sha256,
                            mtime_ns: mtime_ns(path),
                            made_by: None,
                        });
                        done.push((i, a));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("hashing threads do not panic"))
            .collect()
    });
    hashed.sort_by_key(|(i, _)| *i);
    hashed.into_iter().map(|(_, a)| a).collect()
}

/// Writes manifest.json and SHA256SUMS (the same hashes, for `sha256sum -c`).
pub fn write(dir: &Path, m: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(m).context("serializing the manifest")?;
    std::fs::write(dir.join(FILE), text + "\n")
        .with_context(|| format!("writing {}/{FILE}", dir.display()))?;
    let sums: String = m
        .artifacts
        .iter()
        .map(|a| sums_line(&a.sha256, &a.path))
        .collect();
    std::fs::write(dir.join(SUMS), sums).with_context(|| format!("writing {}/{SUMS}", dir.display()))
}

/// One line as GNU sha256sum writes and reads it: a name with a backslash, newline or carriage
/// return is escaped (`\\`, `\n`, `\r`) and the line starts with a backslash.
fn sums_line(sha256: &str, name: &str) -> String {
    if name.contains(['\\', '\n', '\r']) {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{sha256} *{escaped}\n")
    } else {
        format!("{sha256} *{name}\n")
    }
}

/// Records `rel` (a file in `dir` that `made_by` just made from the build: a bundle, a sysext
/// image) in manifest.json and SHA256SUMS, so `verify` and `sha256sum -c` vouch for it too.
pub fn add_artifact(dir: &Path, rel: &str, made_by: &str) -> Result<()> {
    let mut m = read(dir)?;
    let path = dir.join(rel);
    let (size, sha256) = hash_file(&path)?;
    m.artifacts.retain(|a| a.path != rel);
    m.artifacts.push(Artifact {
        path: rel.to_string(),
        size,
        sha256,
        mtime_ns: mtime_ns(&path),
        made_by: Some(made_by.to_string()),
    });
    m.artifacts.sort_by(|a, b| a.path.cmp(&b.path));
    write(dir, &m)
}

/// Files in `dir` that a build would record but `m` does not list (dropped in afterwards).
pub fn unlisted(dir: &Path, m: &Manifest) -> Result<Vec<String>> {
    let listed: std::collections::HashSet<&str> = m.artifacts.iter().map(|a| a.path.as_str()).collect();
    Ok(recordable(dir)?
        .into_iter()
        .map(|(rel, _)| rel)
        .filter(|rel| !listed.contains(rel.as_str()))
        .collect())
}

/// Every regular file under `dir` a build records (its path relative to `dir`, and where it
/// is), in path order: all but logs and the records themselves.
fn recordable(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .expect("walkdir stays below its root")
            .to_string_lossy()
            .into_owned();
        if !is_bookkeeping(&rel) {
            files.push((rel, entry.into_path()));
        }
    }
    Ok(files)
}

/// The runner's own files in an output directory, never artifacts.
fn is_bookkeeping(rel: &str) -> bool {
    rel == FILE || rel == SUMS || rel == crate::owned::MARKER || rel.starts_with("logs/")
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

pub fn mtime_ns(p: &Path) -> u128 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// Every recorded artifact is there with its recorded size and mtime (no hashing).
pub fn looks_untouched(dir: &Path, m: &Manifest) -> bool {
    m.artifacts.iter().filter(|a| a.made_by.is_none()).all(|a| {
        let p = dir.join(&a.path);
        a.mtime_ns != 0
            && std::fs::metadata(&p).is_ok_and(|md| md.len() == a.size)
            && mtime_ns(&p) == a.mtime_ns
    })
}

/// Re-hashes every recorded artifact.
pub fn check(dir: &Path, m: &Manifest) -> Result<Vec<Problem>> {
    check_artifacts(dir, &m.artifacts)
}

/// Re-hashes the given recorded artifacts.
pub fn check_artifacts<'a>(
    dir: &Path,
    artifacts: impl IntoIterator<Item = &'a Artifact>,
) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for a in artifacts {
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
