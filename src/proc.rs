//! Every child process goes through here: the command line is logged, failures name the tool
//! and say what to do, and phases run in their own process group with their output teed.

use crate::signals;
use crate::ui;
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Shell-quoted command line, for logs and error messages.
pub fn display(program: &str, args: &[OsString]) -> String {
    let mut words = vec![shell_words::quote(program).into_owned()];
    words.extend(
        args.iter()
            .map(|a| shell_words::quote(&a.to_string_lossy()).into_owned()),
    );
    words.join(" ")
}

fn hint(program: &str, err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::NotFound {
        format!("`{program}` is not installed or not in PATH (see `loisto-image doctor`)")
    } else {
        format!("could not start `{program}`: {err}")
    }
}

/// Runs a tool to completion and returns its stdout; stderr is kept for the error message.
pub fn output<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let (line, out) = captured(program, args, false)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "`{line}` failed ({}){}{}",
            out.status,
            if tail.is_empty() { "" } else { ":\n  " },
            tail.join("\n  ")
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Runs a tool whose failure is an answer, not an error (`sbverify --list` on an unsigned
/// image): whether it succeeded, and its stdout and stderr together.
pub fn probe<I, S>(program: &str, args: I) -> Result<(bool, String)>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let (_, out) = captured(program, args, true)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Runs a tool with stdout and stderr captured apart, whatever its exit status: for callers
/// that read both (a version line may come on either).
pub fn capture<I, S>(program: &str, args: I) -> Result<std::process::Output>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    captured(program, args, false).map(|(_, out)| out)
}

/// Reads `reader` on a thread of its own until its end, sending every chunk through `tx` as
/// `chunk(bytes)`, then `eof` if given; stops early when the receiver is gone. The one reader
/// thread the phase runner, the serial console and the KVM check share, so that a loop can
/// wait for output and for other events at once.
pub fn pump<R, T, F>(
    mut reader: R,
    tx: mpsc::Sender<T>,
    chunk: F,
    eof: Option<T>,
) -> std::thread::JoinHandle<()>
where
    R: Read + Send + 'static,
    T: Send + 'static,
    F: Fn(Vec<u8>) -> T + Send + 'static,
{
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(chunk(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
        if let Some(eof) = eof {
            let _ = tx.send(eof);
        }
    })
}

/// Runs a tool with its output captured (stderr into stdout when `merged`), logging the
/// command line first; returns that line and the output.
fn captured<I, S>(program: &str, args: I, merged: bool) -> Result<(String, std::process::Output)>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let line = display(program, &args);
    ui::trace(&line);
    let cmd = duct::cmd(program, &args).stdin_null().unchecked();
    let cmd = if merged {
        cmd.stderr_to_stdout().stdout_capture()
    } else {
        cmd.stdout_capture().stderr_capture()
    };
    let out = cmd
        .run()
        .map_err(|e| anyhow::anyhow!(hint(program, &e)))
        .with_context(|| format!("running {line}"))?;
    Ok((line, out))
}

/// Starts a long-running tool (QEMU) whose streams the caller wires up itself.
pub fn spawn(cmd: &mut std::process::Command) -> Result<std::process::Child> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
    let line = display(&program, &args);
    ui::trace(&line);
    cmd.spawn()
        .map_err(|e| anyhow::anyhow!(hint(&program, &e)))
        .with_context(|| format!("running {line}"))
}

/// Kills a process group when the runner dies, however it dies (SIGKILL included, where no
/// handler of ours runs): a small `sh` in its own process group waits for the end of a pipe
/// whose only writer is the runner (close-on-exec, so phases never hold it), and kills the
/// group when the kernel closes it.
struct GroupGuard {
    guard: std::process::Child,
    /// Dropping it (or the runner's death) is the signal.
    _tie: std::io::PipeWriter,
}

impl GroupGuard {
    fn start(pgid: i32) -> Result<GroupGuard> {
        let (tie_read, tie) = std::io::pipe().context("creating the phase guard pipe")?;
        let mut cmd = std::process::Command::new("sh");
        // `kill -9 -PGID`: dash's kill takes no `--` and reads `-s KILL -N` as an option.
        cmd.args([
            "-c",
            "trap '' INT TERM HUP PIPE; read -r _ || kill -9 \"-$1\" 2>/dev/null",
            "loisto-phase-guard",
            &pgid.to_string(),
        ])
        .stdin(tie_read)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Not in the terminal's foreground group: Ctrl-C goes to the runner, which handles it.
        .process_group(0);
        let guard = spawn(&mut cmd).context("starting the phase guard")?;
        Ok(GroupGuard { guard, _tie: tie })
    }
}

