//! The image.conf parser must agree with bash: every fixture (and every generated config) is
//! sourced by a real bash in an empty environment and compared with what the parser makes.

use loisto_image::conf::{Value, Vars, parse};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const ENV_NAME: &str = "LOISTO_TEST_ENV";
const ENV_VALUE: &str = "from-env";

/// Sources `src` in `env -i bash` inside an empty directory (so globs match nothing, as in
/// the parser) and returns every variable the file defined.
fn bash_eval(src: &str) -> BTreeMap<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fixture.conf");
    std::fs::write(&file, src).unwrap();
    let empty = dir.path().join("cwd");
    std::fs::create_dir(&empty).unwrap();
    let script = r#"
        __before=" $(compgen -v | tr '\n' ' ') "
        source "$1" || exit 99
        for __v in $(compgen -v); do
            [[ $__before == *" $__v "* || $__v == __* || $__v == PIPESTATUS || $__v == BASH_* || $__v == _ ]] && continue
            if [[ $(declare -p "$__v") == "declare -a"* || $(declare -p "$__v") == "declare -ax"* ]]; then
                declare -n __ref="$__v"
                printf 'A\0%s\0%s\0' "$__v" "${#__ref[@]}"
                (( ${#__ref[@]} )) && printf '%s\0' "${__ref[@]}"
                unset -n __ref
            else
                printf 'S\0%s\0%s\0' "$__v" "${!__v}"
            fi
        done
    "#;
    let out = Command::new("env")
        .args([
            "-i",
            &format!("{ENV_NAME}={ENV_VALUE}"),
            "bash",
            "--norc",
            "--noprofile",
            "-c",
            script,
            "bash",
        ])
        .arg(&file)
        .current_dir(&empty)
        .output()
        .expect("running bash");
    assert!(
        out.status.success(),
        "bash failed on:\n{src}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split('\0');
    let mut vars = BTreeMap::new();
    while let Some(kind) = fields.next() {
        if kind.is_empty() {
            break;
        }
        let name = fields.next().unwrap().to_string();
        let value = if kind == "A" {
            let n: usize = fields.next().unwrap().parse().unwrap();
            Value::Array((0..n).map(|_| fields.next().unwrap().to_string()).collect())
        } else {
            Value::Str(fields.next().unwrap().to_string())
        };
        vars.insert(name, value);
    }
    vars
}

fn parser_eval(src: &str) -> Result<BTreeMap<String, Value>, String> {
    let env = |k: &str| (k == ENV_NAME).then(|| ENV_VALUE.to_string());
    let vars: Vars = parse(src, &env).map_err(|e| format!("line {}: {}", e.line, e.msg))?;
    Ok(vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

fn assert_same(src: &str, origin: &str) {
    let ours = parser_eval(src).unwrap_or_else(|e| panic!("{origin}: parser refused valid bash: {e}\n{src}"));
    let theirs = bash_eval(src);
    assert_eq!(ours, theirs, "{origin}: parser and bash disagree on:\n{src}");
}

#[test]
fn every_fixture_matches_bash() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conf");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the differential corpus should have at least 30 files"
    );
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        assert_same(&src, &f.display().to_string());
    }
}

/// splitmix64: small, seedable, good enough to pick grammar productions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NAMES: &[&str] = &["A", "B", "CC", "D_1", "_E", "PKGS"];
const PLAIN: &[&str] = &[
    "x", "usr/lib", "a.b", "v1", "k=v", "p:q", "50%", "at@", "+", "-z", ",", "gl*b", "q?",
];
const SQ: &[&str] = &["two words", "$NOPE", "\\n", "\"dq\"", "", "*", " lead", "a;b|c&d"];
const DQ: &[&str] = &[
    "sp ace", "\\\"", "\\$", "\\\\", "\\x", "'", "", "#h", ";|&<>", "(p)",
];

struct Gen {
    rng: Rng,
    defined: Vec<&'static str>,
}

impl Gen {
    fn name_ref(&mut self, in_dq: bool, array_ctx: bool, last: bool) -> String {
        if self.defined.is_empty() || self.rng.below(5) == 0 {
            let d = self.rng.pick(&["dflt", "two w", ""]).to_string();
            return match self.rng.below(3) {
                0 => format!("${{{ENV_NAME}:-{}}}", d.replace(' ', "_")),
                _ if in_dq || !array_ctx => format!("${{NOPE:-{d}}}"),
                _ => format!("${{NOPE:-{}}}", d.replace(' ', "\\ ")),
            };
        }
        let n = *self.rng.pick(&self.defined);
        match self.rng.below(4) {
            // `$A` followed by a letter would name another variable.
            0 if last => format!("${n}"),
            0 => format!("${{{n}}}"),
            1 => format!("${{{n}}}"),
            2 => format!("${{{n}[@]}}"),
            _ => format!("${{{n}:-d}}"),
        }
    }

    fn part(&mut self, array_ctx: bool, first: bool, last: bool) -> String {
        match self.rng.below(6) {
            0 => {
                let p = self.rng.pick(PLAIN).to_string();
                if first && p.starts_with('#') {
                    format!("x{p}")
                } else {
                    p
                }
            }
            1 => format!("'{}'", self.rng.pick(SQ)),
            2 => {
                let mut s = String::from("\"");
                let k = self.rng.below(3) + 1;
                for j in 0..k {
                    if self.rng.below(3) == 0 {
                        s.push_str(&self.name_ref(true, array_ctx, j + 1 == k));
                    } else {
                        s.push_str(self.rng.pick(DQ).as_ref());
                    }
                }
                s.push('"');
                s
            }
            3 => self.name_ref(false, array_ctx, last),
            4 => self
                .rng
                .pick(&["\\ ", "\\$", "\\'", "\\\"", "\\*", "\\#", "\\;"])
                .to_string(),
            _ => "y".to_string(),
        }
    }

    fn word(&mut self, array_ctx: bool) -> String {
        let k = self.rng.below(3) + 1;
        (0..k).map(|i| self.part(array_ctx, i == 0, i + 1 == k)).collect()
    }

    fn statement(&mut self) -> String {
        let name = *self.rng.pick(NAMES);
        let op = if self.rng.below(4) == 0 { "+=" } else { "=" };
        let export = if self.rng.below(6) == 0 { "export " } else { "" };
        let value = if self.rng.below(2) == 0 {
            let sep = if self.rng.below(3) == 0 { " \\\n  " } else { " " };
            let items: Vec<String> = (0..self.rng.below(4)).map(|_| self.word(true)).collect();
            let comment = if self.rng.below(4) == 0 { " # note\n" } else { "" };
            format!("({comment}{}{sep})", items.join(sep))
        } else {
            self.word(false)
        };
        if !self.defined.contains(&name) {
            self.defined.push(name);
        }
        format!("{export}{name}{op}{value}")
    }
}

#[test]
fn generated_configs_match_bash() {
    let seed: u64 = std::env::var("LOISTO_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261127);
    let cases: usize = std::env::var("LOISTO_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250);
    let mut g = Gen {
        rng: Rng(seed),
        defined: Vec::new(),
    };
    for case in 0..cases {
        g.defined.clear();
        let n = g.rng.below(6) + 1;
        let mut src = String::new();
        for _ in 0..n {
            src.push_str(&g.statement());
            src.push_str(if g.rng.below(5) == 0 { "; " } else { "\n" });
        }
        assert_same(&src, &format!("generated case {case} (seed {seed})"));
    }
}
