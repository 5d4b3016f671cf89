//! Reply patterns: `+OK {count} {size}`, `-ERR*`, or a regex.
//!
//! A glob pattern matches the whole line (without CRLF): `*` is any text,
//! `{name}` captures one token (no spaces), `\*` `\{` `\\` are literal.
//! `${var}` values are inserted literally. Patterns compile to
//! `regex::bytes` so a server's non-UTF-8 bytes are matched, not rejected.

use super::template::{Piece, Template, Vars};
use regex::bytes::Regex;
use std::collections::BTreeMap;

/// Which syntax a pattern is written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternKind {
    Glob,
    Regex,
}

/// A pattern as written in the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub kind: PatternKind,
    pub template: Template,
}

/// A pattern compiled against the current variables.
#[derive(Debug, Clone)]
pub struct Matcher {
    re: Regex,
    names: Vec<String>,
}

impl Pattern {
    pub fn glob(text: &str) -> Result<Pattern, String> {
        let p = Pattern {
            kind: PatternKind::Glob,
            template: Template::parse(text)?,
        };
        p.check()?;
        Ok(p)
    }

    pub fn regex(text: &str) -> Result<Pattern, String> {
        let p = Pattern {
            kind: PatternKind::Regex,
            template: Template::parse(text)?,
        };
        p.check()?;
        Ok(p)
    }

    /// Validate syntax at load time by compiling with placeholder values.
    fn check(&self) -> Result<(), String> {
        let mut vars = Vars::default();
        for name in self.template.var_names() {
            vars.set_text(name, "0");
        }
        self.compile(&vars).map(|_| ())
    }

    /// The text shown as "expected" in diffs.
    pub fn display(&self) -> String {
        match self.kind {
            PatternKind::Glob => self.template.source.clone(),
            PatternKind::Regex => format!("/{}/", self.template.source),
        }
    }

    /// Names this pattern captures.
    pub fn capture_names(&self) -> Vec<String> {
        let mut vars = Vars::default();
        for name in self.template.var_names() {
            vars.set_text(name, "0");
        }
        self.compile(&vars).map(|m| m.names).unwrap_or_default()
    }

    pub fn compile(&self, vars: &Vars) -> Result<Matcher, String> {
        let mut re = String::from("^(?s:");
        let mut names = Vec::new();
        for piece in &self.template.pieces {
            match piece {
                Piece::Lit(text) => match self.kind {
                    PatternKind::Glob => glob_to_regex(text, &mut re, &mut names)?,
                    PatternKind::Regex => re.push_str(text),
                },
                Piece::Var { .. } => {
                    let one = Template {
                        source: String::new(),
                        pieces: vec![piece.clone()],
                    };
                    re.push_str(&one.expand_with(vars, regex::escape)?);
                }
            }
        }
        re.push_str(")$");
        let compiled = Regex::new(&re).map_err(|e| format!("bad pattern `{}`: {e}", self.display()))?;
        if self.kind == PatternKind::Regex {
            names = compiled.capture_names().flatten().map(str::to_string).collect();
        }
        Ok(Matcher { re: compiled, names })
    }
}

fn glob_to_regex(text: &str, re: &mut String, names: &mut Vec<String>) -> Result<(), String> {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => re.push_str(&regex::escape(&n.to_string())),
                None => return Err(format!("pattern `{text}` ends with a lone `\\`")),
            },
            // Any byte, not any char: servers send non-UTF-8 text.
            '*' => re.push_str("(?s-u:.)*"),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' => name.push(ch),
                        Some(ch) => {
                            return Err(format!(
                                "in `{text}`: `{{{name}{ch}` is not a capture; captures are `{{name}}` (write `\\{{` for a literal brace)"
                            ))
                        }
                        None => return Err(format!("in `{text}`: unclosed `{{`")),
                    }
                }
                if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(format!("in `{text}`: `{{{name}}}` needs a name like `{{size}}`"));
                }
                if names.contains(&name) {
                    return Err(format!("in `{text}`: `{{{name}}}` is captured twice"));
                }
                re.push_str(&format!("(?P<{name}>(?-u:[^ \\t\\r\\n])+)"));
                names.push(name);
            }
            _ => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    Ok(())
}

impl Matcher {
    /// Match a whole line (without its line ending); on success return the captures.
    pub fn matches(&self, line: &[u8]) -> Option<BTreeMap<String, String>> {
        let caps = self.re.captures(line)?;
        let mut out = BTreeMap::new();
        for name in &self.names {
            if let Some(m) = caps.name(name) {
                out.insert(name.clone(), String::from_utf8_lossy(m.as_bytes()).into_owned());
            }
        }
        Some(out)
    }

    pub fn is_match(&self, line: &[u8]) -> bool {
        self.re.is_match(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_captures_tokens() {
        let p = Pattern::glob("+OK {count} {size}").unwrap();
        let m = p.compile(&Vars::default()).unwrap();
        let caps = m.matches(b"+OK 2 320").unwrap();
        assert_eq!(caps["count"], "2");
        assert_eq!(caps["size"], "320");
        assert!(m.matches(b"+OK 2 320 extra").is_none());
        assert!(m.matches(b"-ERR 2 320").is_none());
    }

    #[test]
    fn star_and_escapes() {
        let m = Pattern::glob("+OK*").unwrap().compile(&Vars::default()).unwrap();
        assert!(m.is_match(b"+OK"));
        assert!(m.is_match(b"+OK whatever \xff"));
        let m = Pattern::glob("a\\*b \\{x}")
            .unwrap()
            .compile(&Vars::default())
            .unwrap();
        assert!(m.is_match(b"a*b {x}"));
        assert!(!m.is_match(b"aXb {x}"));
    }

    #[test]
    fn variables_are_literal() {
        let p = Pattern::glob("+OK ${n} *").unwrap();
        let mut v = Vars::default();
        v.set_text("n", "1.5*");
        let m = p.compile(&v).unwrap();
        assert!(m.is_match(b"+OK 1.5* octets"));
        assert!(!m.is_match(b"+OK 1x5 octets"));
    }

    #[test]
    fn regex_named_groups_capture() {
        let p = Pattern::regex(r"\+OK (?P<n>\d+) \d+").unwrap();
        let caps = p
            .compile(&Vars::default())
            .unwrap()
            .matches(b"+OK 7 100")
            .unwrap();
        assert_eq!(caps["n"], "7");
    }

    #[test]
    fn bad_globs_are_rejected() {
        assert!(Pattern::glob("{a b}").is_err());
        assert!(Pattern::glob("{}").is_err());
        assert!(Pattern::glob("{a} {a}").is_err());
        assert!(Pattern::glob("x\\").is_err());
        assert!(Pattern::regex("(").is_err());
    }
}
