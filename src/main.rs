use clap::{CommandFactory, FromArgMatches};
use loisto_image::{cli::Cli, error};

/// The version and the commit it was built from (build.rs), e.g. `0.1.0 (commit 9f0b9af2c3d1)`.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LOISTO_COMMIT"), ")");

fn main() {
    quiet_on_broken_pipe();
    let matches = Cli::command().version(VERSION).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match loisto_image::run(&cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => report(err),
    }
}

/// `error: ...` then one `caused by:` line per link of the chain.
fn report(err: anyhow::Error) -> ! {
    let mut msg = format!("error: {err}");
    for cause in err.chain().skip(1) {
        msg.push_str(&format!("\n  caused by: {cause}"));
    }
    eprintln!("{}", console::style(msg).for_stderr().red());
    std::process::exit(error::exit_code(&err));
}

/// Whoever read our output has gone (`build -v | head`): print nothing more, stop what we
/// started and exit as a shell reports a process that SIGPIPE ended (128 + 13), the way
/// ripgrep and coreutils behave, instead of panicking over the failed write.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            loisto_image::signals::kill_children();
            std::process::exit(141);
        }
        default(info);
    }));
}
