//! Ctrl-C and SIGTERM: remember that they came and pass them to the running phase's whole
//! process group, so nothing a phase started keeps running after the build is gone.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHILD_PGID: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let pgid = CHILD_PGID.load(Ordering::SeqCst);
    if pgid > 0 {
        // kill(2) is async-signal-safe.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
    }
}

pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
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

/// Sends `sig` to a whole process group; a group that is already gone is fine.
pub fn kill_group(pgid: i32, sig: libc::c_int) {
    if pgid > 0 {
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}
