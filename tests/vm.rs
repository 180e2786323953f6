//! `vm` itself, fast: what it does with signals and its temporary files. QEMU is replaced by a
//! script that prints console lines forever and records its pid (the subject is `vm`, not QEMU);
//! the firmware files and qemu-img are the real ones.

mod common;

use common::{BIN, pid_alive};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `vm --expect` on a small image in `dir` with the fake QEMU; its temporary files go
/// to `dir/tmp`.
fn start_vm(dir: &Path) -> std::process::Child {
    let qemu = dir.join("fake-qemu");
    std::fs::write(
        &qemu,
        format!(
            "#!/bin/sh\necho $$ > {}/qemu.pid\nwhile :; do echo booting; sleep 0.1; done\n",
            dir.display()
        ),
    )
    .unwrap();
    common::host("chmod", &[&"+x", &qemu]);
    let image = dir.join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    Command::new(BIN)
        .args([
            "vm",
            "--accel",
            "tcg",
            "--expect",
            "never-printed",
            "--timeout",
            "60",
        ])
        .arg("--qemu")
        .arg(&qemu)
        .arg(&image)
        .env("TMPDIR", &tmp)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_file(path: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn sigterm_and_sigint_stop_qemu_remove_the_temporary_files_and_exit_130() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut vm = start_vm(dir.path());
        let qemu: i32 = wait_for_file(&dir.path().join("qemu.pid"))
            .trim()
            .parse()
            .unwrap();
        // Only the vm process gets the signal, as from `kill PID` or a CI job's timeout.
        unsafe { libc::kill(vm.id() as i32, sig) };
        let status = vm.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(vm.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(130), "signal {sig}: {status:?}\n{err}");
        let until = Instant::now() + Duration::from_secs(5);
        while pid_alive(qemu) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!pid_alive(qemu), "signal {sig}: qemu ({qemu}) still runs");
        let left = common::names_in(&dir.path().join("tmp"));
        assert!(left.is_empty(), "signal {sig}: left behind {left:?}");
    }
}
