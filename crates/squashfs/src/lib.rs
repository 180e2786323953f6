//! A squashfs 4.0 writer (zstd or LZ4) whose compressed blocks are remembered between builds.
//!
//! Compressing is nearly all of sealing an image (mksquashfs at zstd 15 takes ~26 s for the
//! default rootfs here), yet an overlay edit changes a handful of blocks. This writer keys each
//! data and fragment block by the SHA-256 of its bytes and takes unchanged ones from a
//! [`blocks::BlockCache`], so a rebuild compresses only what changed and still writes exactly
//! the bytes a build without the cache writes.
//!
//! Layout, in the order the kernel insists on: superblock, compressor options, file data (each file's
//! full blocks in tree order, identical files once), fragment blocks, inode table, directory
//! table, fragment table, id table, xattr table. No export table (NFS).

mod blocks;
pub mod error;
mod inode;
mod meta;
mod parallel;
mod plan;
mod tree;

use crate::error::InputError;
use anyhow::{Context, Result, bail};
pub use blocks::Codec;
use blocks::{BlockCache, Key, Stored, compress, sha256};
use inode::{FileLoc, NONE};
use std::collections::HashMap;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MAGIC: u32 = 0x7371_7368;
const NO_TABLE: u64 = u64::MAX;
const FLAG_DEDUPLICATED: u16 = 0x0040;
const FLAG_NO_XATTRS: u16 = 0x0200;
const FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;
/// The kernel reads images in device blocks; mksquashfs pads to 4 KiB too.
const PAD: u64 = 4096;

pub struct Options<'a> {
    pub source: &'a Path,
    pub output: &'a Path,
    pub codec: Codec,
    pub block_size: u32,
    /// Paths relative to `source` to leave out.
    pub excludes: &'a [PathBuf],
    /// Every timestamp, when set (SOURCE_DATE_EPOCH); else the files' own and now.
    pub mtime: Option<u32>,
    /// Every entry owned by root (what a system extension's files are).
    pub all_root: bool,
    pub cache: Option<&'a Path>,
    /// Told what is about to be compressed, before the slow part.
    pub progress: &'a (dyn Fn(&str) + Sync),
    /// Asked between blocks whether to stop (Ctrl-C): then the write ends with
    /// [`error::Stopped`] and the temporary image is removed.
    pub stop: &'a (dyn Fn() -> bool + Sync),
}

#[derive(Debug)]
pub struct Report {
    pub inodes: u32,
    pub files: usize,
    pub duplicates: usize,
    pub blocks: usize,
    /// All-zero blocks, stored as holes.
    pub sparse: usize,
    pub fragments: usize,
    pub from_cache: usize,
    pub compressed: usize,
    /// Cached blocks that failed their checksum and were compressed again.
    pub damaged: usize,
    /// Why the block cache was not used (or could not be saved).
    pub cache_note: Option<String>,
    /// `--exclude` paths that matched nothing.
    pub unmatched: Vec<PathBuf>,
    pub bytes: u64,
    pub seconds: f64,
}

enum Job {
    Block { file: usize, n: usize },
    Fragment(usize),
}

impl Job {
    fn key(&self, plan: &plan::Plan) -> Key {
        match *self {
            Job::Block { file, n } => plan.files[file].blocks[n],
            Job::Fragment(i) => plan.fragments[i].key,
        }
    }
}

