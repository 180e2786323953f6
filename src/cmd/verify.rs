//! `loisto-image verify`: re-hash a build's artifacts against its manifest.

use crate::cli::{Global, VerifyArgs};
use crate::manifest::{self, Problem};
use crate::project::Project;
use anyhow::{Result, bail};

pub fn run(g: &Global, args: &VerifyArgs) -> Result<()> {
    let dir = match &args.output {
        Some(d) => d.clone(),
        None => Project::open(g)?.output,
    };
    let m = manifest::read(&dir)?;
    let problems = manifest::check(&dir, &m)?;
    for p in &problems {
        match p {
            Problem::Missing(path) => println!("missing  {path}"),
            Problem::Changed { path, why } => println!("changed  {path}  ({why})"),
        }
    }
    // A file the build did not make is not vouched for by SHA256SUMS either.
    let extra = manifest::unlisted(&dir, &m)?;
    for path in &extra {
        println!("unlisted {path}");
    }
    if !problems.is_empty() || !extra.is_empty() {
        bail!(
            "{} of {} artifacts in {} do not match manifest.json, and {} file(s) are not in it",
            problems.len(),
            m.artifacts.len(),
            dir.display(),
            extra.len()
        );
    }
    if !g.quiet {
        println!(
            "ok: {} artifacts in {} match manifest.json",
            m.artifacts.len(),
            dir.display()
        );
    }
    Ok(())
}
