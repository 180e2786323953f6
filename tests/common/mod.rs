//! A temporary image project and the real binary, so each end-to-end test stays short.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_loisto-image");

pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    /// A project with a minimal valid image.conf and no phases.
    pub fn new() -> TestProject {
        let p = TestProject {
            dir: tempfile::tempdir().unwrap(),
        };
        p.file(
            "image.conf",
            "IMAGE_ID=test\nIMAGE_VERSION=1.0\nSOURCE_DATE_EPOCH=1700000000\n",
        );
        std::fs::create_dir(p.path().join("phases")).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str, text: &str) -> &Self {
        let f = self.path().join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
        self
    }

    pub fn phase(&self, name: &str, body: &str) -> &Self {
        self.file(
            &format!("phases/{name}.sh"),
            &format!("set -euo pipefail\n{body}\n"),
        )
    }

    pub fn output(&self) -> PathBuf {
        self.path().join("output")
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("-C")
            .arg(self.path())
            .args(args)
            .env_remove("GITHUB_ACTIONS")
            .env("NO_COLOR", "1");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.cmd(args).output().unwrap())
    }
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code(),
            0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn fails_with(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        assert!(
            self.stderr().contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr()
        );
        self
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); count it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split(' ').nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

/// Copies the repository's image project (config, phases, overlay, ...) into `dest`.
/// The binary on `project` with `args`, booting under TCG (as CI must), no colours.
pub fn run_tcg(project: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("-C")
        .arg(project)
        .args(args)
        .env("NO_COLOR", "1")
        .env("LOISTO_VM_ACCEL", "tcg")
        .env_remove("GITHUB_ACTIONS")
        .output()
        .unwrap();
    Run(out)
}

pub fn copy_repo_project(dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for item in [
        "image.conf",
        "pacman.conf",
        "phases",
        "overlay",
        "repart.d",
        "rauc",
        "sysext",
    ] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(repo.join(item))
            .arg(dest)
            .status()
            .unwrap();
        assert!(st.success(), "copying {item}");
    }
    let _ = std::fs::remove_file(dest.join("rauc/keyring.pem"));
}

/// A self-signed P-256 key and certificate in `dir` (key.pem, cert.pem): someone the project's
/// keyring does not trust.
pub fn foreign_signing_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=someone else", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (key, cert)
}
