//! The inode table, the directory table and the uid/gid table.
//!
//! Directories are written after their children (a listing points at inodes, a directory inode
//! at its listing), so the root comes last. Inode numbers are given out in that same order.

use super::blocks::Codec;
use super::meta::{MetaWriter, Ref};
use super::tree::{Kind, Tree, Xattr, split_xattr_name};
use anyhow::{Result, bail};
use std::collections::HashMap;

/// "None" for fragment and xattr indices.
pub const NONE: u32 = u32::MAX;
const MAX_ENTRIES_PER_HEADER: usize = 256;

/// Where a regular file's bytes are in the data area.
#[derive(Clone, Debug)]
pub struct FileLoc {
    pub start: u64,
    /// On-disk size of each full block, with bit 24 set for a raw one.
    pub sizes: Vec<u32>,
    pub fragment: u32,
    pub fragment_offset: u32,
}

pub struct Tables {
    pub inodes: Vec<u8>,
    pub dirs: Vec<u8>,
    pub root: Ref,
    pub inode_count: u32,
    /// The id lookup table's entries (u32 each), in the order inodes first used them.
    pub ids: Vec<u8>,
    pub id_count: u16,
    /// Extended attributes: the key/value metadata blocks, and the id table's entries
    /// (one per distinct set of attributes).
    pub xattr_kv: Vec<u8>,
    pub xattr_ids: Vec<u8>,
    pub xattr_count: u32,
}

/// Distinct uids and gids an image can hold: the superblock's id count is 16 bits.
pub const MAX_IDS: usize = u16::MAX as usize;

/// `locs` holds every regular file's data location, keyed by its inode's node.
pub fn write(tree: &Tree, locs: &HashMap<usize, FileLoc>, codec: Codec, block_size: u32) -> Result<Tables> {
    let mut numbers = vec![0u32; tree.nodes.len()];
    let mut next = 1;
    number(tree, 0, &mut next, &mut numbers);
    let inode_count = next - 1;
    let mut links = vec![0u32; tree.nodes.len()];
    for i in 0..tree.nodes.len() {
        links[tree.inode_of(i)] += 1;
    }
    let mut w = Writer {
        tree,
        locs,
        block_size,
        numbers,
        links,
        refs: vec![None; tree.nodes.len()],
        inodes: MetaWriter::new(codec),
        dirs: MetaWriter::new(codec),
        ids: Vec::new(),
        id_index: HashMap::new(),
        xattr_kv: MetaWriter::new(codec),
        xattr_ids: Vec::new(),
        xattr_sets: HashMap::new(),
    };
    let root = w.dir(0, inode_count + 1)?;
    let ids: Vec<u8> = w.ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    Ok(Tables {
        root,
        inode_count,
        id_count: w.ids.len() as u16,
        ids,
        xattr_count: w.xattr_sets.len() as u32,
        xattr_ids: w.xattr_ids,
        xattr_kv: w.xattr_kv.finish()?,
        inodes: w.inodes.finish()?,
        dirs: w.dirs.finish()?,
    })
}

fn number(tree: &Tree, dir: usize, next: &mut u32, numbers: &mut [u32]) {
    for &child in tree.children(dir) {
        let t = tree.inode_of(child);
        if tree.is_dir(t) {
            number(tree, t, next, numbers);
        } else if numbers[t] == 0 {
            numbers[t] = *next;
            *next += 1;
        }
    }
    numbers[dir] = *next;
    *next += 1;
}

struct Writer<'a> {
    tree: &'a Tree,
    locs: &'a HashMap<usize, FileLoc>,
    block_size: u32,
    numbers: Vec<u32>,
    links: Vec<u32>,
    refs: Vec<Option<Ref>>,
    inodes: MetaWriter,
    dirs: MetaWriter,
    ids: Vec<u32>,
    id_index: HashMap<u32, u16>,
    xattr_kv: MetaWriter,
    xattr_ids: Vec<u8>,
    xattr_sets: HashMap<Vec<Xattr>, u32>,
}

struct Entry<'a> {
    at: Ref,
    number: u32,
    kind: u16,
    name: &'a [u8],
}

