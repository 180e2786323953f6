//! Ctrl-C and SIGTERM: remember that they came and pass them to the running phase's whole
//! process group (or to QEMU), so nothing we started keeps running after we are gone.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHILD_PGID: AtomicI32 = AtomicI32::new(0);
static CHILD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let pgid = CHILD_PGID.load(Ordering::SeqCst);
    if pgid > 0 {
        // kill(2) is async-signal-safe.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
    }
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Also SIGPIPE: a reader that went away (`| head`, `| grep -m1`) stops us like Ctrl-C does.
pub fn install() {
    catch(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE]);
}

/// Remembers these signals (and forwards them to the recorded child) instead of dying of them.
pub fn catch(signals: &[libc::c_int]) {
    for &sig in signals {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Records the process group to forward signals to (0: none).
pub fn set_child_group(pgid: i32) {
    CHILD_PGID.store(pgid, Ordering::SeqCst);
}

/// Records a single child process (QEMU) to pass SIGTERM to (0: none); unlike a phase it
/// shares our process group, so that it keeps the terminal when it runs interactively.
pub fn set_child(pid: i32) {
    CHILD_PID.store(pid, Ordering::SeqCst);
}

/// Sends `sig` to a whole process group; a group that is already gone is fine.
pub fn kill_group(pgid: i32, sig: libc::c_int) {
    if pgid > 0 {
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Kills whatever we started (the running phase's group, QEMU) at once: for exits that skip
/// the normal cleanup.
pub fn kill_children() {
    kill_group(CHILD_PGID.load(Ordering::SeqCst), libc::SIGKILL);
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}
