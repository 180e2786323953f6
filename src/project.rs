//! An image project on disk: its directory, its parsed config and where builds put things.

use crate::cli::Global;
use crate::conf::Config;
use crate::error::UsageError;
use crate::lock::Lock;
use crate::owned;
use anyhow::{Context, Result};
use std::path::{Component, Path, PathBuf};

/// Names the runner sets for phases; a config may not define them itself.
pub const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "TERM",
    "PHASE",
    "LOISTO_CACHE",
    "LOISTO_ENV",
    "LOISTO_IMAGE",
    "PROJECT_DIR",
    "SCRIPT_DIR",
];

/// Config keys the runner itself reads (the phases' are found in their text).
const RUNNER_KEYS: &[&str] = &[
    "IMAGE_ID",
    "IMAGE_VERSION",
    "OUTPUT",
    "BUILD_DIR",
    "ROOTFS",
    "CACHE_DIR",
    "COMPATIBLE",
    "SOURCE_DATE_EPOCH",
    "CACHE_MAX_SIZE",
];

#[derive(Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub config: Config,
    /// Where the last good build's artifacts live (config `OUTPUT`, default `output`).
    pub output: PathBuf,
    /// Scratch space kept between builds (config `BUILD_DIR`, default `build`).
    pub build_dir: PathBuf,
    /// The image's root tree (config `ROOTFS`, default `build/rootfs`).
    pub rootfs: PathBuf,
    /// Downloads and snapshots worth keeping (config `CACHE_DIR`, default `cache`).
    pub cache_dir: PathBuf,
}

impl Project {
    pub fn open(g: &Global) -> Result<Project> {
        let dir = project_dir(g)?;
        if !dir.is_dir() {
            return Err(
                UsageError::new(format!("project directory {} does not exist", dir.display())).into(),
            );
        }
        let config_path = match &g.config {
            Some(c) => std::path::absolute(c).with_context(|| format!("resolving {}", c.display()))?,
            None => dir.join("image.conf"),
        };
        let config = Config::load(&config_path, &g.set)?;
        for key in RESERVED {
            if config.vars.get(key).is_some() {
                let at = config
                    .vars
                    .line_of(key)
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default();
                return Err(UsageError::new(format!(
                    "{}{at}: {key} is set by the runner for every phase; use another name",
                    config_path.display()
                ))
                .into());
            }
        }
        let place = |key: &str, default: &str| -> Result<PathBuf> {
            let raw = config.scalar(key).unwrap_or(default);
            let p = normalize(&dir.join(raw));
            check_safe_dir(key, &p, &dir, &config_path)?;
            Ok(p)
        };
        let output = place("OUTPUT", "output")?;
        let build_dir = place("BUILD_DIR", "build")?;
        let rootfs_default = build_dir.join("rootfs");
        let rootfs = place(
            "ROOTFS",
            rootfs_default.to_str().context("build dir is not UTF-8")?,
        )?;
        let cache_dir = place("CACHE_DIR", "cache")?;
        // Never replace what the runner did not make (see owned.rs).
        for (key, path, default) in [
            ("OUTPUT", &output, "output"),
            (
                "OUTPUT (its staging twin)",
                &sibling(&output, ".staging"),
                "output.staging",
            ),
            ("BUILD_DIR", &build_dir, "build"),
            ("CACHE_DIR", &cache_dir, "cache"),
        ] {
            owned::check(key, path, *path == dir.join(default))?;
        }
        owned::check("ROOTFS", &rootfs, rootfs.starts_with(&build_dir))?;
        Ok(Project {
            dir,
            config,
            output,
            build_dir,
            rootfs,
            cache_dir,
        })
    }

    pub fn phases_dir(&self) -> PathBuf {
        self.dir.join("phases")
    }

    /// The project's phases, each header as it applies to this config (`Tools if` lines).
    pub fn phases(&self) -> Result<Vec<crate::phase::Phase>> {
        let mut phases = crate::phase::discover(&self.phases_dir())?;
        for p in &mut phases {
            p.header = p.header.configured(|k| self.config.scalar(k).map(str::to_string));
        }
        Ok(phases)
    }

    /// Phases write here; it becomes `output` only when the build succeeds.
    pub fn staging(&self) -> PathBuf {
        sibling(&self.output, ".staging")
    }

    pub fn lock_path(&self) -> PathBuf {
        sibling(&self.output, ".lock")
    }