impl Drop for GroupGuard {
    /// The phase is over and its group killed already: the guard goes first, so it can never
    /// signal a process group that reused the number.
    fn drop(&mut self) {
        let _ = self.guard.kill();
        let _ = self.guard.wait();
    }
}

/// How a phase process ended.
#[derive(Debug)]
pub struct PhaseExit {
    /// Exit code, or 128+signal when killed by a signal.
    pub code: i32,
    pub duration: Duration,
    pub interrupted: bool,
}

/// Receives a running phase's output and a regular tick for progress displays.
pub trait PhaseSink {
    fn output(&mut self, chunk: &[u8]);
    fn tick(&mut self, elapsed: Duration);
}

/// Runs `bash SCRIPT` in its own process group with `env` as its whole environment,
/// stdin from /dev/null, stdout and stderr merged in order. Every chunk of output is
/// written to `log` and handed to `sink`, which also ticks about ten times a second.
pub fn run_phase(
    script: &Path,
    cwd: &Path,
    env: &[(String, String)],
    log: &mut std::fs::File,
    sink: &mut dyn PhaseSink,
) -> Result<PhaseExit> {
    let (reader, writer) = std::io::pipe().context("creating the phase output pipe")?;
    let start = Instant::now();
    let handle = duct::cmd("bash", [script])
        .dir(cwd)
        .full_env(env.iter().cloned())
        .stdin_null()
        // duct applies the innermost redirect last: join stderr first, then send both on.
        .stderr_to_stdout()
        .stdout_file(writer)
        .before_spawn(|c| {
            c.process_group(0);
            Ok(())
        })
        .unchecked()
        .start()
        .map_err(|e| anyhow::anyhow!(hint("bash", &e)))
        .with_context(|| format!("starting phase {}", script.display()))?;
    let pgid = handle.pids().first().copied().unwrap_or(0) as i32;
    signals::set_child_group(pgid);
    let guard = match GroupGuard::start(pgid) {
        Ok(g) => g,
        Err(e) => {
            signals::kill_group(pgid, libc::SIGKILL);
            let _ = handle.wait();
            return Err(e);
        }
    };

    // Output and the exit arrive on one channel, so the loop wakes for either at once.
    enum Msg {
        Chunk(Vec<u8>),
        Eof,
        Exit(std::io::Result<std::process::ExitStatus>),
    }
    let (tx, rx) = mpsc::channel::<Msg>();
    let out_tx = tx.clone();
    let pump = pump(reader, out_tx, Msg::Chunk, Some(Msg::Eof));
    let handle = std::sync::Arc::new(handle);
    let waited = handle.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Msg::Exit(waited.wait().map(|o| o.status)));
    });

    let write_chunk = |chunk: &[u8], log: &mut std::fs::File, sink: &mut dyn PhaseSink| -> Result<()> {
        log.write_all(chunk).context("writing the phase log")?;
        sink.output(chunk);
        Ok(())
    };
    let mut kill_deadline: Option<Instant> = None;
    let mut eof = false;
    // A log that cannot be written (disk full) stops the phase: its output would be lost,
    // and a phase nobody watches must not go on writing into the build.
    let mut log_failed: Option<anyhow::Error> = None;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Chunk(chunk)) => {
                if log_failed.is_none()
                    && let Err(e) = write_chunk(&chunk, log, sink)
                {
                    signals::kill_group(pgid, libc::SIGKILL);
                    log_failed = Some(e);
                }
            }
            Ok(Msg::Eof) => eof = true,
            Ok(Msg::Exit(status)) => break status.context("waiting for the phase")?,
            Err(_) => {}
        }
        sink.tick(start.elapsed());
        if signals::interrupted() {
            match kill_deadline {
                None => {
                    signals::kill_group(pgid, libc::SIGTERM);
                    kill_deadline = Some(Instant::now() + Duration::from_secs(5));
                }
                Some(d) if Instant::now() > d => signals::kill_group(pgid, libc::SIGKILL),
                Some(_) => {}
            }
        }
    };
    let duration = start.elapsed();
    // A phase must not leave processes behind: whatever is left of its group goes now,
    // or it would hold the output pipe open and outlive the build.
    signals::kill_group(pgid, libc::SIGKILL);
    signals::set_child_group(0);
    drop(guard);
    drop(handle);
    if let Some(e) = log_failed {
        return Err(e);
    }
    let drain_until = Instant::now() + Duration::from_secs(2);
    while !eof && Instant::now() < drain_until {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Chunk(chunk)) => write_chunk(&chunk, log, sink)?,
            Ok(Msg::Eof) => eof = true,
            Ok(Msg::Exit(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(rx);
    if eof {
        let _ = pump.join();
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(PhaseExit {
        code,
        duration,
        interrupted: signals::interrupted(),
    })
}
