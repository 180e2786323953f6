//! `loisto-image init`: a new image project, made of the files this version builds its own
//! default image from (see project_files.rs), so a project starts from what is tested.

use crate::cli::{Distro, Global, InitArgs};
use crate::error::UsageError;
use crate::project_files::{self, ProjectFile};
use anyhow::{Context, Result, anyhow};
use std::borrow::Cow;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub fn run(g: &Global, args: &InitArgs) -> Result<()> {
    let dir = match (&args.dir, &g.project) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => ".".into(),
    };
    let files: Vec<(&ProjectFile, Cow<[u8]>)> = project_files::FILES
        .iter()
        .map(|f| Ok((f, contents(f, args.distro)?)))
        .collect::<Result<_>>()?;
    if !args.force {
        let existing: Vec<&str> = files
            .iter()
            .map(|(f, _)| f.path)
            .filter(|p| std::fs::symlink_metadata(dir.join(p)).is_ok())
            .collect();
        if !existing.is_empty() {
            let shown: Vec<&str> = existing.iter().take(5).copied().collect();
            let more = existing.len() - shown.len();
            return Err(UsageError::new(format!(
                "{} already holds {} of the project's files ({}{}); nothing was written. \
                 Use another directory, or --force to overwrite them",
                dir.display(),
                existing.len(),
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ))
            .into());
        }
    }
    for (f, bytes) in &files {
        write(&dir.join(f.path), bytes, f.mode)?;
    }
    let shown = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    eprintln!(
        "wrote a new image project ({} files) into {}\n\n\
         next:  {shown}sudo scripts/install-host-deps.sh    # the host tools, once\n       \
         sudo loisto-image build && sudo loisto-image vm\n\n\
         README.md says what each file is for.",
        files.len(),
        dir.display()
    );
    Ok(())
}

/// The embedded bytes, with `--distro` written into image.conf's DISTRO default.
fn contents(f: &'static ProjectFile, distro: Option<Distro>) -> Result<Cow<'static, [u8]>> {
    let (Some(distro), "image.conf") = (distro, f.path) else {
        return Ok(Cow::Borrowed(f.bytes));
    };
    let name = match distro {
        Distro::Debian => "debian",
        Distro::Arch => "arch",
    };
    let text = std::str::from_utf8(f.bytes).context("image.conf is not UTF-8")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("DISTRO="))
        .ok_or_else(|| anyhow!("the embedded image.conf has no DISTRO= line"))?;
    Ok(Cow::Owned(
        text.replacen(line, &format!("DISTRO=${{LOISTO_DISTRO:-{name}}}"), 1)
            .into_bytes(),
    ))
}

/// Written beside, then renamed: an interrupted init leaves whole files or none.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let parent = path.parent().context("a project file has no parent directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.loisto-init",
        path.file_name()
            .context("a project file has no name")?
            .to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_project_is_this_repository_s_own() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for path in [
            "image.conf",
            "phases/00-bootstrap.sh",
            "phases/lib/common.sh",
            "rauc/system.conf",
        ] {
            let f = project_files::get(path).unwrap_or_else(|| panic!("{path} is not embedded"));
            assert_eq!(f.bytes, std::fs::read(root.join(path)).unwrap(), "{path}");
        }
        assert_eq!(project_files::get("phases/70-disk.sh").unwrap().mode, 0o755);
        assert!(
            project_files::get("rauc/keyring.pem").is_none(),
            "a development keyring must not ship"
        );
        assert!(project_files::get(".gitignore").is_some() && project_files::get("README.md").is_some());
        assert!(project_files::get("Cargo.toml").is_none() && project_files::get("src/main.rs").is_none());
    }

    #[test]
    fn distro_is_written_into_the_default_of_image_conf() {
        let conf = project_files::get("image.conf").unwrap();
        let arch = contents(conf, Some(Distro::Arch)).unwrap();
        let arch = std::str::from_utf8(&arch).unwrap();
        assert!(
            arch.lines().any(|l| l == "DISTRO=${LOISTO_DISTRO:-arch}"),
            "{arch}"
        );
        assert_eq!(
            arch.lines().count(),
            std::str::from_utf8(conf.bytes).unwrap().lines().count()
        );
        assert!(matches!(contents(conf, None).unwrap(), Cow::Borrowed(_)));
    }
}
