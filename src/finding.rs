//! Findings: typed deviations from a protocol rule, found while talking to a server.
//!
//! A finding is data, never a panic: the runner collects them per step and the
//! reporters render them. Severity follows the RFC's own words.

use serde::Serialize;
use std::fmt;

/// How strongly the RFC words the rule that was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational: worth knowing, not a violation.
    Note,
    /// A SHOULD (or an expectation marked `severity: should`): warns, does not fail.
    Should,
    /// A MUST (or an ordinary expectation): fails the scenario.
    Must,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Should => "SHOULD",
            Severity::Must => "MUST",
        })
    }
}

/// One deviation: which rule, where the RFC states it, what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier, e.g. `pop3.crlf`: tests and users can grep for it.
    pub rule: &'static str,
    /// Where the rule is written, e.g. `RFC 1939 section 3`.
    pub rfc: &'static str,
    pub message: String,
    /// The offending bytes, escaped for display (control characters as `\r`, `\x00`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
    /// The step (as the reporters number it) during which the finding was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

impl Finding {
    pub fn new(
        severity: Severity,
        rule: &'static str,
        rfc: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            rule,
            rfc,
            message: message.into(),
            bytes: None,
            step: None,
        }
    }

    pub fn must(rule: &'static str, rfc: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Must, rule, rfc, message)
    }

    pub fn should(rule: &'static str, rfc: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Should, rule, rfc, message)
    }

    pub fn note(rule: &'static str, rfc: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, rule, rfc, message)
    }

    /// Attach the offending bytes (escaped; at most 200 shown).
    pub fn with_bytes(mut self, bytes: &[u8]) -> Self {
        self.bytes = Some(escape_bytes(bytes, 200));
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} ({}, {})",
            self.severity, self.message, self.rule, self.rfc
        )?;
        if let Some(b) = &self.bytes {
            write!(f, ": {b}")?;
        }
        Ok(())
    }
}

/// Render bytes readably: printable ASCII as is, the rest escaped, capped at `max` input bytes.
pub fn escape_bytes(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(max) + 8);
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        out.push_str(&format!("... ({} more bytes)", bytes.len() - max));
    }
    out
}

/// A line as text for transcripts and diffs: UTF-8 where it is, escapes elsewhere; line ending dropped.
pub fn line_text(line: &[u8]) -> String {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    match std::str::from_utf8(trimmed) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => s.to_string(),
        _ => escape_bytes(trimmed, 4096),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_bytes() {
        assert_eq!(escape_bytes(b"+OK\r\n\x00", 100), "+OK\\r\\n\\x00");
        assert_eq!(escape_bytes(b"abcdef", 3), "abc... (3 more bytes)");
    }

    #[test]
    fn line_text_drops_ending() {
        assert_eq!(line_text(b"+OK hi\r\n"), "+OK hi");
        assert_eq!(line_text(b"+OK\x07\n"), "+OK\\x07");
    }
}
