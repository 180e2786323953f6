//! What goes where in the data area: every regular file's blocks by content hash, identical
//! files stored once, and file tails packed into fragment blocks.
//!
//! Fragments are packed so that an edit touches few of them: the list of tails is cut into runs
//! after every file whose path hashes to 0 mod [`CUT_EVERY`], and each run is packed on its own.
//! A file that grows or shrinks therefore moves the tails of its own run only, where mksquashfs's
//! single stream would shift (and recompress) every fragment after it.

use super::blocks::{Key, sha256};
use super::tree::{Kind, Tree};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;

/// Expected number of tails in one run of fragments.
const CUT_EVERY: u16 = 16;

pub struct FileData {
    pub node: usize,
    pub size: u64,
    /// Keys of the full blocks; [`Plan::zero`] for a block of zeros, which is stored as a
    /// hole (a sparse block: no data, size 0 in the block list).
    pub blocks: Vec<Key>,
    /// Key and length of the last, partial block, which goes into a fragment.
    pub tail: Option<(Key, u32)>,
    /// An earlier file with the same bytes, whose blocks this one shares.
    pub same_as: Option<usize>,
}

pub struct Fragment {
    /// (file, offset of its tail in the fragment block)
    pub parts: Vec<(usize, u32)>,
    pub len: u32,
    pub key: Key,
}

pub struct Plan {
    /// The key of an all-zero block.
    pub zero: Key,
    pub files: Vec<FileData>,
    pub fragments: Vec<Fragment>,
    /// Per file: (fragment, offset) of its tail.
    pub tail_at: Vec<Option<(u32, u32)>>,
}

pub fn plan(tree: &Tree, block_size: u32, stop: &(dyn Fn() -> bool + Sync)) -> Result<Plan> {
    let nodes: Vec<(usize, u64)> = tree
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n.kind {
            Kind::File { size } => Some((i, size)),
            _ => None,
        })
        .collect();
    let zero = sha256(&vec![0u8; block_size as usize]);
    let mut files = super::parallel::map(nodes.len(), stop, |i| {
        let (node, size) = nodes[i];
        hash_file(tree, node, size, block_size, &zero)
    })?;
    let mut first: HashMap<Key, usize> = HashMap::new();
    for (i, f) in files.iter_mut().enumerate() {
        let mut h = Sha256::new();
        h.update(f.size.to_le_bytes());
        f.blocks.iter().for_each(|k| h.update(k));
        if let Some((k, _)) = &f.tail {
            h.update(k);
        }
        let id: Key = h.finalize().into();
        let earlier = *first.entry(id).or_insert(i);
        if earlier != i && f.size > 0 {
            f.same_as = Some(earlier);
        }
    }
    let (fragments, tail_at) = pack_fragments(tree, &files, block_size);
    Ok(Plan {
        zero,
        files,
        fragments,
        tail_at,
    })
}

/// Hashes a file block by block; blocks in a hole of a sparse file are not even read.
fn hash_file(tree: &Tree, node: usize, size: u64, block_size: u32, zero: &Key) -> Result<FileData> {
    let path = tree.path(node);
    let changed = || {
        format!(
            "{} changed while it was read (it had {size} bytes)",
            path.display()
        )
    };
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let bs = block_size as u64;
    let mut buf = vec![0u8; block_size as usize];
    let mut blocks = Vec::with_capacity((size / bs) as usize);
    let mut data_at = 0u64;
    for n in 0..size / bs {
        let at = n * bs;
        if data_at <= at {
            data_at = next_data(&file, at, size);
        }
        if data_at >= at + bs {
            blocks.push(*zero);
            continue;
        }
        file.read_exact_at(&mut buf, at).with_context(changed)?;
        blocks.push(sha256(&buf));
    }
    let tail_len = (size % bs) as usize;
    let mut tail = None;
    if tail_len > 0 {
        file.read_exact_at(&mut buf[..tail_len], size - tail_len as u64)
            .with_context(changed)?;
        tail = Some((sha256(&buf[..tail_len]), tail_len as u32));
    }
    if file.read_at(&mut buf[..1], size).with_context(changed)? != 0 {
        bail!(changed());
    }
    Ok(FileData {
        node,
        size,
        blocks,
        tail,
        same_as: None,
    })
}

/// Where the next data at or after `at` starts (SEEK_DATA); `size` when only a hole follows.
/// A file system without hole reporting says "data" everywhere, which costs only speed.
fn next_data(file: &std::fs::File, at: u64, size: u64) -> u64 {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a descriptor we own; the offset it returns is all we use.
    let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
    if r < 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            size
        } else {
            at
        }
    } else {
        r as u64
    }
}

