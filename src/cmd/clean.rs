//! `loisto-image clean`: remove what builds leave behind, and with --cache the snapshots.

use crate::cache::Cache;
use crate::cli::{CleanArgs, Global};
use crate::project::Project;
use anyhow::{Context, Result};
use std::path::Path;

pub fn run(g: &Global, args: &CleanArgs) -> Result<()> {
    let project = Project::open(g)?;
    // A running build holds the locks; cleaning under it would pull its tree away.
    let _locks = project.lock_for_writing()?;
    let mut targets = vec![
        project.staging(),
        project.output.clone(),
        project.build_dir.clone(),
    ];
    if !project.rootfs.starts_with(&project.build_dir) {
        targets.push(project.rootfs.clone());
        targets.extend(crate::cache::resync::files_beside(&project.rootfs));
    }
    if args.cache {
        targets.push(project.cache_dir.clone());
    }
    for t in &targets {
        remove(t, g.quiet)?;
    }
    if !args.cache && !g.quiet {
        let cache = Cache::new(&project);
        println!(
            "kept the cache: {} snapshots, {} MiB in {}, block caches and downloads {} MiB \
             (clean --cache removes them)",
            cache.entries().len(),
            cache.size() >> 20,
            cache.dir.display(),
            cache.others_size() >> 20
        );
    }
    Ok(())
}

fn remove(p: &Path, quiet: bool) -> Result<()> {
    if !p.exists() {
        return Ok(());
    }
    let size = du(p);
    let gone = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    gone.with_context(|| format!("removing {}", p.display()))?;
    if !quiet {
        println!("removed {} ({} MiB)", p.display(), size >> 20);
    }
    Ok(())
}

/// Bytes used by the regular files under `p`.
pub fn du(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
