use clap::Parser;
use loisto_image::{cli::Cli, error};

fn main() {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
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
