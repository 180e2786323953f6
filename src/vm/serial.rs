//! Follows a VM's serial console: every byte goes to the log (and, when asked, the terminal),
//! and `--expect` ends the run as soon as a line matches.

use anyhow::{Context, Result};
use regex::Regex;
use std::collections::VecDeque;
use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

pub enum Outcome {
    Matched(String),
    TimedOut,
    /// QEMU exited on its own (guest powered off, or rebooted with -no-reboot).
    Exited(Option<i32>),
    /// SIGINT or SIGTERM reached us; QEMU has been stopped.
    Interrupted,
    /// The firmware refused to start the disk's boot loader (Secure Boot: not signed by a key
    /// in db) and went on to network boot: nothing on the disk will run. The refusal line.
    Refused(String),
}

pub struct Watch<'a> {
    pub expect: Option<&'a Regex>,
    pub timeout: Option<Duration>,
    pub echo: bool,
}

pub struct Report {
    pub outcome: Outcome,
    pub last_lines: Vec<String>,
    /// A boot loader the firmware refused to start, if the run went on after it.
    pub refusal: Option<String>,
    /// The kernel's panic line, if the last kernel to start panicked. Kept apart from
    /// `last_lines`: a panic's backtrace (6.12's: ~40 lines) pushes it out of them.
    pub panic: Option<String>,
    /// The guest's account of its boot (`LOISTO-BOOT firmware=...`, without the tag), and
    /// when the health line it belongs to arrived after this QEMU run started.
    pub boot: Option<(String, Duration)>,
    /// When the outcome was settled: a match, not the end of the wait for the boot report.
    pub settled: Instant,
}

/// How long a run that matched goes on reading for the boot report: the guest prints it right
/// after its health line (seconds later under emulation: it asks systemd about every unit).
const BOOT_REPORT_WAIT: Duration = Duration::from_secs(30);

impl Report {
    /// The kernel said it powers off ("reboot: Power down"), as opposed to a reset.
    pub fn powered_off(&self) -> bool {
        self.last_lines.iter().any(|l| l.contains("reboot: Power down"))
    }

    /// The boot report as vm prints it: the guest's figures, and the time before its kernel
    /// started (firmware and loader), which is what this run's wall clock saw beyond the
    /// guest's own uptime at the report (TCG and KVM guests' clocks follow the host's).
    pub fn boot_summary(&self) -> Option<String> {
        let (line, at) = self.boot.as_ref()?;
        let uptime: f64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("uptime="))?
            .trim_end_matches('s')
            .parse()
            .ok()?;
        let before = (at.as_secs_f64() - uptime).max(0.0);
        Some(format!(
            "power-on to kernel {before:.1}s (firmware, loader; seen from outside), {line}"
        ))
    }
}

