//! `loisto-image build`: run the selected phases, then record and promote what they made.

use crate::cache::{self, Cache};
use crate::cli::{BuildArgs, Global};
use crate::cmd::plan;
use crate::error::Interrupted;
use crate::manifest::{self, Manifest, PhaseRecord};
use crate::phase;
use crate::project::Project;
use crate::rebuild;
use crate::runner::{self, Step};
use crate::ui::{self, Style};
use crate::{phase_env, signals, staging, tools};
use anyhow::{Context, Result, anyhow};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn run(g: &Global, args: &BuildArgs, style: Style) -> Result<()> {
    let project = Project::open(g)?;
    if style != Style::Quiet {
        for w in project.unread_key_warnings()? {
            eprintln!("warning: {w}");
        }
    }
    let selection = args.select.to_selection();
    let phases = selection.apply(&project.phases()?)?;
    if args.dry_run {
        return plan::print(&project, &phases, false);
    }
    // The snapshots of `# Cache: snapshot` phases are tar archives compressed by pzstd.
    let cache_tools = phase::Header {
        tools: vec![vec!["tar".into()], vec!["pzstd".into()]],
        ..Default::default()
    };
    let caching = phases.iter().any(|p| p.header.snapshot) && !args.no_cache;
    tools::require(
        phases
            .iter()
            .map(|p| (format!("phase {}", p.id), &p.header))
            .chain(caching.then_some(("the phase cache".to_string(), &cache_tools))),
    )?;
    crate::owned::refuse_mount_point("OUTPUT", &project.output)?;
    let _locks = project.lock_for_writing()?;
    std::fs::create_dir_all(&project.rootfs)
        .with_context(|| format!("creating {}", project.rootfs.display()))?;
    signals::install();

    let staging = project.staging();
    staging::prepare(&staging, &project.output, !selection.is_all())?;
    let sde = phase_env::source_date_epoch(&project)?;
    let base_env = phase_env::base(&project, &staging, sde, args.no_cache);
    std::fs::write(
        project.env_file(),
        phase_env::env_file_text(&project.config.vars, &base_env),
    )
    .with_context(|| format!("writing {}", project.env_file().display()))?;

    let started = Instant::now();
    let mut records = Vec::new();
    // The cache serves whole builds only: a hand-picked selection means "run exactly these".
    let cache = (selection.is_all() && !args.no_cache).then(|| Cache::new(&project));
    let mut first = 0;
    let mut used: Vec<std::path::PathBuf> = Vec::new();
    let mut fps = Vec::new();
    if let Some(cache) = &cache {
        let d = rebuild::decide(cache, &phases, cache::fingerprints(&project, &phases)?, true);
        for note in &d.notes {
            eprintln!("warning: {note}");
        }
        let all_declared = phases.iter().all(|p| p.header.declares_inputs);
        if !args.check_reproducible && all_declared && up_to_date(&project, d.fingerprints.last()) {
            let _ = std::fs::remove_dir_all(&staging);
            if style != Style::Quiet {
                eprintln!(
                    "up to date: nothing the phases read changed since the build in {} (`build --no-cache` forces one)",
                    project.output.display()
                );
            }
            return Ok(());
        }
        if let Some((k, entry)) = &d.restore {
            let t = Instant::now();
            let how = match cache.restore(entry, &project.rootfs)? {
                cache::Restored::Whole(why) => format!("extracted whole ({why})"),
                cache::Restored::Resynced(r) => format!(
                    "resynced: {} of {} entries changed since, {} taken from the {}",
                    r.removed,
                    r.entries,
                    r.extracted,
                    if r.from_hot { "hot set" } else { "snapshot" }
                ),
            };
            let how = format!("{how}, {}", ui::secs(t.elapsed()));
            used.push(entry.dir.clone());
            for (i, ph) in phases[..=*k].iter().enumerate() {
                let log = staging.join("logs").join(format!("{}.log", ph.id));
                std::fs::write(
                    &log,
                    format!(
                        "# loisto-image phase {}\n# restored from snapshot {} (fingerprint {}; {how}); not run\n",
                        ph.id,
                        entry.dir.display(),
                        d.fingerprints[i].digest
                    ),
                )?;
                if style != Style::Quiet {
                    eprintln!(
                        "restored [{}/{}] {} (snapshot {})",
                        i + 1,
                        phases.len(),
                        ph.id,
                        &d.fingerprints[*k].digest[..16]
                    );
                    if i == *k {
                        eprintln!("    rootfs {how}");
                    }
                }
                records.push(PhaseRecord {
                    id: ph.id.clone(),
                    duration_ms: 0,
                    exit_code: 0,
                    restored: true,
                });
            }
            first = k + 1;
        }
        fps = d.fingerprints;
    }
    for (i, ph) in phases.iter().enumerate().skip(first) {
        if signals::interrupted() {
            return Err(Interrupted.into());
        }
        let log_path = staging.join("logs").join(format!("{}.log", ph.id));
        let env = phase_env::for_phase(&base_env, &ph.id);
        let step = Step {
            id: &ph.id,
            script: &ph.path,
            log: &log_path,
            index: i + 1,
            total: phases.len(),
        };
        let (exit, tail) = runner::run_script(&project.dir, &step, &env, style)?;
        records.push(PhaseRecord {
            id: ph.id.clone(),
            duration_ms: exit.duration.as_millis() as u64,
            exit_code: exit.code,
            restored: false,
        });
        if exit.interrupted {
            eprintln!(
                "interrupted during {} after {}; its log: {}",
                ph.id,
                ui::secs(exit.duration),
                log_path.display()
            );
            return Err(Interrupted.into());
        }
        if exit.code != 0 {
            runner::report_failure(&ph.id, &exit, &tail, &log_path)?;
            return Err(anyhow!(
                "phase {} failed with exit code {} after {}; full log: {}\n\
                 the last good output in {} was left as it was",
                ph.id,
                exit.code,
                ui::secs(exit.duration),
                log_path.display(),
                project.output.display()
            ));
        }

        // Kept at once, so a later failure still leaves this phase's work reusable.
        if let Some(cache) = cache.as_ref().filter(|_| ph.header.snapshot) {
            let t = Instant::now();
            let e = cache.store(&ph.id, &fps[i], &project.rootfs)?;
            if style != Style::Quiet {
                eprintln!(
                    "    snapshot after {} kept ({} MiB, {})",
                    ph.id,
                    e.meta.size >> 20,
                    ui::secs(t.elapsed())
                );
            }
            used.push(e.dir);
        }
    }
    if let Some(cache) = &cache {
        let limit = cache_limit(&project)?;
        for gone in cache.prune(limit, &used) {
            eprintln!("cache: pruned {gone} (over the {} MiB limit)", limit >> 20);
        }
        if style != Style::Quiet {
            eprintln!(
                "cache: {} snapshots, {} MiB (limit {} MiB); block caches and downloads {} MiB",
                cache.entries().len(),
                cache.size() >> 20,
                limit >> 20,
                cache.others_size() >> 20
            );
        }
    }

    staging::publish_modes(&staging)?;
    let m = Manifest {
        tool: env!("CARGO_PKG_NAME").into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        image_id: project.config.image_id.clone(),
        image_version: project.config.image_version.clone(),
        compatible: project.config.scalar("COMPATIBLE").unwrap_or("").to_string(),
        config_digest: project.config.digest(),
        fingerprint: fps.last().map(|f| f.digest.clone()).unwrap_or_default(),
        source_date_epoch: sde,
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        phases: records,
        artifacts: manifest::collect_artifacts(&staging)?,
    };
    manifest::write(&staging, &m)?;
    staging::promote(&staging, &project.output)?;
    let rows: Vec<(String, Duration, String)> = m
        .phases
        .iter()
        .map(|p| {
            let status = if p.restored {
                "restored".to_string()
            } else {
                "ok".to_string()
            };
            (p.id.clone(), Duration::from_millis(p.duration_ms), status)
        })
        .collect();
    ui::summary(style, &rows, started.elapsed());
    if style != Style::Quiet {
        eprintln!(
            "output: {} ({} artifacts)",
            project.output.display(),
            m.artifacts.len()
        );
    }
    if args.check_reproducible {
        drop(_locks);
        return crate::reproducible::check(&project, &m, style == Style::Quiet);
    }
    Ok(())
}

/// The last build recorded this final fingerprint and its artifacts are as it left them
/// (size and mtime; `verify` re-hashes them).
fn up_to_date(project: &Project, last: Option<&cache::Fingerprint>) -> bool {
    let (Some(fp), Ok(m)) = (last, manifest::read(&project.output)) else {
        return false;
    };
    m.fingerprint == fp.digest && manifest::looks_untouched(&project.output, &m)
}

/// `CACHE_MAX_SIZE` in image.conf (e.g. 8G), default 8 GiB.
fn cache_limit(project: &Project) -> Result<u64> {
    match project.config.scalar("CACHE_MAX_SIZE") {
        Some(v) => crate::cmd::vm::parse_size(v)
            .with_context(|| format!("{}: CACHE_MAX_SIZE", project.config.path.display())),
        None => Ok(8 << 30),
    }
}
