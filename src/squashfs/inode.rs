//! The inode table, the directory table and the uid/gid table.
//!
//! Directories are written after their children (a listing points at inodes, a directory inode
//! at its listing), so the root comes last. Inode numbers are given out in that same order.

use super::meta::{MetaWriter, Ref};
use super::tree::{Kind, Tree};
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
}

/// `locs` holds every regular file's data location, keyed by its inode's node.
pub fn write(tree: &Tree, locs: &HashMap<usize, FileLoc>, level: i32) -> Result<Tables> {
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
        numbers,
        links,
        refs: vec![None; tree.nodes.len()],
        inodes: MetaWriter::new(level),
        dirs: MetaWriter::new(level),
        ids: Vec::new(),
        id_index: HashMap::new(),
    };
    let root = w.dir(0, inode_count + 1)?;
    let ids: Vec<u8> = w.ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    Ok(Tables {
        root,
        inode_count,
        id_count: w.ids.len() as u16,
        ids,
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
    numbers: Vec<u32>,
    links: Vec<u32>,
    refs: Vec<Option<Ref>>,
    inodes: MetaWriter,
    dirs: MetaWriter,
    ids: Vec<u32>,
    id_index: HashMap<u32, u16>,
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
        let listing = listing(&entries);
        let at = self.dirs.pos();
        self.dirs.put(&listing)?;
        // The kernel counts "." and ".." as 3 bytes of the listing.
        let size = listing.len() as u32 + 3;
        let nlink = 2 + subdirs;
        let me = self.inodes.pos();
        let mut b = Vec::with_capacity(40);
        if size <= u16::MAX as u32 {
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
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&at.offset.to_le_bytes());
            put32(&mut b, NONE);
        }
        self.inodes.put(&b)?;
        Ok(me)
    }

    /// Any inode but a directory.
    fn leaf(&mut self, node: usize) -> Result<()> {
        let tree = self.tree;
        let mut b = Vec::with_capacity(64);
        match &tree.nodes[node].kind {
            Kind::File { size } => {
                let loc = &self.locs[&node];
                let nlink = self.links[node];
                if loc.start <= u32::MAX as u64 && *size <= u32::MAX as u64 && nlink == 1 {
                    self.header(&mut b, 2, node)?;
                    put32(&mut b, loc.start as u32);
                    put32(&mut b, loc.fragment);
                    put32(&mut b, loc.fragment_offset);
                    put32(&mut b, *size as u32);
                } else {
                    self.header(&mut b, 9, node)?;
                    b.extend_from_slice(&loc.start.to_le_bytes());
                    b.extend_from_slice(&size.to_le_bytes());
                    b.extend_from_slice(&0u64.to_le_bytes());
                    put32(&mut b, nlink);
                    put32(&mut b, loc.fragment);
                    put32(&mut b, loc.fragment_offset);
                    put32(&mut b, NONE);
                }
                loc.sizes.iter().for_each(|s| put32(&mut b, *s));
            }
            Kind::Symlink(target) => {
                self.header(&mut b, 3, node)?;
                put32(&mut b, 1);
                put32(&mut b, target.len() as u32);
                b.extend_from_slice(target);
            }
            Kind::Block(rdev) | Kind::Char(rdev) => {
                let t = if matches!(tree.nodes[node].kind, Kind::Block(_)) {
                    4
                } else {
                    5
                };
                self.header(&mut b, t, node)?;
                put32(&mut b, 1);
                put32(&mut b, device_number(*rdev));
            }
            Kind::Fifo | Kind::Socket => {
                let t = basic_type(&tree.nodes[node].kind);
                self.header(&mut b, t, node)?;
                put32(&mut b, 1);
            }
            Kind::Dir(_) | Kind::Link(_) => unreachable!("directories and links are not leaves"),
        }
        self.inodes.put(&b)
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
        if self.ids.len() > u16::MAX as usize {
            bail!("more than 65536 distinct uids and gids; squashfs cannot store them");
        }
        let i = self.ids.len() as u16;
        self.ids.push(id);
        self.id_index.insert(id, i);
        Ok(i)
    }
}

/// Entries in runs under a header naming their inode block and a base inode number.
fn listing(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
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
        i += run;
    }
    out
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
            let out = listing(entries);
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
