//! What a person sees while phases run: a spinner line per phase on a terminal, plain lines
//! in CI, collapsible groups on GitHub Actions, everything with `-v`, errors only with `-q`.

use crate::lines::Lines;
use console::{Term, style};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Prints a command line about to run, when the user asked for detail.
pub fn trace(line: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("{} {line}", style("$").dim());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Quiet,
    /// Phase output streamed as it comes.
    Verbose,
    /// One live status line per phase (interactive terminal).
    Spinner,
    /// Start and end lines, no escape codes (logs, CI).
    Plain,
    /// Plain, with each phase's output inside a `::group::`.
    GitHub,
}

pub fn init(verbose: bool, quiet: bool) -> Style {
    VERBOSE.store(verbose, Ordering::Relaxed);
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        console::set_colors_enabled(false);
        console::set_colors_enabled_stderr(false);
    }
    if quiet {
        Style::Quiet
    } else if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true") {
        Style::GitHub
    } else if verbose {
        Style::Verbose
    } else if Term::stderr().is_term() {
        Style::Spinner
    } else {
        Style::Plain
    }
}

const FRAMES: &[&str] = &["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

pub struct PhaseView {
    style: Style,
    term: Term,
    label: String,
    last_line: String,
    lines: Lines,
    frame: usize,
}

impl PhaseView {
    pub fn start(style: Style, index: usize, total: usize, id: &str) -> PhaseView {
        let label = format!("[{index}/{total}] {id}");
        let term = Term::stderr();
        match style {
            Style::Plain | Style::Verbose => eprintln!("==> {label}"),
            Style::GitHub => eprintln!("::group::{label}"),
            Style::Spinner | Style::Quiet => {}
        }
        PhaseView {
            style,
            term,
            label,
            last_line: String::new(),
            lines: Lines::new(b"\n\r"),
            frame: 0,
        }
    }

    pub fn output(&mut self, chunk: &[u8]) {
        if matches!(self.style, Style::Verbose | Style::GitHub) {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(chunk);
            return;
        }
        if self.style != Style::Spinner {
            return;
        }
        // Keep the latest complete line; `\r` progress counters count as lines too.
        let last = &mut self.last_line;
        self.lines.push(chunk, |line| {
            let text = String::from_utf8_lossy(line.bytes);
            // Colours stripped, other control characters dropped: the status line is ours.
            let text: String = console::strip_ansi_codes(text.trim())
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            if !text.is_empty() {
                *last = text;
            }
        });
    }

    pub fn tick(&mut self, elapsed: Duration) {
        if self.style != Style::Spinner {
            return;
        }
        self.frame = (self.frame + 1) % FRAMES.len();
        let width = self.term.size().1 as usize;
        let head = format!(
            "{} {}  {}",
            style(FRAMES[self.frame]).cyan(),
            self.label,
            secs(elapsed)
        );
        let room = width.saturating_sub(console::measure_text_width(&head) + 3);
        let tail = console::truncate_str(&self.last_line, room, "…");
        let _ = self.term.clear_line();
        let _ = self.term.write_str(&format!("{head}  {}", style(tail).dim()));
    }

    pub fn finish(self, ok: bool, elapsed: Duration) {
        let mark = if ok {
            style("✓").green()
        } else {
            style("✗").red()
        };
        match self.style {
            Style::Spinner => {
                let _ = self.term.clear_line();
                eprintln!("{mark} {}  {}", self.label, secs(elapsed));
            }
            Style::GitHub => {
                eprintln!("::endgroup::");
                eprintln!(
                    "{} {} ({})",
                    if ok { "ok" } else { "FAILED" },
                    self.label,
                    secs(elapsed)
                );
            }
            Style::Plain | Style::Verbose => {
                eprintln!(
                    "{} {} ({})",
                    if ok { "ok" } else { "FAILED" },
                    self.label,
                    secs(elapsed)
                )
            }
            Style::Quiet => {}
        }
    }
}

pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// The closing table: every phase that ran and how long it took.
pub fn summary(style_: Style, rows: &[(String, Duration, String)], total: Duration) {
    if style_ == Style::Quiet {
        return;
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    eprintln!();
    eprintln!("{:<w$}  {:>9}  status", "phase", "time");
    for (id, d, status) in rows {
        eprintln!("{id:<w$}  {:>9}  {status}", secs(*d));
    }
    eprintln!("{:<w$}  {:>9}", "total", secs(total));
}

/// `2026-11-27T09:41:00Z`, for log headers (UTC; no time zone database needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let [y, m, d, hh, mm, ss] = utc_fields(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// `2026-11-27 09:41:00`, the form `date` and faketime read, for a UTC instant.
pub fn utc_clock(secs: u64) -> String {
    let [y, m, d, hh, mm, ss] = utc_fields(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

/// Year, month, day, hour, minute, second of a Unix time in UTC.
fn utc_fields(secs: u64) -> [i64; 6] {
    let (days, rem) = ((secs / 86400) as i64, (secs % 86400) as i64);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    [y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60]
}