pub fn write(o: &Options) -> Result<Report> {
    let started = Instant::now();
    if !(4096..=1 << 20).contains(&o.block_size) || !o.block_size.is_power_of_two() {
        let msg = format!(
            "block size {} is not a power of two from 4096 to 1048576",
            o.block_size
        );
        return Err(InputError::new(msg).into());
    }
    if !o.source.is_dir() {
        return Err(InputError::new(format!("{} is not a directory", o.source.display())).into());
    }
    if o.output.is_dir() {
        return Err(InputError::new(format!(
            "{} is a directory; give the image file's path",
            o.output.display()
        ))
        .into());
    }
    let mut tree = tree::Tree::walk(o.source, o.excludes, o.mtime)?;
    if o.all_root {
        for node in &mut tree.nodes {
            (node.uid, node.gid) = (0, 0);
        }
    }
    let ids: std::collections::HashSet<u32> = tree.nodes.iter().flat_map(|n| [n.uid, n.gid]).collect();
    if ids.len() > inode::MAX_IDS {
        return Err(InputError::new(format!(
            "{} has {} distinct uids and gids; a squashfs image holds at most {} (--all-root makes every \
             entry root's)",
            o.source.display(),
            ids.len(),
            inode::MAX_IDS
        ))
        .into());
    }
    let plan = plan::plan(&tree, o.block_size, o.stop)?;
    let cache = o.cache.map(|dir| BlockCache::open(dir, o.codec));

    let mut jobs = Vec::new();
    let mut sparse = 0;
    for (file, f) in plan.files.iter().enumerate().filter(|(_, f)| f.same_as.is_none()) {
        for (n, key) in f.blocks.iter().enumerate() {
            if *key == plan.zero {
                sparse += 1;
            } else {
                jobs.push(Job::Block { file, n });
            }
        }
    }
    jobs.extend((0..plan.fragments.len()).map(Job::Fragment));
    // What the cache's index lists now; a cached block that fails its checksum is compressed
    // again later, so this can be a few short.
    let listed = cache
        .as_ref()
        .map_or(0, |c| jobs.iter().filter(|j| c.lists(&j.key(&plan))).count());
    (o.progress)(&format!(
        "{} entries, {} blocks{}: {}compressing {} with {}",
        tree.nodes.len(),
        jobs.len(),
        if sparse > 0 {
            format!(" (+{sparse} sparse)")
        } else {
            String::new()
        },
        if cache.is_some() {
            format!("{listed} from the block cache, ")
        } else {
            String::new()
        },
        jobs.len() - listed,
        o.codec
    ));

    let dir = o
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".loisto-squashfs-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut stream = BlockStream {
        o,
        tree: &tree,
        plan: &plan,
        jobs: &jobs,
        cache: cache.as_ref(),
        next: 0,
        window: std::collections::VecDeque::new(),
        from_cache: 0,
    };
    let (bytes, inodes, places) = write_image(tmp.as_file(), o, &tree, &plan, &mut stream)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    let from_cache = stream.from_cache;
    // Readable like any build artifact (a temporary file starts as 0600).
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    // The cache takes new blocks from the image just written: nothing is kept in memory for it.
    let cache_note = match cache {
        Some(cache) => {
            let dropped = cache.dropped.clone();
            let damaged = cache.damaged();
            let used: Vec<(Key, blocks::Place)> = jobs.iter().map(|j| j.key(&plan)).zip(places).collect();
            let saved = cache.save(&used, tmp.as_file());
            (
                damaged,
                saved.err().map(|e| format!("not saved: {e:#}")).or(dropped),
            )
        }
        None => (0, None),
    };
    // On failure the temporary file comes back inside the error: remove it now, since an
    // error ends the process without running destructors.
    if let Err(e) = tmp.persist(o.output) {
        let _ = e.file.close();
        return Err(e.error).with_context(|| format!("moving the image to {}", o.output.display()));
    }

    Ok(Report {
        inodes,
        files: plan.files.len(),
        duplicates: plan.files.iter().filter(|f| f.same_as.is_some()).count(),
        blocks: jobs.len() - plan.fragments.len(),
        sparse,
        fragments: plan.fragments.len(),
        from_cache,
        compressed: jobs.len() - from_cache,
        damaged: cache_note.0,
        cache_note: cache_note.1,
        unmatched: tree.unmatched.clone(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Blocks compressed (or taken from the cache) at once: what bounds memory, whatever the file
/// sizes (at most this many uncompressed and compressed blocks are held).
const WINDOW: usize = 256;

/// Every job's block as the image stores it, in job order, a window at a time: from the cache
/// where it has the block intact, else read from the tree and compressed on all cores.
struct BlockStream<'a> {
    o: &'a Options<'a>,
    tree: &'a tree::Tree,
    plan: &'a plan::Plan,
    jobs: &'a [Job],
    cache: Option<&'a BlockCache>,
    next: usize,
    window: std::collections::VecDeque<Stored>,
    from_cache: usize,
}

impl BlockStream<'_> {
    fn next(&mut self) -> Result<Stored> {
        if self.window.is_empty() {
            let start = self.next;
            let end = (start + WINDOW).min(self.jobs.len());
            if start == end {
                bail!("the image asked for more blocks than were planned");
            }
            let got = parallel::map(end - start, self.o.stop, |i| {
                let job = &self.jobs[start + i];
                if let Some(s) = self.cache.and_then(|c| c.get(&job.key(self.plan))) {
                    return Ok((s, true));
                }
                let data = match *job {
                    Job::Block { file, n } => read_block(self.tree, self.plan, file, n, self.o.block_size)?,
                    Job::Fragment(i) => read_fragment(self.tree, self.plan, i)?,
                };
                Ok((compress(&data, self.o.codec)?, false))
            })?;
            self.from_cache += got.iter().filter(|(_, hit)| *hit).count();
            self.window.extend(got.into_iter().map(|(s, _)| s));
            self.next = end;
        }
        Ok(self.window.pop_front().expect("a window was just filled"))
    }
}

fn read_block(
    tree: &tree::Tree,
    plan: &plan::Plan,
    file: usize,
    n: usize,
    block_size: u32,
) -> Result<Vec<u8>> {
    let f = &plan.files[file];
    let at = n as u64 * block_size as u64;
    read_checked(&tree.path(f.node), at, block_size as usize, &f.blocks[n])
}

fn read_fragment(tree: &tree::Tree, plan: &plan::Plan, i: usize) -> Result<Vec<u8>> {
    let frag = &plan.fragments[i];
    let mut data = Vec::with_capacity(frag.len as usize);
    for &(file, _) in &frag.parts {
        let f = &plan.files[file];
        let (key, len) = f.tail.expect("a fragment part is a tail");
        let at = f.size - len as u64;
        data.extend_from_slice(&read_checked(&tree.path(f.node), at, len as usize, &key)?);
    }
    Ok(data)
}

/// `len` bytes at `at`, which must still hash to what the plan saw.
fn read_checked(path: &Path, at: u64, len: usize, key: &Key) -> Result<Vec<u8>> {
    let mut data = vec![0; len];
    std::fs::File::open(path)
        .and_then(|h| h.read_exact_at(&mut data, at))
        .with_context(|| format!("reading {}", path.display()))?;
    if sha256(&data) != *key {
        bail!("{} changed while the image was being written", path.display());
    }
    Ok(data)
}

fn write_image(
    file: &std::fs::File,
    o: &Options,
    tree: &tree::Tree,
    plan: &plan::Plan,
    stored: &mut BlockStream,
) -> Result<(u64, u32, Vec<blocks::Place>)> {
    let mut w = Counter {
        out: BufWriter::with_capacity(1 << 20, file),
        pos: 0,
    };
    w.put(&[0; 96])?;
    // The compressor's options, in an uncompressed metadata block.
    let options = o.codec.options();
    w.put(&(options.len() as u16 | 0x8000).to_le_bytes())?;
    w.put(&options)?;

    // Where each job's block landed, for the block cache.
    let mut places = Vec::with_capacity(stored.jobs.len());
    let mut locs: HashMap<usize, FileLoc> = HashMap::new();
    for (i, f) in plan.files.iter().enumerate() {
        let loc = match f.same_as {
            Some(first) => locs[&plan.files[first].node].clone(),
            None => {
                let start = w.pos;
                let mut sizes = Vec::with_capacity(f.blocks.len());
                for key in &f.blocks {
                    if *key == plan.zero {
                        // A hole: size 0 in the block list, no data; readers give zeros.
                        sizes.push(0);
                        continue;
                    }
                    let s = stored.next()?;
                    places.push(blocks::Place::of(&s, w.pos));
                    w.put(&s.bytes)?;
                    sizes.push(s.size_field());
                }
                let (fragment, fragment_offset) = plan.tail_at[i].unwrap_or((NONE, 0));
                FileLoc {
                    start: if sizes.is_empty() { 0 } else { start },
                    sizes,
                    fragment,
                    fragment_offset,
                }
            }
        };
        locs.insert(f.node, loc);
    }
    let mut fragment_table = Vec::with_capacity(plan.fragments.len() * 16);
    for _ in &plan.fragments {
        let s = stored.next()?;
        places.push(blocks::Place::of(&s, w.pos));
        fragment_table.extend_from_slice(&w.pos.to_le_bytes());
        fragment_table.extend_from_slice(&s.size_field().to_le_bytes());
        fragment_table.extend_from_slice(&0u32.to_le_bytes());
        w.put(&s.bytes)?;
    }

    let tables = inode::write(tree, &locs, o.codec, o.block_size)?;
    let inode_table = w.pos;
    w.put(&tables.inodes)?;
    let dir_table = w.pos;
    w.put(&tables.dirs)?;
    let mut fragment_start = NO_TABLE;
    if !plan.fragments.is_empty() {
        let (bytes, list) = meta::lookup_table(&fragment_table, w.pos, o.codec)?;
        w.put(&bytes)?;
        fragment_start = list;
    }
    let (bytes, id_start) = meta::lookup_table(&tables.ids, w.pos, o.codec)?;
    w.put(&bytes)?;
    // The xattr table comes last: the kernel wants its block list to end the image.
    let mut xattr_start = NO_TABLE;
    if tables.xattr_count > 0 {
        let kv_start = w.pos;
        w.put(&tables.xattr_kv)?;
        let (bytes, starts) = meta::table_blocks(&tables.xattr_ids, w.pos, o.codec)?;
        w.put(&bytes)?;
        xattr_start = w.pos;
        w.put(&kv_start.to_le_bytes())?;
        w.put(&tables.xattr_count.to_le_bytes())?;
        w.put(&0u32.to_le_bytes())?;
        for s in starts {
            w.put(&s.to_le_bytes())?;
        }
    }
    let used = w.pos;
    let padded = used.div_ceil(PAD) * PAD;
    w.put(&vec![0; (padded - used) as usize])?;

    let mtime = o.mtime.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32)
    });
    let mut sb = Vec::with_capacity(96);
    let put32 = |sb: &mut Vec<u8>, v: u32| sb.extend_from_slice(&v.to_le_bytes());
    put32(&mut sb, MAGIC);
    put32(&mut sb, tables.inode_count);
    put32(&mut sb, mtime);
    put32(&mut sb, o.block_size);
    put32(&mut sb, plan.fragments.len() as u32);
    for v in [
        o.codec.id(),
        o.block_size.trailing_zeros() as u16,
        FLAG_COMPRESSOR_OPTIONS
            | FLAG_DEDUPLICATED
            | if tables.xattr_count == 0 {
                FLAG_NO_XATTRS
            } else {
                0
            },
        tables.id_count,
        4,
        0,
    ] {
        sb.extend_from_slice(&v.to_le_bytes());
    }
    for v in [
        tables.root.packed(),
        used,
        id_start,
        xattr_start,
        inode_table,
        dir_table,
        fragment_start,
        NO_TABLE,
    ] {
        sb.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = w.out.into_inner().map_err(|e| e.into_error())?;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&sb)?;
    Ok((padded, tables.inode_count, places))
}

/// A writer that knows its position, which the tables need for absolute offsets.
struct Counter<W: Write> {
    out: W,
    pos: u64,
}

impl<W: Write> Counter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}