/// Reads the child's stdout until a match, a timeout or the end, then stops the child.
pub fn follow(child: &mut Child, log: &mut std::fs::File, w: &Watch) -> Result<Report> {
    let out = child.stdout.take().context("QEMU's serial output is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    crate::proc::pump(out, tx, |b| b, None);
    let start = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut refusal = None;
    let mut panic = None;
    let mut lines = Seen::default();
    crate::signals::set_child(child.id() as i32);
    // After a match: until the boot report (if the health line came before it) or the wait.
    let mut matched: Option<(Outcome, Instant)> = None;
    let (outcome, settled) = loop {
        if crate::signals::interrupted() {
            break (Outcome::Interrupted, Instant::now());
        }
        let waited = matched.as_ref().is_some_and(|(_, at)| {
            lines.boot.is_some() || lines.health_at.is_none() || at.elapsed() > BOOT_REPORT_WAIT
        });
        if waited && let Some(m) = matched.take() {
            break m;
        }
        if matched.is_none() && w.timeout.is_some_and(|t| start.elapsed() > t) {
            break (Outcome::TimedOut, Instant::now());
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(chunk) => {
                log.write_all(&chunk).context("writing the serial log")?;
                if w.echo {
                    let mut so = std::io::stdout().lock();
                    let _ = so.write_all(&chunk);
                    let _ = so.flush();
                }
                partial.extend_from_slice(&chunk);
                let expect = if matched.is_some() { None } else { w.expect };
                let outcome = take_lines(&mut partial, &mut tail, expect, &mut refusal, &mut panic);
                lines.note(&tail, start.elapsed());
                match outcome {
                    Some(o @ Outcome::Matched(_)) => matched = Some((o, Instant::now())),
                    Some(o) => break (o, Instant::now()),
                    None => {}
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().context("waiting for QEMU")?;
                break matched
                    .take()
                    .unwrap_or((Outcome::Exited(status.code()), Instant::now()));
            }
        }
    };
    if !matches!(outcome, Outcome::Exited(_)) {
        let _ = child.kill();
        let _ = child.wait();
    }
    crate::signals::set_child(0);
    // QEMU may have ended because the signal reached it first.
    let outcome = if crate::signals::interrupted() {
        Outcome::Interrupted
    } else {
        outcome
    };
    if !partial.is_empty() {
        tail.push_back(clean(&partial));
    }
    Ok(Report {
        outcome,
        last_lines: tail.into_iter().collect(),
        refusal,
        panic,
        boot: lines.boot_report(),
        settled,
    })
}

/// The guest's lines vm reports on, as they arrive.
#[derive(Default)]
struct Seen {
    health_at: Option<Duration>,
    boot: Option<(String, Duration)>,
}

impl Seen {
    fn note(&mut self, tail: &VecDeque<String>, now: Duration) {
        if self.health_at.is_none() && tail.iter().any(|l| l.starts_with("LOISTO-HEALTH ")) {
            self.health_at = Some(now);
        }
        if self.boot.is_none()
            && let Some(l) = tail
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("LOISTO-BOOT firmware="))
        {
            self.boot = Some((format!("firmware={l}"), now));
        }
    }

    /// The report's `uptime=` is the guest's clock at its health line: that line's arrival is
    /// what to set it against.
    fn boot_report(self) -> Option<(String, Duration)> {
        let (line, at) = self.boot?;
        Some((line, self.health_at.map_or(at, |h| h.min(at))))
    }
}

/// Moves complete lines from `partial` into `tail`; ends the run at the first line `expect`
/// matches, or when the firmware gives up on the disk after refusing to load from it.
/// Notes the kernel's panic line, forgotten when a kernel starts again (a reset).
fn take_lines(
    partial: &mut Vec<u8>,
    tail: &mut VecDeque<String>,
    expect: Option<&Regex>,
    refusal: &mut Option<String>,
    panic: &mut Option<String>,
) -> Option<Outcome> {
    while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
        let raw: Vec<u8> = partial.drain(..=pos).collect();
        let line = clean(&raw);
        if let Some(at) = line.find("Kernel panic - ") {
            panic.get_or_insert_with(|| line[at..].trim_end().to_string());
        } else if line.contains("] Linux version ") {
            *panic = None;
        }
        tail.push_back(line.clone());
        if tail.len() > 30 {
            tail.pop_front();
        }
        if expect.is_some_and(|re| re.is_match(&line)) {
            return Some(Outcome::Matched(line));
        }
        if is_refusal(&line) {
            eprintln!("note: the firmware refused a boot loader: {}", line.trim());
            refusal.get_or_insert(line);
        } else if expect.is_some() && refusal.is_some() && is_network_boot(&line) {
            // After a refused disk entry, OVMF tries the next ones: another slot's entry may
            // still boot (a rollback), but network boot means the disk has nothing it will run.
            return refusal.take().map(Outcome::Refused);
        }
    }
    None
}

/// EDK2's line for a load that Secure Boot (or the image's own check) stopped.
fn is_refusal(line: &str) -> bool {
    line.contains("failed to load") && (line.contains("Access Denied") || line.contains("Security Violation"))
}

fn is_network_boot(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with(">>Start PXE")
        || l.starts_with("iPXE ")
        || l.contains("PXE-E")
        || l.contains("No bootable option")
}

