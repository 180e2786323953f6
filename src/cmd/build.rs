//! `loisto-image build`: run the selected phases, then record and promote what they made.

use crate::cli::{BuildArgs, Global};
use crate::cmd::plan;
use crate::error::Interrupted;
use crate::manifest::{self, Manifest, PhaseRecord};
use crate::phase::{self, Phase};
use crate::proc::{self, PhaseExit, PhaseSink};
use crate::project::Project;
use crate::ui::{self, PhaseView, Style};
use crate::{lock::Lock, phase_env, signals, staging, tools};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn run(g: &Global, args: &BuildArgs, style: Style) -> Result<()> {
    let project = Project::open(g)?;
    let selection = args.select.to_selection();
    let phases = selection.apply(&phase::discover(&project.phases_dir())?)?;
    if args.dry_run {
        return plan::print(&project, &phases, false);
    }
    let missing = tools::missing(&phases);
    if !missing.is_empty() {
        let lines: Vec<String> = missing
            .iter()
            .map(|(ph, t)| format!("  phase {ph} needs `{t}`"))
            .collect();
        let names: Vec<&str> = missing.iter().flat_map(|(_, t)| t.split('|').take(1)).collect();
        bail!(
            "host tools are missing, nothing was run:\n{}\ninstall them with: {}\n(`loisto-image doctor` lists every tool and its version)",
            lines.join("\n"),
            tools::install_line(&names)
        );
    }
    for d in [&project.build_dir, &project.cache_dir, &project.rootfs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if let Some(parent) = project.output.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let _lock = Lock::acquire(&project.lock_path(), &project.output)?;
    signals::install();

    let staging = project.staging();
    staging::prepare(&staging, &project.output, !selection.is_all())?;
    let sde = phase_env::source_date_epoch(&project)?;
    let base_env = phase_env::base(&project, &staging, sde);
    std::fs::write(
        project.env_file(),
        phase_env::env_file_text(&project.config, &base_env),
    )
    .with_context(|| format!("writing {}", project.env_file().display()))?;

    let started = Instant::now();
    let mut records = Vec::new();
    for (i, ph) in phases.iter().enumerate() {
        if signals::interrupted() {
            return Err(Interrupted.into());
        }
        let log_path = staging.join("logs").join(format!("{}.log", ph.id));
        let env = phase_env::for_phase(&base_env, &ph.id);
        let (exit, tail) = run_one(&project, ph, &env, &log_path, style, (i + 1, phases.len()))?;
        records.push(PhaseRecord {
            id: ph.id.clone(),
            duration_ms: exit.duration.as_millis() as u64,
            exit_code: exit.code,
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
            report_failure(ph, &exit, &tail, &log_path)?;
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
    }

    let m = Manifest {
        tool: env!("CARGO_PKG_NAME").into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        image_id: project.config.image_id.clone(),
        image_version: project.config.image_version.clone(),
        config_digest: project.config.digest(),
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
    let rows: Vec<(String, Duration, i32)> = m
        .phases
        .iter()
        .map(|p| (p.id.clone(), Duration::from_millis(p.duration_ms), p.exit_code))
        .collect();
    ui::summary(style, &rows, started.elapsed());
    if style != Style::Quiet {
        eprintln!(
            "output: {} ({} artifacts)",
            project.output.display(),
            m.artifacts.len()
        );
    }
    Ok(())
}

fn run_one(
    project: &Project,
    ph: &Phase,
    env: &[(String, String)],
    log_path: &Path,
    style: Style,
    (index, total): (usize, usize),
) -> Result<(PhaseExit, Vec<String>)> {
    let mut log =
        std::fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    writeln!(
        log,
        "# loisto-image phase {}\n# command: {}\n# cwd: {}\n# started: {}\n",
        ph.id,
        proc::display("bash", &[ph.path.clone().into_os_string()]),
        project.dir.display(),
        ui::utc_now()
    )
    .context("writing the log header")?;
    let mut sink = Sink {
        view: PhaseView::start(style, index, total, &ph.id),
        tail: Tail::default(),
    };
    let exit = proc::run_phase(&ph.path, &project.dir, env, &mut log, &mut sink)?;
    writeln!(
        log,
        "\n# exit code {} after {}",
        exit.code,
        ui::secs(exit.duration)
    )
    .context("writing the log footer")?;
    sink.view
        .finish(exit.code == 0 && !exit.interrupted, exit.duration);
    Ok((exit, sink.tail.lines()))
}

fn report_failure(ph: &Phase, exit: &PhaseExit, lines: &[String], log_path: &Path) -> Result<()> {
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "\nphase {} failed: exit code {} after {}",
        ph.id,
        exit.code,
        ui::secs(exit.duration)
    )?;
    writeln!(err, "last {} lines of {}:", lines.len(), log_path.display())?;
    for l in lines {
        writeln!(err, "  | {l}")?;
    }
    Ok(())
}

struct Sink {
    view: PhaseView,
    tail: Tail,
}

impl PhaseSink for Sink {
    fn output(&mut self, chunk: &[u8]) {
        self.tail.push(chunk);
        self.view.output(chunk);
    }

    fn tick(&mut self, elapsed: Duration) {
        self.view.tick(elapsed);
    }
}

/// The last 20 lines of output, for the failure report.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    const KEEP: usize = 20;

    fn push(&mut self, chunk: &[u8]) {
        self.partial.extend_from_slice(chunk);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            self.lines
                .push_back(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            if self.lines.len() > Self::KEEP {
                self.lines.pop_front();
            }
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            v.push(String::from_utf8_lossy(&self.partial).into_owned());
            if v.len() > Self::KEEP {
                v.remove(0);
            }
        }
        v
    }
}
