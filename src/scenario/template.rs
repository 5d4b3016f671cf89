//! `${name}` references in command lines and patterns.
//!
//! Parsed at load time (so a typo is a lint error) and expanded at run time
//! against the scenario's variables. `${n+1}` / `${n-1}` do integer offsets,
//! which data-independent scenarios need ("one past the last message").
//! `${'x' * 998}` writes a text many times, for overlong lines without
//! writing them out.

use crate::secret::Secret;
use std::collections::BTreeMap;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text as written (for patterns: still glob syntax).
    Lit(String),
    /// A variable reference with an optional integer offset.
    Var { name: String, offset: i64 },
}

/// A parsed string with `${...}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub source: String,
    pub pieces: Vec<Piece>,
}

/// A value a variable can hold.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Secret(Secret),
    /// Rows captured from a multi-line reply, iterated by `foreach`.
    Rows(Vec<BTreeMap<String, String>>),
}

/// Size and MD5 of a captured body: lets `equals` compare bodies of any size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest {
    pub octets: u64,
    pub md5: [u8; 16],
}

/// The variables of one scenario run.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    map: BTreeMap<String, Value>,
    digests: BTreeMap<String, BodyDigest>,
    /// Messages as sent by SMTP `data:` steps, as bytes (not text: 8-bit
    /// content must compare exactly).
    messages: BTreeMap<String, std::sync::Arc<Vec<u8>>>,
}

