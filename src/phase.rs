//! Build phases: `phases/NN-name.sh`, discovered and ordered by number, and selected by
//! `--from/--to/--only/--skip`.

use crate::error::UsageError;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub number: u32,
    /// `50-verity`: the file name without `.sh`, as phases are named everywhere.
    pub id: String,
    pub path: PathBuf,
    pub header: Header,
}

/// What a phase declares in its leading comment block:
///
/// ```text
/// # Tools: veritysetup mksquashfs|mkfs.erofs
/// # Inputs: ROOT_FORMAT overlay/
/// ```
///
/// `a|b` means either tool will do. Inputs in capitals are config keys, anything else is a
/// path in the project. `# Tools if KEY=VALUE: ...` lines name the tools for one setting
/// (the bootstrap tool of each `DISTRO`); where one or more of them match the config, they
/// replace the plain `Tools:` line (see [`Header::configured`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub tools: Vec<Vec<String>>,
    /// `(KEY, VALUE, tools)` of each `# Tools if KEY=VALUE:` line.
    pub tools_if: Vec<(String, String, Vec<Vec<String>>)>,
    pub inputs: Vec<String>,
    /// `# Cache: snapshot`: the rootfs after this phase is kept and reused while the phase's
    /// fingerprint (script, inputs, tools, earlier phases) stays the same.
    pub snapshot: bool,
    /// Whether the phase has an `# Inputs:` line at all (`# Inputs: none` declares nothing).
    /// A phase without one may read anything: it never counts as unchanged.
    pub declares_inputs: bool,
}

impl Header {
    pub fn parse(text: &str) -> Header {
        let mut h = Header::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some(comment) = line.strip_prefix('#') else {
                break;
            };
            let comment = comment.trim();
            let groups = |rest: &str| -> Vec<Vec<String>> {
                rest.split_whitespace()
                    .map(|w| w.split('|').map(str::to_string).collect())
                    .collect()
            };
            if let Some(rest) = strip_key(comment, "tools:") {
                h.tools.extend(groups(rest));
            } else if let Some(rest) = strip_key(comment, "tools if ")
                && let Some((cond, tools)) = rest.split_once(':')
                && let Some((key, value)) = cond.trim().split_once('=')
            {
                h.tools_if
                    .push((key.to_string(), value.to_string(), groups(tools)));
            } else if let Some(rest) = strip_key(comment, "inputs:") {
                h.declares_inputs = true;
                h.inputs.extend(
                    rest.split_whitespace()
                        .filter(|w| *w != "none")
                        .map(str::to_string),
                );
            } else if let Some(rest) = strip_key(comment, "cache:") {
                h.snapshot = rest.split_whitespace().any(|w| w == "snapshot");
            }
        }
        h
    }
}

impl Header {
    /// The header as it applies to one config: the tools of every `Tools if` line whose
    /// key has that value, or the plain `Tools:` line when none does.
    pub fn configured(&self, value_of: impl Fn(&str) -> Option<String>) -> Header {
        let matching: Vec<Vec<String>> = self
            .tools_if
            .iter()
            .filter(|(k, v, _)| value_of(k).as_deref() == Some(v.as_str()))
            .flat_map(|(_, _, t)| t.iter().cloned())
            .collect();
        let mut h = self.clone();
        if !matching.is_empty() {
            h.tools = matching;
        }
        h
    }
}

fn strip_key<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    (s.len() >= key.len() && s[..key.len()].eq_ignore_ascii_case(key)).then(|| &s[key.len()..])
}

