use clap::Parser;
use loisto_image::{cli::Cli, error};

fn main() {
    let cli = Cli::parse();
    if let Err(err) = loisto_image::run(&cli) {
        let mut msg = format!("error: {err}");
        for cause in err.chain().skip(1) {
            msg.push_str(&format!("\n  caused by: {cause}"));
        }
        eprintln!("{}", console::style(msg).for_stderr().red());
        std::process::exit(error::exit_code(&err));
    }
}
