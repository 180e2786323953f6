//! `loisto-image flash-files`: the compressed disk and its block map (80-flash and `sign`).

use crate::cli::FlashFilesArgs;
use crate::flash;
use anyhow::Result;

pub fn run(args: &FlashFilesArgs) -> Result<()> {
    let (zst, bmap) = flash::names(&args.disk);
    let zst = args.zst.clone().unwrap_or(zst);
    let bmap = args.bmap.clone().unwrap_or(bmap);
    let started = std::time::Instant::now();
    let w = flash::write(&args.disk, &zst, &bmap, args.level)?;
    let mib = |n: u64| n as f64 / 1048576.0;
    println!(
        "{}: {:.0} MiB, {:.0} MiB of it data; {} {:.0} MiB, {} ({:.1}s)",
        args.disk.display(),
        mib(w.image_size),
        mib(w.mapped_bytes),
        zst.display(),
        mib(w.compressed_size),
        bmap.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