impl Writer<'_> {
    fn dir(&mut self, dir: usize, parent: u32) -> Result<Ref> {
        let tree = self.tree;
        let mut entries = Vec::with_capacity(tree.children(dir).len());
        let mut subdirs = 0;
        let mut index_count: u16 = 0;
        for &child in tree.children(dir) {
            let t = tree.inode_of(child);
            let at = if tree.is_dir(t) {
                subdirs += 1;
                self.dir(t, self.numbers[dir])?
            } else if let Some(at) = self.refs[t] {
                at
            } else {
                let at = self.inodes.pos();
                self.leaf(t)?;
                self.refs[t] = Some(at);
                at
            };
            entries.push(Entry {
                at,
                number: self.numbers[t],
                kind: basic_type(&tree.nodes[t].kind),
                name: &tree.nodes[child].name,
            });
        }
        let runs = listing(&entries);
        let at = self.dirs.pos();
        // The directory index: for the first run that starts in each further metadata block,
        // where it starts and its first name. The kernel looks a name up from the last index
        // entry at or before it instead of reading the whole listing (mksquashfs does the same).
        let mut index = Vec::new();
        let (mut len, mut block) = (0usize, at.block);
        for run in &runs {
            let here = self.dirs.pos();
            if here.block != block {
                let name = entries[run.first].name;
                put32(&mut index, len as u32);
                put32(&mut index, here.block);
                put32(&mut index, name.len() as u32 - 1);
                index.extend_from_slice(name);
                block = here.block;
                index_count += 1;
            }
            self.dirs.put(&run.bytes)?;
            len += run.bytes.len();
        }
        // The kernel counts "." and ".." as 3 bytes of the listing.
        let size = len as u32 + 3;
        let nlink = 2 + subdirs;
        let xattr = self.xattrs(dir)?;
        let me = self.inodes.pos();
        let mut b = Vec::with_capacity(40);
        if size <= u16::MAX as u32 && xattr == NONE && index_count == 0 {
            self.header(&mut b, 1, dir)?;
            put32(&mut b, at.block);
            put32(&mut b, nlink);
            b.extend_from_slice(&(size as u16).to_le_bytes());
            b.extend_from_slice(&at.offset.to_le_bytes());
            put32(&mut b, parent);
        } else {
            self.header(&mut b, 8, dir)?;
            put32(&mut b, nlink);
            put32(&mut b, size);
            put32(&mut b, at.block);
            put32(&mut b, parent);
            b.extend_from_slice(&index_count.to_le_bytes());
            b.extend_from_slice(&at.offset.to_le_bytes());
            put32(&mut b, xattr);
            b.extend_from_slice(&index);
        }
        self.inodes.put(&b)?;
        Ok(me)
    }

    /// Any inode but a directory.
    fn leaf(&mut self, node: usize) -> Result<()> {
        let tree = self.tree;
        let xattr = self.xattrs(node)?;
        // Extended inode types are the basic ones + 7, with an xattr index.
        let ext = if xattr == NONE { 0 } else { 7 };
        let mut b = Vec::with_capacity(64);
        match &tree.nodes[node].kind {
            Kind::File { size } => {
                let loc = &self.locs[&node];
                let nlink = self.links[node];
                let small = loc.start <= u32::MAX as u64 && *size <= u32::MAX as u64;
                // Holes need the extended inode: its `sparse` field tells readers (unsquashfs)
                // to make holes again rather than write zeros.
                let holes = loc.sizes.iter().filter(|s| **s == 0).count() as u64 * self.block_size as u64;
                if small && nlink == 1 && xattr == NONE && holes == 0 {
                    self.header(&mut b, 2, node)?;
                    put32(&mut b, loc.start as u32);
                    put32(&mut b, loc.fragment);
                    put32(&mut b, loc.fragment_offset);
                    put32(&mut b, *size as u32);
                } else {
                    self.header(&mut b, 9, node)?;
                    b.extend_from_slice(&loc.start.to_le_bytes());
                    b.extend_from_slice(&size.to_le_bytes());
                    b.extend_from_slice(&holes.to_le_bytes());
                    put32(&mut b, nlink);
                    put32(&mut b, loc.fragment);
                    put32(&mut b, loc.fragment_offset);
                    put32(&mut b, xattr);
                }
                loc.sizes.iter().for_each(|s| put32(&mut b, *s));
            }
            Kind::Symlink(target) => {
                self.header(&mut b, 3 + ext, node)?;
                put32(&mut b, self.links[node]);
                put32(&mut b, target.len() as u32);
                b.extend_from_slice(target);
            }
            Kind::Block(rdev) | Kind::Char(rdev) => {
                self.header(&mut b, basic_type(&tree.nodes[node].kind) + ext, node)?;
                put32(&mut b, self.links[node]);
                put32(&mut b, device_number(*rdev));
            }
            Kind::Fifo | Kind::Socket => {
                self.header(&mut b, basic_type(&tree.nodes[node].kind) + ext, node)?;
                put32(&mut b, self.links[node]);
            }
            Kind::Dir(_) | Kind::Link(_) => unreachable!("directories and links are not leaves"),
        }
        if ext != 0 && !matches!(tree.nodes[node].kind, Kind::File { .. }) {
            put32(&mut b, xattr);
        }
        self.inodes.put(&b)
    }

    /// The index of the node's set of extended attributes (each distinct set is stored once).
    fn xattrs(&mut self, node: usize) -> Result<u32> {
        let set = &self.tree.nodes[node].xattrs;
        if set.is_empty() {
            return Ok(NONE);
        }
        if let Some(&i) = self.xattr_sets.get(set) {
            return Ok(i);
        }
        let at = self.xattr_kv.pos();
        let mut kv = Vec::new();
        for x in set {
            let Some((prefix, name)) = split_xattr_name(&x.name) else {
                bail!(
                    "{}: extended attribute {} is outside the user., trusted. and security. \
                     namespaces, the only ones squashfs stores",
                    self.tree.path(node).display(),
                    String::from_utf8_lossy(&x.name)
                );
            };
            kv.extend_from_slice(&prefix.to_le_bytes());
            kv.extend_from_slice(&(name.len() as u16).to_le_bytes());
            kv.extend_from_slice(name);
            put32(&mut kv, x.value.len() as u32);
            kv.extend_from_slice(&x.value);
        }
        self.xattr_kv.put(&kv)?;
        self.xattr_ids.extend_from_slice(&at.packed().to_le_bytes());
        put32(&mut self.xattr_ids, set.len() as u32);
        put32(&mut self.xattr_ids, kv.len() as u32);
        let i = self.xattr_sets.len() as u32;
        self.xattr_sets.insert(set.clone(), i);
        Ok(i)
    }

    fn header(&mut self, b: &mut Vec<u8>, kind: u16, node: usize) -> Result<()> {
        let n = &self.tree.nodes[node];
        let uid = self.id(n.uid)?;
        let gid = self.id(n.gid)?;
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&n.mode.to_le_bytes());
        b.extend_from_slice(&uid.to_le_bytes());
        b.extend_from_slice(&gid.to_le_bytes());
        put32(b, n.mtime);
        put32(b, self.numbers[node]);
        Ok(())
    }

    fn id(&mut self, id: u32) -> Result<u16> {
        if let Some(&i) = self.id_index.get(&id) {
            return Ok(i);
        }
        // The superblock counts ids in 16 bits (`write` refuses more before compressing).
        if self.ids.len() >= MAX_IDS {
            bail!("more than {MAX_IDS} distinct uids and gids; squashfs cannot store them");
        }
        let i = self.ids.len() as u16;
        self.ids.push(id);
        self.id_index.insert(id, i);
        Ok(i)
    }
}

