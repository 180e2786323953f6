//! Choosing between KVM and TCG. A /dev/kvm that exists is not enough: nested or misconfigured
//! hosts expose one that fails once a guest runs, so `auto` boots the firmware under KVM
//! briefly and only uses KVM if the guest really ran.

use super::firmware::Firmware;
use crate::error::UsageError;
use anyhow::Result;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Resolves `auto|kvm|tcg`; returns the choice and, for auto, a note on why.
pub fn choose(requested: &str, qemu: &str, fw: &Firmware) -> Result<(Accel, Option<String>)> {
    match requested {
        "kvm" => Ok((Accel::Kvm, None)),
        "tcg" => Ok((Accel::Tcg, None)),
        "auto" => Ok(match probe_kvm(qemu, fw) {
            Ok(()) => (Accel::Kvm, None),
            Err(why) => (
                Accel::Tcg,
                Some(format!(
                    "using TCG (software emulation, slow): {why}; pass --accel tcg or set LOISTO_VM_ACCEL=tcg to skip this check"
                )),
            ),
        }),
        other => Err(UsageError::new(format!("--accel {other}: expected auto, kvm or tcg")).into()),
    }
}

/// Ok if a KVM guest gets as far as the firmware's boot manager.
fn probe_kvm(qemu: &str, fw: &Firmware) -> Result<(), String> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    if let Err(e) = dev {
        return Err(format!("/dev/kvm is not usable ({e})"));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let vars = dir.path().join("vars.fd");
    std::fs::copy(&fw.vars, &vars).map_err(|e| format!("copying OVMF vars: {e}"))?;
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "kvm",
        "-machine",
        fw.machine(),
        "-m",
        "128",
        "-nodefaults",
        "-display",
        "none",
    ])
    .args(["-no-reboot", "-serial", "stdio", "-monitor", "none"])
    .args(fw.qemu_args(&vars))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = crate::proc::spawn(&mut cmd).map_err(|e| format!("{e:#}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<(bool, Vec<u8>)>();
    if let Some(pipe) = child.stdout.take() {
        crate::proc::pump(pipe, tx.clone(), |b| (false, b), None);
    }
    if let Some(pipe) = child.stderr.take() {
        crate::proc::pump(pipe, tx.clone(), |b| (true, b), None);
    }
    drop(tx);
    let (mut out, mut err) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    let verdict = loop {
        if out.contains("BdsDxe") {
            break Ok(());
        }
        if let Some(line) = err
            .lines()
            .find(|l| l.contains("KVM internal error") || l.contains("failed to initialize kvm"))
        {
            break Err(format!(
                "/dev/kvm is present but a guest cannot run on it (qemu: {})",
                line.trim()
            ));
        }
        if Instant::now() > deadline {
            break Err("/dev/kvm is present but a KVM guest made no progress in 20 s".to_string());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((false, b)) => out.push_str(&String::from_utf8_lossy(&b)),
            Ok((true, b)) => err.push_str(&String::from_utf8_lossy(&b)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(format!(
                    "a KVM guest stopped at once ({})",
                    err.lines().last().unwrap_or("no message")
                ));
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    verdict
}
