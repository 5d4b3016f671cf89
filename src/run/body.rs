//! Matching a multi-line body against `body:` expectations while it streams.
//!
//! Nothing here keeps the whole body: lines are matched as they pass, a
//! preview is kept for diffs, and `capture`/`equals` hold at most
//! [`CAPTURE_CAP`] bytes (comparisons with a captured body use a digest
//! of all of it).

use super::outcome::Mismatch;
use crate::finding::line_text;
use crate::scenario::pattern::Matcher;
use crate::scenario::template::{BodyDigest, Piece, Template};
use crate::scenario::template::{Value, Vars};
use crate::scenario::BodyExpect;
use md5::{Digest, Md5};
use std::collections::BTreeMap;

/// The variable name when a template is exactly `${name}`.
fn single_var(t: &Template) -> Option<&str> {
    match t.pieces.as_slice() {
        [Piece::Var { name, offset: 0 }] => Some(name),
        _ => None,
    }
}

/// Most bytes kept for `capture:` / compared by `equals:`.
pub const CAPTURE_CAP: usize = 4 * 1024 * 1024;
/// Lines of the body kept for the expected/actual diff.
const PREVIEW_LINES: usize = 40;
/// Longest single line matched against patterns.
const LINE_CAP: usize = 1024 * 1024;

pub struct BodyMatcher<'e> {
    expect: &'e BodyExpect,
    lines: Option<Vec<Matcher>>,
    each: Option<Matcher>,
    /// Each `contains` pattern and the captures of the first line it matched.
    contains: Vec<(Matcher, Option<BTreeMap<String, String>>)>,
    absent: Vec<Matcher>,
    rows: Vec<BTreeMap<String, String>>,
    capture: Option<Vec<u8>>,
    capture_overflow: bool,
    /// Digest of the whole body, so `equals` works past the capture cap.
    digest: Option<Md5>,
    total: u64,
    index: usize,
    partial: Vec<u8>,
    pub preview: Vec<String>,
    failure: Option<Mismatch>,
    /// For `delivered:`: the message as sent, and the body as received
    /// (capped at the sent size plus room for added header fields).
    delivered: Option<(std::sync::Arc<Vec<u8>>, Vec<u8>, bool)>,
    /// IMAP: the delivered message is the literal data, not the lines fed.
    literals_only: bool,
}

/// Room for the header fields a receiving server adds in front of a message.
const ADDED_HEADERS_CAP: usize = 256 * 1024;

impl<'e> BodyMatcher<'e> {
    pub fn new(expect: &'e BodyExpect, vars: &Vars) -> Result<Self, String> {
        let delivered = match &expect.delivered {
            Some(name) => Some((
                vars.message(name).ok_or_else(|| {
                    format!("`delivered: {name}` needs a message sent earlier with `data: {{..., capture: {name}}}`")
                })?,
                Vec::new(),
                false,
            )),
            None => None,
        };
        let compile_all = |v: &[crate::scenario::pattern::Pattern]| {
            v.iter().map(|p| p.compile(vars)).collect::<Result<Vec<_>, _>>()
        };
        Ok(BodyMatcher {
            expect,
            lines: expect.lines.as_deref().map(compile_all).transpose()?,
            each: expect.each.as_ref().map(|p| p.compile(vars)).transpose()?,
            contains: compile_all(&expect.contains)?
                .into_iter()
                .map(|m| (m, None))
                .collect(),
            absent: compile_all(&expect.absent)?,
            rows: Vec::new(),
            capture: (expect.capture.is_some() || expect.equals.is_some()).then(Vec::new),
            capture_overflow: false,
            digest: (expect.capture.is_some() || expect.equals.is_some()).then(Md5::new),
            total: 0,
            index: 0,
            partial: Vec::new(),
            preview: Vec::new(),
            failure: None,
            delivered,
            literals_only: false,
        })
    }

    /// IMAP: take `delivered:` from literal data ([`BodyMatcher::feed_literal`])
    /// rather than from the response lines.
    pub fn delivered_from_literals(mut self) -> Self {
        self.literals_only = true;
        self
    }

