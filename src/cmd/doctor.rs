//! `loisto-image doctor`: every tool each phase (and the cache and `vm`) needs, found or missing.

use crate::cli::Global;
use crate::project::Project;
use crate::tools;
use crate::vm::firmware;
use anyhow::{Result, bail};

pub fn run(g: &Global) -> Result<()> {
    let mut rows: Vec<(String, String, Option<String>)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    match Project::open(g).and_then(|p| p.phases()) {
        Ok(phases) => {
            for ph in &phases {
                for group in &ph.header.tools {
                    rows.push((ph.id.clone(), group.join("|"), check(group, &mut missing)));
                }
            }
        }
        Err(e) => eprintln!("note: no image project ({e:#}); listing the vm tools only"),
    }
    // The snapshots of `# Cache: snapshot` phases.
    for t in ["tar", "pzstd"] {
        rows.push(("cache".into(), t.into(), check(&[t.to_string()], &mut missing)));
    }
    for t in ["qemu-system-x86_64", "qemu-img"] {
        rows.push(("vm".into(), t.into(), check(&[t.to_string()], &mut missing)));
    }
    for t in ["openssl", "cert-to-efi-sig-list", "sign-efi-sig-list"] {
        rows.push(("keys".into(), t.into(), check(&[t.to_string()], &mut missing)));
    }
    for t in [
        "sbsign",
        "sbverify",
        "sbattach",
        "faketime",
        "mkfs.vfat",
        "mmd",
        "mcopy",
        "minfo",
        "mdir",
        "unsquashfs",
        "sfdisk",
        "rauc",
    ] {
        rows.push(("sign".into(), t.into(), check(&[t.to_string()], &mut missing)));
    }
    rows.push((
        "vm --secure-boot".into(),
        "virt-fw-vars".into(),
        check(&["virt-fw-vars".to_string()], &mut missing),
    ));
    for (command, what, secure_boot) in [
        ("vm --secure-boot", "OVMF Secure Boot firmware", true),
        ("vm", "OVMF firmware", false),
    ] {
        let found = firmware::find(None, secure_boot).ok();
        let status = found.map(|fw| format!("ok  {} + {}", fw.code.display(), fw.vars.display()));
        rows.push((command.into(), what.into(), status));
    }

    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(4).max(4);
    println!("{:<w0$}  {:<w1$}  status", "phase", "tool");
    for (ph, tool, status) in &rows {
        println!(
            "{ph:<w0$}  {tool:<w1$}  {}",
            status.as_deref().unwrap_or("MISSING")
        );
    }
    let firmware_missing = rows.iter().any(|r| r.1.starts_with("OVMF") && r.2.is_none());
    if missing.is_empty() && !firmware_missing {
        println!("\nall tools are installed");
        return Ok(());
    }
    let mut names: Vec<&str> = missing.iter().map(String::as_str).collect();
    if firmware_missing {
        names.push("ovmf");
    }
    println!(
        "\ninstall what is missing with:\n  {}",
        tools::install_line(&names)
    );
    bail!("{} tools are missing", names.len())
}

/// `ok <path> <version>` for an installed tool (with a note when it is too old), None if missing.
fn check(group: &[String], missing: &mut Vec<String>) -> Option<String> {
    let Some((name, path)) = tools::resolve(group) else {
        if tools::is_optional(group) {
            return Some("not installed (optional)".into());
        }
        missing.push(group[0].clone());
        return None;
    };
    let version = tools::version(&name, &path).unwrap_or_default();
    let mut status = format!("ok  {}  {version}", path.display());
    if name == "systemd-repart" && systemd_version(&version).is_some_and(|v| v < 254) {
        status.push_str("  (too old: offline image building needs systemd >= 254)");
        missing.push(name.clone());
    }
    if name == "/usr/bin/python3" && !pefile_importable() {
        status.push_str("  (lacks the pefile module that ukify needs)");
        missing.push(name.clone());
    }
    Some(status)
}

fn systemd_version(line: &str) -> Option<u32> {
    line.strip_prefix("systemd ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn pefile_importable() -> bool {
    crate::proc::probe("/usr/bin/python3", ["-c", "import pefile"]).is_ok_and(|(ok, _)| ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_systemd_version() {
        assert_eq!(
            super::systemd_version("systemd 254 (254.26-1~bpo12+1)"),
            Some(254)
        );
        assert_eq!(super::systemd_version("sfdisk from util-linux"), None);
    }
}
