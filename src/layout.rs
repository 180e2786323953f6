//! The module layout as a test checks it: which module uses which (`crate::x`, and `super::x`
//! between the files of one folder), and that those uses never go round in a circle. A cycle
//! means two modules are one room; the failure names the files that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `from -> to -> the files where from uses to`.
pub type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The names a path expression after `crate::` or `super::` starts with: `a` in `a::b`, and
/// `a`, `b` in `{a::x, b}`.
fn leading_names(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let (mut names, mut depth, mut start) = (Vec::new(), 0, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                names.push(ident(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    names
}

/// The modules `source` names after `prefix` (`crate::` or `super::`), outside comments and
/// the tests at the end of a file.
pub fn uses(source: &str, prefix: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            out.extend(leading_names(rest).into_iter().filter(|n| !n.is_empty()));
        }
    }
    out
}

/// Edges between the top-level modules of `src`, and between the files of each folder module
/// (as `folder/a -> folder/b`).
pub fn edges(src: &Path) -> Edges {
    let mut edges = Edges::new();
    let mut add = |from: String, to: String, file: &str| {
        if from != to {
            edges
                .entry(from)
                .or_default()
                .entry(to)
                .or_default()
                .insert(file.to_string());
        }
    };
    let tops: BTreeSet<String> = std::fs::read_dir(src)
        .expect("reading src/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let name = name.strip_suffix(".rs").map(str::to_string).unwrap_or(name);
            (!matches!(name.as_str(), "lib" | "main")).then_some(name)
        })
        .collect();
    for entry in walkdir::WalkDir::new(src).into_iter().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel = path.strip_prefix(src).unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
        let top = parts[0].to_string();
        if !tops.contains(&top) {
            continue;
        }
        let source = std::fs::read_to_string(path).expect("reading a source file");
        let mut crate_uses = uses(&source, "crate::");
        // In a file directly under the root, `super::x` is `crate::x`.
        if parts.len() == 1 {
            crate_uses.extend(uses(&source, "super::"));
        }
        for to in crate_uses.iter().filter(|m| tops.contains(*m)) {
            add(top.clone(), to.clone(), &rel);
        }
        // Inside a folder: `super::x` from folder/a.rs, and `crate::folder::x`.
        if parts.len() == 2 && parts[1] != "mod" {
            let siblings = |name: &str| {
                src.join(&top).join(format!("{name}.rs")).exists() || src.join(&top).join(name).is_dir()
            };
            let mut inner: BTreeSet<String> = uses(&source, "super::");
            let qualified = format!("crate::{top}::");
            inner.extend(uses(&source, &qualified));
            for to in inner.iter().filter(|n| siblings(n)) {
                add(format!("{top}/{}", parts[1]), format!("{top}/{to}"), &rel);
            }
        }
    }
    edges
}

/// The first cycle found, as the modules along it (the first one repeated at the end).
pub fn cycle(edges: &Edges) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &Edges,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grouped_and_nested_uses() {
        let src =
            "use crate::{proc, cache::{self, Cache}, tools};\nlet x = crate::hash::hex(b);\n// crate::nope\n";
        assert_eq!(
            uses(src, "crate::").into_iter().collect::<Vec<_>>(),
            ["cache", "hash", "proc", "tools"]
        );
        assert!(uses("#[cfg(test)]\nuse crate::later;", "crate::").is_empty());
    }

    #[test]
    fn finds_a_cycle_and_names_it() {
        let mut e = Edges::new();
        for (a, b) in [("cache", "resync"), ("resync", "proc"), ("resync", "cache")] {
            e.entry(a.into()).or_default().entry(b.into()).or_default();
        }
        assert_eq!(
            cycle(&e),
            Some(vec!["cache".into(), "resync".into(), "cache".into()])
        );
        e.get_mut("resync").unwrap().remove("cache");
        assert_eq!(cycle(&e), None);
    }

    /// Every program is started by proc.rs, which logs its command line and names it when it
    /// fails: elsewhere a `Command` is only built and handed to `proc::spawn`.
    #[test]
    fn programs_start_only_in_proc() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&src).into_iter().filter_map(|e| e.ok()) {
            let rel = entry
                .path()
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !rel.ends_with(".rs") || rel == "proc.rs" || rel == "layout.rs" {
                continue;
            }
            let source = std::fs::read_to_string(entry.path()).unwrap();
            let code = source.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or("");
                if [".output()", ".status()", ".spawn()", "duct::"]
                    .iter()
                    .any(|p| line.contains(p))
                {
                    found.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "programs started outside proc.rs:\n{}",
            found.join("\n")
        );
    }

    /// The real source trees (the runner's and the squashfs crate's): no two modules use each
    /// other, directly or round a circle.
    #[test]
    fn no_module_uses_one_that_uses_it_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let squashfs = edges(&root.join("crates/squashfs/src"));
        assert!(squashfs.contains_key("inode"), "{squashfs:?}");
        check_no_cycle(&squashfs);
        let edges = edges(&root.join("src"));
        assert!(
            edges.contains_key("cmd") && edges.contains_key("cmd/build"),
            "{edges:?}"
        );
        check_no_cycle(&edges);
    }

    fn check_no_cycle(edges: &Edges) {
        if let Some(c) = cycle(edges) {
            let steps: Vec<String> = c
                .windows(2)
                .map(|w| {
                    let files: Vec<&str> = edges[&w[0]][&w[1]].iter().map(String::as_str).collect();
                    format!("  {} -> {} (in {})", w[0], w[1], files.join(", "))
                })
                .collect();
            panic!("the modules use each other in a circle:\n{}", steps.join("\n"));
        }
    }
}
