//! `loisto-image vm`: boot an image in QEMU + OVMF, interactively or as a CI check.

use crate::cli::{Global, VmArgs};
use crate::error::UsageError;
use crate::project::Project;
use crate::vm::serial::{self, Outcome, Watch};
use crate::vm::{accel, firmware};
use crate::{manifest, proc, ui};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn run(g: &Global, args: &VmArgs) -> Result<()> {
    let project = Project::open(g).ok();
    let image = match &args.image {
        Some(i) => std::path::absolute(i).with_context(|| format!("resolving {}", i.display()))?,
        None => last_built_image(project.as_ref())?,
    };
    if !image.is_file() {
        return Err(UsageError::new(format!("image {} does not exist", image.display())).into());
    }
    let expect = args
        .expect
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| UsageError::new(format!("--expect: {e}")))?;
    let log_path = match &project {
        Some(p) if image.starts_with(&p.output) => p.output.join("logs").join("vm-serial.log"),
        _ => PathBuf::from(format!("{}.serial.log", image.display())),
    };

    let fw = firmware::find(args.firmware.as_deref())?;
    let (accel, note) = accel::choose(&args.accel, &args.qemu, &fw)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let headless = args.headless || expect.is_some() || !has_display();
    if !args.headless && headless && expect.is_none() {
        eprintln!("note: no DISPLAY or WAYLAND_DISPLAY: running headless (serial console on this terminal)");
    }

    let work = tempfile::Builder::new()
        .prefix("loisto-vm.")
        .tempdir()
        .context("creating a VM work directory")?;
    let vars = if args.persist {
        PathBuf::from(format!("{}.vars.fd", image.display()))
    } else {
        work.path().join("vars.fd")
    };
    if !vars.exists() {
        std::fs::copy(&fw.vars, &vars)
            .with_context(|| format!("copying {} to {}", fw.vars.display(), vars.display()))?;
    }
    let (disk, format) = prepare_disk(&image, work.path(), args)?;

    let mut cmd = Command::new(&args.qemu);
    cmd.args(["-accel", accel.name(), "-machine", "q35"])
        .args(["-cpu", if accel == accel::Accel::Kvm { "host" } else { "max" }])
        .args(["-smp", &args.cpus.to_string(), "-m", &args.memory])
        .args(fw.qemu_args(&vars))
        .arg("-drive")
        .arg(format!("if=virtio,format={format},file={}", disk.display()))
        .args(["-nic", "user,model=virtio-net-pci"]);
    if headless {
        cmd.args(["-display", "none", "-vga", "none"]);
    } else {
        cmd.args(["-device", "virtio-vga"]);
    }
    if expect.is_some() {
        // A kernel panic (verity corruption) reboots; make that end the run instead.
        cmd.args(["-no-reboot", "-serial", "stdio", "-monitor", "none"])
            .stdin(Stdio::null());
    } else {
        cmd.args(["-serial", "mon:stdio"]).stdin(Stdio::inherit());
        eprintln!("serial console below; Ctrl-A X quits QEMU");
    }
    cmd.args(&args.qemu_args).stdout(Stdio::piped());

    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut log =
        std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    if !g.quiet {
        eprintln!(
            "booting {} ({}, {} MiB disk, serial log {})",
            image.display(),
            accel.name(),
            disk_mib(&disk),
            log_path.display()
        );
    }
    let mut child = proc::spawn(&mut cmd)?;
    let watch = Watch {
        expect: expect.as_ref(),
        timeout: expect.as_ref().map(|_| Duration::from_secs(args.timeout)),
        echo: expect.is_none() || g.verbose,
    };
    let started = std::time::Instant::now();
    let report = serial::follow(&mut child, &mut log, &watch)?;
    let took = ui::secs(started.elapsed());
    let tail = || {
        report
            .last_lines
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match (&report.outcome, &expect) {
        (Outcome::Matched(line), _) => {
            if !g.quiet {
                eprintln!("matched after {took}: {line}");
            }
            Ok(())
        }
        (Outcome::TimedOut, Some(re)) => {
            bail!(
                "no serial console line matched /{re}/ within {} s; last lines:\n{}\nfull log: {}",
                args.timeout,
                tail(),
                log_path.display()
            )
        }
        (Outcome::Exited(code), Some(re)) => bail!(
            "the VM stopped after {took} (qemu exit {}) before the console matched /{re}/{}; last lines:\n{}\nfull log: {}",
            code.map_or("by signal".into(), |c| c.to_string()),
            if report.last_lines.iter().any(|l| l.contains("Kernel panic")) {
                " (kernel panic)"
            } else {
                ""
            },
            tail(),
            log_path.display()
        ),
        (Outcome::Exited(Some(0)), None) => Ok(()),
        (Outcome::Exited(code), None) => {
            bail!("qemu exited with {code:?}; serial log: {}", log_path.display())
        }
        (Outcome::TimedOut, None) => unreachable!("no timeout without --expect"),
    }
}

fn has_display() -> bool {
    std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
}

fn last_built_image(project: Option<&Project>) -> Result<PathBuf> {
    let p = project.ok_or_else(|| {
        UsageError::new("no image given and no image project here (pass IMAGE, or -C DIR for a project)")
    })?;
    let m = manifest::read(&p.output).map_err(|_| {
        UsageError::new(format!(
            "no build found in {}: run `loisto-image build` first, or pass an IMAGE",
            p.output.display()
        ))
    })?;
    let name = format!("{}_{}.img", m.image_id, m.image_version);
    if !m.artifacts.iter().any(|a| a.path == name) {
        return Err(
            UsageError::new(format!("the last build in {} made no {name}", p.output.display())).into(),
        );
    }
    Ok(p.output.join(name))
}

/// The disk QEMU gets: a throwaway qcow2 overlay on the image unless --persist.
fn prepare_disk(image: &Path, work: &Path, args: &VmArgs) -> Result<(PathBuf, &'static str)> {
    let image_size = std::fs::metadata(image)?.len();
    let wanted = args.disk_size.as_deref().map(parse_size).transpose()?;
    if let Some(w) = wanted
        && w < image_size
    {
        return Err(UsageError::new(format!(
            "--disk-size {} is smaller than the image ({} MiB)",
            args.disk_size.as_deref().unwrap_or(""),
            image_size >> 20
        ))
        .into());
    }
    if args.persist {
        if let Some(w) = wanted {
            let f = std::fs::OpenOptions::new().write(true).open(image)?;
            f.set_len(w)
                .with_context(|| format!("growing {}", image.display()))?;
        }
        return Ok((image.to_path_buf(), "raw"));
    }
    let overlay = work.join("disk.qcow2");
    let mut qargs = vec![
        "create".to_string(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        "raw".into(),
        "-b".into(),
        image.to_string_lossy().into_owned(),
        overlay.to_string_lossy().into_owned(),
    ];
    qargs.push(wanted.unwrap_or(image_size).to_string());
    proc::output("qemu-img", qargs)?;
    Ok((overlay, "qcow2"))
}

fn disk_mib(disk: &Path) -> u64 {
    let out =
        proc::output("qemu-img", ["info", "--output=json", &disk.to_string_lossy()]).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["virtual-size"].as_u64())
        .unwrap_or(0)
        >> 20
}

/// `512M`, `8G`, `1073741824`: binary units, as QEMU and systemd read them.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(
                        UsageError::new(format!("size {s:?}: unknown unit (use K, M, G or T)")).into(),
                    );
                }
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| UsageError::new(format!("size {s:?} is not a number with an optional K/M/G/T")))?;
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("3X").is_err());
        assert!(parse_size("G").is_err());
    }
}
