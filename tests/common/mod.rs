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

    /// A project with `conf` as its image.conf and no phases.
    pub fn with_conf(conf: &str) -> TestProject {
        let p = TestProject::new();
        p.file("image.conf", conf);
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
    /// Exited 0; the failure shows all the run printed.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.exited(0)
    }

    #[track_caller]
    fn exited(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
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

    /// stdout contains `needle`; the failure shows all of it.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        Run::contains("stdout", &self.stdout(), needle);
        self
    }

    /// stderr contains `needle`; the failure shows all of it.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        Run::contains("stderr", &self.stderr(), needle);
        self
    }

    #[track_caller]
    fn contains(stream: &str, text: &str, needle: &str) {
        assert!(text.contains(needle), "{stream} lacks {needle:?}:\n{text}");
    }

    /// Exits `code` and says `needle` on stderr.
    #[track_caller]
    pub fn fails_with(&self, code: i32, needle: &str) -> &Self {
        self.exited(code).stderr_has(needle)
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
    let run = host_try_in(dir, program, args);
    assert!(
        run.0.status.success(),
        "`{program} {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        run.0.status,
        run.stdout(),
        run.stderr()
    );
    run
}

/// A host tool run to completion whatever its exit: for the checks that expect a refusal
/// (`rauc info` of a tampered bundle, `grep` that must find nothing).
#[track_caller]
pub fn host_try(program: &str, args: &[&dyn AsRef<OsStr>]) -> Run {
    host_try_in(Path::new("."), program, args)
}

#[track_caller]
fn host_try_in(dir: &Path, program: &str, args: &[&dyn AsRef<OsStr>]) -> Run {
    let out = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (is it installed? scripts/install-host-deps.sh)"));
    Run(out)
}

/// The names in `dir`, sorted: for "nothing was left behind" checks.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The permission bits of `path` (0o644, not the file type).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); count it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split(' ').nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

/// The binary on `project` with `args`: no colours, no GitHub log groups, guests under TCG
/// (as CI must run them; a test that wants `auto` sets LOISTO_VM_ACCEL itself).
pub fn cmd_tcg(project: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-C")
        .arg(project)
        .args(args)
        .env("NO_COLOR", "1")
        .env("LOISTO_VM_ACCEL", "tcg")
        .env_remove("GITHUB_ACTIONS");
    c
}

pub fn run_tcg(project: &Path, args: &[&str]) -> Run {
    Run(cmd_tcg(project, args).output().unwrap())
}

/// The repository's shipped image project, copied to `work/project`: the image tests build,
/// sign and boot it there, never in the repository's own output/, keys/ or rauc/keyring.pem.
pub struct RepoProject {
    /// Room beside the project: keys taken offline, machine states, exported trees.
    pub work: PathBuf,
    pub project: PathBuf,
    pub output: PathBuf,
}

impl RepoProject {
    /// A fresh copy in `target/tmp/<name>/project`, whatever a killed run left there.
    pub fn fresh(name: &str) -> RepoProject {
        RepoProject::at(&Path::new(env!("CARGO_TARGET_TMPDIR")).join(name))
    }

    /// An empty `work` (whatever a killed run left there) with a copy in `work/project`.
    pub fn at(work: &Path) -> RepoProject {
        if work.exists() {
            // A killed run may have left a rootfs behind; chattr-free trees delete fine.
            std::fs::remove_dir_all(work).unwrap_or_else(|e| panic!("cleaning {}: {e}", work.display()));
        }
        let project = work.join("project");
        copy_repo_project(&project);
        RepoProject {
            work: work.to_path_buf(),
            output: project.join("output"),
            project,
        }
    }

    /// `work/<name>`, empty of what an earlier test or run left there.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.work.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cleaning {}: {e}", dir.display()));
        }
        dir
    }

    /// [`cmd_tcg`] on this project.
    pub fn cmd(&self, args: &[&str]) -> Command {
        cmd_tcg(&self.project, args)
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.cmd(args).output().unwrap())
    }

    /// `keys`, then the private keys moved to `dest`: see [`take_keys_offline`].
    pub fn keys_offline(&self, dest: &Path) {
        self.run(&["keys"]).ok();
        take_keys_offline(&self.project, dest);
    }
}

/// Moves `project`/keys to `dest`, as an offline signing machine would hold them: the build
/// machine keeps only the public keyring (rauc/keyring.pem).
pub fn take_keys_offline(project: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    host(
        "cp",
        &[&"-a", &format!("{}/.", project.join("keys").display()), &dest],
    );
    std::fs::remove_dir_all(project.join("keys")).unwrap();
}

/// Writes the repository's image project into `dest`: the files `init` writes, which are this
/// repository's own (embedded at build time; a unit test in src/cmd/init.rs holds them equal).
pub fn copy_repo_project(dest: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for f in loisto_image::project_files::FILES {
        let path = dest.join(f.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, f.bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode)).unwrap();
    }
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
