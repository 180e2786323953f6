//! Compressing blocks, and remembering the result between builds.
//!
//! zstd's output is a pure function of the input bytes, the level and the library version, so a
//! block whose bytes were compressed before can be taken from the last build instead of being
//! compressed again, and the image is the same byte for byte. The cache is two files: `pack`
//! (compressed payloads, appended to) and `index` (key -> place in the pack, plus the SHA-256 of
//! the payload, checked before every use). It holds the blocks of the last image written and is
//! rewritten when more than half of the pack is blocks no image uses any more.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// SHA-256 of a block's uncompressed bytes (fragment blocks: of their parts, see `plan`).
pub type Key = [u8; 32];

pub fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// A block as it goes into the image: compressed, or raw when compressing did not shrink it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub bytes: Vec<u8>,
    pub raw: bool,
}

impl Stored {
    /// The on-disk size as data block lists and the fragment table give it: bit 24 = raw.
    pub fn size_field(&self) -> u32 {
        self.bytes.len() as u32 | if self.raw { 1 << 24 } else { 0 }
    }
}

/// How blocks are compressed: what the superblock names and the kernel undoes on every read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// zstd at a level (1-22): the smallest images.
    Zstd(i32),
    /// LZ4 high compression (level 9): ~40% larger images than zstd 15 that the kernel unpacks
    /// several times faster, and that are written faster too.
    Lz4Hc,
}

/// LZ4HC's default level: 12 packs ~2% tighter at a third of the speed.
const LZ4HC_LEVEL: i32 = 9;

impl Codec {
    /// The superblock's compression id.
    pub fn id(self) -> u16 {
        match self {
            Codec::Zstd(_) => 6,
            Codec::Lz4Hc => 5,
        }
    }

    /// The compressor options that follow the superblock: zstd's level; LZ4's format version
    /// (1, the only one the kernel reads) and its HC flag.
    pub fn options(self) -> Vec<u8> {
        match self {
            Codec::Zstd(level) => (level as u32).to_le_bytes().to_vec(),
            Codec::Lz4Hc => [1u32.to_le_bytes(), 1u32.to_le_bytes()].concat(),
        }
    }

    /// What compressed a block, for the cache: the library's version too, since another
    /// version may write other bytes for the same input.
    fn signature(self) -> String {
        match self {
            Codec::Zstd(level) => format!("zstd {} level {level}", zstd::zstd_safe::version_string()),
            Codec::Lz4Hc => format!("lz4hc {} level {LZ4HC_LEVEL}", lz4::liblz4::version()),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Codec::Zstd(level) => write!(f, "zstd {level}"),
            Codec::Lz4Hc => write!(f, "lz4hc"),
        }
    }
}

pub fn compress(data: &[u8], codec: Codec) -> Result<Stored> {
    let mut packed = match codec {
        Codec::Zstd(level) => zstd::bulk::compress(data, level).context("zstd compression")?,
        Codec::Lz4Hc => lz4::block::compress(
            data,
            Some(lz4::block::CompressionMode::HIGHCOMPRESSION(LZ4HC_LEVEL)),
            false,
        )
        .context("lz4 compression")?,
    };
    // The buffer comes sized for the worst case (a whole block): without this, every block
    // in flight would hold a block's worth of memory, however well it compressed.
    packed.shrink_to_fit();
    Ok(if packed.len() < data.len() {
        Stored {
            bytes: packed,
            raw: false,
        }
    } else {
        Stored {
            bytes: data.to_vec(),
            raw: true,
        }
    })
}

const INDEX: &str = "index";
const PACK: &str = "pack";
/// key, offset, length, raw flag, payload SHA-256.
const RECORD: usize = 32 + 8 + 4 + 1 + 32;
/// Rewrite the pack once dead payloads exceed the live ones by this much.
const SLACK: u64 = 16 << 20;

#[derive(Clone, Copy)]
struct Entry {
    offset: u64,
    len: u32,
    raw: bool,
    sum: Key,
}

