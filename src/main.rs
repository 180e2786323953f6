use clap::Parser;
use loisto_image::{cli::Cli, error};

fn main() {
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
