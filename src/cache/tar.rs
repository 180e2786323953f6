//! The one tar invocation snapshots and hot sets are written and read with.

use std::path::Path;

/// pzstd writes independent frames, so restores decompress on every core (zstd cannot).
pub fn tar_args(mode: &str, tarball: &Path, dir: &Path) -> Vec<String> {
    let mut args = tar_args_uncompressed(mode, tarball, dir);
    args.push("--use-compress-program=pzstd -q -3".into());
    args
}

/// Everything a rootfs holds (xattrs, ACLs, numeric owners), in a plain tar.
pub fn tar_args_uncompressed(mode: &str, tarball: &Path, dir: &Path) -> Vec<String> {
    vec![
        mode.to_string(),
        "--file".into(),
        tarball.to_string_lossy().into_owned(),
        "--directory".into(),
        dir.to_string_lossy().into_owned(),
        "--xattrs".into(),
        "--xattrs-include=*".into(),
        "--acls".into(),
        "--numeric-owner".into(),
    ]
}
