//! The hashes the runner keeps: sha256 of files (sparse-aware) and of whole trees, in hex.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Lower-case hex, the form every digest is written in.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and sha256 of a file. Holes in sparse files (disk images are mostly holes) are hashed
/// as the zeros they read as, without reading them: that is most of a disk image's bytes.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < size {
        // Where the next data starts; ENXIO means only a hole is left.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, libc::SEEK_DATA) };
        let data = if data < 0 { size } else { data as u64 };
        let mut hole = data - pos;
        while hole > 0 {
            let n = hole.min(zeros.len() as u64) as usize;
            h.update(&zeros[..n]);
            hole -= n as u64;
        }
        if data >= size {
            break;
        }
        let end = unsafe { libc::lseek(f.as_raw_fd(), data as libc::off_t, libc::SEEK_HOLE) };
        let end = if end < 0 { size } else { (end as u64).min(size) };
        f.seek(SeekFrom::Start(data))
            .with_context(|| format!("seeking in {}", path.display()))?;
        let mut left = end - data;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f
                .read(&mut buf[..want])
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        pos = end;
    }
    Ok((size, hex(&h.finalize())))
}

/// A digest of a file or a whole directory: names, modes, link targets and contents.
pub fn tree_hash(path: &Path) -> Result<String> {
    if !path.exists() && path.symlink_metadata().is_err() {
        return Ok("<missing>".into());
    }
    let mut h = Sha256::new();
    for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let rel = entry.path().strip_prefix(path).unwrap_or(entry.path());
        use std::os::unix::fs::PermissionsExt;
        let meta = entry.path().symlink_metadata()?;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(format!("\0{:o}\0", meta.permissions().mode()).as_bytes());
        if meta.file_type().is_symlink() {
            h.update(std::fs::read_link(entry.path())?.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            h.update(hash_file(entry.path())?.1.as_bytes());
        }
        h.update([0]);
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_sees_content_and_mode_changes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "1").unwrap();
        let h1 = tree_hash(d.path()).unwrap();
        std::fs::write(d.path().join("a"), "2").unwrap();
        let h2 = tree_hash(d.path()).unwrap();
        assert_ne!(h1, h2);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(h2, tree_hash(d.path()).unwrap());
        assert_eq!(tree_hash(&d.path().join("nope")).unwrap(), "<missing>");
    }

    #[test]
    fn sparse_files_hash_like_their_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(5 << 20).unwrap();
        use std::io::{Seek, SeekFrom, Write};
        let mut f = f;
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(b"data in the middle").unwrap();
        drop(f);
        let bytes = std::fs::read(&p).unwrap();
        let want = hex(&Sha256::digest(&bytes));
        assert_eq!(hash_file(&p).unwrap(), (bytes.len() as u64, want));
        std::fs::write(&p, b"").unwrap();
        assert_eq!(hash_file(&p).unwrap().1, hex(&Sha256::digest(b"")));
    }
}
