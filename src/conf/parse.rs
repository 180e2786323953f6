//! A parser for the subset of bash that image.conf files use: variable assignments only.
//!
//! The file must stay valid bash (phase scripts and people may `source` it), so everything
//! accepted here means exactly what bash makes of it; everything else is refused with the
//! line it is on, because a config that runs code would make builds unexplainable.

use super::vars::Vars;
use super::words::{Builder, Mode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// Reads a variable from the calling environment; only `${NAME:-default}` consults it.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn parse(src: &str, env: EnvLookup) -> Result<Vars, ParseError> {
    check_encoding(src)?;
    let mut p = Parser {
        s: src.chars().collect(),
        i: 0,
        line: 1,
        vars: Vars::default(),
        env,
    };
    p.file()?;
    Ok(p.vars)
}

/// Bytes bash reads differently from what an editor shows: refused with the cause named.
fn check_encoding(src: &str) -> Result<(), ParseError> {
    let at = |i: usize, msg: &str| ParseError {
        line: src[..i].matches('\n').count() + 1,
        msg: msg.to_string(),
    };
    if src.starts_with('\u{feff}') {
        return Err(at(
            0,
            "the file starts with a UTF-8 byte order mark, which bash reads as part of the first \
             name; save it without one",
        ));
    }
    if let Some(i) = src.find('\0') {
        return Err(at(i, "a NUL byte; bash drops it and no phase could be given it"));
    }
    if let Some(i) = src.find("\r\n") {
        return Err(at(
            i,
            "Windows line endings (CRLF): bash keeps the `\\r` in values; convert the file, e.g. \
             `sed -i 's/\\r$//' image.conf`",
        ));
    }
    Ok(())
}

/// Names bash gives a meaning of its own (read-only, recomputed, or read at start-up): set
/// here, they would not hold, or would change how every phase's bash behaves.
const SHELL_SPECIAL: &[&str] = &[
    "IFS",
    "UID",
    "EUID",
    "PPID",
    "PWD",
    "OLDPWD",
    "RANDOM",
    "SRANDOM",
    "SECONDS",
    "LINENO",
    "SHELLOPTS",
    "BASHOPTS",
    "BASHPID",
    "BASH_ENV",
    "ENV",
    "CDPATH",
    "GLOBIGNORE",
    "GROUPS",
    "FUNCNAME",
    "BASH_SOURCE",
    "BASH_LINENO",
    "BASH_VERSINFO",
    "BASH_ARGV",
    "BASH_ARGC",
    "EPOCHSECONDS",
    "EPOCHREALTIME",
    "OPTIND",
    "OPTARG",
    "POSIXLY_CORRECT",
    "PROMPT_COMMAND",
    "SHELL",
    "SHLVL",
    "HISTFILE",
];

/// Why `name` may not be a config key, if it may not.
pub fn special_name(name: &str) -> Option<String> {
    SHELL_SPECIAL.contains(&name).then(|| {
        format!("{name} is special to bash (read-only, recomputed or read at start-up); use another name")
    })
}

const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac", "select",
    "in", "time", "!", "[[", "]]", "{", "}",
];

struct Parser<'a> {
    s: Vec<char>,
    i: usize,
    line: usize,
    vars: Vars,
    env: EnvLookup<'a>,
}

