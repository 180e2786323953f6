//! Host tools: where they come from, how to ask their version, and whether they are here.

use crate::phase::Header;
use std::path::{Path, PathBuf};

pub struct Known {
    pub name: &'static str,
    pub debian: &'static str,
    pub arch: &'static str,
    /// Arguments that print a version on the first line; empty: the tool has none.
    pub version_args: &'static [&'static str],
}

/// Packages per tool. On Debian 12 the `systemd` and `qemu-system-x86` entries come from
/// bookworm-backports (systemd 254 has ukify and offline repart).
pub const KNOWN: &[Known] = &[
    Known {
        name: "mmdebstrap",
        debian: "mmdebstrap",
        arch: "mmdebstrap",
        version_args: &["--version"],
    },
    Known {
        name: "pacstrap",
        debian: "arch-install-scripts",
        arch: "arch-install-scripts",
        version_args: &[],
    },
    Known {
        name: "pacman",
        debian: "pacman-package-manager",
        arch: "pacman",
        version_args: &["--version"],
    },
    Known {
        name: "arch-chroot",
        debian: "arch-install-scripts",
        arch: "arch-install-scripts",
        version_args: &[],
    },
    Known {
        name: "tar",
        debian: "tar",
        arch: "tar",
        version_args: &["--version"],
    },
    Known {
        name: "chroot",
        debian: "coreutils",
        arch: "coreutils",
        version_args: &["--version"],
    },
    Known {
        name: "cpio",
        debian: "cpio",
        arch: "cpio",
        version_args: &["--version"],
    },
    Known {
        name: "lz4",
        debian: "lz4",
        arch: "lz4",
        version_args: &["--version"],
    },
    Known {
        name: "xz",
        debian: "xz-utils",
        arch: "xz",
        version_args: &["--version"],
    },
    Known {
        name: "zstd",
        debian: "zstd",
        arch: "zstd",
        version_args: &["--version"],
    },
    Known {
        name: "pzstd",
        debian: "zstd",
        arch: "zstd",
        version_args: &["--version"],
    },
    Known {
        name: "mksquashfs",
        debian: "squashfs-tools",
        arch: "squashfs-tools",
        version_args: &["-version"],
    },
    Known {
        name: "mkfs.erofs",
        debian: "erofs-utils",
        arch: "erofs-utils",
        version_args: &["-V"],
    },
    Known {
        name: "veritysetup",
        debian: "cryptsetup-bin",
        arch: "cryptsetup",
        version_args: &["--version"],
    },
    Known {
        name: "ukify",
        debian: "systemd",
        arch: "systemd-ukify",
        version_args: &["--version"],
    },
    Known {
        name: "sbsign",
        debian: "sbsigntool",
        arch: "sbsigntools",
        version_args: &["--version"],
    },
    Known {
        name: "systemd-repart",
        debian: "systemd",
        arch: "systemd",
        version_args: &["--version"],
    },
    Known {
        name: "systemctl",
        debian: "systemd",
        arch: "systemd",
        version_args: &["--version"],
    },
    Known {
        name: "mkfs.vfat",
        debian: "dosfstools",
        arch: "dosfstools",
        version_args: &[],
    },
    Known {
        name: "mcopy",
        debian: "mtools",
        arch: "mtools",
        version_args: &["--version"],
    },
    Known {
        name: "mkfs.ext4",
        debian: "e2fsprogs",
        arch: "e2fsprogs",
        version_args: &["-V"],
    },
    Known {
        name: "sfdisk",
        debian: "fdisk",
        arch: "util-linux",
        version_args: &["--version"],
    },
    Known {
        name: "bsdtar",
        debian: "libarchive-tools",
        arch: "libarchive",
        version_args: &["--version"],
    },
    Known {
        name: "unshare",
        debian: "util-linux",
        arch: "util-linux",
        version_args: &["--version"],
    },
    Known {
        name: "objcopy",
        debian: "binutils",
        arch: "binutils",
        version_args: &["--version"],
    },
    Known {
        name: "fallocate",
        debian: "util-linux",
        arch: "util-linux",
        version_args: &["--version"],
    },
    Known {
        name: "dd",
        debian: "coreutils",
        arch: "coreutils",
        version_args: &["--version"],
    },
    Known {
        name: "sha256sum",
        debian: "coreutils",
        arch: "coreutils",
        version_args: &["--version"],
    },
    Known {
        name: "qemu-system-x86_64",
        debian: "qemu-system-x86",
        arch: "qemu-system-x86",
        version_args: &["--version"],
    },
    Known {
        name: "qemu-img",
        debian: "qemu-utils",
        arch: "qemu-img",
        version_args: &["--version"],
    },
    Known {
        name: "rauc",
        debian: "rauc",
        arch: "rauc",
        version_args: &["--version"],
    },
    Known {
        name: "openssl",
        debian: "openssl",
        arch: "openssl",
        version_args: &["version"],
    },
    Known {
        name: "sbverify",
        debian: "sbsigntool",
        arch: "sbsigntools",
        version_args: &["--version"],
    },
    Known {
        name: "sbattach",
        debian: "sbsigntool",
        arch: "sbsigntools",
        version_args: &["--version"],
    },
    Known {
        name: "cert-to-efi-sig-list",
        debian: "efitools",
        arch: "efitools",
        version_args: &["--version"],
    },
    Known {
        name: "sign-efi-sig-list",
        debian: "efitools",
        arch: "efitools",
        version_args: &["--version"],
    },
    Known {
        name: "virt-fw-vars",
        debian: "python3-virt-firmware",
        arch: "virt-firmware",
        version_args: &[],
    },
    Known {
        name: "faketime",
        debian: "faketime",
        arch: "libfaketime",
        version_args: &["--version"],
    },
    Known {
        name: "mmd",
        debian: "mtools",
        arch: "mtools",
        version_args: &["--version"],
    },
    Known {
        name: "minfo",
        debian: "mtools",
        arch: "mtools",
        version_args: &["--version"],
    },
    Known {
        name: "mdir",
        debian: "mtools",
        arch: "mtools",
        version_args: &["--version"],
    },
    Known {
        name: "unsquashfs",
        debian: "squashfs-tools",
        arch: "squashfs-tools",
        version_args: &["-version"],
    },
    Known {
        name: "/usr/bin/python3",
        debian: "python3-pefile",
        arch: "python-pefile",
        version_args: &["--version"],
    },
];

