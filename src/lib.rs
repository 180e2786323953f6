//! loisto-image: a transparent runner for image projects (image.conf + phases/NN-name.sh).

pub mod cache;
pub mod cli;
pub mod cmd;
pub mod conf;
pub mod error;
pub mod esp;
pub mod flash;
pub mod hash;
#[cfg(test)]
mod layout;
pub mod lines;
pub mod lock;
pub mod manifest;
pub mod owned;
pub mod partitions;
pub mod phase;
pub mod phase_env;
pub mod proc;
pub mod project;
pub mod project_files;
pub mod reproducible;
pub mod runner;
pub mod signals;
pub mod size;
pub mod staging;
pub mod tools;
pub mod ui;
pub mod vm;

use anyhow::Result;
use cli::{Cli, Command};

/// Runs the command; the number is the exit status on success (chroot passes its command's).
pub fn run(cli: &Cli) -> Result<i32> {
    let style = ui::init(cli.global.verbose, cli.global.quiet);
    let g = &cli.global;
    if let Command::Chroot(a) = &cli.command {
        return cmd::chroot::run(g, a);
    }

    match &cli.command {
        Command::Init(a) => cmd::init::run(g, a),
        Command::Build(a) => cmd::build::run(g, a, style),
        Command::Plan(a) => cmd::plan::run(g, a),
        Command::Config(a) => cmd::config::run(g, a),
        Command::Verify(a) => cmd::verify::run(g, a),
        Command::Doctor => cmd::doctor::run(g),
        Command::Keys(a) => cmd::keys::run(g, a),
        Command::Bundle(a) => cmd::bundle::run(g, a),
        Command::Sign(a) => cmd::sign::run(g, a),
        Command::Sysext(a) => cmd::sysext::run(g, a, style),
        Command::Clean(a) => cmd::clean::run(g, a),
        Command::Esp(a) => cmd::esp::run(a),
        Command::FlashFiles(a) => cmd::flash_files::run(a),
        Command::Squashfs(a) => cmd::squashfs::run(a),
        Command::Vm(a) => cmd::vm::run(g, a),
        Command::Completions(a) => cmd::completions::run(a),
        Command::Man => cmd::man::run(),
        Command::Chroot(_) => unreachable!("handled above"),
    }
    .map(|()| 0)
}
