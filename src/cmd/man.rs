//! `loisto-image man`: a roff man page generated from the clap definition.

use crate::cli::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;

pub fn run() -> Result<()> {
    let cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .context("rendering the man page")?;
    // One page for the whole tool: each subcommand gets a section with its own options.
    for sub in cmd.get_subcommands() {
        writeln!(out, ".SH \"LOISTO-IMAGE {}\"", sub.get_name().to_uppercase())?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{about}")?;
        }
        clap_mangen::Man::new(sub.clone())
            .render_options_section(&mut out)
            .context("rendering options")?;
    }
    Ok(())
}