/// A console line as a person reads it: no escape sequences, and what a carriage return
/// overwrote is gone (systemd's status line is erased with `\r`, spaces, `\r` before the next
/// line is written over it).
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = console::strip_ansi_codes(&text);
    let text = text.trim_end_matches(['\n', '\r']);
    text.rsplit('\r')
        .find(|part| !part.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_summary_adds_the_time_before_the_kernel() {
        let r = Report {
            outcome: Outcome::TimedOut,
            last_lines: vec![],
            refusal: None,
            panic: None,
            boot: Some((
                "firmware=- kernel=2.0s uptime=9.5s slowest=x:1.0s".into(),
                Duration::from_millis(15_000),
            )),
            settled: Instant::now(),
        };
        assert_eq!(
            r.boot_summary().unwrap(),
            "power-on to kernel 5.5s (firmware, loader; seen from outside), firmware=- kernel=2.0s uptime=9.5s slowest=x:1.0s"
        );
    }

    #[test]
    fn the_report_is_set_against_the_health_line_whichever_comes_first() {
        let lines = |v: &[&str]| v.iter().map(|l| l.to_string()).collect::<VecDeque<_>>();
        let boot = "LOISTO-BOOT firmware=- uptime=9.5s";
        let health = "LOISTO-HEALTH id=loisto";
        let mut seen = Seen::default();
        seen.note(&lines(&[health]), Duration::from_secs(15));
        seen.note(&lines(&[health, boot]), Duration::from_secs(17));
        assert_eq!(
            seen.boot_report(),
            Some(("firmware=- uptime=9.5s".into(), Duration::from_secs(15)))
        );
        // Images that print the report first.
        let mut seen = Seen::default();
        seen.note(&lines(&[boot]), Duration::from_secs(15));
        seen.note(&lines(&[boot, health]), Duration::from_secs(16));
        assert_eq!(seen.boot_report().unwrap().1, Duration::from_secs(15));
    }

    #[test]
    fn a_panic_is_remembered_past_its_backtrace_until_a_kernel_starts_again() {
        let mut tail = VecDeque::new();
        let mut panic = None;
        let mut log = String::from("[    2.0] Kernel panic - not syncing: Attempted to kill init!\r\n");
        for i in 0..40 {
            log.push_str(&format!("[    2.1]  ? frame_{i}+0x10/0x20\r\n"));
        }
        let mut partial = log.into_bytes();
        take_lines(&mut partial, &mut tail, None, &mut None, &mut panic);
        assert!(!tail.iter().any(|l| l.contains("Kernel panic")));
        assert_eq!(
            panic.as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init!")
        );
        let mut partial = b"[    0.000000] Linux version 6.12.95\r\n".to_vec();
        take_lines(&mut partial, &mut tail, None, &mut None, &mut panic);
        assert_eq!(panic, None);
    }

    #[test]
    fn lines_are_cleaned_and_matched_once_complete() {
        let re = Regex::new(r"^HEALTH id=\w+$").unwrap();
        let mut tail = VecDeque::new();
        let mut partial = b"boot\r\n\x1b[0;32mOK\x1b[0m\r\nHEALTH id=lo".to_vec();
        let mut refusal = None;
        assert!(take_lines(&mut partial, &mut tail, Some(&re), &mut refusal, &mut None).is_none());
        partial.extend_from_slice(b"isto\r\n");
        assert!(matches!(
            take_lines(&mut partial, &mut tail, Some(&re), &mut refusal, &mut None),
            Some(Outcome::Matched(l)) if l == "HEALTH id=loisto"
        ));
        assert_eq!(tail, ["boot", "OK", "HEALTH id=loisto"]);
    }

    #[test]
    fn a_refusal_ends_the_run_only_when_the_firmware_gives_up_on_the_disk() {
        let re = Regex::new("^LOISTO-HEALTH").unwrap();
        let denied = "BdsDxe: failed to load Boot1A0B \"B\" from HD(2,GPT,...): Access Denied";
        // Slot B refused, slot A starts: a rollback, not the end of the run.
        let mut tail = VecDeque::new();
        let mut refusal = None;
        let mut partial = format!("{denied}\r\nBdsDxe: starting Boot1A0A \"A\"\r\n").into_bytes();
        assert!(take_lines(&mut partial, &mut tail, Some(&re), &mut refusal, &mut None).is_none());
        assert_eq!(refusal.as_deref(), Some(denied));
        // Refused, then network boot: ends with the refusal.
        let mut refusal = None;
        let mut partial = format!("{denied}\r\n>>Start PXE over IPv4.\r\n").into_bytes();
        assert!(matches!(
            take_lines(&mut partial, &mut tail, Some(&re), &mut refusal, &mut None),
            Some(Outcome::Refused(l)) if l == denied
        ));
        // Network boot alone (no disk at all) is not a refusal.
        let mut refusal = None;
        let mut partial = b">>Start PXE over IPv4.\r\n".to_vec();
        assert!(take_lines(&mut partial, &mut tail, Some(&re), &mut refusal, &mut None).is_none());
    }

    #[test]
    fn text_a_carriage_return_overwrote_is_dropped() {
        assert_eq!(
            clean(b"\r          \rLOISTO-UPDATE done\r\n"),
            "LOISTO-UPDATE done"
        );
        assert_eq!(clean(b"plain\r\n"), "plain");
        assert_eq!(clean(b"\r\n"), "");
    }
}