type R<T> = Result<T, ParseError>;

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.s.get(self.i + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        self.err_at(self.line, msg)
    }

    fn err_at<T>(&self, line: usize, msg: impl Into<String>) -> R<T> {
        Err(ParseError {
            line,
            msg: msg.into(),
        })
    }

    /// Skips spaces, tabs and backslash-newline continuations.
    fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t') => self.i += 1,
                Some('\\') if self.peek_at(1) == Some('\n') => {
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                return;
            }
            self.i += 1;
        }
    }

    fn file(&mut self) -> R<()> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(()),
                Some('\n') => {
                    self.bump();
                }
                Some('#') => self.skip_comment(),
                Some(';') => return self.err("unexpected `;` with no assignment before it"),
                Some(_) => self.statement()?,
            }
        }
    }

    fn at_statement_end(&self) -> bool {
        matches!(self.peek(), None | Some('\n' | ';' | '#'))
    }

    /// One line's worth of assignments: `[export] A=1 B=( ... ) C+=x`.
    fn statement(&mut self) -> R<()> {
        let mut exporting = false;
        let mut count = 0;
        loop {
            self.skip_blanks();
            if self.at_statement_end() {
                break;
            }
            if count == 0 && !exporting && self.word_is("export") {
                self.i += "export".len();
                exporting = true;
                continue;
            }
            if let Some((name, append)) = self.assignment_head()? {
                self.assignment_value(&name, append)?;
            } else if exporting && self.export_name()? {
                // `export NAME` of a defined variable changes nothing we model.
            } else {
                return Err(self.command_error());
            }
            count += 1;
            match self.peek() {
                None | Some(' ' | '\t' | '\n' | ';' | '#') => {}
                Some('\\') if self.peek_at(1) == Some('\n') => {}
                Some(c) => return self.err(format!("unexpected `{c}` after the assignment")),
            }
        }
        if exporting && count == 0 {
            return self.err("`export` needs an assignment here (export KEY=value)");
        }
        if self.peek() == Some(';') {
            self.bump();
            self.skip_blanks();
            if self.peek() == Some(';') {
                return self.err("unexpected `;;` (case statements are not allowed)");
            }
        }
        Ok(())
    }

    /// Is the text at the cursor exactly `w` followed by a word boundary?
    fn word_is(&self, w: &str) -> bool {
        let n = w.chars().count();
        w.chars().enumerate().all(|(k, c)| self.peek_at(k) == Some(c))
            && matches!(self.peek_at(n), None | Some(' ' | '\t' | '\n' | ';'))
    }

    fn name_run(&self) -> String {
        let mut k = 0;
        let mut out = String::new();
        while let Some(c) = self.peek_at(k) {
            if c.is_ascii_alphanumeric() || c == '_' {
                out.push(c);
                k += 1;
            } else {
                break;
            }
        }
        out
    }

    /// Consumes `NAME=` or `NAME+=` if that is what follows.
    fn assignment_head(&mut self) -> R<Option<(String, bool)>> {
        let run = self.name_run();
        if run.is_empty() {
            return Ok(None);
        }
        let n = run.chars().count();
        let (append, op_len) = match (self.peek_at(n), self.peek_at(n + 1)) {
            (Some('='), _) => (false, 1),
            (Some('+'), Some('=')) => (true, 2),
            (Some('['), _) if is_name(&run) => {
                return self.err(format!(
                    "array element assignment `{run}[...]=` is not supported; assign the whole array: {run}=( ... )"
                ));
            }
            _ => return Ok(None),
        };
        if !is_name(&run) {
            return self.err(format!(
                "`{run}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
            ));
        }
        if let Some(why) = special_name(&run) {
            return self.err(why);
        }
        self.i += n + op_len;
        Ok(Some((run, append)))
    }

    fn export_name(&mut self) -> R<bool> {
        let run = self.name_run();
        if run.is_empty()
            || !matches!(
                self.peek_at(run.len()),
                None | Some(' ' | '\t' | '\n' | ';' | '#')
            )
        {
            return Ok(false);
        }
        if !is_name(&run) {
            return self.err(format!("`{run}` is not a valid variable name"));
        }
        if self.vars.get(&run).is_none() {
            return self.err(format!("`export {run}`: {run} is not defined above"));
        }
        self.i += run.len();
        Ok(true)
    }

    fn assignment_value(&mut self, name: &str, append: bool) -> R<()> {
        let line = self.line;
        if self.peek() == Some('(') {
            let items = self.array_value()?;
            self.vars.assign_array(name, items, append);
        } else {
            let mut b = Builder::new(Mode::Scalar);
            self.word(&mut b, Mode::Scalar)?;
            self.vars.assign_scalar(name, b.into_scalar(), append);
        }
        self.vars.set_line(name, Some(line));
        Ok(())
    }

    fn array_value(&mut self) -> R<Vec<String>> {
        let open_line = self.line;
        self.bump(); // (
        let mut b = Builder::new(Mode::Array);
        loop {
            self.skip_blanks();
            match self.peek() {
                None => {
                    return self.err_at(open_line, "array `(` is never closed: add `)`");
                }
                Some('\n') => {
                    self.bump();
                }
                Some(')') => {
                    self.bump();
                    return Ok(b.into_fields());
                }
                Some('#') => self.skip_comment(),
                Some('[') if self.looks_like_indexed_element() => {
                    return self
                        .err("indexed elements `[i]=value` are not supported; list the values in order");
                }
                Some(_) => {
                    self.word(&mut b, Mode::Array)?;
                    b.end_field();
                }
            }
        }
    }

    fn looks_like_indexed_element(&self) -> bool {
        let mut k = 1;
        while let Some(c) = self.peek_at(k) {
            match c {
                ']' => return self.peek_at(k + 1) == Some('='),
                ' ' | '\t' | '\n' | ')' => return false,
                _ => k += 1,
            }
        }
        false
    }

    /// One word: unquoted text, '...', "...", \x and $-expansions, up to a blank.
    fn word(&mut self, b: &mut Builder, mode: Mode) -> R<()> {
        let mut at_start = true;
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' => break,
                ')' if mode == Mode::Array => break,
                ';' if mode == Mode::Scalar => break,
                '#' if at_start && mode == Mode::Array => break,
                ';' => return self.err("`;` is not allowed inside an array"),
                ')' => return self.err("unexpected `)`"),
                '(' => {
                    return self.err(match mode {
                        Mode::Scalar => "`(` is only allowed right after `KEY=` to start an array",
                        Mode::Array => "`(` is not allowed inside an array (no nested arrays)",
                    });
                }
                '|' | '&' | '<' | '>' => {
                    return self.err(format!(
                        "`{c}` (a pipe, redirection or background job) is not allowed; quote it if it is part of a value"
                    ));
                }
                '`' => return self.err("command substitution with backticks is not allowed"),
                '~' if at_start || (mode == Mode::Scalar && self.i > 0 && self.s[self.i - 1] == ':') => {
                    return self.err(
                        "unquoted `~` would expand to a home directory; write the path out or quote it",
                    );
                }
                '{' if mode == Mode::Array => {
                    return self.err("unquoted `{` (brace expansion) is not supported in arrays; quote it");
                }
                '\'' => self.single_quoted(b)?,
                '"' => self.double_quoted(b)?,
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some('\n') => {}
                        Some(e) => b.literal(&e.to_string()),
                        None => b.literal("\\"),
                    }
                }
                '$' => self.dollar(b, false)?,
                _ => {
                    self.bump();
                    b.literal(&c.to_string());
                }
            }
            at_start = false;
        }
        Ok(())
    }

    fn single_quoted(&mut self, b: &mut Builder) -> R<()> {
        let open = self.line;
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return self.err_at(open, "single quote `'` is never closed"),
                Some('\'') => break,
                Some(c) => text.push(c),
            }
        }
        b.open_double_quote();
        b.literal(&text);
        b.close_double_quote();
        Ok(())
    }

    fn double_quoted(&mut self, b: &mut Builder) -> R<()> {
        let open = self.line;
        self.bump();
        b.open_double_quote();
        loop {
            match self.peek() {
                None => return self.err_at(open, "double quote `\"` is never closed"),
                Some('"') => {
                    self.bump();
                    break;
                }
                Some(_) => self.double_quoted_char(b)?,
            }
        }
        b.close_double_quote();
        Ok(())
    }

    /// One unit of double-quoted text: a character, an escape or an expansion.
    fn double_quoted_char(&mut self, b: &mut Builder) -> R<()> {
        match self.peek() {
            Some('\\') => {
                self.bump();
                match self.peek() {
                    Some('\n') => {
                        self.bump();
                    }
                    Some(e @ ('$' | '`' | '"' | '\\')) => {
                        self.bump();
                        b.literal(&e.to_string());
                    }
                    _ => b.literal("\\"),
                }
            }
            Some('$') => self.dollar(b, true)?,
            Some('`') => return self.err("command substitution with backticks is not allowed"),
            Some(c) => {
                self.bump();
                b.literal(&c.to_string());
            }
            None => {}
        }
        Ok(())
    }

    fn dollar(&mut self, b: &mut Builder, quoted: bool) -> R<()> {
        self.bump(); // $
        match self.peek() {
            Some('(') if self.peek_at(1) == Some('(') => {
                self.err("arithmetic expansion `$((...))` is not allowed")
            }
            Some('(') => self.err("command substitution `$(...)` is not allowed"),
            Some('[') => self.err("arithmetic expansion `$[...]` is not allowed"),
            Some('{') => self.braced(b, quoted),
            Some('\'') if !quoted => {
                self.err("ANSI-C quoting `$'...'` is not supported; use '...' or \"...\"")
            }
            Some('"') if !quoted => self.err("locale quoting `$\"...\"` is not supported; use \"...\""),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name_run();
                self.i += name.len();
                let v = self.lookup(&name, b)?;
                b.expansion(&v, quoted);
                Ok(())
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                self.err(format!("special parameter `${c}` is not allowed in image.conf"))
            }
            _ => {
                b.literal("$");
                Ok(())
            }
        }
    }

    fn lookup(&self, name: &str, b: &Builder) -> R<String> {
        match self.vars.get(name) {
            Some(v) => Ok(v.as_scalar().to_string()),
            None if b.skipping() => Ok(String::new()),
            None => self.err(format!(
                "`{name}` is not defined above; define it first, or use ${{{name}:-default}} to read it from the environment"
            )),
        }
    }

    /// `${NAME}`, `${NAME[@]}` or `${NAME:-default}`.
    fn braced(&mut self, b: &mut Builder, quoted: bool) -> R<()> {
        let open = self.line;
        self.bump(); // {
        let name = self.name_run();
        if name.is_empty() || !is_name(&name) {
            return self.err("only ${NAME}, ${NAME:-default} and ${NAME[@]} are supported");
        }
        self.i += name.len();
        match (self.peek(), self.peek_at(1)) {
            (Some('}'), _) => {
                self.bump();
                let v = self.lookup(&name, b)?;
                b.expansion(&v, quoted);
            }
            (Some('['), _) => {
                if !(self.peek_at(1) == Some('@')
                    && self.peek_at(2) == Some(']')
                    && self.peek_at(3) == Some('}'))
                {
                    return self.err(format!(
                        "only ${{{name}[@]}} is supported for arrays (no indexes or `[*]`)"
                    ));
                }
                self.i += 4;
                match self.vars.get(&name) {
                    Some(v) => b.list(&v.as_list(), quoted),
                    None if b.skipping() => {}
                    None => return self.lookup(&name, b).map(|_| ()),
                }
            }
            (Some(':'), Some('-')) => {
                self.i += 2;
                let value = match self.vars.get(&name) {
                    Some(v) => Some(v.as_scalar().to_string()),
                    None => (self.env)(&name),
                };
                let use_default = value.as_deref().unwrap_or("").is_empty();
                if !use_default {
                    b.expansion(value.as_deref().unwrap_or(""), quoted);
                    b.begin_skip();
                }
                let r = self.default_word(b, quoted, open);
                if !use_default {
                    b.end_skip();
                }
                r?;
            }
            _ => {
                return self.err(format!(
                    "`${{{name}...}}`: only ${{{name}}}, ${{{name}:-default}} and ${{{name}[@]}} are supported"
                ));
            }
        }
        Ok(())
    }

    /// The `default` of `${NAME:-default}`, up to the closing `}`. Its unquoted text is
    /// subject to splitting like any expansion; inside double quotes, `'` is literal.
    fn default_word(&mut self, b: &mut Builder, quoted: bool, open: usize) -> R<()> {
        let mut inner_dq = false;
        loop {
            let Some(c) = self.peek() else {
                return self.err_at(open, "`${` is never closed: add `}`");
            };
            let in_dq = quoted || inner_dq;
            match c {
                '}' if !inner_dq => {
                    self.bump();
                    return Ok(());
                }
                '"' => {
                    self.bump();
                    if !quoted {
                        if inner_dq {
                            b.close_double_quote();
                        } else {
                            b.open_double_quote();
                        }
                    }
                    inner_dq = !inner_dq;
                }
                _ if in_dq => self.double_quoted_char(b)?,
                '\'' => self.single_quoted(b)?,
                '`' => return self.err("command substitution with backticks is not allowed"),
                '$' => self.dollar(b, false)?,
                '\\' => {
                    self.bump();
                    match self.bump() {
                        Some('\n') | None => {}
                        Some(e) => b.literal(&e.to_string()),
                    }
                }
                _ => {
                    self.bump();
                    b.expansion(&c.to_string(), false);
                }
            }
        }
    }

    /// Explains why the word at the cursor cannot start a statement.
    fn command_error(&mut self) -> ParseError {
        let line = self.line;
        let mut w = String::new();
        let mut k = 0;
        while let Some(c) = self.peek_at(k) {
            if matches!(c, ' ' | '\t' | '\n' | ';') {
                break;
            }
            w.push(c);
            k += 1;
        }
        let rest: String = self.s[self.i + k..].iter().take_while(|c| **c != '\n').collect();
        let msg = if let Some(eq) = w
            .find('=')
            .filter(|&p| p > 0 && !w[..p].contains(['"', '\'', '$', '(', '`', '|', '&', '<', '>']))
        {
            let name = w[..eq].trim_end_matches('+');
            format!(
                "`{name}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
            )
        } else if w.starts_with(['|', '&', '<', '>']) {
            format!("`{w}`: pipes, redirections and background jobs are not allowed")
        } else if w.starts_with("$(") || w.starts_with('`') {
            "command substitution is not allowed".to_string()
        } else if w.starts_with("((") {
            "arithmetic `((...))` is not allowed".to_string()
        } else if w.starts_with('(') {
            "subshells `( ... )` are not allowed".to_string()
        } else if w == "source" || w == "." {
            "`source` is not allowed: image.conf cannot include other files".to_string()
        } else if w == "function" || w.ends_with("()") || rest.trim_start().starts_with("()") {
            "function definitions are not allowed".to_string()
        } else if KEYWORDS.contains(&w.as_str()) || w == "[" || w == "test" {
            format!("`{w}`: shell control flow is not allowed; image.conf may only assign variables")
        } else {
            format!("`{w}` is a command; image.conf may only assign variables (KEY=value, KEY=( ... ))")
        };
        ParseError { line, msg }
    }
}

