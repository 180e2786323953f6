//! The snapshot store: one directory per phase and fingerprint under CACHE_DIR/snapshots,
//! a zstd tarball of the rootfs and its checksummed record, written aside and renamed into place.

use super::fingerprint::Fingerprint;
use super::resync;
use super::tar::tar_args;
use crate::hash::hash_file;
use crate::proc;
use crate::project::Project;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
        let same = resync::unchanged_base(rootfs)
            .and_then(|base| self.entries().into_iter().find(|e| e.base() == base))
            .filter(|e| std::fs::hard_link(e.tarball(), &tarball).is_ok());
        let (size, sha256) = match same {
            // The phase left the tree as the last snapshot has it: the same bytes, linked
            // (~1.5 s of tar and zstd saved per clean build with an empty PACKAGES).
            Some(e) => (e.meta.size, e.meta.sha256),
            None => {
                let mut args = tar_args("--create", &tarball, rootfs);
                args.push(".".into());
                proc::output("tar", args)
                    .with_context(|| format!("snapshotting {} after {phase}", rootfs.display()))?;
                hash_file(&tarball)?
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn fp(digest: &str) -> Fingerprint {
        Fingerprint {
            digest: digest.repeat(16),
            parts: Default::default(),
        }
    }

    #[test]
    fn a_phase_that_changed_nothing_shares_the_last_snapshot_and_one_that_did_not_gets_its_own() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache {
            dir: t.path().join("snapshots"),
        };
        let root = t.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/a"), "a").unwrap();
        let first = cache.store("00-bootstrap", &fp("a"), &root).unwrap();

        // Nothing changed: the same bytes, linked, and a stamp that names the new snapshot.
        let same = cache.store("10-packages", &fp("b"), &root).unwrap();
        let ino = |e: &Entry| std::fs::metadata(e.tarball()).unwrap().ino();
        assert_eq!(ino(&same), ino(&first));
        assert_eq!(
            (same.meta.size, &same.meta.sha256),
            (first.meta.size, &first.meta.sha256)
        );
        cache.verify(&same).unwrap();
        assert_eq!(resync::unchanged_base(&root), Some(same.base()));

        // A changed file's content (same size) is seen by its ctime: a snapshot of its own.
        std::fs::write(root.join("etc/a"), "b").unwrap();
        assert_eq!(resync::unchanged_base(&root), None);
        let changed = cache.store("15-initrd", &fp("c"), &root).unwrap();
        assert_ne!(ino(&changed), ino(&same));
        assert_ne!(changed.meta.sha256, same.meta.sha256);
        cache.verify(&changed).unwrap();
        let out = t.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        proc::output("tar", tar_args("--extract", &changed.tarball(), &out)).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("etc/a")).unwrap(), "b");

        // A new entry is a change too.
        std::fs::write(root.join("etc/new"), "").unwrap();
        assert_eq!(resync::unchanged_base(&root), None);
    }
}
