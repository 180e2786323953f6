//! `loisto-image squashfs`: seal a tree into a squashfs image, reusing the last image's blocks.

use crate::cli::{Compression, SquashfsArgs};
use anyhow::Result;
use loisto_squashfs::{self as squashfs, Codec, Options};
use std::io::Write;
use std::path::PathBuf;

pub fn run(args: &SquashfsArgs) -> Result<()> {
    // Ctrl-C stops the work between blocks and the temporary image is removed.
    crate::signals::install();
    let excludes: Vec<PathBuf> = args
        .exclude
        .iter()
        .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf())
        .collect();
    // `build --no-cache` means no cache at all, this one included (its phases get LOISTO_CACHE=off).
    let off = std::env::var("LOISTO_CACHE").is_ok_and(|v| v == "off");
    let block_cache = args.block_cache.as_deref().filter(|_| !off);
    if off && args.block_cache.is_some() {
        println!("block cache: not used (LOISTO_CACHE=off, a build --no-cache)");
    }
    let codec = match args.compression {
        Compression::Zstd => Codec::Zstd(args.level),
        Compression::Lz4hc => Codec::Lz4Hc,
    };
    let r = squashfs::write(&Options {
        source: &args.source,
        output: &args.output,
        codec,
        block_size: args.block_size,
        excludes: &excludes,
        mtime: args.mtime,
        all_root: args.all_root,
        cache: block_cache,
        progress: &|line| {
            println!("{line}");
            let _ = std::io::stdout().flush();
        },
        stop: &crate::signals::interrupted,
    })?;
    println!(
        "{}: {} inodes, {} files ({} duplicates stored once), {} blocks + {} fragment blocks{}, \
         {:.1} MiB in {:.1}s",
        args.output.display(),
        r.inodes,
        r.files,
        r.duplicates,
        r.blocks,
        r.fragments,
        if r.sparse > 0 {
            format!(" + {} all-zero blocks stored as holes", r.sparse)
        } else {
            String::new()
        },
        r.bytes as f64 / (1 << 20) as f64,
        r.seconds
    );
    if block_cache.is_some() {
        println!(
            "block cache: {} blocks reused, {} compressed with {}{}",
            r.from_cache,
            r.compressed,
            codec,
            match r.damaged {
                0 => String::new(),
                n => format!(" ({n} cached blocks failed their checksum and were compressed again)"),
            }
        );
    }
    for path in &r.unmatched {
        eprintln!(
            "warning: --exclude {} matched nothing in {}",
            path.display(),
            args.source.display()
        );
    }
    if let Some(note) = &r.cache_note {
        eprintln!("block cache: {note}");
    }
    Ok(())
}