impl Vars {
    pub fn set_text(&mut self, name: &str, value: impl Into<String>) {
        self.digests.remove(name);
        self.map.insert(name.to_string(), Value::Text(value.into()));
    }
    pub fn set_message(&mut self, name: &str, bytes: Vec<u8>) {
        self.messages.insert(name.to_string(), std::sync::Arc::new(bytes));
    }
    pub fn message(&self, name: &str) -> Option<std::sync::Arc<Vec<u8>>> {
        self.messages.get(name).cloned()
    }
    pub fn set_digest(&mut self, name: &str, digest: BodyDigest) {
        self.digests.insert(name.to_string(), digest);
    }
    pub fn digest(&self, name: &str) -> Option<BodyDigest> {
        self.digests.get(name).copied()
    }
    pub fn set(&mut self, name: &str, value: Value) {
        self.map.insert(name.to_string(), value);
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.map.get(name)? {
            Value::Text(t) => Some(t),
            Value::Secret(s) => Some(s.expose()),
            Value::Rows(_) => None,
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Most octets one `${'text' * n}` may produce.
const REPEAT_MAX: usize = 16 * 1024 * 1024;

/// `'text' * n` (the inside of `${...}`) -> text repeated n times.
fn repeat(inner: &str) -> Result<String, String> {
    let bad = || format!("`${{{inner}}}`: write a repetition as ${{'text' * 100}}");
    let body = &inner[1..];
    let close = body.find('\'').ok_or_else(bad)?;
    let text = &body[..close];
    let count = body[close + 1..].trim().strip_prefix('*').ok_or_else(bad)?;
    let n: usize = count.trim().parse().map_err(|_| bad())?;
    if text.is_empty() || text.len().saturating_mul(n) > REPEAT_MAX {
        return Err(format!(
            "`${{{inner}}}`: the text must be non-empty and the result at most {REPEAT_MAX} octets"
        ));
    }
    Ok(text.repeat(n))
}

impl Template {
    /// Parse `text`; errors say what is wrong with a reference.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find("${") {
            lit.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let inner = after[..end].trim();
            if inner.starts_with('\'') {
                lit.push_str(&repeat(inner)?);
                rest = &after[end + 1..];
                continue;
            }
            let (name, offset) = match inner.find(['+', '-']) {
                Some(i) => {
                    let n: i64 = inner[i + 1..].trim().parse().map_err(|_| {
                        format!("`${{{inner}}}`: an offset must be an integer, like `${{count-1}}`")
                    })?;
                    let n = if &inner[i..i + 1] == "-" { -n } else { n };
                    (inner[..i].trim(), n)
                }
                None => (inner, 0),
            };
            if !valid_name(name) {
                return Err(format!(
                    "`${{{inner}}}` is not a variable name (letters, digits, `_`)"
                ));
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(Piece::Var {
                name: name.to_string(),
                offset,
            });
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template {
            source: text.to_string(),
            pieces,
        })
    }

    /// Names referenced, for lint and for knowing which variables a step needs.
    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var { name, .. } => Some(name.as_str()),
            Piece::Lit(_) => None,
        })
    }

    /// Whether expanding this template puts a secret into the result.
    pub fn uses_secret(&self, vars: &Vars) -> bool {
        self.var_names()
            .any(|n| matches!(vars.get(n), Some(Value::Secret(_))))
    }

    /// Expand with `escape` applied to each variable's value (identity for commands,
    /// regex escaping for patterns).
    pub fn expand_with(&self, vars: &Vars, escape: impl Fn(&str) -> String) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Lit(t) => out.push_str(t),
                Piece::Var { name, offset } => {
                    let value = vars.text(name).ok_or_else(|| match vars.get(name) {
                        Some(Value::Rows(_)) => {
                            format!("`${{{name}}}` holds rows; use it with `foreach`")
                        }
                        _ => format!("variable `{name}` is not set (no --var and no earlier capture)"),
                    })?;
                    if *offset == 0 {
                        out.push_str(&escape(value));
                    } else {
                        let n: i64 = value.trim().parse().map_err(|_| {
                            format!("`${{{name}}}` is `{value}`, not a number, so it takes no offset")
                        })?;
                        out.push_str(&escape(&(n + offset).to_string()));
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn expand(&self, vars: &Vars) -> Result<String, String> {
        self.expand_with(vars, |s| s.to_string())
    }

    /// Expand for display: secret variables become the mask, whatever their
    /// length (the redactor skips very short values, this does not).
    pub fn expand_masked(&self, vars: &Vars) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Var { name, .. } if matches!(vars.get(name), Some(Value::Secret(_))) => {
                    out.push_str(crate::secret::MASK)
                }
                other => {
                    let one = Template {
                        source: String::new(),
                        pieces: vec![other.clone()],
                    };
                    out.push_str(&one.expand(vars)?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_expands() {
        let t = Template::parse("RETR ${msg} and ${count-1}").unwrap();
        let mut v = Vars::default();
        v.set_text("msg", "3");
        v.set_text("count", "10");
        assert_eq!(t.expand(&v).unwrap(), "RETR 3 and 9");
    }

    #[test]
    fn repeats_text() {
        let t = Template::parse("NOOP ${'ab' * 3}!").unwrap();
        assert_eq!(t.expand(&Vars::default()).unwrap(), "NOOP ababab!");
        assert!(Template::parse("${'ab' 3}").is_err());
        assert!(Template::parse("${'' * 3}").is_err());
        assert!(Template::parse("${'x' * 99999999999}").is_err());
    }

    #[test]
    fn rejects_bad_references() {
        assert!(Template::parse("${").is_err());
        assert!(Template::parse("${1x}").is_err());
        assert!(Template::parse("${n+x}").is_err());
    }

    #[test]
    fn masked_expansion_hides_secrets_of_any_length() {
        let t = Template::parse("PASS ${password}").unwrap();
        let mut v = Vars::default();
        v.set("password", Value::Secret(Secret::new("ab")));
        assert_eq!(t.expand_masked(&v).unwrap(), "PASS ********");
        assert_eq!(t.expand(&v).unwrap(), "PASS ab");
    }

    #[test]
    fn unknown_variable_is_an_error() {
        let t = Template::parse("${nope}").unwrap();
        assert!(t.expand(&Vars::default()).unwrap_err().contains("not set"));
    }
}