pub fn known(name: &str) -> Option<&'static Known> {
    let base = Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name);
    KNOWN.iter().find(|k| k.name == name || k.name == base)
}

/// Finds a command in PATH, or an absolute path as is. systemd keeps some tools (ukify)
/// outside PATH, so those places are searched too.
pub fn locate(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/lib/systemd", "/lib/systemd", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first tool of an `a|b` group that is installed.
pub fn resolve(group: &[String]) -> Option<(String, PathBuf)> {
    group
        .iter()
        .map(|t| t.trim_end_matches('?'))
        .find_map(|t| locate(t).map(|p| (t.to_string(), p)))
}

/// `sbsign?`: used when present (signing keys exist), not required.
pub fn is_optional(group: &[String]) -> bool {
    group.iter().any(|t| t.ends_with('?'))
}

/// Every (who, tool group) whose tools are all missing; checked before anything runs. `who`
/// says what needs them: `phase 50-verity`, `the phase cache`, `sysext/build-sysext.sh`.
pub fn missing<'a>(needs: impl IntoIterator<Item = (String, &'a Header)>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (who, header) in needs {
        for group in &header.tools {
            if !is_optional(group) && resolve(group).is_none() {
                out.push((who.clone(), group.join("|")));
            }
        }
    }
    out
}

/// Fails, before anything runs, if a tool some step needs is missing.
pub fn require<'a>(needs: impl IntoIterator<Item = (String, &'a Header)>) -> anyhow::Result<()> {
    let missing = missing(needs);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|(who, t)| format!("  {who} needs `{t}`"))
        .collect();
    let names: Vec<&str> = missing.iter().flat_map(|(_, t)| t.split('|').take(1)).collect();
    anyhow::bail!(
        "host tools are missing, nothing was run:\n{}\ninstall them with: {}\n(`loisto-image doctor` lists every tool and its version)",
        lines.join("\n"),
        install_line(&names)
    )
}