pub struct BlockCache {
    dir: PathBuf,
    header: String,
    pack: Option<File>,
    pack_len: u64,
    index: HashMap<Key, Entry>,
    /// Why the cache on disk was not used, if it was not.
    pub dropped: Option<String>,
    damaged: Mutex<HashSet<Key>>,
    slack: u64,
}

impl BlockCache {
    /// Opens the cache in `dir` for blocks compressed with `codec`. A missing, damaged or foreign
    /// cache is an empty one (with the reason in `dropped`): the cache may only make builds faster.
    pub fn open(dir: &Path, codec: Codec) -> BlockCache {
        let header = format!("loisto-squashfs-blocks 1 {}\n", codec.signature());
        let mut cache = BlockCache {
            dir: dir.to_path_buf(),
            header,
            pack: None,
            pack_len: 0,
            index: HashMap::new(),
            dropped: None,
            damaged: Mutex::new(HashSet::new()),
            slack: SLACK,
        };
        match cache.load() {
            Ok(()) => {}
            Err(e) => {
                cache.index.clear();
                cache.pack = None;
                cache.dropped = Some(format!("{e:#}"));
            }
        }
        cache
    }

    fn load(&mut self) -> Result<()> {
        let index_path = self.dir.join(INDEX);
        let data = match std::fs::read(&index_path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", index_path.display())),
        };
        let Some(records) = data.strip_prefix(self.header.as_bytes()) else {
            bail!(
                "{} was written for another compressor, version or level",
                index_path.display()
            );
        };
        if records.len() % RECORD != 0 {
            bail!("{} is truncated", index_path.display());
        }
        let pack_path = self.dir.join(PACK);
        let pack = File::open(&pack_path).with_context(|| format!("opening {}", pack_path.display()))?;
        self.pack_len = pack.metadata()?.len();
        for r in records.chunks_exact(RECORD) {
            let key: Key = r[..32].try_into().expect("32 bytes");
            let entry = Entry {
                offset: u64::from_le_bytes(r[32..40].try_into().expect("8 bytes")),
                len: u32::from_le_bytes(r[40..44].try_into().expect("4 bytes")),
                raw: r[44] != 0,
                sum: r[45..77].try_into().expect("32 bytes"),
            };
            if entry.offset + entry.len as u64 > self.pack_len {
                bail!(
                    "{} points past the end of {}",
                    index_path.display(),
                    pack_path.display()
                );
            }
            self.index.insert(key, entry);
        }
        self.pack = Some(pack);
        Ok(())
    }

    /// The stored form of the block with this key, if the cache has it intact.
    pub fn get(&self, key: &Key) -> Option<Stored> {
        let entry = self.index.get(key)?;
        let mut bytes = vec![0; entry.len as usize];
        let read = self.pack.as_ref()?.read_exact_at(&mut bytes, entry.offset);
        if read.is_err() || sha256(&bytes) != entry.sum {
            self.damaged.lock().expect("damaged lock").insert(*key);
            return None;
        }
        Some(Stored {
            bytes,
            raw: entry.raw,
        })
    }

    /// Whether the index lists the block (its payload is checked only when it is read).
    pub fn lists(&self, key: &Key) -> bool {
        self.pack.is_some() && self.index.contains_key(key)
    }

    /// Cached blocks that failed their checksum (and were compressed again).
    pub fn damaged(&self) -> usize {
        self.damaged.lock().expect("damaged lock").len()
    }