fn pack_fragments(
    tree: &Tree,
    files: &[FileData],
    block_size: u32,
) -> (Vec<Fragment>, Vec<Option<(u32, u32)>>) {
    let mut fragments = Vec::new();
    let mut tail_at = vec![None; files.len()];
    let mut parts: Vec<(usize, u32)> = Vec::new();
    let mut len = 0u32;
    let mut close = |parts: &mut Vec<(usize, u32)>, len: &mut u32| {
        if parts.is_empty() {
            return;
        }
        // The parts' own keys name the block's bytes without reading them again.
        let mut h = Sha256::new();
        h.update(b"loisto-fragment\0");
        for &(f, _) in parts.iter() {
            let (key, n) = files[f].tail.expect("a part is a tail");
            h.update(n.to_le_bytes());
            h.update(key);
        }
        for &(f, offset) in parts.iter() {
            tail_at[f] = Some((fragments.len() as u32, offset));
        }
        fragments.push(Fragment {
            parts: std::mem::take(parts),
            len: std::mem::take(len),
            key: h.finalize().into(),
        });
    };
    for (i, f) in files.iter().enumerate() {
        let Some((_, n)) = f.tail else { continue };
        if f.same_as.is_some() {
            continue;
        }
        if len + n > block_size {
            close(&mut parts, &mut len);
        }
        parts.push((i, len));
        len += n;
        let h = sha256(tree.nodes[f.node].rel.as_os_str().as_bytes());
        if u16::from_le_bytes([h[0], h[1]]).is_multiple_of(CUT_EVERY) {
            close(&mut parts, &mut len);
        }
    }
    close(&mut parts, &mut len);
    (fragments, tail_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(files: &[(&str, usize)]) -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in files {
            let seed = sha256(name.as_bytes());
            let data: Vec<u8> = (0..*size).map(|i| seed[i % 32] ^ (i / 32) as u8).collect();
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let tree = Tree::walk(dir.path(), &[], Some(0)).unwrap();
        (dir, tree)
    }

    #[test]
    fn blocks_tails_and_duplicates() {
        let (_d, tree) = tree_of(&[
            ("a", 10_000),
            ("b", 4096 * 2 + 5),
            ("c", 10_000),
            ("d", 0),
            ("e", 8192),
        ]);
        let p = plan(&tree, 4096, &|| false).unwrap();
        let by_name = |n: &str| {
            p.files
                .iter()
                .position(|f| tree.nodes[f.node].name == n.as_bytes())
                .unwrap()
        };
        let (a, b, c, d, e) = (
            by_name("a"),
            by_name("b"),
            by_name("c"),
            by_name("d"),
            by_name("e"),
        );
        assert_eq!(p.files[a].blocks.len(), 2);
        assert_eq!(p.files[a].tail.unwrap().1, 10_000 - 8192);
        assert_eq!(p.files[b].tail.unwrap().1, 5);
        assert_eq!(p.files[c].same_as, None, "c's bytes differ from a's");
        assert_eq!(p.files[d].tail, None);
        assert_eq!(p.files[e].tail, None);
        assert!(p.tail_at[a].is_some() && p.tail_at[b].is_some() && p.tail_at[d].is_none());
        for frag in &p.fragments {
            assert!(frag.len <= 4096);
        }
    }

    #[test]
    fn identical_files_share_their_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), vec![7u8; 5000]).unwrap();
        std::fs::write(dir.path().join("y"), vec![7u8; 5000]).unwrap();
        let tree = Tree::walk(dir.path(), &[], Some(0)).unwrap();
        let p = plan(&tree, 4096, &|| false).unwrap();
        assert_eq!(p.files[1].same_as, Some(0));
        assert_eq!(p.tail_at[1], None, "the copy's tail is not packed twice");
        assert_eq!(p.fragments.iter().map(|f| f.parts.len()).sum::<usize>(), 1);
    }

    #[test]
    fn a_resized_tail_moves_only_its_own_run() {
        let names: Vec<String> = (0..400).map(|i| format!("f{i:03}")).collect();
        let sized = |grow: &str| -> Vec<(String, usize)> {
            names
                .iter()
                .map(|n| (n.clone(), if n == grow { 900 } else { 300 }))
                .collect()
        };
        let keys = |grow: &str| -> Vec<Key> {
            let files = sized(grow);
            let refs: Vec<(&str, usize)> = files.iter().map(|(n, s)| (n.as_str(), *s)).collect();
            let (_d, tree) = tree_of(&refs);
            plan(&tree, 4096, &|| false)
                .unwrap()
                .fragments
                .iter()
                .map(|f| f.key)
                .collect()
        };
        let before = keys("none");
        let after = keys("f200");
        let changed = after.iter().filter(|k| !before.contains(k)).count();
        assert!(before.len() > 20);
        assert!(
            changed <= 3,
            "{changed} of {} fragment blocks changed",
            after.len()
        );
    }
}
