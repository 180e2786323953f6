//! `loisto-image plan`: the phases that would run, in order, and the environment they get.

use crate::cli::{Global, PlanArgs, SelectArgs};
use crate::phase::{self, Phase, Selection};
use crate::phase_env;
use crate::project::Project;
use anyhow::Result;

impl SelectArgs {
    pub fn to_selection(&self) -> Selection {
        Selection {
            from: self.from.clone(),
            to: self.to.clone(),
            only: self.only.clone(),
            skip: self.skip.clone(),
        }
    }
}

pub fn run(g: &Global, args: &PlanArgs) -> Result<()> {
    let project = Project::open(g)?;
    let phases = args
        .select
        .to_selection()
        .apply(&phase::discover(&project.phases_dir())?)?;
    print(&project, &phases, args.json)
}

pub fn print(project: &Project, phases: &[Phase], json: bool) -> Result<()> {
    let sde = phase_env::source_date_epoch(project)?;
    let env = phase_env::base(project, &project.staging(), sde);
    if json {
        let v = serde_json::json!({
            "project": project.dir,
            "config": project.config.path,
            "output": project.output,
            "phases": phases.iter().map(|p| serde_json::json!({
                "number": p.number, "id": p.id, "path": p.path,
            })).collect::<Vec<_>>(),
            "environment": env.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("phases ({} of them, in order):", phases.len());
    for p in phases {
        println!("  {}", p.id);
    }
    println!("\nenvironment of every phase (plus PHASE=<its id>; OUTPUT is the staging directory");
    println!(
        "that becomes {} when all phases succeed):",
        project.output.display()
    );
    for (k, v) in &env {
        println!("  {k}={}", shell_words::quote(v));
    }
    Ok(())
}
