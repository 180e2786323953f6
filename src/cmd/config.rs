//! `loisto-image config`: the resolved config, as shell assignments or JSON.

use crate::cli::{ConfigArgs, Global};
use crate::conf::{Config, Value};
use crate::phase_env::quote;
use anyhow::Result;

pub fn run(g: &Global, args: &ConfigArgs) -> Result<()> {
    let path = match &g.config {
        Some(c) => c.clone(),
        None => crate::project::project_dir(g)?.join("image.conf"),
    };
    let config = Config::load(&path, &g.set)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&config.to_json())?);
        return Ok(());
    }
    for (k, v) in config.vars.iter() {
        match v {
            Value::Str(s) => println!("{k}={}", quote(s)),
            Value::Array(a) if a.is_empty() => println!("{k}=()"),
            Value::Array(a) => {
                println!("{k}=(");
                for item in a {
                    println!("    {}", quote(item));
                }
                println!(")");
            }
        }
    }
    Ok(())
}
