//! A temporary image project and the real binary, so each end-to-end test stays short.
#![allow(dead_code)]

use std::ffi::OsStr;
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
    /// stderr with what changes from run to run written as placeholders: the project
    /// directory as `[PROJECT]`, durations (`0.4s`, `12ms`) as `[T]`.
    pub fn stderr_normalized(&self, project: &Path) -> String {
        let text = self.stderr().replace(&project.display().to_string(), "[PROJECT]");
        regex::Regex::new(r"\b\d+(\.\d+)?(ms|s)\b")
            .unwrap()
            .replace_all(&text, "[T]")
            .into_owned()
    }

    /// Exits `code` with exactly `want` on stderr (see [`Run::stderr_normalized`]): a changed
    /// message shows as a diff of the whole text, not as a missing substring.
    #[track_caller]
    pub fn fails_exactly(&self, code: i32, project: &Path, want: &str) -> &Self {
        assert_eq!(self.code(), code, "stderr:\n{}", self.stderr());
        let got = self.stderr_normalized(project);
        if got != want {
            panic!("stderr differs.\n--- want\n{want}\n--- got\n{got}\n---");
        }
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

/// Runs a host tool (the independent reader of what the binary made: unsquashfs, sfdisk,
/// rauc, ...) to completion; when it fails, the test fails with its command line and all it
/// printed. The output, for the checks that follow. Arguments of any path or string type:
/// `host("cp", &[&"-a", &from, &to])`.
#[track_caller]
pub fn host(program: &str, args: &[&dyn AsRef<OsStr>]) -> Run {
    host_in(Path::new("."), program, args)
}

/// [`host`] with `dir` as the working directory.
#[track_caller]
pub fn host_in(dir: &Path, program: &str, args: &[&dyn AsRef<OsStr>]) -> Run {
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let out = Command::new(program)
        .args(&args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (is it installed? scripts/install-host-deps.sh)"));
    let run = Run(out);
    assert!(
        run.0.status.success(),
        "`{program} {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        run.0.status,
        run.stdout(),
        run.stderr()
    );
    run
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
        host("cp", &[&"-a", &repo.join(item), &dest]);
    }
    let _ = std::fs::remove_file(dest.join("rauc/keyring.pem"));
}

/// A self-signed P-256 key and certificate in `dir` (key.pem, cert.pem): someone the project's
/// keyring does not trust.
pub fn foreign_signing_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    host(
        "openssl",
        &[
            &"req",
            &"-x509",
            &"-newkey",
            &"ec",
            &"-pkeyopt",
            &"ec_paramgen_curve:prime256v1",
            &"-nodes",
            &"-days",
            &"30",
            &"-subj",
            &"/CN=someone else",
            &"-keyout",
            &key,
            &"-out",
            &cert,
        ],
    );
    (key, cert)
}
