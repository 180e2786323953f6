//! `loisto-image chroot`: a shell or command inside the build's rootfs, in private mount and
//! PID namespaces (and a network namespace of its own with `--no-network`), so every mount
//! and every process it starts disappears with it, however it ends.

use crate::cli::{ChrootArgs, Global};
use crate::error::UsageError;
use crate::proc;
use crate::project::Project;
use crate::signals;
use anyhow::{Context, Result};
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(g: &Global, args: &ChrootArgs) -> Result<i32> {
    let project = Project::open(g).ok();
    let rootfs = match (&args.rootfs, &project) {
        (Some(r), _) => std::path::absolute(r).with_context(|| format!("resolving {}", r.display()))?,
        (None, Some(p)) => p.rootfs.clone(),
        (None, None) => {
            return Err(UsageError::new("no image project here: pass --rootfs DIR or -C PROJECT").into());
        }
    };
    if !rootfs.join("usr").is_dir() {
        return Err(UsageError::new(format!(
            "no rootfs at {}: build one with `loisto-image build` (or `loisto-image build --to 40` for the tree alone), \
             or pass --rootfs DIR",
            rootfs.display()
        ))
        .into());
    }
    if rootfs == Path::new("/") {
        return Err(UsageError::new("--rootfs / is the host itself").into());
    }
    let image_id = project
        .as_ref()
        .map(|p| p.config.image_id.clone())
        .unwrap_or_else(|| "rootfs".into());
    let plan = MountPlan::new(&rootfs, !args.no_network)?;

    let (program, argv) = match args.command.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (
            "/bin/bash".to_string(),
            vec!["--norc".to_string(), "-i".to_string()],
        ),
    };
    let mut cmd = Command::new(&program);
    cmd.args(&argv).env_clear().envs([
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("TERM", &std::env::var("TERM").unwrap_or_else(|_| "dumb".into())),
        ("LANG", "C.UTF-8"),
        ("PS1", &format!("({image_id} chroot) \\w\\$ ")),
    ]);
    // The command becomes PID 2 of a new PID namespace whose init (PID 1) only reaps and
    // passes on its exit status: when init goes, the kernel kills everything left inside,
    // background jobs and daemons included, and init dies with us (PDEATHSIG), SIGKILL too.
    // SAFETY: unshare(2) only changes which namespace our next child is born in.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("creating a PID namespace for the chroot (needs root)");
    }
    // The child owns the terminal's attention; Ctrl-C belongs to it, not to us. SIGTERM and
    // SIGHUP (a CI job's timeout, a closed terminal) end the whole namespace. Both are set
    // before the spawn: a SIGTERM while the namespace is being set up must not kill us alone
    // and leave init to its PDEATHSIG.
    // SAFETY: plain signal dispositions of this process.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    signals::catch(&[libc::SIGTERM, libc::SIGHUP]);
    // SAFETY: runs in the child between fork and exec: only the prepared C strings and syscalls.
    unsafe {
        cmd.pre_exec(move || {
            // Init never execs, and an ignored SIGINT would survive the exec of the command.
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            plan.enter()?;
            become_init_of_the_namespace()
        });
    }
    let mut child = proc::spawn(&mut cmd).with_context(|| format!("entering {}", rootfs.display()))?;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the chroot command")? {
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        if signals::interrupted() {
            // An init of a child namespace takes no other signal from us.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(130);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Forks once more: the child returns and goes on to exec the command; this process stays
/// behind as PID 1 of the namespace, reaps orphans and exits with the command's status.
/// Only async-signal-safe calls: we are between fork and exec.
fn become_init_of_the_namespace() -> std::io::Result<()> {
    // SAFETY: raw fork(2), so that no atfork handler of the multi-threaded parent runs.
    let command = unsafe { libc::syscall(libc::SYS_fork) } as libc::pid_t;
    if command < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if command == 0 {
        return Ok(());
    }
    // SAFETY: plain syscalls on our own descriptors and children.
    unsafe {
        // std's exec-error pipe is among these: the parent must see it close when the command
        // execs, not when init exits.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == command {
                if libc::WIFEXITED(status) {
                    libc::_exit(libc::WEXITSTATUS(status));
                }
                libc::_exit(128 + libc::WTERMSIG(status));
            }
            if pid < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

/// Paths and flags prepared before fork; `enter` only makes syscalls.
struct MountPlan {
    root: CString,
    proc_: CString,
    sys: CString,
    dev: CString,
    run: CString,
    host_resolv: CString,
    /// Where the host's resolv.conf is bound, if networking is wanted and possible.
    resolv_target: Option<CString>,
    /// The target is a file to create in the fresh /run first (resolv.conf links into /run
    /// on systemd systems), in these directories, made in this order.
    resolv_in_run: bool,
    resolv_dirs_in_run: Vec<CString>,
    /// A network namespace of its own, with only the loopback interface (up).
    own_network: bool,
}

fn c(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte")
}

impl MountPlan {
    fn new(root: &Path, network: bool) -> Result<MountPlan> {
        for d in ["proc", "sys", "dev", "run"] {
            if !root.join(d).is_dir() {
                return Err(UsageError::new(format!(
                    "{} has no /{d}; is it a root file system?",
                    root.display()
                ))
                .into());
            }
        }
        let (mut resolv_target, mut resolv_in_run, mut resolv_dirs_in_run) = (None, false, Vec::new());
        if network && Path::new("/etc/resolv.conf").exists() {
            let inside = root.join("etc/resolv.conf");
            match std::fs::read_link(&inside) {
                // A link into /run (systemd-resolved) points into the tmpfs we mount there.
                Ok(target) => {
                    let abs = if target.is_absolute() {
                        target
                    } else {
                        PathBuf::from("/etc").join(target)
                    };
                    let abs = crate::project::normalize(&abs);
                    if let Ok(rel) = abs.strip_prefix("/run") {
                        let run = root.join("run");
                        let t = run.join(rel);
                        let mut dirs: Vec<&Path> = t.ancestors().skip(1).take_while(|d| *d != run).collect();
                        dirs.reverse();
                        resolv_dirs_in_run = dirs.into_iter().map(c).collect::<Result<_>>()?;
                        resolv_in_run = true;
                        resolv_target = Some(c(&t)?);
                    }
                }
                Err(_) if inside.is_file() => resolv_target = Some(c(&inside)?),
                Err(_) => {}
            }
        }
        Ok(MountPlan {
            root: c(root)?,
            proc_: c(&root.join("proc"))?,
            sys: c(&root.join("sys"))?,
            dev: c(&root.join("dev"))?,
            run: c(&root.join("run"))?,
            host_resolv: c(Path::new("/etc/resolv.conf"))?,
            resolv_target,
            resolv_in_run,
            resolv_dirs_in_run,
            own_network: !network,
        })
    }

    fn enter(&self) -> std::io::Result<()> {
        use libc::{MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT};
        let ok = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let mount = |source: Option<&CStr>,
                     target: &CStr,
                     fstype: Option<&CStr>,
                     flags,
                     data: Option<&CStr>| {
            ok(unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fstype), flags, ptr(data).cast()) })
        };
        unsafe {
            ok(libc::unshare(libc::CLONE_NEWNS))?;
            if self.own_network {
                ok(libc::unshare(libc::CLONE_NEWNET))?;
                loopback_up()?;
            }
        }
        // Nothing done here may propagate back to the host's mount table.
        mount(None, c"/", None, MS_REC | MS_PRIVATE, None)?;
        mount(
            Some(c"proc"),
            &self.proc_,
            Some(c"proc"),
            MS_NOSUID | MS_NODEV,
            None,
        )?;
        mount(Some(c"/sys"), &self.sys, None, MS_BIND | MS_REC, None)?;
        mount(Some(c"/dev"), &self.dev, None, MS_BIND | MS_REC, None)?;
        mount(
            Some(c"tmpfs"),
            &self.run,
            Some(c"tmpfs"),
            MS_NOSUID | MS_NODEV,
            Some(c"mode=0755"),
        )?;
        if let Some(t) = &self.resolv_target {
            // In the fresh /run: mkdir -p of the parents (made before fork: no allocating
            // here), then an empty file to bind onto.
            for dir in &self.resolv_dirs_in_run {
                unsafe { libc::mkdir(dir.as_ptr(), 0o755) };
            }
            if self.resolv_in_run {
                let fd = unsafe {
                    libc::open(
                        t.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                if fd >= 0 {
                    unsafe { libc::close(fd) };
                }
            }
            mount(Some(&self.host_resolv), t, None, MS_BIND, None)?;
            mount(None, t, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)?;
        }
        unsafe {
            ok(libc::chroot(self.root.as_ptr()))?;
            ok(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    }
}

/// `ip link set lo up` in the new network namespace: localhost works, nothing else does.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a socket of our own and a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(())
}
