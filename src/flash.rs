//! A disk image in the forms people flash: compressed with zstd (the image size in the frame
//! header, so tools can show progress and check the length), and a block map in bmaptool's
//! format 2.0 (the ranges of 4 KiB blocks that hold data, each with its SHA-256), so that
//! `bmaptool copy` writes and checks only those instead of the whole sparse disk.

use crate::hash::hex;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub const BLOCK: u64 = 4096;
/// The zstd level 80-flash and `sign` use: the disk's data is compressed already (squashfs,
/// the initrd), so higher levels cost time and save little (19: 20x the time for 0.6%).
pub const DEFAULT_LEVEL: i32 = 9;

/// What was written, for the caller to report.
pub struct Written {
    pub image_size: u64,
    pub mapped_bytes: u64,
    pub compressed_size: u64,
}

/// Writes `zst` and `bmap` for `disk`, each through a temporary file beside it.
pub fn write(disk: &Path, zst: &Path, bmap: &Path, level: i32) -> Result<Written> {
    let mut f = File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let image_size = f
        .metadata()
        .with_context(|| format!("reading {}", disk.display()))?
        .len();
    if image_size == 0 {
        bail!("{} is empty", disk.display());
    }
    let ranges = mapped_blocks(&f, image_size).with_context(|| format!("mapping {}", disk.display()))?;
    let text =
        bmap_text(&mut f, image_size, &ranges).with_context(|| format!("hashing {}", disk.display()))?;
    replace_with(bmap, |out| out.write_all(text.as_bytes()).map_err(Into::into))?;
    f.seek(SeekFrom::Start(0))?;
    replace_with(zst, |out| {
        let mut enc = zstd::stream::Encoder::new(out, level).context("starting zstd")?;
        enc.include_contentsize(true)?;
        enc.set_pledged_src_size(Some(image_size))?;
        let n = std::io::copy(&mut (&mut f).take(image_size), &mut enc)?;
        if n != image_size {
            bail!("{} changed size while it was compressed", disk.display());
        }
        enc.finish()?;
        Ok(())
    })?;
    Ok(Written {
        image_size,
        mapped_bytes: ranges.iter().map(|(a, b)| (b - a + 1) * BLOCK).sum(),
        compressed_size: std::fs::metadata(zst)?.len(),
    })
}

/// `x.img` -> `x.img.zst`, `x.bmap`: the names bmaptool looks for beside an image.
pub fn names(disk: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let s = disk.to_string_lossy();
    let stem = s.strip_suffix(".img").unwrap_or(&s);
    (format!("{s}.zst").into(), format!("{stem}.bmap").into())
}

/// Inclusive block ranges that hold data (SEEK_DATA/SEEK_HOLE), joined where they touch.
fn mapped_blocks(f: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut off = 0i64;
    while (off as u64) < size {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e);
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (first, last) = (data as u64 / BLOCK, (hole as u64 - 1) / BLOCK);
        match ranges.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => ranges.push((first, last)),
        }
        off = hole;
    }
    Ok(ranges)
}

/// The bmap XML as bmaptool writes it; its own checksum is taken with that field all zeros.
fn bmap_text(f: &mut File, size: u64, ranges: &[(u64, u64)]) -> Result<String> {
    let blocks = size.div_ceil(BLOCK);
    let mapped: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let mut s = format!(
        "<?xml version=\"1.0\" ?>\n\
         <!-- Block map of a disk image (bmaptool format 2.0), written by loisto-image: the\n     \
         ranges of blocks that hold data. `bmaptool copy IMAGE DEVICE` writes only those. -->\n\
         <bmap version=\"2.0\">\n    \
         <ImageSize> {size} </ImageSize>\n    \
         <BlockSize> {BLOCK} </BlockSize>\n    \
         <BlocksCount> {blocks} </BlocksCount>\n    \
         <!-- {:.1} MiB of {:.1} MiB hold data -->\n    \
         <MappedBlocksCount> {mapped} </MappedBlocksCount>\n    \
         <ChecksumType> sha256 </ChecksumType>\n    \
         <BmapFileChecksum> {} </BmapFileChecksum>\n    \
         <BlockMap>\n",
        (mapped * BLOCK) as f64 / 1048576.0,
        size as f64 / 1048576.0,
        "0".repeat(64)
    );
    let mut buf = vec![0u8; 1 << 20];
    for &(first, last) in ranges {
        let start = first * BLOCK;
        let end = ((last + 1) * BLOCK).min(size);
        f.seek(SeekFrom::Start(start))?;
        let mut h = Sha256::new();
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        let span = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        s.push_str(&format!(
            "        <Range chksum=\"{}\"> {span} </Range>\n",
            hex(&h.finalize())
        ));
    }
    s.push_str("    </BlockMap>\n</bmap>\n");
    let own = hex(&Sha256::digest(s.as_bytes()));
    Ok(s.replacen(&"0".repeat(64), &own, 1))
}

/// Writes `path` through `path.tmp` and renames it into place only when `fill` succeeded.
fn replace_with(path: &Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut out = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        fill(&mut out).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_blocks_follow_the_holes_of_a_sparse_file() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(64 * BLOCK).unwrap();
        for block in [0u64, 1, 10, 63] {
            f.seek(SeekFrom::Start(block * BLOCK + 7)).unwrap();
            f.write_all(b"x").unwrap();
        }
        f.sync_all().unwrap();
        assert_eq!(
            mapped_blocks(&f, 64 * BLOCK).unwrap(),
            [(0, 1), (10, 10), (63, 63)]
        );
    }

    #[test]
    fn the_bmap_checksum_covers_the_file_with_that_field_zeroed() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 5000]).unwrap();
        f.rewind().unwrap();
        let text = bmap_text(&mut f, 5000, &[(0, 1)]).unwrap();
        let field = text.split("<BmapFileChecksum> ").nth(1).unwrap()[..64].to_string();
        let zeroed = text.replacen(&field, &"0".repeat(64), 1);
        assert_eq!(hex(&Sha256::digest(zeroed.as_bytes())), field);
        assert!(text.contains(&format!(
            "chksum=\"{}\"> 0-1 <",
            hex(&Sha256::digest(vec![1u8; 5000]))
        )));
        assert!(text.contains("<BlocksCount> 2 </BlocksCount>"));
    }
}
