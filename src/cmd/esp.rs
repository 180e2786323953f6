//! `loisto-image esp`: the FAT boot partition image holding the UKIs, made the same way every
//! time (70-disk runs it; `sign` remakes the image with the same recipe).

use crate::cli::EspArgs;
use crate::error::UsageError;
use crate::esp::{self, Spec};
use crate::size::parse_size;
use anyhow::Result;
use std::path::PathBuf;

pub fn run(args: &EspArgs) -> Result<()> {
    let mut files = Vec::new();
    for f in &args.files {
        let (dest, src) = f.split_once('=').ok_or_else(|| {
            UsageError::new(format!(
                "{f:?}: give a file as PATH_IN_IMAGE=FILE, e.g. EFI/BOOT/BOOTX64.EFI=out/slot-a.efi"
            ))
        })?;
        files.push((dest.trim_start_matches("::").to_string(), PathBuf::from(src)));
    }
    let spec = Spec {
        size: parse_size(&args.size)?,
        label: args.label.clone(),
        volume_id: args.volume_id.to_ascii_lowercase(),
        epoch: args.mtime,
        files,
    };
    esp::make(&spec, &args.output)?;
    println!(
        "{}: FAT32 {} MiB, label {}, id {}, {} file(s)",
        args.output.display(),
        spec.size >> 20,
        spec.label,
        spec.volume_id,
        spec.files.len()
    );
    Ok(())
}
