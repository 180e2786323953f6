//! Rootfs snapshots after the expensive phases, keyed by a fingerprint of everything the
//! phases up to them read. A rebuild restores the newest valid snapshot and runs only what
//! follows; every entry is checksummed and verified before it is used.

use crate::conf::{Value, hex};
use crate::manifest::hash_file;
use crate::phase::Phase;
use crate::project::Project;
use crate::{proc, resync, tools};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one phase's result depends on. `parts` keeps the pieces so a change can be named.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fingerprint {
    pub digest: String,
    pub parts: BTreeMap<String, String>,
}

/// Fingerprints for `phases` in order; each includes the previous one, so a change to an
/// earlier phase changes every later fingerprint.
pub fn fingerprints(project: &Project, phases: &[Phase]) -> Result<Vec<Fingerprint>> {
    let lib = tree_hash(&project.phases_dir().join("lib"))?;
    let mut versions = tools::Versions::load(&project.cache_dir.join("tool-versions.json"));
    let mut out: Vec<Fingerprint> = Vec::new();
    for ph in phases {
        let mut parts = BTreeMap::new();
        parts.insert("script".to_string(), hash_file(&ph.path)?.1);
        parts.insert("file:phases/lib".to_string(), lib.clone());
        parts.insert(
            "tool:loisto-image".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        if let Some(prev) = out.last() {
            parts.insert("after".to_string(), prev.digest.clone());
        }
        if !ph.header.declares_inputs {
            // Unknown inputs: at least every config value counts.
            parts.insert("config:*".to_string(), project.config.digest());
        }
        for input in &ph.header.inputs {
            let (key, value) = input_value(project, input)?;
            parts.insert(key, value);
        }
        for group in &ph.header.tools {
            let version = tools::resolve(group)
                .map(|(name, path)| {
                    versions
                        .get(&name, &path)
                        .unwrap_or_else(|| path.display().to_string())
                })
                .unwrap_or_else(|| "<missing>".into());
            parts.insert(format!("tool:{}", group.join("|")), version);
        }
        let mut h = Sha256::new();
        for (k, v) in &parts {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        out.push(Fingerprint {
            digest: hex(&h.finalize()),
            parts,
        });
    }
    versions.save();
    Ok(out)
}

/// `KEY` is a config value, `$KEY` the file a config value names, anything else a project path.
fn input_value(project: &Project, input: &str) -> Result<(String, String)> {
    let is_key = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    if let Some(key) = input.strip_prefix('$').filter(|k| is_key(k)) {
        let named = project.config.scalar(key).unwrap_or("");
        let value = if named.is_empty() {
            "<unset>".to_string()
        } else {
            tree_hash(&project.dir.join(named))?
        };
        return Ok((format!("file:${key}"), value));
    }
    if is_key(input) {
        let value = match project.config.vars.get(input) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Array(a)) => serde_json::to_string(a)?,
            None => "<unset>".into(),
        };
        return Ok((format!("config:{input}"), value));
    }
    let rel = input.trim_end_matches('/');
    Ok((format!("file:{rel}"), tree_hash(&project.dir.join(rel))?))
}

/// A digest of a file or a whole directory: names, modes, link targets and contents.
pub fn tree_hash(path: &Path) -> Result<String> {
    if !path.exists() && path.symlink_metadata().is_err() {
        return Ok("<missing>".into());
    }
    let mut h = Sha256::new();
    for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let rel = entry.path().strip_prefix(path).unwrap_or(entry.path());
        use std::os::unix::fs::PermissionsExt;
        let meta = entry.path().symlink_metadata()?;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(format!("\0{:o}\0", meta.permissions().mode()).as_bytes());
        if meta.file_type().is_symlink() {
            h.update(std::fs::read_link(entry.path())?.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            h.update(hash_file(entry.path())?.1.as_bytes());
        }
        h.update([0]);
    }
    Ok(hex(&h.finalize()))
}

/// A stored snapshot's record, next to its tarball.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub phase: String,
    pub fingerprint: Fingerprint,
    pub sha256: String,
    pub size: u64,
    pub created: u64,
}

pub struct Cache {
    pub dir: PathBuf,
}

pub struct Entry {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Entry {
    fn tarball(&self) -> PathBuf {
        self.dir.join("rootfs.tar.zst")
    }

