//! What a phase's result depends on (its script, its inputs, its tools, the phases before it),
//! as one digest with the pieces kept so that `plan --explain` can name what changed.

use crate::conf::Value;
use crate::hash::{hash_file, hex, tree_hash};
use crate::phase::Phase;
use crate::project::Project;
use crate::tools;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What one phase's result depends on. `parts` keeps the pieces so a change can be named.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fingerprint {
    pub digest: String,
    pub parts: BTreeMap<String, String>,
}

/// Fingerprints for `phases` in order; each includes the previous one, so a change to an
/// earlier phase changes every later fingerprint.
pub fn fingerprints(project: &Project, phases: &[Phase]) -> Result<Vec<Fingerprint>> {
    let lib = tree_hash(&project.phases_dir().join("lib"))?;
    let mut versions = tools::Versions::load(&project.cache_dir.join("tool-versions.json"));
    let mut out: Vec<Fingerprint> = Vec::new();
    for ph in phases {
        let mut parts = BTreeMap::new();
        parts.insert("script".to_string(), hash_file(&ph.path)?.1);
        parts.insert("file:phases/lib".to_string(), lib.clone());
        parts.insert(
            "tool:loisto-image".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        if let Some(prev) = out.last() {
            parts.insert("after".to_string(), prev.digest.clone());
        }
        if !ph.header.declares_inputs {
            // Unknown inputs: at least every config value counts.
            parts.insert("config:*".to_string(), project.config.digest());
        }
        for input in &ph.header.inputs {
            let (key, value) = input_value(project, input)?;
            parts.insert(key, value);
        }
        for group in &ph.header.tools {
            let version = tools::resolve(group)
                .map(|(name, path)| {
                    versions
                        .get(&name, &path)
                        .unwrap_or_else(|| path.display().to_string())
                })
                .unwrap_or_else(|| "<missing>".into());
            parts.insert(format!("tool:{}", group.join("|")), version);
        }
        let mut h = Sha256::new();
        for (k, v) in &parts {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        out.push(Fingerprint {
            digest: hex(&h.finalize()),
            parts,
        });
    }
    versions.save();
    Ok(out)
}

/// `KEY` is a config value, `$KEY` the file a config value names, anything else a project path.
fn input_value(project: &Project, input: &str) -> Result<(String, String)> {
    let is_key = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    if let Some(key) = input.strip_prefix('$').filter(|k| is_key(k)) {
        let named = project.config.scalar(key).unwrap_or("");
        let value = if named.is_empty() {
            "<unset>".to_string()
        } else {
            tree_hash(&project.dir.join(named))?
        };
        return Ok((format!("file:${key}"), value));
    }
    if is_key(input) {
        let value = match project.config.vars.get(input) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Array(a)) => serde_json::to_string(a)?,
            None => "<unset>".into(),
        };
        return Ok((format!("config:{input}"), value));
    }
    let rel = input.trim_end_matches('/');
    Ok((format!("file:{rel}"), tree_hash(&project.dir.join(rel))?))
}

/// Why a phase's fingerprint differs from a stored one, in words: `PACKAGES changed: +htop`.
pub fn explain(old: &Fingerprint, new: &Fingerprint) -> Vec<String> {
    let mut why = Vec::new();
    let keys: std::collections::BTreeSet<&String> = old.parts.keys().chain(new.parts.keys()).collect();
    for k in keys {
        let (a, b) = (old.parts.get(k), new.parts.get(k));
        if a == b {
            continue;
        }
        let line = match k.split_once(':') {
            Some(("config", key)) => match (a.and_then(|s| list(s)), b.and_then(|s| list(s))) {
                (Some(x), Some(y)) => {
                    let added: Vec<String> = y
                        .iter()
                        .filter(|i| !x.contains(i))
                        .map(|i| format!("+{i}"))
                        .collect();
                    let gone: Vec<String> = x
                        .iter()
                        .filter(|i| !y.contains(i))
                        .map(|i| format!("-{i}"))
                        .collect();
                    format!("{key} changed: {}", [added, gone].concat().join(" "))
                }
                _ => format!(
                    "{key} changed: {} -> {}",
                    a.map_or("<unset>", |s| s),
                    b.map_or("<unset>", |s| s)
                ),
            },
            Some(("file", path)) => format!("{path} changed"),
            Some(("tool", name)) => format!(
                "{name} changed: {} -> {}",
                a.map_or("?", |s| s),
                b.map_or("?", |s| s)
            ),
            _ if k == "script" => "the phase script changed".into(),
            _ if k == "after" => "an earlier phase changed".into(),
            _ => format!("{k} changed"),
        };
        why.push(line);
    }
    // "an earlier phase changed" says nothing new when this phase's own inputs changed too.
    if why.len() > 1 {
        why.retain(|w| w != "an earlier phase changed");
    }
    why
}

fn list(s: &str) -> Option<Vec<String>> {
    serde_json::from_str::<Vec<String>>(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(parts: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            digest: String::new(),
            parts: parts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn explains_array_and_scalar_changes() {
        let old = fp(&[
            ("config:PACKAGES", r#"["vim"]"#),
            ("config:DISTRO", "debian"),
            ("after", "a"),
        ]);
        let new = fp(&[
            ("config:PACKAGES", r#"["vim","htop"]"#),
            ("config:DISTRO", "arch"),
            ("after", "b"),
        ]);
        assert_eq!(
            explain(&old, &new),
            vec!["DISTRO changed: debian -> arch", "PACKAGES changed: +htop"]
        );
        let only_after = fp(&[("after", "c")]);
        assert_eq!(
            explain(&fp(&[("after", "a")]), &only_after),
            vec!["an earlier phase changed"]
        );
    }
}