/// Lists `dir`'s phases in order. Files that look like phases but are misnamed, and two
/// phases with one number, are errors: silently skipping a phase builds the wrong image.
pub fn discover(dir: &Path) -> Result<Vec<Phase>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        UsageError::new(format!(
            "cannot read phases directory {}: {e} (an image project has phases/NN-name.sh scripts)",
            dir.display()
        ))
    })?;
    let mut phases: Vec<Phase> = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || path.is_dir() || is_editor_leftover(&name) {
            continue;
        }
        match parse_name(&name) {
            Some((number, id)) => {
                if let Ok(target) = std::fs::read_link(&path)
                    && !path.exists()
                {
                    return Err(UsageError::new(format!(
                        "phase {id}: {} is a link to {}, which does not exist",
                        path.display(),
                        target.display()
                    ))
                    .into());
                }
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                phases.push(Phase {
                    number,
                    id,
                    header: Header::parse(&text),
                    path,
                })
            }
            None if looks_like_phase(&name) => {
                return Err(UsageError::new(format!(
                    "{}: malformed phase name; phases are named NN-name.sh (two or more digits, a dash, \
                     a name of letters, digits, `-` or `_`)",
                    path.display()
                ))
                .into());
            }
            None => {}
        }
    }
    phases.sort_by(|a, b| a.number.cmp(&b.number).then(a.id.cmp(&b.id)));
    for pair in phases.windows(2) {
        if pair[0].number == pair[1].number {
            return Err(UsageError::new(format!(
                "phases {} and {} share the number {}; renumber one so the order is explicit",
                pair[0].path.display(),
                pair[1].path.display(),
                pair[0].number
            ))
            .into());
        }
    }
    if phases.is_empty() {
        return Err(UsageError::new(format!(
            "no phases found in {} (expected NN-name.sh files)",
            dir.display()
        ))
        .into());
    }
    Ok(phases)
}

fn parse_name(file: &str) -> Option<(u32, String)> {
    let stem = file.strip_suffix(".sh")?;
    let (num, name) = stem.split_once('-')?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if num.len() < 2 || !num.chars().all(|c| c.is_ascii_digit()) || !valid_name {
        return None;
    }
    Some((num.parse().ok()?, stem.to_string()))
}

/// Editor backups and swap files (`60-x.sh~`, `60-x.sh.orig`, `#60-x.sh#`): never phases.
fn is_editor_leftover(file: &str) -> bool {
    file.ends_with('~')
        || file.starts_with('#')
        || [".bak", ".orig", ".rej", ".swp", ".swo", ".tmp"]
            .iter()
            .any(|ext| file.ends_with(ext))
}

/// A file starting with a digit or ending in `.sh` is meant to be a phase.
fn looks_like_phase(file: &str) -> bool {
    file.starts_with(|c: char| c.is_ascii_digit()) || file.ends_with(".sh")
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub from: Option<String>,
    pub to: Option<String>,
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.from.is_none() && self.to.is_none() && self.only.is_empty() && self.skip.is_empty()
    }

    /// Applies the selection; each name must match a phase, so typos are caught.
    pub fn apply(&self, phases: &[Phase]) -> Result<Vec<Phase>> {
        let find = |flag: &str, p: &str| -> Result<usize> {
            phases.iter().position(|ph| matches(ph, p)).ok_or_else(|| {
                let known: Vec<&str> = phases.iter().map(|p| p.id.as_str()).collect();
                UsageError::new(format!(
                    "{flag} {p}: no such phase (phases: {})",
                    known.join(", ")
                ))
                .into()
            })
        };
        let from = self
            .from
            .as_deref()
            .map(|p| find("--from", p))
            .transpose()?
            .unwrap_or(0);
        let to = self
            .to
            .as_deref()
            .map(|p| find("--to", p))
            .transpose()?
            .unwrap_or(phases.len() - 1);
        if from > to {
            return Err(UsageError::new(format!(
                "--from {} comes after --to {}: nothing would run",
                phases[from].id, phases[to].id
            ))
            .into());
        }
        let only: Vec<usize> = self
            .only
            .iter()
            .map(|p| find("--only", p))
            .collect::<Result<_>>()?;
        let skip: Vec<usize> = self
            .skip
            .iter()
            .map(|p| find("--skip", p))
            .collect::<Result<_>>()?;
        let picked: Vec<Phase> = (from..=to)
            .filter(|i| only.is_empty() || only.contains(i))
            .filter(|i| !skip.contains(i))
            .map(|i| phases[i].clone())
            .collect();
        if picked.is_empty() {
            return Err(UsageError::new("the phase selection is empty: nothing would run").into());
        }
        Ok(picked)
    }
}

