//! `loisto-image sysext`: systemd-sysext images from sysext/NAME.conf, built by
//! sysext/build-sysext.sh against the last build's rootfs.

use crate::cli::{Global, SysextArgs};
use crate::conf::{self, Value, Vars, is_safe_ident};
use crate::error::UsageError;
use crate::phase::Header;
use crate::project::Project;
use crate::runner::{self, Step};
use crate::ui::Style;
use crate::{phase_env, signals, tools};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const KEYS: &[&str] = &[
    "SYSEXT_VERSION",
    "PACKAGES",
    "FILES",
    "FORMAT",
    "ID",
    "VERSION_ID",
    "SYSEXT_LEVEL",
];

pub fn run(g: &Global, args: &SysextArgs, style: Style) -> Result<()> {
    let project = Project::open(g)?;
    let dir = project.dir.join("sysext");
    let names = if args.names.is_empty() {
        all_names(&dir)?
    } else {
        args.names.clone()
    };
    if names.is_empty() {
        return Err(UsageError::new(format!("no sysext/*.conf in {}", project.dir.display())).into());
    }
    // Every conf is checked before anything is built.
    let confs: Vec<(String, Vars)> = names
        .iter()
        .map(|n| load(&dir, n, &project.dir).map(|v| (n.clone(), v)))
        .collect::<Result<_>>()?;
    if !project.rootfs.join("usr/lib/os-release").is_file() {
        return Err(UsageError::new(format!(
            "no built rootfs at {}: run `loisto-image build` first (extensions are built against it)",
            project.rootfs.display()
        ))
        .into());
    }
    let script = dir.join("build-sysext.sh");
    let text = std::fs::read_to_string(&script).with_context(|| format!("reading {}", script.display()))?;
    tools::require([("sysext/build-sysext.sh".to_string(), &Header::parse(&text))])?;

    let _locks = project.lock_for_writing()?;
    std::fs::create_dir_all(project.output.join("logs")).context("creating the output directory")?;
    signals::install();
    let sde = phase_env::source_date_epoch(&project)?;
    let base = phase_env::base(&project, &project.output, sde, false);
    for (i, (name, vars)) in confs.iter().enumerate() {
        let env_file = project.build_dir.join(format!("sysext-{name}.env.sh"));
        std::fs::create_dir_all(&project.build_dir)?;
        std::fs::write(&env_file, phase_env::env_file_text(vars, &base))
            .with_context(|| format!("writing {}", env_file.display()))?;
        let out = project.output.join("sysext").join(format!("{name}.raw"));
        let mut env: Vec<(String, String)> =
            base.iter().filter(|(k, _)| k != "LOISTO_ENV").cloned().collect();
        env.extend([
            ("LOISTO_ENV".to_string(), env_file.to_string_lossy().into_owned()),
            ("PHASE".into(), format!("sysext-{name}")),
            ("SYSEXT_NAME".into(), name.clone()),
            ("SYSEXT_OUT".into(), out.to_string_lossy().into_owned()),
        ]);
        let id = format!("sysext-{name}");
        let log = project.output.join("logs").join(format!("{id}.log"));
        let step = Step {
            id: &id,
            script: &script,
            log: &log,
            index: i + 1,
            total: confs.len(),
        };
        let aftermath = format!("{} was not written", out.display());
        runner::run_step(
            &project.dir,
            &step,
            &env,
            style,
            &format!("sysext {name}"),
            &aftermath,
        )?;
        let rel = format!("sysext/{name}.raw");
        if crate::manifest::read(&project.output).is_ok() {
            crate::manifest::add_artifact(&project.output, &rel, "sysext")
                .with_context(|| format!("recording {rel} in manifest.json"))?;
        }
        if !g.quiet {
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn all_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".conf"))
                    .map(str::to_string)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    Ok(names)
}

/// Parses sysext/NAME.conf with the image.conf parser and checks its keys.
fn load(dir: &Path, name: &str, project: &Path) -> Result<Vars> {
    let path: PathBuf = dir.join(format!("{name}.conf"));
    if !is_safe_ident(name) || !path.is_file() {
        let known = all_names(dir)?.join(", ");
        return Err(UsageError::new(format!("no sysext named {name:?} (sysext/*.conf: {known})")).into());
    }
    let src = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let vars = conf::parse(&src, &|k| std::env::var(k).ok())
        .map_err(|e| UsageError::new(format!("{}:{}: {}", path.display(), e.line, e.msg)))?;
    let at = |key: &str| format!("{}:{}", path.display(), vars.line_of(key).unwrap_or(1));
    for (key, _) in vars.iter() {
        if !KEYS.contains(&key) {
            return Err(UsageError::new(format!(
                "{}: unknown key {key} (known: {})",
                at(key),
                KEYS.join(", ")
            ))
            .into());
        }
    }
    match vars.get("SYSEXT_VERSION") {
        Some(Value::Str(v)) if is_safe_ident(v) => {}
        _ => {
            return Err(UsageError::new(format!(
                "{}: SYSEXT_VERSION must be set to a version like 1 or 2026.11",
                path.display()
            ))
            .into());
        }
    }
    if let Some(Value::Str(f)) = vars.get("FORMAT")
        && !matches!(f.as_str(), "squashfs" | "erofs")
    {
        return Err(UsageError::new(format!("{}: FORMAT={f} is not squashfs or erofs", at("FORMAT"))).into());
    }
    if let Some(Value::Str(f)) = vars.get("FILES")
        && !f.is_empty()
        && !project.join(f).is_dir()
    {
        return Err(UsageError::new(format!(
            "{}: FILES={f} is not a directory in the project",
            at("FILES")
        ))
        .into());
    }
    if vars.get("PACKAGES").is_none() && vars.get("FILES").is_none() {
        return Err(UsageError::new(format!(
            "{}: set PACKAGES=( ... ) or FILES=dir: the extension would be empty",
            path.display()
        ))
        .into());
    }
    Ok(vars)
}
