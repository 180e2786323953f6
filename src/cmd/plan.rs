//! `loisto-image plan`: the phases that would run, in order, and the environment they get.

use crate::cache::restore;
use crate::cache::{self, Cache};
use crate::cli::{Global, PlanArgs};
use crate::phase::Phase;
use crate::phase_env;
use crate::project::Project;
use anyhow::Result;

pub fn run(g: &Global, args: &PlanArgs) -> Result<()> {
    let project = Project::open(g)?;
    for w in project.unread_key_warnings()? {
        eprintln!("warning: {w}");
    }
    let selection = args.select.to_selection();
    let phases = selection.apply(&project.phases()?)?;
    if args.explain {
        return explain(&project, &phases, selection.is_all(), args.json);
    }
    if args.cache_key {
        println!("{}", cache_key(&project, &phases)?);
        return Ok(());
    }
    print(&project, &phases, args.json)
}

/// `loisto-image-ID-HASH`: HASH is the fingerprint of the last phase whose result the cache
/// keeps (it takes in every phase before it), so the key moves exactly when a restore would
/// miss; `loisto-image-ID-` is the prefix to fall back on.
fn cache_key(project: &Project, phases: &[Phase]) -> Result<String> {
    let fps = cache::fingerprints(project, phases)?;
    let last = phases
        .iter()
        .zip(&fps)
        .filter(|(p, _)| p.header.snapshot)
        .map(|(_, f)| f)
        .next_back()
        .or(fps.last());
    let digest = last.map(|f| f.digest.as_str()).unwrap_or("none");
    Ok(format!(
        "loisto-image-{}-{}",
        project.config.image_id,
        &digest[..digest.len().min(20)]
    ))
}

/// Restored or run, and why, for every phase of the next build.
fn explain(project: &Project, phases: &[Phase], whole_build: bool, json: bool) -> Result<()> {
    let cache = Cache::new(project);
    let rows = if whole_build {
        let d = restore::decide(&cache, phases, cache::fingerprints(project, phases)?, false);
        for note in &d.notes {
            eprintln!("warning: {note}");
        }
        restore::explain_plan(&cache, phases, &d)
    } else {
        let why = vec!["a phase selection runs every selected phase (no cache)".to_string()];
        phases
            .iter()
            .map(|p| (p.id.clone(), "run", why.clone()))
            .collect()
    };
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, action, why)| serde_json::json!({"phase": id, "action": action, "reasons": why}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "phases": v }))?
        );
        return Ok(());
    }
    for (id, action, why) in rows {
        println!("{id}: {action} ({})", why.join("; "));
    }
    Ok(())
}

pub fn print(project: &Project, phases: &[Phase], json: bool) -> Result<()> {
    let sde = phase_env::source_date_epoch(project)?;
    let env = phase_env::base(project, &project.staging(), sde, false);
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
    let width = phases.iter().map(|p| p.id.len()).max().unwrap_or(0);
    for p in phases {
        let tools: Vec<String> = p.header.tools.iter().map(|g| g.join("|")).collect();
        if tools.is_empty() {
            println!("  {}", p.id);
        } else {
            println!("  {:width$}  tools: {}", p.id, tools.join(" "));
        }
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