    /// Literal data of a response (IMAP FETCH BODY[]), for `delivered:`.
    pub fn feed_literal(&mut self, data: &[u8]) {
        if let (true, Some((sent, got, overflow))) = (self.literals_only, &mut self.delivered) {
            if got.len() + data.len() <= sent.len() + ADDED_HEADERS_CAP {
                got.extend_from_slice(data);
            } else {
                *overflow = true;
            }
        }
    }

    /// One piece of unstuffed content (`complete` when it ends a line).
    pub fn feed(&mut self, content: &[u8], complete: bool) {
        if let (false, Some((sent, got, overflow))) = (self.literals_only, &mut self.delivered) {
            if got.len() + content.len() <= sent.len() + ADDED_HEADERS_CAP {
                got.extend_from_slice(content);
            } else {
                *overflow = true;
            }
        }
        if let Some(d) = &mut self.digest {
            d.update(content);
            self.total += content.len() as u64;
        }
        if let Some(buf) = &mut self.capture {
            if buf.len() + content.len() <= CAPTURE_CAP {
                buf.extend_from_slice(content);
            } else {
                self.capture_overflow = true;
            }
        }
        if !complete {
            if self.partial.len() + content.len() <= LINE_CAP {
                self.partial.extend_from_slice(content);
            }
            return;
        }
        if self.partial.is_empty() {
            self.line(content);
        } else {
            let mut whole = std::mem::take(&mut self.partial);
            whole.extend_from_slice(content);
            self.line(&whole);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let text = crate::proto::pop3::strip_eol(line);
        if self.preview.len() < PREVIEW_LINES {
            self.preview.push(line_text(text));
        }
        let i = self.index;
        self.index += 1;
        if self.failure.is_some() {
            return;
        }
        if let Some(lines) = &self.lines {
            if let Some(m) = lines.get(i) {
                if !m.is_match(text) {
                    self.fail(format!("body line {} does not match", i + 1));
                    return;
                }
            }
        }
        if let Some(each) = &self.each {
            match each.matches(text) {
                Some(caps) => {
                    if self.expect.rows.is_some() {
                        self.rows.push(caps);
                    }
                }
                None => {
                    let pat = self.expect.each.as_ref().map(|p| p.display()).unwrap_or_default();
                    self.failure = Some(Mismatch {
                        message: format!("body line {} does not match `{pat}`", i + 1),
                        expected: Some(pat),
                        actual: Some(line_text(text)),
                    });
                    return;
                }
            }
        }
        for (m, seen) in &mut self.contains {
            if seen.is_none() {
                *seen = m.matches(text);
            }
        }
        for (k, m) in self.absent.iter().enumerate() {
            if m.is_match(text) {
                let pat = self.expect.absent[k].display();
                self.failure = Some(Mismatch {
                    message: format!("body line {} matches `{pat}`, which must not appear", i + 1),
                    expected: Some(format!("no line like `{pat}`")),
                    actual: Some(line_text(text)),
                });
                return;
            }
        }
    }

    fn fail(&mut self, message: String) {
        self.failure = Some(Mismatch {
            message,
            expected: None,
            actual: None,
        });
    }

    /// The body ended: check counts and totals, store captures.
    pub fn finish(mut self, lines: u64, octets: u64, vars: &mut Vars) -> Result<(), Mismatch> {
        let expect = self.expect;
        let diff = |this: &Self, message: String| {
            let expected = expect
                .lines
                .as_ref()
                .map(|v| v.iter().map(|p| p.display()).collect::<Vec<_>>().join("\n"));
            Mismatch {
                message,
                expected,
                actual: Some(this.preview_text()),
            }
        };
        if let Some(mut f) = self.failure.take() {
            if f.expected.is_none() {
                f = diff(&self, f.message);
            }
            return Err(f);
        }
        if let Some(l) = &self.lines {
            if l.len() as u64 != lines {
                return Err(diff(
                    &self,
                    format!("expected {} body lines, got {lines}", l.len()),
                ));
            }
        }
        if let Some(t) = &expect.count {
            let want = t.expand(vars).map_err(|m| Mismatch {
                message: m,
                expected: None,
                actual: None,
            })?;
            let want: u64 = want.trim().parse().map_err(|_| Mismatch {
                message: format!("`count: {}` is not a number", t.source),
                expected: None,
                actual: None,
            })?;
            if want != lines {
                return Err(Mismatch {
                    message: format!("expected {want} body lines, got {lines}"),
                    expected: Some(want.to_string()),
                    actual: Some(lines.to_string()),
                });
            }
        }
        if let Some(min) = expect.min {
            if lines < min as u64 {
                return Err(diff(
                    &self,
                    format!("expected at least {min} body lines, got {lines}"),
                ));
            }
        }
        if let Some(max) = expect.max {
            if lines > max as u64 {
                return Err(diff(
                    &self,
                    format!("expected at most {max} body lines, got {lines}"),
                ));
            }
        }
        for (k, (_, seen)) in self.contains.iter().enumerate() {
            if seen.is_none() {
                let pat = expect.contains[k].display();
                return Err(Mismatch {
                    message: format!("no body line matches `{pat}`"),
                    expected: Some(pat),
                    actual: Some(self.preview_text()),
                });
            }
        }
        if let Some(t) = &expect.octets {
            let want = t.expand(vars).map_err(|m| Mismatch {
                message: m,
                expected: None,
                actual: None,
            })?;
            match want.trim().parse::<u64>() {
                Ok(w) if w == octets => {}
                Ok(w) => {
                    return Err(Mismatch {
                        message: format!("body is {octets} octets, expected {w}"),
                        expected: Some(format!("{w} octets")),
                        actual: Some(format!("{octets} octets")),
                    })
                }
                Err(_) => {
                    return Err(Mismatch {
                        message: format!("`octets: {want}` is not a number"),
                        expected: None,
                        actual: None,
                    })
                }
            }
        }
        let digest = self.digest.take().map(|d| BodyDigest {
            octets: self.total,
            md5: d.finalize().into(),
        });
        if let Some(t) = &expect.equals {
            let got = self.capture.as_deref().unwrap_or(&[]);
            // `equals: "${name}"` after `capture: name` compares digests: exact bytes, any size.
            let same = match (single_var(t).and_then(|n| vars.digest(n)), &digest) {
                (Some(want), Some(have)) => want == *have,
                _ => {
                    let want = t.expand(vars).map_err(|m| Mismatch {
                        message: m,
                        expected: None,
                        actual: None,
                    })?;
                    !self.capture_overflow && want == String::from_utf8_lossy(got)
                }
            };
            if !same {
                let want = t.expand(vars).unwrap_or_else(|_| t.source.clone());
                return Err(Mismatch {
                    message: "body differs from the expected text".into(),
                    expected: Some(want),
                    actual: Some(String::from_utf8_lossy(got).into_owned()),
                });
            }
        }
        if let Some(name) = &expect.capture {
            let got = self.capture.take().unwrap_or_default();
            vars.set_text(name, String::from_utf8_lossy(&got).into_owned());
            if let Some(d) = digest {
                vars.set_digest(name, d);
            }
        }
        if let Some(name) = &expect.rows {
            vars.set(name, Value::Rows(std::mem::take(&mut self.rows)));
        }
        // `contains: ["SIZE {limit}"]` keeps what it captured.
        for (_, caps) in std::mem::take(&mut self.contains) {
            for (k, v) in caps.unwrap_or_default() {
                vars.set_text(&k, v);
            }
        }
        if let Some((sent, got, overflow)) = &self.delivered {
            compare_delivered(sent, got, *overflow)?;
        }
        Ok(())
    }

    fn preview_text(&self) -> String {
        let mut s = self.preview.join("\n");
        if self.index > self.preview.len() {
            s.push_str(&format!("\n... ({} more lines)", self.index - self.preview.len()));
        }
        s
    }
}

/// The received message must be the sent one, byte for byte, after header
/// fields the server put in front (Received:, Return-Path:, ...).
fn compare_delivered(sent: &[u8], got: &[u8], overflow: bool) -> Result<(), Mismatch> {
    if overflow {
        return Err(Mismatch {
            message: format!(
                "the received message is more than {} KiB longer than the {} octets sent",
                ADDED_HEADERS_CAP / 1024,
                sent.len()
            ),
            expected: Some(format!("{} octets and added header fields", sent.len())),
            actual: None,
        });
    }
    if let Some(prefix) = got.strip_suffix(sent) {
        return match prefix
            .split_inclusive(|&b| b == b'\n')
            .find(|l| !is_header_line(l))
        {
            None => Ok(()),
            Some(bad) => Err(Mismatch {
                message: "the server put something other than header fields in front of the message".into(),
                expected: Some(
                    "header fields (Received:, Return-Path:, ...) then the message as sent".into(),
                ),
                actual: Some(line_text(bad)),
            }),
        };
    }
    // Where do they part? Find where the sent message starts (its first
    // line, after the added headers) and compare forward from there.
    let first = sent.split_inclusive(|&b| b == b'\n').next().unwrap_or(sent);
    let start = memchr::memmem::find(got, first).unwrap_or(0);
    let same = sent.iter().zip(&got[start..]).take_while(|(a, b)| a == b).count();
    let at = same.min(sent.len().saturating_sub(1));
    let line_start = sent[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line_no = sent[..line_start].iter().filter(|&&b| b == b'\n').count() + 1;
    let sent_line = sent[line_start..]
        .split_inclusive(|&b| b == b'\n')
        .next()
        .unwrap_or(&[]);
    let got_from = (start + line_start).min(got.len());
    let got_line = got[got_from..]
        .split_inclusive(|&b| b == b'\n')
        .next()
        .unwrap_or(&[]);
    Err(Mismatch {
        message: format!(
            "the received message differs from the one sent at octet {} (line {line_no} of the message; {} octets sent, {} received)",
            at + 1,
            sent.len(),
            got.len()
        ),
        expected: Some(crate::finding::escape_bytes(sent_line, 300)),
        actual: Some(crate::finding::escape_bytes(got_line, 300)),
    })
}

/// `Name: value` or a folded continuation line, ending in CRLF.
fn is_header_line(line: &[u8]) -> bool {
    if !line.ends_with(b"\r\n") {
        return false;
    }
    if line.starts_with(b" ") || line.starts_with(b"\t") {
        return true;
    }
    match line.iter().position(|&b| b == b':') {
        Some(i) if i > 0 => line[..i].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_allows_added_headers_only() {
        let sent = b"Subject: x\r\n\r\n..dot\r\nline\r\n";
        let mut got = b"Received: from a\r\n\tby b\r\nReturn-Path: <x@y>\r\n".to_vec();
        got.extend_from_slice(sent);
        assert!(compare_delivered(sent, &got, false).is_ok());
        assert!(compare_delivered(sent, sent, false).is_ok());
        let mut bad = b"hello\r\n".to_vec();
        bad.extend_from_slice(sent);
        assert!(compare_delivered(sent, &bad, false)
            .unwrap_err()
            .message
            .contains("other than header"));
        assert!(compare_delivered(sent, &got, true).is_err());
    }

    #[test]
    fn delivered_names_the_first_difference() {
        let sent = b"Subject: x\r\n\r\n..dot\r\nline\r\n";
        let got = b"Received: a\r\nSubject: x\r\n\r\n...dot\r\nline\r\n";
        let e = compare_delivered(sent, got, false).unwrap_err();
        assert!(e.message.contains("line 3"), "{}", e.message);
        assert_eq!(e.expected.as_deref(), Some("..dot\\r\\n"));
        assert_eq!(e.actual.as_deref(), Some("...dot\\r\\n"));
    }
}