/// One header and the entries under it.
struct Run {
    /// Index in the directory's entries of the run's first entry.
    first: usize,
    bytes: Vec<u8>,
}

/// Entries in runs under a header naming their inode block and a base inode number.
fn listing(entries: &[Entry]) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let first = &entries[i];
        let run = entries[i..]
            .iter()
            .take(MAX_ENTRIES_PER_HEADER)
            .take_while(|e| {
                e.at.block == first.at.block && (e.number as i64 - first.number as i64).abs() <= 32767
            })
            .count();
        let mut out = Vec::new();
        put32(&mut out, run as u32 - 1);
        put32(&mut out, first.at.block);
        put32(&mut out, first.number);
        for e in &entries[i..i + run] {
            out.extend_from_slice(&e.at.offset.to_le_bytes());
            out.extend_from_slice(&((e.number as i64 - first.number as i64) as i16).to_le_bytes());
            out.extend_from_slice(&e.kind.to_le_bytes());
            out.extend_from_slice(&(e.name.len() as u16 - 1).to_le_bytes());
            out.extend_from_slice(e.name);
        }
        runs.push(Run { first: i, bytes: out });
        i += run;
    }
    runs
}

fn basic_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Dir(_) => 1,
        Kind::File { .. } | Kind::Link(_) => 2,
        Kind::Symlink(_) => 3,
        Kind::Block(_) => 4,
        Kind::Char(_) => 5,
        Kind::Fifo => 6,
        Kind::Socket => 7,
    }
}

/// glibc's dev_t to the old Linux 32-bit encoding squashfs stores.
fn device_number(rdev: u64) -> u32 {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_names_lose_their_namespace_prefix() {
        assert_eq!(
            split_xattr_name(b"security.capability"),
            Some((2, b"capability".as_slice()))
        );
        assert_eq!(split_xattr_name(b"user.a.b"), Some((0, b"a.b".as_slice())));
        assert_eq!(split_xattr_name(b"trusted.x"), Some((1, b"x".as_slice())));
        assert_eq!(split_xattr_name(b"system.posix_acl_access"), None);
    }

    #[test]
    fn device_numbers_use_the_old_linux_layout() {
        // /dev/null is 1:3; a large minor (e.g. 259:65536) spills above bit 20.
        assert_eq!(device_number(libc::makedev(1, 3)), 0x103);
        assert_eq!(
            device_number(libc::makedev(259, 0x10000)),
            (259 << 8) | (0x10000 << 12)
        );
    }

    #[test]
    fn listings_start_a_new_header_for_another_block_far_numbers_and_every_256_entries() {
        let name = b"n".as_slice();
        let e = |block, number| Entry {
            at: Ref { block, offset: 0 },
            number,
            kind: 2,
            name,
        };
        let headers = |entries: &[Entry]| {
            let out: Vec<u8> = listing(entries).into_iter().flat_map(|r| r.bytes).collect();
            let mut count = 0;
            let mut at = 0;
            while at < out.len() {
                let n = u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) as usize + 1;
                at += 12 + n * (8 + 1);
                count += 1;
            }
            count
        };
        assert_eq!(headers(&[e(0, 1), e(0, 2)]), 1);
        assert_eq!(headers(&[e(0, 1), e(10, 2)]), 2);
        assert_eq!(headers(&[e(0, 1), e(0, 40_000)]), 2);
        let many: Vec<Entry> = (0..600).map(|i| e(0, i + 1)).collect();
        assert_eq!(headers(&many), 3);
    }
}
