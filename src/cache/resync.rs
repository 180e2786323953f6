//! Bringing the working rootfs back to a snapshot by undoing only what later phases changed.
//!
//! Extracting a whole snapshot rewrites ~300 MiB on every rebuild although the phases after
//! it (overlay, configure) touch a few dozen entries. So whenever the rootfs equals a
//! snapshot (just stored or just restored) the runner writes a stamp next to it: every entry's
//! inode number and ctime. The kernel moves ctime on any change to an inode (content, mode,
//! owner, xattrs, link count) and user space cannot set it back, so an entry whose inode and
//! ctime match the stamp is still the one the snapshot put there. A resync deletes what is new
//! or changed and extracts from the snapshot only what is missing, plus the directories around
//! those entries so their mtimes are the snapshot's again. Anything unexpected (no stamp,
//! another snapshot, tar refusing) means a full restore instead.
//!
//! Taking a dozen files from a snapshot still means decompressing all of it (~0.5 s). The
//! entries a resync took are therefore also kept in a small plain tar beside the stamp (the
//! "hot" set, checksummed in the stamp): the next rebuild usually needs exactly those again,
//! since the overlay replaces the same files, and reads them from there.

use crate::proc;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MAGIC: &str = "loisto-stamp 2";

/// What the snapshot put at a path: enough to tell whether it is still there, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    ino: u64,
    ctime: (i64, i64),
    dir: bool,
}

impl Mark {
    fn of(md: &std::fs::Metadata) -> Mark {
        Mark {
            ino: md.ino(),
            ctime: (md.ctime(), md.ctime_nsec()),
            dir: md.is_dir(),
        }
    }
}

/// The stamp's record of every entry, by path below the rootfs.
type Marks = HashMap<Vec<u8>, Mark>;

/// What a resync did, for the log and the progress line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub entries: usize,
    pub removed: usize,
    pub extracted: usize,
    /// The extracted entries came from the hot set, not the snapshot.
    pub from_hot: bool,
}

/// A file beside the rootfs (`build/rootfs.stamp`), so `clean` and a moved build directory
/// take it along.
fn beside(rootfs: &Path, suffix: &str) -> PathBuf {
    let mut name = rootfs.file_name().unwrap_or(OsStr::new("rootfs")).to_os_string();
    name.push(suffix);
    rootfs.with_file_name(name)
}

pub fn stamp_path(rootfs: &Path) -> PathBuf {
    beside(rootfs, ".stamp")
}

fn hot_path(rootfs: &Path) -> PathBuf {
    beside(rootfs, ".hot.tar")
}

/// What this module keeps beside a rootfs, for `clean`.
pub fn files_beside(rootfs: &Path) -> [PathBuf; 2] {
    [stamp_path(rootfs), hot_path(rootfs)]
}

/// The snapshot's own copies of the entries the last resync took from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hot {
    members: BTreeSet<Vec<u8>>,
    sha256: String,
}

/// Forgets what the rootfs was: the next restore extracts the whole snapshot.
pub fn forget(rootfs: &Path) {
    let _ = std::fs::remove_file(stamp_path(rootfs));
}