/// `50` matches by number, `50-verity` by full id.
fn matches(phase: &Phase, p: &str) -> bool {
    if p.chars().all(|c| c.is_ascii_digit()) {
        p.parse::<u32>().ok() == Some(phase.number)
    } else {
        phase.id == p || phase.id == p.trim_end_matches(".sh")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_if_lines_replace_the_plain_tools_where_the_config_matches() {
        let h = Header::parse(
            "#!/bin/bash\n# Tools: a|b c\n# Tools if DISTRO=arch: b\n# Tools if MODE=x: d e|f\n",
        );
        let with = |pairs: &'static [(&str, &str)]| {
            h.configured(move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
                .tools
        };
        let names = |t: Vec<Vec<String>>| t.into_iter().map(|g| g.join("|")).collect::<Vec<_>>();
        assert_eq!(names(with(&[])), ["a|b", "c"]);
        assert_eq!(names(with(&[("DISTRO", "debian")])), ["a|b", "c"]);
        assert_eq!(names(with(&[("DISTRO", "arch")])), ["b"]);
        assert_eq!(
            names(with(&[("DISTRO", "arch"), ("MODE", "x")])),
            ["b", "d", "e|f"]
        );
    }

    fn project(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        d
    }

    fn ids(p: &[Phase]) -> Vec<&str> {
        p.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn header_lists_tools_with_alternatives_and_inputs() {
        let h = Header::parse(
            "#!/bin/bash\n# Seals the rootfs.\n# Tools: veritysetup mksquashfs|mkfs.erofs\n\
             # inputs: ROOT_FORMAT overlay/\n# Cache: snapshot\nset -e\n# Tools: not-in-header\n",
        );
        assert!(h.snapshot);
        assert_eq!(
            h.tools,
            vec![vec!["veritysetup"], vec!["mksquashfs", "mkfs.erofs"]]
        );
        assert_eq!(h.inputs, vec!["ROOT_FORMAT", "overlay/"]);
    }

    #[test]
    fn orders_by_number_not_text() {
        let d = project(&["100-late.sh", "20-b.sh", "05-a.sh", "README"]);
        assert_eq!(
            ids(&discover(d.path()).unwrap()),
            vec!["05-a", "20-b", "100-late"]
        );
    }

    #[test]
    fn editor_backups_are_skipped_and_a_dangling_link_is_named() {
        let d = project(&["10-a.sh", "10-a.sh~", "20-b.sh.orig", "20-b.sh.bak", "#30-c.sh#"]);
        assert_eq!(ids(&discover(d.path()).unwrap()), vec!["10-a"]);
        std::os::unix::fs::symlink("/nonexistent/40-d.sh", d.path().join("40-d.sh")).unwrap();
        let err = format!("{:#}", discover(d.path()).unwrap_err());
        assert!(
            err.contains("40-d.sh") && err.contains("/nonexistent/40-d.sh") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn malformed_and_duplicate_names_are_errors() {
        for bad in [
            &["1-x.sh"][..],
            &["10x.sh"],
            &["10-.sh"],
            &["10-a.sh", "010-b.sh"],
            &["helper.sh"],
        ] {
            assert!(discover(project(bad).path()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn selection_by_number_and_name() {
        let d = project(&["00-a.sh", "10-b.sh", "20-c.sh", "30-d.sh"]);
        let all = discover(d.path()).unwrap();
        let sel = |s: Selection| ids(&s.apply(&all).unwrap()).join(" ");
        let from = Selection {
            from: Some("10".into()),
            to: Some("20-c".into()),
            ..Default::default()
        };
        assert_eq!(sel(from), "10-b 20-c");
        let only = Selection {
            only: vec!["30".into(), "00-a".into()],
            ..Default::default()
        };
        assert_eq!(sel(only), "00-a 30-d");
        let skip = Selection {
            skip: vec!["10".into()],
            ..Default::default()
        };
        assert_eq!(sel(skip), "00-a 20-c 30-d");
        assert!(
            Selection {
                only: vec!["99".into()],
                ..Default::default()
            }
            .apply(&all)
            .is_err()
        );
    }
}
