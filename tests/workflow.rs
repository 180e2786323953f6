//! The GitHub Actions workflow and the READMEs must not drift apart: the commands people are
//! told to type are the ones CI runs, and CI calls no loisto-image option README leaves out.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// The commands of a README's first `sh` block (comments dropped, `&&` chains split).
fn quick_start(readme: &str) -> Vec<String> {
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("no ```sh block")
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .flat_map(|l| l.split("&&"))
        .map(|c| c.trim().to_string())
        .collect()
}

/// The shell lines of the workflow's `run:` steps.
fn workflow_lines(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_run: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(i) = in_run {
            if line.trim().is_empty() || indent > i {
                out.push(line.trim().to_string());
                continue;
            }
            in_run = None;
        }
        let t = line.trim_start().trim_start_matches("- ");
        if let Some(rest) = t.strip_prefix("run:") {
            let rest = rest.trim();
            if rest.is_empty() || rest == "|" || rest.starts_with(">") {
                in_run = Some(indent);
            } else {
                out.push(rest.to_string());
            }
        }
    }
    // Folded (`>-`) scripts are one command over several lines.
    out.join("\n")
        .replace(" \\\n", " ")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether `want`'s words appear in `line` in order (extra words between them allowed).
fn runs(line: &str, want: &str) -> bool {
    let mut words = line.split_whitespace();
    want.split_whitespace().all(|w| words.any(|x| x == w))
}

fn check(readme_name: &str, readme: &str, lines: &[String]) -> Vec<String> {
    let script = lines.join(" ");
    quick_start(readme)
        .into_iter()
        .map(|c| c.trim_start_matches("sudo ").to_string())
        // The full test suite is the README's second command; CI (the workflow) runs the fast one.
        .filter(|c| !c.starts_with("cargo test"))
        .filter(|c| !lines.iter().any(|l| runs(l, c)) && !runs(&script, c))
        .map(|c| format!("{readme_name} says `{c}`, which the workflow never runs"))
        .collect()
}

fn undocumented(readme: &str, lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "loisto-image") else {
            continue;
        };
        for w in &words[at + 1..] {
            let flag = w
                .split('=')
                .next()
                .unwrap()
                .trim_end_matches(|c: char| !(c.is_alphanumeric() || c == '-'));
            if flag.starts_with("--") && !readme.contains(flag) {
                out.push(format!(
                    "the workflow runs `loisto-image ... {flag}`, which README.md does not document"
                ));
            }
        }
    }
    out
}

#[test]
fn the_workflow_runs_the_commands_the_readmes_give_and_nothing_undocumented() {
    let lines = workflow_lines(&read(".github/workflows/image.yml"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("loisto-image") && l.contains(" build")),
        "{lines:#?}"
    );
    let readme = read("README.md");
    let mut problems = check("README.md", &readme, &lines);
    problems.extend(check("src/init/README.md", &read("src/init/README.md"), &lines));
    problems.extend(undocumented(&readme, &lines));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_drift_check_catches_a_renamed_command() {
    let lines = workflow_lines(&read(".github/workflows/image.yml"));
    let readme = read("README.md").replace("scripts/install-host-deps.sh &&", "scripts/setup-host.sh &&");
    assert_eq!(
        check("README.md", &readme, &lines),
        ["README.md says `scripts/setup-host.sh`, which the workflow never runs"]
    );
    let readme = read("README.md").replace("loisto-image vm\n", "loisto-image boot\n");
    assert_eq!(
        check("README.md", &readme, &lines),
        ["README.md says `loisto-image boot`, which the workflow never runs"]
    );
    let mut lines = lines;
    lines.push("loisto-image vm --no-such-flag".into());
    assert_eq!(
        undocumented(&read("README.md"), &lines),
        ["the workflow runs `loisto-image ... --no-such-flag`, which README.md does not document"]
    );
}

#[test]
fn the_workflow_installs_the_version_of_the_tool_that_wrote_it() {
    let yaml = read(".github/workflows/image.yml");
    let pinned = format!("LOISTO_IMAGE_REF: v{}", env!("CARGO_PKG_VERSION"));
    assert!(yaml.contains(&pinned), "the workflow must pin {pinned}");
}
