//! Build-time facts the binary carries: the commit it was built from (for `--version`), and
//! the image project that `init` writes, which is this repository's own project: one copy in
//! the tree, embedded here, so the two cannot drift.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What an image project is made of, as this repository has it (files and whole folders).
const PROJECT: &[&str] = &[
    "image.conf",
    "pacman.conf",
    "test-vm.sh",
    "enter-chroot.sh",
    "phases",
    "overlay",
    "repart.d",
    "rauc/system.conf",
    "sysext",
    "scripts/install-host-deps.sh",
    ".github/workflows/image.yml",
];

/// Files a new project gets in place of this repository's own: (source, path in the project).
const PROJECT_ONLY: &[(&str, &str)] = &[
    ("src/init/README.md", "README.md"),
    ("src/init/gitignore", ".gitignore"),
];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    commit(&root);
    template(&root);
}

fn commit(root: &Path) {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let id = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(id) => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{id}-dirty") } else { id }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=LOISTO_COMMIT={id}");
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={git_dir}/{f}");
        }
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
}

fn template(root: &Path) {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in PROJECT {
        println!("cargo:rerun-if-changed={entry}");
        collect(root, Path::new(entry), &mut files);
    }
    for (src, dest) in PROJECT_ONLY {
        println!("cargo:rerun-if-changed={src}");
        files.push((dest.to_string(), root.join(src)));
    }
    files.sort();
    let mut code = String::from("pub static FILES: &[ProjectFile] = &[\n");
    for (rel, abs) in &files {
        let mode = std::fs::metadata(abs).unwrap().permissions().mode();
        let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        writeln!(
            code,
            "    ProjectFile {{ path: {rel:?}, mode: {mode:#o}, bytes: include_bytes!({:?}) }},",
            abs.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("project_files.rs");
    std::fs::write(out, code).unwrap();
}

/// Every file under `rel`, leaving out what is not part of a project: editor backups and
/// anything the repository ignores (a development keyring, say).
fn collect(root: &Path, rel: &Path, files: &mut Vec<(String, PathBuf)>) {
    let abs = root.join(rel);
    let meta = std::fs::symlink_metadata(&abs).unwrap_or_else(|e| panic!("{}: {e}", abs.display()));
    if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&abs)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            collect(root, &rel.join(name), files);
        }
    } else if meta.is_file() && !is_backup(rel) && !ignored(root, rel) {
        files.push((rel.to_str().unwrap().to_string(), abs));
    }
}

fn is_backup(rel: &Path) -> bool {
    let name = rel.file_name().unwrap().to_string_lossy();
    name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || [".orig", ".bak", ".rej", ".swp", ".tmp"]
            .iter()
            .any(|s| name.ends_with(s))
}

fn ignored(root: &Path, rel: &Path) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["check-ignore", "-q", "--no-index", "--"])
        .arg(rel)
        .status()
        .is_ok_and(|s| s.success())
}
