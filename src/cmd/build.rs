//! `loisto-image build`: run the selected phases, then record and promote what they made.

use crate::cache::restore;
use crate::cache::{self, Cache};
use crate::cli::{BuildArgs, Global};
use crate::cmd::plan;
use crate::error::Interrupted;
use crate::manifest::{self, Manifest, PhaseRecord};
use crate::phase;
use crate::project::Project;
use crate::runner::{self, Step};
use crate::ui::{self, Style};
use crate::{phase_env, signals, staging, tools};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
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
    check_tools(&phases, !args.no_cache)?;
    crate::owned::refuse_mount_point("OUTPUT", &project.output)?;
    let locks = project.lock_for_writing()?;
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
    // The cache serves whole builds only: a hand-picked selection means "run exactly these".
    let cache = (selection.is_all() && !args.no_cache).then(|| Cache::new(&project));
    let mut done = Done::default();
    if let Some(cache) = &cache {
        let d = restore::decide(cache, &phases, cache::fingerprints(&project, &phases)?, true);
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
        done = restore_snapshot(&project, cache, &phases, d, &staging, style)?;
    }
    run_phases(
        &project,
        cache.as_ref(),
        &phases,
        &base_env,
        &staging,
        style,
        &mut done,
    )?;
    if let Some(cache) = &cache {
        prune_cache(&project, cache, &done.used, style)?;
    }
    let m = seal(&project, &staging, sde, done, started, style)?;
    if args.check_reproducible {
        drop(locks);
        return crate::reproducible::check(&project, &m, style == Style::Quiet);
    }
    Ok(())
}

/// What the build has done so far: the phases restored or run, their fingerprints, and the
/// snapshots it used (kept when the cache is pruned).
#[derive(Default)]
struct Done {
    records: Vec<PhaseRecord>,
    fingerprints: Vec<cache::Fingerprint>,
    used: Vec<PathBuf>,
    /// Index of the first phase still to run.
    next: usize,
}

/// Every phase's `# Tools:`, and tar and pzstd when a snapshot is written or restored, are
/// checked before anything runs.
fn check_tools(phases: &[phase::Phase], caching: bool) -> Result<()> {
    // The snapshots of `# Cache: snapshot` phases are tar archives compressed by pzstd.
    let cache_tools = phase::Header {
        tools: vec![vec!["tar".into()], vec!["pzstd".into()]],
        ..Default::default()
    };
    let caching = caching && phases.iter().any(|p| p.header.snapshot);
    tools::require(
        phases
            .iter()
            .map(|p| (format!("phase {}", p.id), &p.header))
            .chain(caching.then_some(("the phase cache".to_string(), &cache_tools))),
    )
}

/// Makes the rootfs the snapshot the decision picked, and writes a log for each phase it
/// stands for (they are not run).
fn restore_snapshot(
    project: &Project,
    cache: &Cache,
    phases: &[phase::Phase],
    d: restore::Decision,
    staging: &Path,
    style: Style,
) -> Result<Done> {
    let mut done = Done::default();
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
        done.used.push(entry.dir.clone());
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
            )
            .with_context(|| format!("writing {}", log.display()))?;
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
            done.records.push(PhaseRecord {
                id: ph.id.clone(),
                duration_ms: 0,
                exit_code: 0,
                restored: true,
            });
        }
        done.next = k + 1;
    }
    done.fingerprints = d.fingerprints;
    Ok(done)
}

/// Runs the phases from `done.next` on, keeping a snapshot after each `# Cache: snapshot`
/// phase at once, so that a later failure still leaves its work reusable.
fn run_phases(
    project: &Project,
    cache: Option<&Cache>,
    phases: &[phase::Phase],
    base_env: &[(String, String)],
    staging: &Path,
    style: Style,
    done: &mut Done,
) -> Result<()> {
    let aftermath = format!(
        "the last good output in {} was left as it was",
        project.output.display()
    );
    for (i, ph) in phases.iter().enumerate().skip(done.next) {
        if signals::interrupted() {
            return Err(Interrupted.into());
        }
        let log = staging.join("logs").join(format!("{}.log", ph.id));
        let step = Step {
            id: &ph.id,
            script: &ph.path,
            log: &log,
            index: i + 1,
            total: phases.len(),
        };
        let env = phase_env::for_phase(base_env, &ph.id);
        let what = format!("phase {}", ph.id);
        let exit = runner::run_step(&project.dir, &step, &env, style, &what, &aftermath)?;
        done.records.push(PhaseRecord {
            id: ph.id.clone(),
            duration_ms: exit.duration.as_millis() as u64,
            exit_code: exit.code,
            restored: false,
        });
        if let Some(cache) = cache.filter(|_| ph.header.snapshot) {
            let t = Instant::now();
            let e = cache.store(&ph.id, &done.fingerprints[i], &project.rootfs)?;
            if style != Style::Quiet {
                eprintln!(
                    "    snapshot after {} kept ({} MiB, {})",
                    ph.id,
                    e.meta.size >> 20,
                    ui::secs(t.elapsed())
                );
            }
            done.used.push(e.dir);
        }
    }
    Ok(())
}

fn prune_cache(project: &Project, cache: &Cache, used: &[PathBuf], style: Style) -> Result<()> {
    let limit = cache_limit(project)?;
    for gone in cache.prune(limit, used) {
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
    Ok(())
}

/// Records what the build made (manifest.json, SHA256SUMS) and puts it in place of the last
/// output in one step.
fn seal(
    project: &Project,
    staging: &Path,
    sde: u64,
    done: Done,
    started: Instant,
    style: Style,
) -> Result<Manifest> {
    staging::publish_modes(staging)?;
    let m = Manifest {
        tool: env!("CARGO_PKG_NAME").into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        image_id: project.config.image_id.clone(),
        image_version: project.config.image_version.clone(),
        compatible: project.config.scalar("COMPATIBLE").unwrap_or("").to_string(),
        config_digest: project.config.digest(),
        fingerprint: done
            .fingerprints
            .last()
            .map(|f| f.digest.clone())
            .unwrap_or_default(),
        source_date_epoch: sde,
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        phases: done.records,
        artifacts: manifest::collect_artifacts(staging)?,
    };
    manifest::write(staging, &m)?;
    staging::promote(staging, &project.output)?;
    let rows: Vec<(String, Duration, String)> = m
        .phases
        .iter()
        .map(|p| {
            let status = if p.restored { "restored" } else { "ok" };
            (
                p.id.clone(),
                Duration::from_millis(p.duration_ms),
                status.to_string(),
            )
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
    Ok(m)
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
        Some(v) => crate::size::parse_size(v)
            .with_context(|| format!("{}: CACHE_MAX_SIZE", project.config.path.display())),
        None => Ok(8 << 30),
    }
}