pub fn is_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::super::vars::Value;
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn ok(src: &str) -> Vars {
        parse(src, &no_env).unwrap_or_else(|e| panic!("{src:?}: line {}: {}", e.line, e.msg))
    }

    fn s(v: &Vars, k: &str) -> String {
        match v.get(k) {
            Some(Value::Str(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        }
    }

    fn a(v: &Vars, k: &str) -> Vec<String> {
        match v.get(k) {
            Some(Value::Array(a)) => a.clone(),
            other => panic!("{k}: {other:?}"),
        }
    }

    /// Each (name, value) of `want` is a scalar of `v` with that value.
    #[track_caller]
    fn scalars(v: &Vars, want: &[(&str, &str)]) {
        let got: Vec<(&str, String)> = want.iter().map(|(k, _)| (*k, s(v, k))).collect();
        let want: Vec<(&str, String)> = want.iter().map(|(k, w)| (*k, w.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn scalars_quotes_and_escapes() {
        let v = ok("A=plain\nB='it''s'\nC=\"x \\$y \\q\"\nD=a\\ b\nexport E=\"$A\"'$A'\nF=\n");
        scalars(
            &v,
            &[
                ("A", "plain"),
                ("B", "its"),
                ("C", "x $y \\q"),
                ("D", "a b"),
                ("E", "plain$A"),
                ("F", ""),
            ],
        );
    }

    #[test]
    fn arrays_with_comments_continuations_and_splices() {
        let v = ok("X='p q'\nA=(\n  one # c\n  \"two three\" \\\n  $X\n)\nB=(\"${A[@]}\" last)\nB+=(more)\n");
        assert_eq!(a(&v, "A"), vec!["one", "two three", "p", "q"]);
        assert_eq!(a(&v, "B"), vec!["one", "two three", "p", "q", "last", "more"]);
    }

    #[test]
    fn default_reads_config_then_environment() {
        let env = |k: &str| (k == "FROM_ENV").then(|| "e".to_string());
        let v = parse("A=${FROM_ENV:-d}\nB=${NOPE:-d}\nC=x\nD=${C:-d}", &env).unwrap();
        scalars(&v, &[("A", "e"), ("B", "d"), ("D", "x")]);
    }

    #[test]
    fn unused_default_may_name_undefined_variables() {
        let v = ok("A=1\nB=${A:-$UNDEFINED}");
        assert_eq!(s(&v, "B"), "1");
    }

    #[test]
    fn globs_stay_literal() {
        let v = ok("A=(usr/lib/python* x?[ab])");
        assert_eq!(a(&v, "A"), vec!["usr/lib/python*", "x?[ab]"]);
    }

    #[test]
    fn a_byte_order_mark_is_named() {
        let e = parse("\u{feff}A=1\n", &no_env).expect_err("BOM");
        assert_eq!(e.line, 1);
        assert!(e.msg.contains("byte order mark"), "{}", e.msg);
    }

    #[test]
    fn each_unsupported_construct_names_its_line() {
        let cases: &[(&str, &str)] = &[
            ("A=1\nB=$(date)\n", "command substitution"),
            ("A=1\nB=`date`\n", "backticks"),
            ("A=1\nB=$((1+2))\n", "arithmetic"),
            ("A=1\necho hi\n", "is a command"),
            ("A=1\nif true; then A=2; fi\n", "control flow"),
            ("A=1\nf() { A=2; }\n", "function"),
            ("A=1\nfunction f { :; }\n", "function"),
            ("A=1\nsource other.conf\n", "source"),
            ("A=1\n. other.conf\n", "source"),
            ("A=1\nB=$UNDEFINED\n", "not defined"),
            ("A=1\n1B=2\n", "not a valid variable name"),
            ("A=1\nA-B=2\n", "not a valid variable name"),
            ("A=1\nB=x | y\n", "pipe"),
            ("A=1\nB=x > f\n", "redirections"),
            ("A=1\nB=1 cmd\n", "is a command"),
            ("A=1\nB=${A#x}\n", "only"),
            ("A=1\nB=$1\n", "special parameter"),
            ("A=1\nB=~/x\n", "home directory"),
            ("A=1\nB[0]=x\n", "element assignment"),
            ("A=1\nB=(a {b,c})\n", "brace expansion"),
            ("A=1\nB=$'x'\n", "ANSI-C"),
            ("A=1\n(B=2)\n", "subshell"),
            ("A=1\nB=(x\n", "never closed"),
            ("A=1\nB='x\n", "never closed"),
            ("A=1\nIFS=,\n", "special to bash"),
            ("A=1\nexport UID=5\n", "special to bash"),
            ("A=1\nBASH_ENV=/tmp/x\n", "special to bash"),
            ("A=1\nRANDOM=4\n", "special to bash"),
            ("A=1\nB=x\0y\n", "NUL byte"),
            ("A=1\nB=2\r\n", "Windows line endings"),
        ];
        for (src, want) in cases {
            let e = parse(src, &no_env).expect_err(src);
            assert_eq!(e.line, 2, "{src:?}: {}", e.msg);
            assert!(e.msg.contains(want), "{src:?}: {:?} lacks {want:?}", e.msg);
        }
    }
}