/// Records that `rootfs` is now exactly the snapshot called `base`.
pub fn record(rootfs: &Path, base: &str, hot: Option<&Hot>) -> Result<()> {
    let marks = scan(rootfs)?;
    let path = stamp_path(rootfs);
    let tmp = path.with_extension("stamp.partial");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    writeln!(out, "{MAGIC} {base}")?;
    match hot {
        Some(h) => {
            writeln!(out, "hot {} {}", h.sha256, h.members.len())?;
            for m in &h.members {
                out.write_all(m)?;
                out.write_all(b"\0")?;
            }
        }
        None => writeln!(out, "hot - 0")?,
    }
    for (rel, m) in &marks {
        write!(
            out,
            "{} {} {} {} ",
            m.ino,
            m.ctime.0,
            m.ctime.1,
            if m.dir { 'd' } else { '-' }
        )?;
        out.write_all(rel)?;
        out.write_all(b"\0")?;
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_data())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    // A filesystem that keeps ctime in whole seconds would give a change made within this
    // second the ctime in the stamp: let the second pass before any phase runs.
    if marks.iter().all(|(_, m)| m.ctime.1 == 0) {
        let newest = marks.iter().map(|(_, m)| m.ctime.0).max().unwrap_or(0);
        while unix_now() <= newest {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The snapshot the rootfs still is, if no entry is new, gone or changed since the stamp for
/// it was written (same inode and ctime everywhere): a phase that changed nothing (an empty
/// package list) leaves the same tree, and its snapshot can share the last one's bytes.
pub fn unchanged_base(rootfs: &Path) -> Option<String> {
    let data = std::fs::read(stamp_path(rootfs)).ok()?;
    let (head, _) = split_line(&data)?;
    let base = std::str::from_utf8(head)
        .ok()?
        .strip_prefix(MAGIC)?
        .trim_start()
        .to_string();
    let (stamp, _) = read_stamp(&stamp_path(rootfs), &base)?;
    let live = scan(rootfs).ok()?;
    (live.len() == stamp.len() && live.iter().all(|(rel, m)| stamp.get(rel) == Some(m))).then_some(base)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Brings `rootfs` back to the snapshot `base` stored in `tarball`, if the stamp says the
/// rootfs came from it. `Err(why)`: no usable stamp, the caller restores in full.
pub fn sync(rootfs: &Path, base: &str, tarball: &Path) -> Result<Report, String> {
    let path = stamp_path(rootfs);
    if !path.exists() {
        return Err("no stamp from an earlier build".into());
    }
    let Some((stamp, hot)) = read_stamp(&path, base) else {
        return Err("the stamp is of another snapshot or an older loisto-image".into());
    };
    resync(rootfs, base, tarball, &stamp, hot).map_err(|e| format!("{e:#}"))
}

fn resync(rootfs: &Path, base: &str, tarball: &Path, stamp: &Marks, hot: Option<Hot>) -> Result<Report> {
    // From here on the rootfs is in between; without a stamp an interruption means a full
    // restore next time, never a wrong one.
    forget(rootfs);
    let live = scan(rootfs)?;
    let plan = plan(stamp, &live);
    for rel in &plan.remove {
        let p = rootfs.join(OsStr::from_bytes(rel));
        let gone = match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) => Err(e),
        };
        gone.with_context(|| format!("removing {} (changed since the snapshot)", p.display()))?;
    }
    let mut from_hot = false;
    let mut keep = hot;
    if !plan.extract.is_empty() {
        let list = beside(rootfs, ".extract");
        write_list(&list, &plan.extract)?;
        let hot_file = hot_path(rootfs);
        // The hot set serves when it holds everything needed and is intact.
        from_hot = keep.as_ref().is_some_and(|h| {
            plan.extract.is_subset(&h.members)
                && crate::hash::hash_file(&hot_file).is_ok_and(|(_, sha)| sha == h.sha256)
        });
        let mut args = if from_hot {
            super::tar::tar_args_uncompressed("--extract", &hot_file, rootfs)
        } else {
            super::tar::tar_args("--extract", tarball, rootfs)
        };
        args.extend(["--no-recursion".into(), "--null".into()]);
        args.push(format!("--files-from={}", list.display()));
        let source = if from_hot { &hot_file } else { tarball };
        proc::output("tar", args)
            .with_context(|| format!("extracting changed entries from {}", source.display()))?;
        if !from_hot {
            // Straight from the verified snapshot and untouched yet: exactly its entries.
            let mut args = super::tar::tar_args_uncompressed("--create", &hot_file, rootfs);
            args.extend(["--no-recursion".into(), "--null".into()]);
            args.push(format!("--files-from={}", list.display()));
            keep = proc::output("tar", args)
                .and_then(|_| crate::hash::hash_file(&hot_file))
                .ok()
                .map(|(_, sha256)| Hot {
                    members: plan.extract.clone(),
                    sha256,
                });
        }
        let _ = std::fs::remove_file(&list);
    }
    record(rootfs, base, keep.as_ref())?;
    Ok(Report {
        entries: stamp.len(),
        removed: plan.remove.len(),
        extracted: plan.extract.len(),
        from_hot,
    })
}

/// Names as tar's `--null --files-from` reads them: `./etc/hostname`, the root as `.`.
fn write_list(list: &Path, names: &BTreeSet<Vec<u8>>) -> Result<()> {
    let mut text = Vec::new();
    for rel in names {
        text.extend_from_slice(if rel.is_empty() { b"." } else { b"./" });
        text.extend_from_slice(rel);
        text.push(0);
    }
    std::fs::write(list, text).with_context(|| format!("writing {}", list.display()))
}

#[derive(Debug, Default)]
struct Plan {
    /// Entries that are new or changed, outermost first; a removed directory takes its contents.
    remove: Vec<Vec<u8>>,
    /// Snapshot entries to take from the archive: missing ones, and the directories whose
    /// metadata (mtime above all) the phases or the removals changed.
    extract: BTreeSet<Vec<u8>>,
}

fn plan(stamp: &Marks, live: &[(Vec<u8>, Mark)]) -> Plan {
    let mut p = Plan::default();
    let mut seen = std::collections::HashSet::new();
    let mut removed_dir: Option<Vec<u8>> = None;
    for (rel, now) in live {
        if let Some(d) = &removed_dir
            && rel.starts_with(d)
            && rel.get(d.len()) == Some(&b'/')
        {
            continue;
        }
        match stamp.get(rel) {
            Some(was) if was == now => {
                seen.insert(rel.as_slice());
            }
            Some(was) if was.dir && now.dir => {
                seen.insert(rel.as_slice());
                p.extract.insert(rel.clone());
            }
            _ => {
                // Its parent's mtime: either the phase changed the parent too (adding an
                // entry does), or the entry is also missing below, which takes the parent.
                p.remove.push(rel.clone());
                if now.dir {
                    removed_dir = Some(rel.clone());
                }
            }
        }
    }
    for rel in stamp.keys() {
        if !seen.contains(rel.as_slice()) {
            p.extract.insert(rel.clone());
            p.extract.insert(parent(rel).to_vec());
        }
    }
    p
}

fn parent(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => b"",
    }
}

/// Every entry below `rootfs` (the root itself as ""), parents before children. Sockets are
/// left out: tar does not archive them, so they are never part of a snapshot.
fn scan(rootfs: &Path) -> Result<Vec<(Vec<u8>, Mark)>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(rootfs).follow_links(false) {
        let entry = entry.with_context(|| format!("walking {}", rootfs.display()))?;
        let md = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        if std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(rootfs)
            .expect("walkdir stays below its root");
        out.push((rel.as_os_str().as_bytes().to_vec(), Mark::of(&md)));
    }
    if !out.first().is_some_and(|(_, m)| m.dir) {
        bail!("{} is not a directory", rootfs.display());
    }
    Ok(out)
}

