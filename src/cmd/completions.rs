//! `loisto-image completions SHELL`, generated from the clap definition.

use crate::cli::{Cli, CompletionsArgs};
use anyhow::Result;
use clap::CommandFactory;

pub fn run(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "loisto-image", &mut std::io::stdout());
    Ok(())
}
