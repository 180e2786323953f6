//! Follows a VM's serial console: every byte goes to the log (and, when asked, the terminal),
//! and `--expect` ends the run as soon as a line matches.

use anyhow::{Context, Result};
use regex::Regex;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

pub enum Outcome {
    Matched(String),
    TimedOut,
    /// QEMU exited on its own (guest powered off, or rebooted with -no-reboot).
    Exited(Option<i32>),
    /// SIGINT or SIGTERM reached us; QEMU has been stopped.
    Interrupted,
}

pub struct Watch<'a> {
    pub expect: Option<&'a Regex>,
    pub timeout: Option<Duration>,
    pub echo: bool,
}

pub struct Report {
    pub outcome: Outcome,
    pub last_lines: Vec<String>,
}

impl Report {
    /// The kernel said it powers off ("reboot: Power down"), as opposed to a reset.
    pub fn powered_off(&self) -> bool {
        self.last_lines.iter().any(|l| l.contains("reboot: Power down"))
    }
}

/// Reads the child's stdout until a match, a timeout or the end, then stops the child.
pub fn follow(child: &mut Child, log: &mut std::fs::File, w: &Watch) -> Result<Report> {
    let mut out = child.stdout.take().context("QEMU's serial output is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut partial: Vec<u8> = Vec::new();
    crate::signals::set_child(child.id() as i32);
    let outcome = loop {
        if crate::signals::interrupted() {
            break Outcome::Interrupted;
        }
        if w.timeout.is_some_and(|t| start.elapsed() > t) {
            break Outcome::TimedOut;
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
                if let Some(m) = take_lines(&mut partial, &mut tail, w.expect) {
                    break Outcome::Matched(m);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().context("waiting for QEMU")?;
                break Outcome::Exited(status.code());
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
    })
}

/// Moves complete lines from `partial` into `tail`; returns the first one `expect` matches.
fn take_lines(partial: &mut Vec<u8>, tail: &mut VecDeque<String>, expect: Option<&Regex>) -> Option<String> {
    while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
        let raw: Vec<u8> = partial.drain(..=pos).collect();
        let line = clean(&raw);
        tail.push_back(line.clone());
        if tail.len() > 30 {
            tail.pop_front();
        }
        if expect.is_some_and(|re| re.is_match(&line)) {
            return Some(line);
        }
    }
    None
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
    fn lines_are_cleaned_and_matched_once_complete() {
        let re = Regex::new(r"^HEALTH id=\w+$").unwrap();
        let mut tail = VecDeque::new();
        let mut partial = b"boot\r\n\x1b[0;32mOK\x1b[0m\r\nHEALTH id=lo".to_vec();
        assert_eq!(take_lines(&mut partial, &mut tail, Some(&re)), None);
        partial.extend_from_slice(b"isto\r\n");
        assert_eq!(
            take_lines(&mut partial, &mut tail, Some(&re)).as_deref(),
            Some("HEALTH id=loisto")
        );
        assert_eq!(tail, ["boot", "OK", "HEALTH id=loisto"]);
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
