//! `loisto-image vm`: boot an image in QEMU + OVMF, interactively or as a CI check.

use crate::cli::{Global, VmArgs};
use crate::error::{Interrupted, UsageError};
use crate::project::Project;
use crate::size::parse_size;
use crate::vm::serial::{self, Outcome, Watch};
use crate::vm::{accel, direct, firmware, refresh, secure_boot, state, usb};
use crate::{manifest, proc, ui};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn run(g: &Global, args: &VmArgs) -> Result<()> {
    // Ctrl-C or SIGTERM (a CI job's timeout) stops QEMU and removes the work directory: the
    // run ends through the normal return path, exit 130.
    crate::signals::install();
    let project = Project::open(g).ok();
    let image_arg = || -> Result<PathBuf> {
        let image = match &args.image {
            Some(i) => std::path::absolute(i).with_context(|| format!("resolving {}", i.display()))?,
            None => last_built_image(project.as_ref())?,
        };
        if !image.is_file() {
            return Err(UsageError::new(format!("image {} does not exist", image.display())).into());
        }
        Ok(image)
    };
    let expect = args
        .expect
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| UsageError::new(format!("--expect: {e}")))?;
    let fw = firmware::find(args.firmware.as_deref(), args.secure_boot)?;
    let work = tempfile::Builder::new()
        .prefix("loisto-vm.")
        .tempdir()
        .context("creating a VM work directory")?;
    // With --secure-boot a new machine's variables start from a copy with the keys enrolled.
    let mut vars_template = fw.vars.clone();
    let mut secure_line = None;
    if args.secure_boot {
        let dir = match (&args.keys, &project) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) => p.dir.join("keys"),
            (None, None) => {
                return Err(UsageError::new(
                    "--secure-boot needs --keys DIR (pk.crt, kek.crt, secureboot.crt) outside an image project",
                )
                .into());
            }
        };
        let keys = secure_boot::keys(&dir)?;
        vars_template = work.path().join("vars-enrolled.fd");
        secure_boot::enroll(&fw.vars, &keys, &vars_template)?;
        secure_line = Some(format!(
            "Secure Boot: enforced by {}; PK, KEK and db from {} (db: {})",
            fw.code.display(),
            keys.dir.display(),
            secure_boot::subject(&keys.db)
        ));
    }

    // Sticks first: a bad --usb must not cost the copy of a disk into a new --state.
    let mut sticks = Vec::new();
    for (i, file) in args.usb.iter().enumerate() {
        sticks.push(usb::stick(file, work.path(), i)?);
    }
    let mut image_seen = None;
    let m = machine(args, project.as_ref(), &vars_template, work.path(), || {
        let i = image_arg()?;
        image_seen = Some(i.clone());
        Ok(i)
    })?;
    let direct = match (args.direct_kernel, &image_seen) {
        (true, Some(image)) => {
            let uki = direct::uki_beside(image);
            eprintln!(
                "note: --direct-kernel: QEMU starts {}'s kernel itself; no firmware, so no Secure Boot, \
                 UEFI variables or boot entries (not how a device boots)",
                uki.display()
            );
            Some(direct::Kernel::extract(&uki, work.path())?)
        }
        _ => None,
    };

    let (accel, note) = accel::choose(&args.accel, &args.qemu, &fw)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let headless = args.headless || expect.is_some() || !has_display();
    if !args.headless && headless && expect.is_none() {
        eprintln!("note: no DISPLAY or WAYLAND_DISPLAY: running headless (serial console on this terminal)");
    }

    let mut cmd = Command::new(&args.qemu);
    let machine_type = if direct.is_some() { "q35" } else { fw.machine() };
    // -nodefaults: no CD-ROM drive, which the firmware tries to boot first on a new disk and the
    // kernel probes on every boot; every device the machine has is named below.
    cmd.arg("-nodefaults")
        .args(["-accel", accel.name(), "-machine", machine_type])
        .args(["-cpu", if accel == accel::Accel::Kvm { "host" } else { "max" }])
        .args(["-smp", &args.cpus.to_string(), "-m", &args.memory])
        .args(match &direct {
            Some(k) => k.qemu_args(),
            None => fw.qemu_args(&m.vars),
        })
        .arg("-drive")
        .arg(format!("if=virtio,format={},file={}", m.format, m.disk.display()))
        // romfile= (none): without it the NIC carries iPXE in an option ROM, which the firmware
        // loads and starts on every boot, only to boot from the disk. The kernel drives the
        // NIC without it, and OVMF's own network stack still offers PXE after the disk.
        .args([
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ])
        .args(usb::qemu_args(&sticks));
    if headless {
        cmd.args(["-display", "none", "-vga", "none"]);
    } else {
        cmd.args(["-device", "virtio-vga"]);
    }
    if expect.is_some() {
        // A reset (reboot, or a panic with panic=N) ends QEMU instead of restarting inside it,
        // so each boot is seen: it ends the run, or with --reboots the machine is started again.
        cmd.args(["-no-reboot", "-serial", "stdio", "-monitor", "none"])
            .stdin(Stdio::null());
    } else {
        cmd.args(["-serial", "mon:stdio"]).stdin(Stdio::inherit());
        eprintln!("serial console below; Ctrl-A X quits QEMU");
    }
    cmd.args(&args.qemu_args).stdout(Stdio::piped());

    let log_path = &m.serial_log;
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut log =
        std::fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    if !g.quiet {
        eprintln!(
            "booting {} ({}, {} MiB disk{}, serial log {})",
            m.what,
            accel.name(),
            disk_mib(&m.disk),
            if sticks.is_empty() {
                String::new()
            } else {
                format!(", {} USB stick(s)", sticks.len())
            },
            log_path.display()
        );
    }
    if let Some(line) = &secure_line
        && !g.quiet
    {
        eprintln!("{line}");
    }
    let started = std::time::Instant::now();
    let (report, boot) = boot_until(&mut cmd, &mut log, expect.as_ref(), args, g)?;
    let took = ui::secs(report.settled.saturating_duration_since(started));
    let tail = || {
        report
            .last_lines
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let boots = if boot > 1 {
        format!(" and {} reboot(s)", boot - 1)
    } else {
        String::new()
    };
    match (&report.outcome, &expect) {
        (Outcome::Interrupted, _) => Err(Interrupted.into()),
        (Outcome::Refused(line), _) => bail!(
            "the firmware refused to start the boot loader after {took}{boots} and went on to network boot:\n  | {line}\n{}\
             full log: {}",
            if args.secure_boot {
                "Secure Boot: the UKI is not signed by a db key enrolled from --keys (sign it with \
                 `loisto-image sign --keys DIR`, or build with keys/secureboot.{key,crt}).\n"
            } else {
                ""
            },
            log_path.display()
        ),
        (Outcome::Matched(line), _) => {
            if !g.quiet {
                eprintln!("matched after {took}{boots}: {line}");
                if let Some(b) = report.boot_summary() {
                    eprintln!("boot: {b}");
                }
            }
            Ok(())
        }
        (Outcome::TimedOut, Some(re)) => {
            bail!(
                "no serial console line matched /{re}/ within {} s{boots}{}; last lines:\n{}\nfull log: {}",
                args.timeout,
                report
                    .refusal
                    .as_ref()
                    .map(|r| format!(" (the firmware refused a boot loader: {r})"))
                    .unwrap_or_default(),
                tail(),
                log_path.display()
            )
        }
        (Outcome::Exited(code), Some(re)) => bail!(
            "the VM stopped after {took}{boots} (qemu exit {}) before the console matched /{re}/{}; last lines:\n{}\nfull log: {}",
            code.map_or("by signal".into(), |c| c.to_string()),
            if let Some(p) = &report.panic {
                format!(" (kernel panic: {})", p.trim_start_matches("Kernel panic - "))
            } else if report.powered_off() {
                " (the guest powered off)".into()
            } else if args.reboots > 0 {
                " (it reset once more than --reboots allows)".into()
            } else {
                " (the guest reset; --reboots N follows N reboots)".into()
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

/// Where the machine lives: its disk, UEFI variables and serial log.
struct Machine {
    /// A kept machine's lock, held until QEMU is gone.
    _lock: Option<crate::lock::Lock>,
    disk: PathBuf,
    format: &'static str,
    vars: PathBuf,
    serial_log: PathBuf,
    /// What is booted, for the first line the user sees.
    what: String,
}

/// A kept machine (--state), the image itself (--persist), or throwaway copies in `work`.
fn machine(
    args: &VmArgs,
    project: Option<&Project>,
    vars_template: &Path,
    work: &Path,
    image_arg: impl FnOnce() -> Result<PathBuf>,
) -> Result<Machine> {
    let wanted = args.disk_size.as_deref().map(parse_size).transpose()?;
    if let Some(dir) = &args.state {
        // --refresh needs the image whether or not the machine exists; without it, only a new
        // machine is made from it.
        let (st, refresh_from) = if args.refresh {
            let image = image_arg()?;
            let st = state::open(dir, || Ok(image.clone()), wanted, vars_template, args.secure_boot)?;
            (st, Some(image))
        } else {
            let st = state::open(dir, image_arg, wanted, vars_template, args.secure_boot)?;
            (st, None)
        };
        if !st.fresh && args.image.is_some() && !args.refresh {
            eprintln!(
                "note: IMAGE is not used: {} has its disk already (remove the directory to start from IMAGE, \
                 or add --refresh to write its slot A into the machine)",
                dir.display()
            );
        }
        let mut what = format!(
            "{}machine in {}",
            if st.fresh { "new " } else { "" },
            dir.display()
        );
        if let (Some(image), false) = (&refresh_from, st.fresh) {
            what.push_str(&refresh_slot_a(image, &st, dir, work)?);
        }
        return Ok(Machine {
            _lock: Some(st.lock),
            disk: st.disk,
            format: "raw",
            vars: st.vars,
            serial_log: st.serial_log,
            what,
        });
    }
    let image = image_arg()?;
    // Kept beside the image with --persist; Secure Boot variables are a different store.
    let vars = match (args.persist, args.secure_boot) {
        (true, false) => PathBuf::from(format!("{}.vars.fd", image.display())),
        (true, true) => PathBuf::from(format!("{}.secure-boot-vars.fd", image.display())),
        (false, _) => work.join("vars.fd"),
    };
    if !vars.exists() {
        std::fs::copy(vars_template, &vars)
            .with_context(|| format!("copying {} to {}", vars_template.display(), vars.display()))?;
    }
    let serial_log = match project {
        Some(p) if image.starts_with(&p.output) => p.output.join("logs").join("vm-serial.log"),
        _ => PathBuf::from(format!("{}.serial.log", image.display())),
    };
    let (disk, format) = prepare_disk(&image, work, wanted, args.persist)?;
    Ok(Machine {
        _lock: None,
        disk,
        format,
        vars,
        serial_log,
        what: image.display().to_string(),
    })
}

/// `--refresh`: the build's slot A into the kept machine, and slot A first in its boot order.
/// Returns what to add to the line that names the machine.
fn refresh_slot_a(image: &Path, st: &state::State, dir: &Path, work: &Path) -> Result<String> {
    let started = std::time::Instant::now();
    let written = refresh::write_slot_a(image, &st.disk, dir)?;
    let order = refresh::boot_slot_a_next(&st.vars, work)?;
    let parts: Vec<String> = written
        .iter()
        .map(|w| format!("{} {}/{} MiB", w.name, mib(w.changed), mib(w.size)))
        .collect();
    eprintln!(
        "refresh: slot A of {} written into {} ({} changed){} in {}",
        image.display(),
        dir.display(),
        parts.join(", "),
        order.map(|o| format!(", {o}")).unwrap_or_default(),
        ui::secs(started.elapsed())
    );
    Ok(", slot A refreshed".into())
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Runs QEMU and follows the console until `expect` matches, the time is up, or QEMU exits.
/// With --reboots N, a guest reset powers the same machine on again, up to N times. Returns
/// the last boot's report and how many boots there were.
fn boot_until(
    cmd: &mut Command,
    log: &mut std::fs::File,
    expect: Option<&regex::Regex>,
    args: &VmArgs,
    g: &Global,
) -> Result<(serial::Report, u32)> {
    let started = std::time::Instant::now();
    let deadline = expect.map(|_| started + Duration::from_secs(args.timeout));
    let mut boot = 1;
    loop {
        let mut child = proc::spawn(cmd)?;
        let watch = Watch {
            expect,
            timeout: deadline.map(|d| d.saturating_duration_since(std::time::Instant::now())),
            echo: expect.is_none() || g.verbose,
        };
        let report = serial::follow(&mut child, log, &watch)?;
        let reset = matches!(report.outcome, Outcome::Exited(_)) && !report.powered_off();
        if !(reset && expect.is_some() && boot <= args.reboots) {
            return Ok((report, boot));
        }
        boot += 1;
        let line = format!(
            "loisto-image vm: the guest reset after {}; powering on again (boot {boot} of at most {})",
            ui::secs(started.elapsed()),
            args.reboots + 1
        );
        writeln!(log, "\n--- {line} ---").context("writing the serial log")?;
        if !g.quiet {
            eprintln!("{line}");
        }
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
fn prepare_disk(
    image: &Path,
    work: &Path,
    wanted: Option<u64>,
    persist: bool,
) -> Result<(PathBuf, &'static str)> {
    let image_size = std::fs::metadata(image)?.len();
    if let Some(w) = wanted
        && w < image_size
    {
        return Err(UsageError::new(format!(
            "--disk-size ({} MiB) is smaller than the image ({} MiB)",
            w >> 20,
            image_size >> 20
        ))
        .into());
    }
    if persist {
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
