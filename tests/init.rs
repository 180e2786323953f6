//! `loisto-image init`: a new project from the binary alone, never over existing files.

mod common;

use common::{BIN, Run};
use std::path::Path;
use std::process::Command;

fn init(dir: &Path, args: &[&str]) -> Run {
    Run(Command::new(BIN)
        .arg("init")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap())
}

/// Every file under `dir` with its bytes and mode, sorted: what "changes nothing" compares.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            (rel, std::fs::read(e.path()).unwrap(), mode)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn init_writes_a_whole_project_and_never_overwrites_without_force() {
    let t = tempfile::tempdir().unwrap();
    init(t.path(), &[]).ok();
    let first = snapshot(t.path());
    let names: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    for want in [
        "image.conf",
        "phases/00-bootstrap.sh",
        "phases/lib/common.sh",
        "overlay/usr/lib/loisto/health-report",
        "repart.d/build/10-root-a.conf",
        "rauc/system.conf",
        "sysext/build-sysext.sh",
        "test-vm.sh",
        "enter-chroot.sh",
        "scripts/install-host-deps.sh",
        "README.md",
        ".gitignore",
        ".github/workflows/image.yml",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("src/") || *n == "Cargo.toml" || n.starts_with("tests/"))
    );
    let mode = |n: &str| first.iter().find(|(p, _, _)| p == n).unwrap().2;
    assert_eq!(mode("phases/70-disk.sh"), 0o755);
    assert_eq!(mode("image.conf"), 0o644);
    // The project's files are this repository's own.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (n, bytes, _) in &first {
        if !matches!(n.as_str(), "README.md" | ".gitignore") {
            assert_eq!(
                bytes,
                &std::fs::read(repo.join(n)).unwrap(),
                "{n} differs from the repository's"
            );
        }
    }
    let gitignore =
        String::from_utf8_lossy(&first.iter().find(|(p, _, _)| p == ".gitignore").unwrap().1).into_owned();
    for dir in ["/output", "/build", "/cache", "/keys"] {
        assert!(gitignore.lines().any(|l| l == dir), "{gitignore}");
    }

    // A second init changes nothing, even a file the user edited since.
    std::fs::write(t.path().join("image.conf"), "IMAGE_ID=mine\nIMAGE_VERSION=1\n").unwrap();
    let edited = snapshot(t.path());
    let again = init(t.path(), &[]);
    again.fails_with(2, "already holds");
    again.stderr_has("nothing was written");
    assert_eq!(snapshot(t.path()), edited);
    init(t.path(), &["--force"]).ok();
    assert_eq!(snapshot(t.path()), first);
}

#[test]
fn init_distro_arch_writes_a_project_that_bootstraps_with_pacstrap() {
    let t = tempfile::tempdir().unwrap();
    init(t.path(), &["--distro", "arch", "proj"]).ok();
    let proj = t.path().join("proj");
    let conf = std::fs::read_to_string(proj.join("image.conf")).unwrap();
    assert!(
        conf.lines().any(|l| l == "DISTRO=${LOISTO_DISTRO:-arch}"),
        "{conf}"
    );
    // From a directory inside the project, found upwards as git finds .git.
    let plan = Run(Command::new(BIN)
        .args(["plan"])
        .current_dir(proj.join("phases/lib"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap());
    plan.ok();
    let out = plan.stdout();
    assert!(out.contains("  DISTRO=arch\n"), "{out}");
    assert!(out.contains("00-bootstrap  tools: pacstrap"), "{out}");
    let debian = tempfile::tempdir().unwrap();
    init(debian.path(), &["--distro", "debian"]).ok();
    let plan = Run(Command::new(BIN)
        .arg("plan")
        .current_dir(debian.path())
        .output()
        .unwrap());
    plan.stdout_has("00-bootstrap  tools: mmdebstrap");
}

#[test]
#[ignore = "builds and boots a real image (minutes)"]
fn a_project_made_by_init_builds_and_boots_with_the_installed_binary_alone() {
    // Nothing from this checkout but the binary, copied elsewhere as `cargo install` would.
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin/loisto-image");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &bin).unwrap();
    let proj = t.path().join("my-console");
    std::fs::create_dir(&proj).unwrap();
    let run = |args: &[&str]| {
        Run(Command::new(&bin)
            .args(args)
            .current_dir(&proj)
            .env("NO_COLOR", "1")
            .env("LOISTO_VM_ACCEL", "tcg")
            .env_remove("GITHUB_ACTIONS")
            .output()
            .unwrap())
    };
    run(&["init"]).ok();
    run(&["build"]).ok();
    let vm = run(&[
        "vm",
        "--headless",
        "--expect",
        r"^LOISTO-HEALTH id=loisto .* dm=verity$",
        "--timeout",
        "300",
    ]);
    vm.ok();
    assert!(vm.stderr().contains("matched after"), "{}", vm.stderr());
}