fn read_stamp(path: &Path, base: &str) -> Option<(Marks, Option<Hot>)> {
    let data = std::fs::read(path).ok()?;
    let (head, rest) = split_line(&data)?;
    if head != format!("{MAGIC} {base}").as_bytes() {
        return None;
    }
    let (hot_line, mut rest) = split_line(rest)?;
    let hot_line = std::str::from_utf8(hot_line).ok()?;
    let mut f = hot_line.split(' ');
    let (sha256, count) = match (f.next()?, f.next()?, f.next()?.parse::<usize>().ok()?) {
        ("hot", sha, n) => (sha.to_string(), n),
        _ => return None,
    };
    let mut members = BTreeSet::new();
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        members.insert(rest[..end].to_vec());
        rest = &rest[end + 1..];
    }
    let hot = (sha256 != "-").then_some(Hot { members, sha256 });
    let mut marks = HashMap::new();
    for rec in rest.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let mut f = rec.splitn(5, |&b| b == b' ');
        let mut num = || std::str::from_utf8(f.next()?).ok()?.parse::<i64>().ok();
        let ino = num()? as u64;
        let ctime = (num()?, num()?);
        let dir = f.next()? == b"d";
        marks.insert(f.next()?.to_vec(), Mark { ino, ctime, dir });
    }
    Some((marks, hot))
}

