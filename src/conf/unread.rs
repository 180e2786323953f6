//! Keys that nothing reads: a typo such as `IMAGE_VERISON=2` would otherwise build the old
//! version without a word. "Read" is judged by name: a key is read when the runner knows it,
//! another config value refers to it, or it appears as a word in a phase or helper script.

use super::Vars;
use std::collections::BTreeSet;

/// A key set in the config that nothing reads, with its line and the closest known name.
#[derive(Debug, PartialEq)]
pub struct Unread {
    pub key: String,
    pub line: Option<usize>,
    pub closest: Option<String>,
}

/// `readers` are the texts of the scripts that read the config, `conf_src` the config itself.
pub fn unread(vars: &Vars, conf_src: &str, readers: &[String], runner_keys: &[&str]) -> Vec<Unread> {
    let mut known: BTreeSet<&str> = runner_keys.iter().copied().collect();
    for text in readers {
        known.extend(words(text));
    }
    let referenced: BTreeSet<&str> = references(conf_src).collect();
    vars.iter()
        .filter(|(k, _)| !known.contains(k) && !referenced.contains(k))
        .map(|(k, _)| Unread {
            key: k.to_string(),
            line: vars.line_of(k),
            closest: closest(k, known.iter().copied()),
        })
        .collect()
}

/// Every word that could be a variable name.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// `$NAME` and `${NAME...}` in the config's own text.
fn references(src: &str) -> impl Iterator<Item = &str> {
    src.match_indices('$').filter_map(|(i, _)| {
        let rest = src[i + 1..].strip_prefix('{').unwrap_or(&src[i + 1..]);
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    })
}

/// The candidate at the smallest edit distance (a swap of two letters counts once), if close.
fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (key.len() / 4).clamp(1, 3);
    candidates
        .map(|c| (distance(key, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c.to_string())
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::parse;

    fn check(src: &str, phase: &str) -> Vec<Unread> {
        let vars = parse(src, &|_| None).unwrap();
        unread(&vars, src, &[phase.to_string()], &["IMAGE_ID", "IMAGE_VERSION"])
    }

    #[test]
    fn a_misspelt_key_is_named_with_the_key_it_was_meant_to_be() {
        let found = check("IMAGE_ID=a\nIMAGE_VERSION=1\nIMAGE_VERISON=2\n", "echo $IMAGE_ID");
        assert_eq!(
            found,
            [Unread {
                key: "IMAGE_VERISON".into(),
                line: Some(3),
                closest: Some("IMAGE_VERSION".into())
            }]
        );
        let found = check(
            "IMAGE_ID=a\nIMAGE_VERSION=1\nROOT_ZSDT_LEVEL=3\n",
            "zstd -${ROOT_ZSTD_LEVEL}",
        );
        assert_eq!(found[0].closest.as_deref(), Some("ROOT_ZSTD_LEVEL"));
        let found = check(
            "IMAGE_ID=a\nIMAGE_VERSION=1\nWHOLLY_NEW=3\n",
            "zstd -${ROOT_ZSTD_LEVEL}",
        );
        assert_eq!(found[0].closest, None);
    }

    #[test]
    fn keys_read_by_a_script_or_another_value_are_not_reported() {
        let src = "IMAGE_ID=a\nIMAGE_VERSION=1\nBASE=x\nLIST=(${BASE}/a)\nUSED=1\n";
        assert_eq!(check(src, "for u in \"${LIST[@]}\"; do [ \"$USED\" ]; done"), []);
    }

    #[test]
    fn distance_counts_a_swap_once() {
        assert_eq!(distance("VERISON", "VERSION"), 1);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("", "ab"), 2);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