/// The first line a tool prints about its version, if it has a way to ask.
pub fn version(name: &str, path: &Path) -> Option<String> {
    let k = known(name)?;
    if k.version_args.is_empty() {
        return None;
    }
    // ukify is a Python script that needs the system python (python3-pefile).
    let (program, mut args): (PathBuf, Vec<String>) = if k.name == "ukify" {
        (
            PathBuf::from("/usr/bin/python3"),
            vec![path.to_string_lossy().into_owned()],
        )
    } else {
        (path.to_path_buf(), vec![])
    };
    args.extend(k.version_args.iter().map(|s| s.to_string()));
    let out = crate::proc::capture(&program.to_string_lossy(), &args).ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .into_owned();
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Tool versions remembered per binary (its path, size and mtime) in a file in the cache:
/// asking every tool costs ~0.5 s a build (ukify and mmdebstrap start interpreters), and an
/// unchanged binary gives an unchanged answer.
pub struct Versions {
    file: PathBuf,
    known: std::collections::BTreeMap<String, (String, Option<String>)>,
    changed: bool,
}

impl Versions {
    pub fn load(file: &Path) -> Versions {
        let known = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Versions {
            file: file.to_path_buf(),
            known,
            changed: false,
        }
    }

    pub fn get(&mut self, name: &str, path: &Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let Ok(md) = path.metadata() else {
            return version(name, path);
        };
        let stamp = format!("{name} {} {} {}", md.size(), md.mtime(), md.mtime_nsec());
        let key = path.display().to_string();
        if let Some((s, v)) = self.known.get(&key)
            && *s == stamp
        {
            return v.clone();
        }
        let v = version(name, path);
        self.known.insert(key, (stamp, v.clone()));
        self.changed = true;
        v
    }

    /// Best effort: without the file the next build only asks the tools again.
    pub fn save(&self) {
        if self.changed
            && let Ok(text) = serde_json::to_string_pretty(&self.known)
        {
            let tmp = self.file.with_extension("partial");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &self.file);
            }
        }
    }
}

/// The install line for a set of missing tools on this host's distribution.
pub fn install_line(missing: &[&str]) -> String {
    let osr = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let arch = osr
        .lines()
        .any(|l| l == "ID=arch" || l.starts_with("ID_LIKE=") && l.contains("arch"));
    let mut pkgs: Vec<&str> = missing
        .iter()
        .filter_map(|t| known(t))
        .map(|k| if arch { k.arch } else { k.debian })
        .collect();
    pkgs.sort();
    pkgs.dedup();
    if pkgs.is_empty() {
        return "sudo scripts/install-host-deps.sh".to_string();
    }
    if arch {
        format!("sudo pacman -S --needed {}", pkgs.join(" "))
    } else if osr.contains("VERSION_CODENAME=bookworm")
        && pkgs.iter().any(|p| matches!(*p, "systemd" | "qemu-system-x86"))
    {
        format!(
            "sudo scripts/install-host-deps.sh   # Debian 12: enables bookworm-backports, then apt-get install -t bookworm-backports {}",
            pkgs.join(" ")
        )
    } else {
        format!("sudo apt-get install {}", pkgs.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_tool_has_a_package() {
        assert!(known("ukify").is_some());
        assert!(known("/usr/lib/systemd/ukify").is_some());
        assert!(known("frobnicator").is_none());
    }

    /// doctor, the install line and the cache fingerprint know only the tools in KNOWN: a
    /// tool a phase declares must be there.
    #[test]
    fn every_tool_a_phase_or_the_sysext_script_declares_is_known() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut scripts: Vec<PathBuf> = std::fs::read_dir(root.join("phases"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sh"))
            .collect();
        scripts.push(root.join("sysext/build-sysext.sh"));
        let mut unknown = Vec::new();
        for script in &scripts {
            let h = Header::parse(&std::fs::read_to_string(script).unwrap());
            let groups = h.tools.iter().chain(h.tools_if.iter().flat_map(|(_, _, t)| t));
            for tool in groups.flatten() {
                let name = tool.trim_end_matches('?');
                if known(name).is_none() {
                    unknown.push(format!("{}: {name}", script.display()));
                }
            }
        }
        assert!(scripts.len() > 5, "{scripts:?}");
        assert_eq!(unknown, Vec::<String>::new(), "add these to KNOWN");
    }

    #[test]
    fn locate_finds_path_commands_and_absolute_paths() {
        assert!(locate("sh").is_some());
        assert!(locate("/bin/sh").is_some());
        assert!(locate("surely-not-a-tool-anywhere").is_none());
    }
}