    /// Keeps exactly `blocks` (the ones the image just written uses) for the next build; the
    /// payloads of new ones are read back from `image`, where each block's [`Place`] says.
    pub fn save(mut self, blocks: &[(Key, Place)], image: &std::fs::File) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let mut seen = HashSet::new();
        let unique: Vec<(Key, Place)> = blocks.iter().copied().filter(|(k, _)| seen.insert(*k)).collect();
        let damaged = std::mem::take(self.damaged.get_mut().expect("damaged lock"));
        let mut live: HashMap<Key, Entry> = HashMap::new();
        let mut fresh: Vec<(Key, Place)> = Vec::new();
        for &(key, place) in &unique {
            match self.index.get(&key) {
                Some(e) if self.pack.is_some() && !damaged.contains(&key) => {
                    live.insert(key, *e);
                }
                // New, or damaged: written again so that the next build finds it intact.
                _ => fresh.push((key, place)),
            }
        }
        let live_bytes: u64 = live.values().map(|e| e.len as u64).sum();
        let fresh_bytes: u64 = fresh.iter().map(|(_, p)| p.len as u64).sum();
        let pack_path = self.dir.join(PACK);
        let append =
            self.pack.is_some() && self.pack_len + fresh_bytes <= 2 * (live_bytes + fresh_bytes) + self.slack;
        // Appending adds the new payloads; otherwise the pack starts over with only the blocks
        // in use, which drops the dead ones.
        let (to_write, mut offset, tmp, mut out) = if append {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&pack_path)
                .with_context(|| format!("opening {}", pack_path.display()))?;
            (fresh, self.pack_len, None, file)
        } else {
            live.clear();
            let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            let file = tmp.reopen()?;
            (unique, 0, Some(tmp), file)
        };
        let mut bytes = Vec::new();
        for (key, place) in to_write {
            bytes.resize(place.len as usize, 0);
            image
                .read_exact_at(&mut bytes, place.offset)
                .context("reading a block back from the new image")?;
            out.write_all(&bytes)
                .with_context(|| format!("writing {}", pack_path.display()))?;
            live.insert(
                key,
                Entry {
                    offset,
                    len: place.len,
                    raw: place.raw,
                    sum: sha256(&bytes),
                },
            );
            offset += place.len as u64;
        }
        if let Some(tmp) = tmp {
            self.pack = None;
            tmp.persist(&pack_path)
                .with_context(|| format!("writing {}", pack_path.display()))?;
        }
        let mut keys: Vec<&Key> = live.keys().collect();
        keys.sort();
        let mut index = self.header.clone().into_bytes();
        for key in keys {
            let e = &live[key];
            index.extend_from_slice(key);
            index.extend_from_slice(&e.offset.to_le_bytes());
            index.extend_from_slice(&e.len.to_le_bytes());
            index.push(e.raw as u8);
            index.extend_from_slice(&e.sum);
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&index)?;
        tmp.persist(self.dir.join(INDEX))
            .with_context(|| format!("writing {}", self.dir.join(INDEX).display()))?;
        Ok(())
    }
}

/// Where a stored block went in the image: what the cache needs to copy it from there.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    pub offset: u64,
    pub len: u32,
    pub raw: bool,
}