    /// Makes (and marks as the runner's) the work directories, and locks everything a build
    /// writes: the output, the build dir and the cache. Two builds of one project into
    /// different outputs still share build/ (env file, rootfs) and the cache, so the second
    /// one waits its turn instead of mixing the two.
    pub fn lock_for_writing(&self) -> Result<Vec<Lock>> {
        owned::claim(&self.build_dir)?;
        owned::claim(&self.cache_dir)?;
        if !self.rootfs.starts_with(&self.build_dir) {
            std::fs::create_dir_all(&self.rootfs)
                .with_context(|| format!("creating {}", self.rootfs.display()))?;
            owned::claim_beside(&self.rootfs)?;
        }
        if let Some(parent) = self.output.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        Ok(vec![
            Lock::acquire(&self.lock_path(), &self.output)?,
            Lock::acquire(&self.build_dir.join(".lock"), &self.build_dir)?,
            Lock::acquire(&self.cache_dir.join(".lock"), &self.cache_dir)?,
        ])
    }

    /// One warning for each config key that neither the runner nor any script under
    /// phases/ or sysext/ reads, naming where it is set and the key it may have meant.
    pub fn unread_key_warnings(&self) -> Result<Vec<String>> {
        let mut readers = Vec::new();
        for dir in [self.phases_dir(), self.dir.join("sysext")] {
            if !dir.is_dir() {
                continue;
            }
            for entry in walkdir::WalkDir::new(&dir).follow_links(true) {
                let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
                if entry.file_type().is_file() {
                    let bytes = std::fs::read(entry.path())
                        .with_context(|| format!("reading {}", entry.path().display()))?;
                    readers.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        let src = std::fs::read_to_string(&self.config.path)
            .with_context(|| format!("reading {}", self.config.path.display()))?;
        let unread = crate::conf::unread(&self.config.vars, &src, &readers, RUNNER_KEYS);
        Ok(unread
            .into_iter()
            .map(|u| {
                let at = match u.line {
                    Some(l) => format!("{}:{l}", self.config.path.display()),
                    None => "--set".to_string(),
                };
                let hint = u
                    .closest
                    .map(|c| format!(" (did you mean {c}?)"))
                    .unwrap_or_default();
                format!(
                    "{at}: {} is set, but no phase and nothing in loisto-image reads it{hint}",
                    u.key
                )
            })
            .collect())
    }

    pub fn env_file(&self) -> PathBuf {
        self.build_dir.join("loisto-env.sh")
    }
}

/// `-C DIR`, else (like git looks for `.git`) the nearest directory from the current one
/// upwards that has an image.conf, else the current directory (whose missing image.conf is
/// then the error). With `--config FILE` and no `-C`, the current directory.
pub fn project_dir(g: &Global) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    if let Some(p) = &g.project {
        return std::path::absolute(p)
            .with_context(|| format!("resolving project directory {}", p.display()));
    }
    if g.config.is_none() {
        for dir in cwd.ancestors() {
            if dir.join("image.conf").is_file() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    Ok(cwd)
}

fn sibling(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Resolves `.` and `..` without touching the disk (the directory may not exist yet).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A build directory that is `/`, the project itself or one of its parents would be wiped
/// or overwritten by phases; refuse it before anything runs.
/// What the project is made of: a work directory inside one of these would be written into
/// (or, as OUTPUT, swapped out of) the sources.
const SOURCES: &[&str] = &["phases", "overlay", "repart.d", "rauc", "sysext", "keys", ".git"];

pub fn check_safe_dir(key: &str, p: &Path, project: &Path, config: &Path) -> Result<()> {
    let bad = if p.as_os_str().is_empty() || p == Path::new("/") {
        Some("the filesystem root")
    } else if p == project {
        Some("the project directory itself")
    } else if project.starts_with(p) {
        Some("a parent of the project directory")
    } else if p == config {
        Some("the config file")
    } else if SOURCES.iter().any(|s| p.starts_with(project.join(s))) {
        Some("inside the project's own sources")
    } else {
        None
    };
    match bad {
        Some(what) => Err(UsageError::new(format!(
            "{key} resolves to {} which is {what}; point it at a directory of its own",
            p.display()
        ))
        .into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_directories_are_refused() {
        let proj = Path::new("/home/u/img");
        let conf = Path::new("/home/u/img/image.conf");
        for bad in [
            "/",
            "/home/u/img",
            "/home/u",
            "",
            "/home/u/img/image.conf",
            "/home/u/img/phases",
            "/home/u/img/overlay/out",
        ] {
            assert!(
                check_safe_dir("OUTPUT", Path::new(bad), proj, conf).is_err(),
                "{bad}"
            );
        }
        for good in ["/home/u/img/build/rootfs", "/home/u/img/out2", "/srv/images"] {
            assert!(
                check_safe_dir("OUTPUT", Path::new(good), proj, conf).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn normalize_resolves_dots() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalize(Path::new("/a/..")), PathBuf::from("/"));
    }
}