    /// Names this snapshot's exact bytes for a rootfs stamp.
    fn base(&self) -> String {
        format!("{} {}", self.meta.phase, self.meta.sha256)
    }
}

/// How a restore went.
pub enum Restored {
    /// Extracted whole, and why a resync was not possible.
    Whole(String),
    /// Only what changed since the rootfs last matched the snapshot was undone.
    Resynced(resync::Report),
}

impl Cache {
    pub fn new(project: &Project) -> Cache {
        Cache {
            dir: project.cache_dir.join("snapshots"),
        }
    }

    fn entry_dir(&self, phase: &str, digest: &str) -> PathBuf {
        self.dir.join(format!("{phase}-{}", &digest[..16]))
    }

    pub fn entries(&self) -> Vec<Entry> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<Entry> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = std::fs::read_to_string(e.path().join("meta.json")).ok()?;
                Some(Entry {
                    dir: e.path(),
                    meta: serde_json::from_str(&meta).ok()?,
                })
            })
            .collect();
        v.sort_by_key(|e| e.meta.created);
        v
    }

    /// The entry for exactly this phase and fingerprint, if one was stored.
    pub fn find(&self, phase: &str, fp: &Fingerprint) -> Option<Entry> {
        let dir = self.entry_dir(phase, &fp.digest);
        let meta: Meta = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).ok()?).ok()?;
        (meta.fingerprint.digest == fp.digest).then_some(Entry { dir, meta })
    }

    /// The newest entry for a phase, whatever its fingerprint: what `plan --explain` compares with.
    pub fn newest(&self, phase: &str) -> Option<Entry> {
        self.entries().into_iter().rfind(|e| e.meta.phase == phase)
    }

    /// Checks the tarball against its recorded sha256.
    pub fn verify(&self, e: &Entry) -> Result<(), String> {
        match hash_file(&e.tarball()) {
            Ok((size, sha)) if size == e.meta.size && sha == e.meta.sha256 => Ok(()),
            Ok((size, sha)) => Err(format!(
                "size {size} / sha256 {sha} instead of {} / {}",
                e.meta.size, e.meta.sha256
            )),
            Err(err) => Err(format!("{err:#}")),
        }
    }

    pub fn remove(&self, e: &Entry) {
        let _ = std::fs::remove_dir_all(&e.dir);
    }

    /// Stores `rootfs` as the snapshot after `phase`; written aside and renamed into place.
    pub fn store(&self, phase: &str, fp: &Fingerprint, rootfs: &Path) -> Result<Entry> {
        let dir = self.entry_dir(phase, &fp.digest);
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let tarball = tmp.join("rootfs.tar.zst");
        let mut args = tar_args("--create", &tarball, rootfs);
        args.push(".".into());
        proc::output("tar", args)
            .with_context(|| format!("snapshotting {} after {phase}", rootfs.display()))?;
        let (size, sha256) = hash_file(&tarball)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let meta = Meta {
            phase: phase.into(),
            fingerprint: fp.clone(),
            sha256,
            size,
            created,
        };
        std::fs::write(tmp.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).with_context(|| format!("storing {}", dir.display()))?;
        let e = Entry { dir, meta };
        // The rootfs is the snapshot right now: the next rebuild can resync instead of extract.
        resync::record(rootfs, &e.base(), None)?;
        Ok(e)
    }

    /// Makes `rootfs` the snapshot's tree: by undoing what happened since it last matched this
    /// snapshot when its stamp says so (see resync.rs), else by extracting it whole.
    pub fn restore(&self, e: &Entry, rootfs: &Path) -> Result<Restored> {
        let base = e.base();
        let why = match resync::sync(rootfs, &base, &e.tarball()) {
            Ok(r) => return Ok(Restored::Resynced(r)),
            Err(why) => why,
        };
        resync::forget(rootfs);
        if rootfs.exists() {
            std::fs::remove_dir_all(rootfs).with_context(|| format!("clearing {}", rootfs.display()))?;
        }
        std::fs::create_dir_all(rootfs)?;
        proc::output("tar", tar_args("--extract", &e.tarball(), rootfs))
            .with_context(|| format!("restoring {} from {}", rootfs.display(), e.dir.display()))?;
        resync::record(rootfs, &base, None)?;
        Ok(Restored::Whole(why))
    }

    pub fn size(&self) -> u64 {
        self.entries().iter().map(|e| e.meta.size).sum()
    }

    /// Bytes in CACHE_DIR besides the snapshots: the squashfs block caches and package
    /// downloads, which bound themselves and are not pruned against `CACHE_MAX_SIZE`.
    pub fn others_size(&self) -> u64 {
        let Some(root) = self.dir.parent() else { return 0 };
        walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.path() != self.dir)
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    /// Drops the oldest entries until the cache fits `limit`, keeping the `keep` ones.
    pub fn prune(&self, limit: u64, keep: &[PathBuf]) -> Vec<String> {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.meta.size).sum();
        let mut removed = Vec::new();
        entries.retain(|e| !keep.contains(&e.dir));
        for e in entries {
            if total <= limit {
                break;
            }
            total = total.saturating_sub(e.meta.size);
            removed.push(
                e.dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            self.remove(&e);
        }
        removed
    }
}

