//! The variables an image.conf defines, in the order it first defines them.

use std::collections::HashMap;

/// A config value: bash has scalars and indexed arrays, and so do we.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Array(Vec<String>),
}

impl Value {
    /// What `$NAME` gives in bash: an array yields its first element.
    pub fn as_scalar(&self) -> &str {
        match self {
            Value::Str(s) => s,
            Value::Array(a) => a.first().map(String::as_str).unwrap_or(""),
        }
    }

    /// What `"${NAME[@]}"` gives in bash: a scalar is a one-element array.
    pub fn as_list(&self) -> Vec<String> {
        match self {
            Value::Str(s) => vec![s.clone()],
            Value::Array(a) => a.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    order: Vec<String>,
    map: HashMap<String, Value>,
    /// Line of the last assignment, for errors about a value (absent for `--set`).
    lines: HashMap<String, usize>,
}

impl Vars {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    pub fn set(&mut self, name: &str, value: Value) {
        if !self.map.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.map.insert(name.to_string(), value);
    }

    /// Iterates in first-definition order, so printed configs read like the file.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.order.iter().map(|k| (k.as_str(), &self.map[k]))
    }

    pub fn line_of(&self, name: &str) -> Option<usize> {
        self.lines.get(name).copied()
    }

    pub fn set_line(&mut self, name: &str, line: Option<usize>) {
        match line {
            Some(l) => self.lines.insert(name.to_string(), l),
            None => self.lines.remove(name),
        };
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// `NAME=word` on an existing array sets element 0, as bash does.
    pub fn assign_scalar(&mut self, name: &str, text: String, append: bool) {
        let new = match (self.map.get(name), append) {
            (Some(Value::Array(a)), _) => {
                let mut a = a.clone();
                let first = if append {
                    format!("{}{}", a.first().map(String::as_str).unwrap_or(""), text)
                } else {
                    text
                };
                if a.is_empty() {
                    a.push(first);
                } else {
                    a[0] = first;
                }
                Value::Array(a)
            }
            (Some(Value::Str(s)), true) => Value::Str(format!("{s}{text}")),
            _ => Value::Str(text),
        };
        self.set(name, new);
    }

    /// `NAME=(...)` replaces; `NAME+=(...)` appends, turning a scalar into element 0.
    pub fn assign_array(&mut self, name: &str, items: Vec<String>, append: bool) {
        let new = match (self.map.get(name), append) {
            (Some(old), true) => {
                let mut a = old.as_list();
                a.extend(items);
                a
            }
            _ => items,
        };
        self.set(name, Value::Array(new));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_assignment_to_array_sets_first_element() {
        let mut v = Vars::default();
        v.assign_array("A", vec!["x".into(), "y".into()], false);
        v.assign_scalar("A", "z".into(), false);
        assert_eq!(v.get("A"), Some(&Value::Array(vec!["z".into(), "y".into()])));
        v.assign_scalar("A", "!".into(), true);
        assert_eq!(v.get("A").unwrap().as_scalar(), "z!");
    }

    #[test]
    fn array_append_to_scalar_keeps_the_scalar_first() {
        let mut v = Vars::default();
        v.assign_scalar("A", "a".into(), false);
        v.assign_array("A", vec!["b".into()], true);
        assert_eq!(v.get("A").unwrap().as_list(), vec!["a", "b"]);
    }

    #[test]
    fn order_is_first_definition() {
        let mut v = Vars::default();
        v.assign_scalar("B", "1".into(), false);
        v.assign_scalar("A", "1".into(), false);
        v.assign_scalar("B", "2".into(), false);
        let keys: Vec<_> = v.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["B", "A"]);
    }
}