fn split_line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    Some((&data[..nl], &data[nl + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sh(dir: &Path, script: &str) {
        let ok = std::process::Command::new("bash")
            .args(["-euc", script])
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    /// Everything that ends up in an image: type, mode, mtime, link target, content, hardlinks.
    fn listing(root: &Path) -> Vec<String> {
        let mut inodes: HashMap<u64, String> = HashMap::new();
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(root).sort_by_file_name() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let what = if md.is_file() {
                let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone()).clone();
                format!("file {:?} link-of {}", std::fs::read(e.path()).unwrap(), first)
            } else if md.file_type().is_symlink() {
                format!("symlink {:?}", std::fs::read_link(e.path()).unwrap())
            } else {
                "dir".into()
            };
            out.push(format!("{rel} {:o} {} {what}", md.mode(), md.mtime()));
        }
        out
    }

    #[test]
    fn undoes_every_kind_of_change_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let (root, clean) = (t.path().join("rootfs"), t.path().join("clean"));
        let tarball = t.path().join("snap.tar.zst");
        std::fs::create_dir_all(&root).unwrap();
        sh(
            &root,
            "mkdir -p etc usr/share/doc/a usr/bin usr/lib var/empty
             echo host > etc/hostname; echo conf > etc/x.conf; echo doc > usr/share/doc/a/README
             echo bin > usr/bin/tool; ln usr/bin/tool usr/bin/tool2; ln -s tool usr/bin/link
             echo keep > usr/bin/untouched; echo lib > usr/lib/only
             touch -d @1000 etc/hostname etc etc/x.conf usr/bin/* usr/share/doc/a/README usr/lib/only usr/lib usr/share/doc/a usr/share/doc usr/share usr/bin usr var/empty var .",
        );
        let args = crate::cache::tar::tar_args("--create", &tarball, &root);
        proc::output("tar", args.into_iter().chain([".".to_string()])).unwrap();
        std::fs::create_dir_all(&clean).unwrap();
        proc::output("tar", crate::cache::tar::tar_args("--extract", &tarball, &clean)).unwrap();
        let want = listing(&clean);
        record(&root, "base", None).unwrap();
        let untouched_ino = std::fs::metadata(root.join("usr/bin/untouched")).unwrap().ino();

        // What later phases do: overwrite in place, chmod, delete files and trees, add files
        // and directories, swap a file for a directory, retarget a symlink, write through a
        // hardlink.
        sh(
            &root,
            "echo changed > etc/hostname; chmod 600 etc/x.conf; rm -r usr/share/doc
             mkdir -p new/dir; echo n > new/dir/f; echo added > etc/added
             rm -r var/empty; echo file > var/empty; ln -sfn elsewhere usr/bin/link
             echo through > usr/bin/tool2; echo in-place > usr/lib/only",
        );
        std::fs::set_permissions(root.join("usr/bin"), std::fs::Permissions::from_mode(0o700)).unwrap();

        let r = sync(&root, "base", &tarball).expect("stamp matches");
        assert_eq!(listing(&root), want);
        assert!(r.removed >= 6 && r.extracted < r.entries, "{r:?}");
        let ino = std::fs::metadata(root.join("usr/bin/untouched")).unwrap().ino();
        assert_eq!(ino, untouched_ino, "an untouched file was rewritten");

        assert!(!r.from_hot);

        // The same phases again: what they change is now taken from the hot set, with the
        // same result; a corrupted hot set is not used.
        let again = "echo changed > etc/hostname; chmod 600 etc/x.conf; echo in-place > usr/lib/only";
        sh(&root, again);
        let r = sync(&root, "base", &tarball).unwrap();
        assert!(r.from_hot, "{r:?}");
        assert_eq!(listing(&root), want);
        sh(&root, again);
        let hot = hot_path(&root);
        let mut bytes = std::fs::read(&hot).unwrap();
        let i = bytes.windows(4).position(|w| w == b"host").unwrap();
        bytes[i] = b'X';
        std::fs::write(&hot, bytes).unwrap();
        let r = sync(&root, "base", &tarball).unwrap();
        assert!(!r.from_hot, "a corrupted hot set was used");
        assert_eq!(listing(&root), want);
        // Needing more than the hot set holds: the snapshot again.
        sh(&root, "rm usr/bin/untouched");
        let r = sync(&root, "base", &tarball).unwrap();
        assert!(!r.from_hot);
        assert_eq!(listing(&root), want);

        // The stamp is current again: a second resync with no changes does nothing.
        let r = sync(&root, "base", &tarball).unwrap();
        assert_eq!((r.removed, r.extracted), (0, 0));
        // Another snapshot's stamp is never used.
        assert!(
            sync(&root, "other", &tarball)
                .unwrap_err()
                .contains("another snapshot")
        );
    }

    #[test]
    fn a_replaced_rootfs_is_extracted_whole() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        let tarball = t.path().join("snap.tar.zst");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/a"), "a").unwrap();
        let args = crate::cache::tar::tar_args("--create", &tarball, &root);
        proc::output("tar", args.into_iter().chain([".".to_string()])).unwrap();
        record(&root, "base", None).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::create_dir_all(root.join("junk")).unwrap();
        sync(&root, "base", &tarball).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("etc/a")).unwrap(), "a");
        assert!(!root.join("junk").exists());
    }
}