/// pzstd writes independent frames, so restores decompress on every core (zstd cannot).
pub(crate) fn tar_args(mode: &str, tarball: &Path, dir: &Path) -> Vec<String> {
    let mut args = tar_args_uncompressed(mode, tarball, dir);
    args.push("--use-compress-program=pzstd -q -3".into());
    args
}

/// Everything a rootfs holds (xattrs, ACLs, numeric owners), in a plain tar.
pub(crate) fn tar_args_uncompressed(mode: &str, tarball: &Path, dir: &Path) -> Vec<String> {
    vec![
        mode.to_string(),
        "--file".into(),
        tarball.to_string_lossy().into_owned(),
        "--directory".into(),
        dir.to_string_lossy().into_owned(),
        "--xattrs".into(),
        "--xattrs-include=*".into(),
        "--acls".into(),
        "--numeric-owner".into(),
    ]
}

/// Why a phase's fingerprint differs from a stored one, in words: `PACKAGES changed: +htop`.
pub fn explain(old: &Fingerprint, new: &Fingerprint) -> Vec<String> {
    let mut why = Vec::new();
    let keys: std::collections::BTreeSet<&String> = old.parts.keys().chain(new.parts.keys()).collect();
    for k in keys {
        let (a, b) = (old.parts.get(k), new.parts.get(k));
        if a == b {
            continue;
        }
        let line = match k.split_once(':') {
            Some(("config", key)) => match (a.and_then(|s| list(s)), b.and_then(|s| list(s))) {
                (Some(x), Some(y)) => {
                    let added: Vec<String> = y
                        .iter()
                        .filter(|i| !x.contains(i))
                        .map(|i| format!("+{i}"))
                        .collect();
                    let gone: Vec<String> = x
                        .iter()
                        .filter(|i| !y.contains(i))
                        .map(|i| format!("-{i}"))
                        .collect();
                    format!("{key} changed: {}", [added, gone].concat().join(" "))
                }
                _ => format!(
                    "{key} changed: {} -> {}",
                    a.map_or("<unset>", |s| s),
                    b.map_or("<unset>", |s| s)
                ),
            },
            Some(("file", path)) => format!("{path} changed"),
            Some(("tool", name)) => format!(
                "{name} changed: {} -> {}",
                a.map_or("?", |s| s),
                b.map_or("?", |s| s)
            ),
            _ if k == "script" => "the phase script changed".into(),
            _ if k == "after" => "an earlier phase changed".into(),
            _ => format!("{k} changed"),
        };
        why.push(line);
    }
    // "an earlier phase changed" says nothing new when this phase's own inputs changed too.
    if why.len() > 1 {
        why.retain(|w| w != "an earlier phase changed");
    }
    why
}

fn list(s: &str) -> Option<Vec<String>> {
    serde_json::from_str::<Vec<String>>(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(parts: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            digest: String::new(),
            parts: parts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn explains_array_and_scalar_changes() {
        let old = fp(&[
            ("config:PACKAGES", r#"["vim"]"#),
            ("config:DISTRO", "debian"),
            ("after", "a"),
        ]);
        let new = fp(&[
            ("config:PACKAGES", r#"["vim","htop"]"#),
            ("config:DISTRO", "arch"),
            ("after", "b"),
        ]);
        assert_eq!(
            explain(&old, &new),
            vec!["DISTRO changed: debian -> arch", "PACKAGES changed: +htop"]
        );
        let only_after = fp(&[("after", "c")]);
        assert_eq!(
            explain(&fp(&[("after", "a")]), &only_after),
            vec!["an earlier phase changed"]
        );
    }

    #[test]
    fn tree_hash_sees_content_and_mode_changes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "1").unwrap();
        let h1 = tree_hash(d.path()).unwrap();
        std::fs::write(d.path().join("a"), "2").unwrap();
        let h2 = tree_hash(d.path()).unwrap();
        assert_ne!(h1, h2);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(h2, tree_hash(d.path()).unwrap());
        assert_eq!(tree_hash(&d.path().join("nope")).unwrap(), "<missing>");
    }
}
