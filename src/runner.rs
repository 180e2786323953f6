//! Runs one script the way phases run: own process group, clean environment, output teed to
//! its log and the terminal, and a failure report with the last lines.

use crate::error::Interrupted;
use crate::lines::Lines;
use crate::proc::{self, PhaseExit, PhaseSink};
use crate::ui::{self, PhaseView, Style};
use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub struct Step<'a> {
    pub id: &'a str,
    pub script: &'a Path,
    pub log: &'a Path,
    /// Position in the run, for the `[2/7]` label.
    pub index: usize,
    pub total: usize,
}

/// Runs `bash SCRIPT` in `cwd`; returns how it ended and its last lines of output.
fn run_script(
    cwd: &Path,
    step: &Step,
    env: &[(String, String)],
    style: Style,
) -> Result<(PhaseExit, Vec<String>)> {
    let mut log =
        std::fs::File::create(step.log).with_context(|| format!("creating {}", step.log.display()))?;
    writeln!(
        log,
        "# loisto-image phase {}\n# command: {}\n# cwd: {}\n# started: {}\n",
        step.id,
        proc::display("bash", &[step.script.as_os_str().to_owned()]),
        cwd.display(),
        ui::utc_now()
    )
    .context("writing the log header")?;
    let mut sink = Sink {
        view: PhaseView::start(style, step.index, step.total, step.id),
        tail: Tail::default(),
    };
    let exit = proc::run_phase(step.script, cwd, env, &mut log, &mut sink).with_context(|| {
        format!(
            "phase {} was stopped: its log {} could not be written (is the disk full?)",
            step.id,
            step.log.display()
        )
    })?;
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

/// Runs one step to its end, the way `build` and `sysext` both need it. An interrupt is
/// reported and becomes [`Interrupted`] (exit 130); a non-zero exit prints the failure report
/// (last lines, a hint) and becomes an error naming `what`, the log, and `aftermath` (what was
/// left as it was). `Ok` is a step that exited 0.
pub fn run_step(
    cwd: &Path,
    step: &Step,
    env: &[(String, String)],
    style: Style,
    what: &str,
    aftermath: &str,
) -> Result<PhaseExit> {
    let (exit, tail) = run_script(cwd, step, env, style)?;
    if exit.interrupted {
        eprintln!(
            "interrupted during {} after {}; its log: {}",
            step.id,
            ui::secs(exit.duration),
            step.log.display()
        );
        return Err(Interrupted.into());
    }
    if exit.code != 0 {
        report_failure(step.id, &exit, &tail, step.log)?;
        bail!(
            "{what} failed with exit code {} after {}; full log: {}\n{aftermath}",
            exit.code,
            ui::secs(exit.duration),
            step.log.display()
        );
    }
    Ok(exit)
}

fn report_failure(id: &str, exit: &PhaseExit, lines: &[String], log_path: &Path) -> Result<()> {
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "\n{id} failed: exit code {} after {}",
        exit.code,
        ui::secs(exit.duration)
    )?;
    writeln!(err, "last {} lines of {}:", lines.len(), log_path.display())?;
    for l in lines {
        writeln!(err, "  | {l}")?;
    }
    if let Some(h) = hint(exit.code) {
        writeln!(err, "hint: {h}")?;
    }
    Ok(())
}

/// What an exit code usually means, where the shell gives it a meaning of its own.
pub fn hint(code: i32) -> Option<&'static str> {
    match code {
        127 => Some(
            "exit code 127: a command was not found. Is it installed, and listed under `# Tools:` in \
             the phase's header (so the build checks for it before anything runs)? `loisto-image doctor` lists them",
        ),
        126 => Some("exit code 126: a command was found but could not be run (not executable?)"),
        _ => None,
    }
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

/// The last 20 lines of output, for the failure report (escaped for the terminal).
struct Tail {
    lines: VecDeque<String>,
    splitter: Lines,
}

impl Default for Tail {
    fn default() -> Tail {
        Tail {
            lines: VecDeque::new(),
            splitter: Lines::new(b"\n"),
        }
    }
}

impl Tail {
    const KEEP: usize = 20;

    fn push(&mut self, chunk: &[u8]) {
        let lines = &mut self.lines;
        self.splitter.push(chunk, |line| {
            lines.push_back(line.escaped());
            if lines.len() > Self::KEEP {
                lines.pop_front();
            }
        });
    }

    fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lines.iter().cloned().collect();
        if let Some(line) = self.splitter.pending() {
            v.push(line.escaped());
            if v.len() > Self::KEEP {
                v.remove(0);
            }
        }
        v
    }
}