impl Place {
    pub fn of(s: &Stored, offset: u64) -> Place {
        Place {
            offset,
            len: s.bytes.len() as u32,
            raw: s.raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saves as `write` does: the blocks are in an image file, and the cache copies them from it.
    fn save(cache: BlockCache, blocks: &[(Key, &Stored)]) {
        let mut image = tempfile::tempfile().unwrap();
        let mut places = Vec::new();
        let mut pos = 0;
        for (k, s) in blocks {
            image.write_all(&s.bytes).unwrap();
            places.push((*k, Place::of(s, pos)));
            pos += s.bytes.len() as u64;
        }
        cache.save(&places, &image).unwrap();
    }

    fn block(seed: u8) -> (Key, Stored) {
        let data: Vec<u8> = (0..4096u32).map(|i| (i as u8 / 16).wrapping_add(seed)).collect();
        (sha256(&data), compress(&data, Codec::Zstd(3)).unwrap())
    }

    #[test]
    fn incompressible_blocks_are_stored_raw() {
        let noise: Vec<u8> = (0..128u32).flat_map(|i| sha256(&i.to_le_bytes())).collect();
        let s = compress(&noise, Codec::Zstd(3)).unwrap();
        assert!(s.raw);
        assert_eq!(s.bytes, noise);
        assert!(!compress(&[0; 4096], Codec::Zstd(3)).unwrap().raw);
        assert!(compress(&noise, Codec::Lz4Hc).unwrap().raw);
        assert!(!compress(&[0; 4096], Codec::Lz4Hc).unwrap().raw);
    }

    #[test]
    fn lz4_blocks_are_raw_lz4_that_decompress_to_the_input() {
        // The kernel's squashfs reads an LZ4 block with LZ4_decompress_safe: no size prefix.
        let data: Vec<u8> = (0..131072u32).map(|i| (i / 7 % 251) as u8).collect();
        let s = compress(&data, Codec::Lz4Hc).unwrap();
        assert!(!s.raw && s.bytes.len() < data.len() / 4);
        let back = lz4::block::decompress(&s.bytes, Some(data.len() as i32)).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn keeps_what_the_last_image_used_and_refuses_damaged_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let (ka, a) = block(1);
        let (kb, b) = block(2);
        let (kc, c) = block(3);
        save(
            BlockCache::open(dir.path(), Codec::Zstd(3)),
            &[(ka, &a), (kb, &b)],
        );

        let cache = BlockCache::open(dir.path(), Codec::Zstd(3));
        assert_eq!(cache.dropped, None);
        assert_eq!(cache.get(&ka), Some(a.clone()));
        assert_eq!(cache.get(&kc), None);
        save(cache, &[(kb, &b), (kc, &c)]);

        let cache = BlockCache::open(dir.path(), Codec::Zstd(3));
        assert_eq!(
            cache.get(&ka),
            None,
            "a block the last image did not use is forgotten"
        );
        assert_eq!(cache.get(&kc), Some(c.clone()));
        assert_eq!(cache.damaged(), 0);

        // Flip one byte of b's payload: the checksum catches it.
        let pack = dir.path().join(PACK);
        let mut bytes = std::fs::read(&pack).unwrap();
        let at = cache.index[&kb].offset as usize;
        bytes[at] ^= 0xff;
        std::fs::write(&pack, bytes).unwrap();
        let cache = BlockCache::open(dir.path(), Codec::Zstd(3));
        assert_eq!(cache.get(&kb), None);
        assert_eq!(cache.damaged(), 1);
        assert_eq!(cache.get(&kc), Some(c.clone()));
        // Saving after a damaged read writes that block again: the next build has it intact.
        save(cache, &[(kb, &b), (kc, &c)]);
        let cache = BlockCache::open(dir.path(), Codec::Zstd(3));
        assert_eq!(cache.get(&kb), Some(b.clone()));
        assert_eq!(cache.damaged(), 0);

        for codec in [Codec::Zstd(4), Codec::Lz4Hc] {
            let other = BlockCache::open(dir.path(), codec);
            assert_eq!(other.index.len(), 0, "{codec}");
            assert!(
                other
                    .dropped
                    .unwrap()
                    .contains("another compressor, version or level")
            );
        }
    }

    #[test]
    fn the_pack_is_rewritten_when_mostly_dead() {
        let dir = tempfile::tempdir().unwrap();
        let blocks: Vec<(Key, Stored)> = (0..40).map(block).collect();
        let refs = |r: std::ops::Range<usize>| -> Vec<(Key, &Stored)> {
            blocks[r].iter().map(|(k, s)| (*k, s)).collect()
        };
        save(BlockCache::open(dir.path(), Codec::Zstd(3)), &refs(0..20));
        let first = std::fs::metadata(dir.path().join(PACK)).unwrap().len();
        save(BlockCache::open(dir.path(), Codec::Zstd(3)), &refs(20..40));
        let appended = std::fs::metadata(dir.path().join(PACK)).unwrap().len();
        assert!(appended > first, "a pack within its slack is appended to");
        let cache = BlockCache::open(dir.path(), Codec::Zstd(3));
        assert!(
            refs(20..40)
                .iter()
                .all(|(k, s)| cache.get(k).as_ref() == Some(*s))
        );

        let mut cache = BlockCache::open(dir.path(), Codec::Zstd(3));
        cache.slack = 0;
        save(cache, &refs(30..40));
        let rewritten = std::fs::metadata(dir.path().join(PACK)).unwrap().len();
        assert!(
            rewritten < first,
            "{rewritten} >= {first}: dead payloads were kept"
        );
        let cache = BlockCache::open(dir.path(), Codec::Zstd(3));
        assert!(
            refs(30..40)
                .iter()
                .all(|(k, s)| cache.get(k).as_ref() == Some(*s))
        );
        assert_eq!(cache.get(&blocks[20].0), None);
    }
}
