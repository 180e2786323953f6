//! Turns the pieces of one shell word into a string (scalar assignment) or into fields
//! (array element), following bash's quoting and field-splitting rules.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `KEY=word`: no field splitting, `${A[@]}` joins with spaces.
    Scalar,
    /// `KEY=( word ... )`: unquoted expansions are split on blanks.
    Array,
}

pub struct Builder {
    mode: Mode,
    fields: Vec<String>,
    cur: String,
    /// Whether `cur` is a field even if empty (`""` makes an empty field, `$EMPTY` none).
    active: bool,
    /// One entry per open double-quoted section: did it contain `${A[@]}`?
    dq_had_list: Vec<bool>,
    /// Above zero while parsing a `${X:-default}` whose default is not used.
    skip: u32,
}

impl Builder {
    pub fn new(mode: Mode) -> Self {
        Builder {
            mode,
            fields: Vec::new(),
            cur: String::new(),
            active: false,
            dq_had_list: Vec::new(),
            skip: 0,
        }
    }

    pub fn skipping(&self) -> bool {
        self.skip > 0
    }

    pub fn begin_skip(&mut self) {
        self.skip += 1;
    }

    pub fn end_skip(&mut self) {
        self.skip -= 1;
    }

    /// Literal text written in the file (quoted or not): never split.
    pub fn literal(&mut self, s: &str) {
        if self.skipping() {
            return;
        }
        self.cur.push_str(s);
        self.active = true;
    }

    /// The result of an expansion: split on blanks when unquoted in an array.
    pub fn expansion(&mut self, s: &str, quoted: bool) {
        if self.skipping() {
            return;
        }
        if quoted || self.mode == Mode::Scalar {
            self.cur.push_str(s);
            if !s.is_empty() {
                self.active = true;
            }
            return;
        }
        for c in s.chars() {
            if is_ifs(c) {
                self.end_field();
            } else {
                self.cur.push(c);
                self.active = true;
            }
        }
    }

    /// `${A[@]}`: one field per element when quoted in an array.
    pub fn list(&mut self, items: &[String], quoted: bool) {
        if self.skipping() {
            return;
        }
        if self.mode == Mode::Scalar {
            self.expansion(&items.join(" "), quoted);
            return;
        }
        if quoted {
            if let Some(had) = self.dq_had_list.last_mut() {
                *had = true;
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    self.fields.push(std::mem::take(&mut self.cur));
                }
                self.cur.push_str(item);
                self.active = true;
            }
        } else {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    self.end_field();
                }
                self.expansion(item, false);
            }
        }
    }

    pub fn open_double_quote(&mut self) {
        self.dq_had_list.push(false);
    }

    /// `""` is an empty field, but `"${EMPTY[@]}"` is no field at all.
    pub fn close_double_quote(&mut self) {
        let had_list = self.dq_had_list.pop().unwrap_or(false);
        if !had_list && !self.skipping() {
            self.active = true;
        }
    }

    /// Ends the current field, if there is one.
    pub fn end_field(&mut self) {
        if self.active {
            self.fields.push(std::mem::take(&mut self.cur));
        }
        self.cur.clear();
        self.active = false;
    }

    pub fn into_scalar(self) -> String {
        self.cur
    }

    pub fn into_fields(mut self) -> Vec<String> {
        self.end_field();
        self.fields
    }
}

/// bash's default IFS.
pub fn is_ifs(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_expansion_splits_in_arrays_only() {
        let mut b = Builder::new(Mode::Array);
        b.literal("x");
        b.expansion(" a  b ", false);
        assert_eq!(b.into_fields(), vec!["x", "a", "b"]);

        let mut s = Builder::new(Mode::Scalar);
        s.expansion(" a  b ", false);
        assert_eq!(s.into_scalar(), " a  b ");
    }

    #[test]
    fn empty_quotes_make_a_field_but_empty_list_does_not() {
        let mut b = Builder::new(Mode::Array);
        b.open_double_quote();
        b.close_double_quote();
        b.end_field();
        b.open_double_quote();
        b.list(&[], true);
        b.close_double_quote();
        assert_eq!(b.into_fields(), vec![""]);
    }

    #[test]
    fn quoted_list_joins_prefix_and_suffix() {
        let mut b = Builder::new(Mode::Array);
        b.open_double_quote();
        b.literal("<");
        b.list(&["a".into(), "b c".into()], true);
        b.literal(">");
        b.close_double_quote();
        assert_eq!(b.into_fields(), vec!["<a", "b c>"]);
    }
}
