//! image.conf, parsed once into a [`Config`] that every subcommand shares.

mod parse;
mod unread;
mod vars;
mod words;

pub use parse::{ParseError, is_name, parse};
pub use unread::{Unread, unread};
pub use vars::{Value, Vars};

use crate::error::UsageError;
use crate::hash::hex;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub image_id: String,
    pub image_version: String,
    pub vars: Vars,
}

impl Config {
    /// Reads `path`, applies `--set KEY=VALUE` overrides and validates the required keys.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!(
                "cannot read config {}: {e} (run in an image project, or pass -C DIR / --config FILE)",
                path.display()
            ))
        })?;
        Self::from_str(path, &src, overrides, &|k| std::env::var(k).ok())
    }

    pub fn from_str(
        path: &Path,
        src: &str,
        overrides: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let mut vars = parse(src, env)
            .map_err(|e| UsageError::new(format!("{}:{}: {}", path.display(), e.line, e.msg)))?;
        for o in overrides {
            apply_override(&mut vars, o)?;
        }
        let required = |key: &str| -> Result<String> {
            let where_ = match vars.line_of(key) {
                Some(l) => format!("{}:{l}", path.display()),
                None if vars.get(key).is_some() => "--set".to_string(),
                None => path.display().to_string(),
            };
            let v = match vars.get(key) {
                Some(Value::Str(s)) => s.clone(),
                Some(Value::Array(_)) => {
                    return Err(UsageError::new(format!(
                        "{where_}: {key} must be a plain value, not an array"
                    ))
                    .into());
                }
                None => {
                    return Err(UsageError::new(format!(
                        "{where_}: {key} is not set; add {key}=... to the config"
                    ))
                    .into());
                }
            };
            if !is_safe_ident(&v) {
                return Err(UsageError::new(format!(
                    "{where_}: {key}={v:?} is not allowed: use letters, digits, `.`, `_`, `-` and start with a letter or digit"
                ))
                .into());
            }
            Ok(v)
        };
        let image_id = required("IMAGE_ID")?;
        let image_version = required("IMAGE_VERSION")?;
        Ok(Config {
            path: path.to_path_buf(),
            image_id,
            image_version,
            vars,
        })
    }

    pub fn scalar(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(Value::as_scalar)
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        self.vars.get(key).map(Value::as_list).unwrap_or_default()
    }

    /// A stable digest of the resolved values, recorded in the manifest.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in self.vars.iter() {
            h.update(k.as_bytes());
            h.update([0]);
            for item in v.as_list() {
                h.update(item.as_bytes());
                h.update([0]);
            }
            h.update([matches!(v, Value::Array(_)) as u8, 1]);
        }
        hex(&h.finalize())
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in self.vars.iter() {
            let j = match v {
                Value::Str(s) => serde_json::Value::String(s.clone()),
                Value::Array(a) => a.iter().cloned().map(serde_json::Value::String).collect(),
            };
            m.insert(k.to_string(), j);
        }
        serde_json::Value::Object(m)
    }
}

/// `--set KEY=VALUE`: a key that is an array in the config takes VALUE split like shell words.
fn apply_override(vars: &mut Vars, o: &str) -> Result<()> {
    let (key, value) = o
        .split_once('=')
        .ok_or_else(|| UsageError::new(format!("--set {o:?}: expected KEY=VALUE")))?;
    if !is_name(key) {
        return Err(UsageError::new(format!("--set {o:?}: `{key}` is not a valid variable name")).into());
    }
    if let Some(why) = parse::special_name(key) {
        return Err(UsageError::new(format!("--set {key}: {why}")).into());
    }
    let new = match vars.get(key) {
        Some(Value::Array(_)) => Value::Array(
            shell_words::split(value)
                .map_err(|e| UsageError::new(format!("--set {key}: {e} in {value:?}")))
                .context("splitting an array override")?,
        ),
        _ => Value::Str(value.to_string()),
    };
    vars.set(key, new);
    vars.set_line(key, None);
    Ok(())
}

pub fn is_safe_ident(v: &str) -> bool {
    let mut cs = v.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphanumeric())
        && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && v.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str, sets: &[&str]) -> Result<Config> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_str(Path::new("image.conf"), src, &sets, &|_| None)
    }

    #[test]
    fn required_keys_are_checked_with_their_line() {
        let e = load("IMAGE_ID=ok\n\nIMAGE_VERSION='1 0'\n", &[]).unwrap_err();
        assert!(format!("{e}").starts_with("image.conf:3: IMAGE_VERSION"), "{e}");
        let e = load("IMAGE_VERSION=1\n", &[]).unwrap_err();
        assert!(format!("{e}").contains("IMAGE_ID is not set"), "{e}");
    }

    #[test]
    fn overrides_replace_values_and_split_arrays() {
        let c = load(
            "IMAGE_ID=a\nIMAGE_VERSION=1\nP=(x y)\n",
            &["IMAGE_VERSION=2", "P=a 'b c'"],
        )
        .unwrap();
        assert_eq!(c.image_version, "2");
        assert_eq!(c.list("P"), vec!["a", "b c"]);
        assert!(load("IMAGE_ID=a\nIMAGE_VERSION=1\n", &["1X=2"]).is_err());
    }

    #[test]
    fn digest_changes_with_values() {
        let a = load("IMAGE_ID=a\nIMAGE_VERSION=1\n", &[]).unwrap();
        let b = load("IMAGE_ID=a\nIMAGE_VERSION=2\n", &[]).unwrap();
        assert_ne!(a.digest(), b.digest());
    }
}
