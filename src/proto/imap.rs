//! IMAP (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1): response framing with
//! literals, a pragmatic response grammar, the command side (tags, states,
//! literals) and the session model that every server response is checked
//! against, whatever a scenario asks.
//!
//! Why our own framing and grammar rather than imap-codec / imap-types: those
//! decode a *valid* message into typed values and reject anything else as a
//! whole, and they want the complete response, literals included, in memory.
//! A tester needs the opposite: report *where* a server deviates (rule, RFC
//! section, offending bytes), then keep going with the rest of the response
//! and of the session, and stream large literals through without holding
//! them. So the framing here is exact (octet counts, literal data never
//! assumed to be UTF-8, bounded buffers), and the grammar is tolerant: it
//! records a finding and recovers at the next item.
//!
//! The layers, all pure (bytes in; values and findings out):
//! - [`ResponseFramer`]: bytes in any chunking -> complete responses; literal
//!   data too large to keep is handed out in pieces as it arrives.
//! - [`parse_response`]: one framed response -> a [`Response`].
//! - [`Command`], [`State`], [`legal_in`], [`TagGen`]: the client side.
//! - [`Session`]: state transitions, tag matching and the selected mailbox model.
//! - [`Reader`]: the three together, as the runner drives them.

use crate::finding::{Finding, Severity};
use std::collections::VecDeque;

/// The condition of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Ok,
    No,
    Bad,
    Preauth,
    Bye,
}

/// A status response: `* OK [CAPABILITY ...] text` or `a1 NO text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// `*` for untagged.
    pub tag: &'a str,
    pub cond: Cond,
    /// The response code inside `[...]`, if any.
    pub code: Option<&'a str>,
    pub text: &'a str,
}

/// Parse a status response line (RFC 9051 section 7.1); other lines give None.
pub fn parse_status(line: &str) -> Option<StatusLine<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (tag, rest) = line.split_once(' ')?;
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let cond = match word.to_ascii_uppercase().as_str() {
        "OK" => Cond::Ok,
        "NO" => Cond::No,
        "BAD" => Cond::Bad,
        "PREAUTH" if tag == "*" => Cond::Preauth,
        "BYE" if tag == "*" => Cond::Bye,
        _ => return None,
    };
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => (Some(code), text.trim_start()),
        None => (None, rest),
    };
    Some(StatusLine {
        tag,
        cond,
        code,
        text,
    })
}

/// Capabilities from `* CAPABILITY a b c` or a `[CAPABILITY a b c]` code, upper-cased.
pub fn capabilities(line: &str) -> Option<Vec<String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let list = if let Some(rest) = line.strip_prefix("* CAPABILITY ") {
        rest
    } else {
        let status = parse_status(line)?;
        status.code?.strip_prefix("CAPABILITY ")?
    };
    Some(list.split_whitespace().map(|c| c.to_ascii_uppercase()).collect())
}

/// Quote a LOGIN argument (RFC 9051 section 4.3): a quoted string, or None
/// when it needs a literal (CR, LF or NUL inside).
pub fn quote(s: &str) -> Option<String> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

const RFC_LINES: &str = "RFC 9051 section 2.2";
const RFC_LITERAL: &str = "RFC 9051 sections 4.3 and 9 (literal)";
const RFC_BINARY: &str = "RFC 9051 section 4.3.1";
const RFC_SYNTAX: &str = "RFC 9051 section 9";

/// Default bound on the response text outside literals. RFC 9051 sets no
/// limit (long strings go as literals, section 4.3); a tester still needs one.
pub const MAX_LINE: usize = 64 * 1024;

/// Bounds of the framer: what it keeps of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Response text outside literals; beyond it the text is dropped (and
    /// reported), framing goes on.
    pub max_line: usize,
    /// A literal up to this size is kept in the response for the grammar;
    /// a larger one is streamed out as [`FramerEvent::LiteralData`].
    pub max_inline_literal: u64,
    /// All kept literal data of one response; literals past it are streamed.
    pub max_inline_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: MAX_LINE,
            max_inline_literal: 64 * 1024,
            max_inline_total: 1024 * 1024,
        }
    }
}

/// Where a literal sits in [`Frame::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralSpan {
    /// Offset of the header (`{`, or the `~` of `~{`).
    pub header: usize,
    /// Offset just after the header's line ending: where the data is (kept)
    /// or would have been (streamed; the text then goes on right here).
    pub data: usize,
    /// Announced (and, by framing, delivered) octet count.
    pub len: u64,
    /// The data is in `bytes` (false: it was streamed out).
    pub inline: bool,
    /// `~{n}` literal8 (RFC 9051 section 4.3.1).
    pub binary: bool,
    /// `{n+}`, which a server must not send (RFC 9051 section 9).
    pub non_sync: bool,
}

/// One complete response as framed: its text with kept literals in place.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The text, with the header and data of kept literals as on the wire,
    /// streamed literals left out, and the final line ending included.
    pub bytes: &'a [u8],
    pub literals: &'a [LiteralSpan],
    /// The text exceeded [`Limits::max_line`] and was cut.
    pub truncated: bool,
    /// Octets on the wire, literal data included.
    pub octets: u64,
}

impl<'a> Frame<'a> {
    /// The first line, without its line ending (for transcripts and findings).
    pub fn first_line(&self) -> &'a [u8] {
        let end = match self.literals.first() {
            Some(l) => l.data.min(self.bytes.len()),
            None => self.bytes.len(),
        };
        strip_eol(&self.bytes[..end])
    }

    /// The whole response as one line, for matching scenario patterns:
    /// literal headers (`{191}`) stay, their data and the line ending after
    /// each header are left out, so `* 1 FETCH (BODY[] {191} RFC822.SIZE 191)`
    /// can be matched and the octet count captured whatever order the items
    /// come in, and a literal's bytes are never treated as text.
    pub fn text(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len().min(512));
        let mut at = 0usize;
        for l in self.literals {
            let header_end = l.data.min(self.bytes.len());
            if header_end < at {
                break;
            }
            out.extend_from_slice(strip_eol(&self.bytes[at..header_end]));
            at = if l.inline {
                header_end.saturating_add(l.len as usize).min(self.bytes.len())
            } else {
                header_end
            };
        }
        out.extend_from_slice(strip_eol(&self.bytes[at.min(self.bytes.len())..]));
        out
    }
}

/// What [`ResponseFramer::feed`] produced.
#[derive(Debug)]
pub enum FramerEvent<'a> {
    /// A complete response.
    Response(Frame<'a>),
    /// A literal too large to keep begins; `prefix` is the response so far.
    LiteralStart {
        len: u64,
        binary: bool,
        prefix: &'a [u8],
    },
    /// The next piece of that literal, straight from the input.
    LiteralData(&'a [u8]),
    /// That literal is complete (the response goes on).
    LiteralEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FState {
    Line,
    Literal {
        remaining: u64,
        inline: bool,
        binary: bool,
    },
}

/// What a line that ends in `}` announces.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LitHeader {
    None,
    Literal {
        len: u64,
        non_sync: bool,
        binary: bool,
        /// Octets of the header (`{n}`, `{n+}` or `~{n}`) at the end of the line.
        header_len: usize,
    },
    Malformed(&'static str),
}

/// Octets kept from the end of each line, enough for any literal header.
const TAIL: usize = 32;

/// Parse the literal header a line ends with (line ending already removed).
/// `complete` says whether `line` is the whole line or only its last octets.
fn literal_header(line: &[u8], complete: bool) -> LitHeader {
    if line.last() != Some(&b'}') {
        return LitHeader::None;
    }
    let body = &line[..line.len() - 1];
    let Some(open) = body.iter().rposition(|&b| b == b'{') else {
        if !complete && !body.is_empty() && body.iter().all(|b| b.is_ascii_digit() || *b == b'+') {
            return LitHeader::Malformed("the literal length has too many digits");
        }
        return LitHeader::None;
    };
    let inner = &body[open + 1..];
    let (digits, non_sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (inner, false),
    };
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        let mut n: u64 = 0;
        for d in digits {
            match n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d - b'0'))) {
                Some(v) => n = v,
                None => return LitHeader::Malformed("the literal length does not fit number64"),
            }
        }
        if n > i64::MAX as u64 {
            return LitHeader::Malformed("the literal length exceeds number64 (2^63-1)");
        }
        let binary = open > 0 && body[open - 1] == b'~';
        return LitHeader::Literal {
            len: n,
            non_sync,
            binary,
            header_len: line.len() - open + usize::from(binary),
        };
    }
    let looks_numeric = inner.iter().any(u8::is_ascii_digit)
        && inner
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-'));
    if inner.is_empty() || looks_numeric {
        return LitHeader::Malformed("`{...}` at the end of the line is not `{number}`");
    }
    LitHeader::None
}

/// Splits the server's byte stream into responses (RFC 9051 sections 2.2
/// and 4.3): lines ending in CRLF, where a line ending in `{n}` continues
/// after exactly n octets of literal data. Any chunking of the input gives
/// the same result; memory stays within [`Limits`].
#[derive(Debug)]
pub struct ResponseFramer {
    limits: Limits,
    buf: Vec<u8>,
    spans: Vec<LiteralSpan>,
    state: FState,
    /// Text octets of the current response outside literals.
    text_len: usize,
    /// Kept literal data of the current response.
    inline_total: u64,
    overflow: bool,
    tail: [u8; TAIL],
    tail_len: usize,
    /// Octets of the current line piece (since the response start or the last literal).
    piece_len: u64,
    octets: u64,
    reset: bool,
    nul_reported: bool,
    limiter: Limiter,
    /// Complete responses so far.
    pub responses: u64,
    /// Literal octets so far (kept and streamed).
    pub literal_octets: u64,
}

impl ResponseFramer {
    pub fn new(limits: Limits) -> ResponseFramer {
        ResponseFramer {
            limits,
            buf: Vec::with_capacity(256),
            spans: Vec::new(),
            state: FState::Line,
            text_len: 0,
            inline_total: 0,
            overflow: false,
            tail: [0; TAIL],
            tail_len: 0,
            piece_len: 0,
            octets: 0,
            reset: false,
            nul_reported: false,
            limiter: Limiter::default(),
            responses: 0,
            literal_octets: 0,
        }
    }

    /// Whether the framer is between responses (nothing partial is pending).
    pub fn is_idle(&self) -> bool {
        self.state == FState::Line && (self.reset || self.octets == 0)
    }

    /// Consume input; returns how many octets were used and the next event.
    /// `None` means the input was used up without completing one; call again
    /// with the rest (`&input[used..]`) until it returns `None`, since a
    /// literal's end is reported on the call after its last data.
    pub fn feed<'a>(
        &'a mut self,
        input: &'a [u8],
        findings: &mut Vec<Finding>,
    ) -> (usize, Option<FramerEvent<'a>>) {
        if self.reset {
            self.start_response();
        }
        let mut pos = 0;
        loop {
            match self.state {
                FState::Literal {
                    remaining,
                    inline,
                    binary,
                } => {
                    if remaining == 0 {
                        self.state = FState::Line;
                        self.piece_len = 0;
                        self.tail_len = 0;
                        self.nul_reported = false;
                        if !inline {
                            return (pos, Some(FramerEvent::LiteralEnd));
                        }
                        continue;
                    }
                    if pos >= input.len() {
                        return (pos, None);
                    }
                    let avail = (input.len() - pos) as u64;
                    let n = remaining.min(avail) as usize;
                    let data = &input[pos..pos + n];
                    pos += n;
                    self.octets += n as u64;
                    self.literal_octets += n as u64;
                    if !binary && !self.nul_reported && memchr::memchr(0, data).is_some() {
                        self.nul_reported = true;
                        self.limiter.push(
                            findings,
                            Finding::must(
                                "imap.literal-nul",
                                RFC_BINARY,
                                "literal data contains NUL; binary strings are only allowed as literal8 \
                                 in a BINARY fetch",
                            ),
                        );
                    }
                    self.state = FState::Literal {
                        remaining: remaining - n as u64,
                        inline,
                        binary,
                    };
                    if inline {
                        self.buf.extend_from_slice(data);
                    } else {
                        return (pos, Some(FramerEvent::LiteralData(data)));
                    }
                }
                FState::Line => {
                    if pos >= input.len() {
                        return (pos, None);
                    }
                    let rest = &input[pos..];
                    let Some(i) = memchr::memchr(b'\n', rest) else {
                        self.push_text(rest, findings);
                        return (input.len(), None);
                    };
                    self.push_text(&rest[..=i], findings);
                    pos += i + 1;
                    match self.end_of_line(findings) {
                        Some((len, binary, non_sync, header_len, eol)) => {
                            let inline = !self.overflow
                                && len <= self.limits.max_inline_literal
                                && self.inline_total.saturating_add(len) <= self.limits.max_inline_total;
                            if !self.overflow {
                                let data = self.buf.len();
                                self.spans.push(LiteralSpan {
                                    header: data.saturating_sub(eol + header_len),
                                    data,
                                    len,
                                    inline,
                                    binary,
                                    non_sync,
                                });
                            }
                            if inline {
                                self.inline_total += len;
                            }
                            self.state = FState::Literal {
                                remaining: len,
                                inline,
                                binary,
                            };
                            if !inline {
                                return (
                                    pos,
                                    Some(FramerEvent::LiteralStart {
                                        len,
                                        binary,
                                        prefix: &self.buf,
                                    }),
                                );
                            }
                        }
                        None => {
                            self.reset = true;
                            self.responses += 1;
                            return (
                                pos,
                                Some(FramerEvent::Response(Frame {
                                    bytes: &self.buf,
                                    literals: &self.spans,
                                    truncated: self.overflow,
                                    octets: self.octets,
                                })),
                            );
                        }
                    }
                }
            }
        }
    }

    /// The connection ended: a partial response is a finding.
    pub fn finish(&mut self, findings: &mut Vec<Finding>) {
        match self.state {
            FState::Literal { remaining, .. } if remaining > 0 => self.limiter.push(
                findings,
                Finding::must(
                    "imap.incomplete",
                    RFC_LITERAL,
                    format!("the connection ended {remaining} octet(s) short of the announced literal"),
                ),
            ),
            _ if !self.is_idle() => self.limiter.push(
                findings,
                Finding::must(
                    "imap.incomplete",
                    RFC_LINES,
                    "the connection ended in the middle of a response (no final CRLF)",
                )
                .with_bytes(&self.buf[..self.buf.len().min(80)]),
            ),
            _ => {}
        }
    }

    fn start_response(&mut self) {
        self.reset = false;
        self.buf.clear();
        self.spans.clear();
        self.text_len = 0;
        self.inline_total = 0;
        self.overflow = false;
        self.tail_len = 0;
        self.piece_len = 0;
        self.octets = 0;
        self.nul_reported = false;
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = Vec::with_capacity(256);
        }
    }

    fn push_text(&mut self, data: &[u8], findings: &mut Vec<Finding>) {
        self.octets += data.len() as u64;
        self.piece_len += data.len() as u64;
        self.text_len = self.text_len.saturating_add(data.len());
        if !self.overflow {
            if self.text_len > self.limits.max_line {
                self.overflow = true;
                self.limiter.push(
                    findings,
                    Finding::should(
                        "imap.line-length",
                        "RFC 9051 section 4.3 (long strings belong in literals)",
                        format!(
                            "response text outside literals exceeds {} octets; the rest is not kept",
                            self.limits.max_line
                        ),
                    )
                    .with_bytes(&self.buf[..self.buf.len().min(80)]),
                );
            } else {
                self.buf.extend_from_slice(data);
            }
        }
        if data.len() >= TAIL {
            self.tail.copy_from_slice(&data[data.len() - TAIL..]);
            self.tail_len = TAIL;
        } else {
            let keep = (TAIL - data.len()).min(self.tail_len);
            self.tail.copy_within(self.tail_len - keep..self.tail_len, 0);
            self.tail[keep..keep + data.len()].copy_from_slice(data);
            self.tail_len = keep + data.len();
        }
    }

    /// A line piece ended (with LF). Returns the literal it announces, as
    /// (len, binary, non_sync, header octets, line-ending octets).
    fn end_of_line(&mut self, findings: &mut Vec<Finding>) -> Option<(u64, bool, bool, usize, usize)> {
        let t = &self.tail[..self.tail_len];
        let crlf = t.ends_with(b"\r\n");
        let eol = if crlf { 2 } else { 1 };
        let content = &t[..t.len().saturating_sub(eol)];
        let complete = self.piece_len as usize == t.len();
        let header = literal_header(content, complete);
        if !crlf {
            let shown = t.to_vec();
            self.limiter.push(
                findings,
                Finding::must("imap.crlf", RFC_LINES, "line ends in a bare LF instead of CRLF")
                    .with_bytes(&shown),
            );
        }
        match header {
            LitHeader::None => None,
            LitHeader::Malformed(why) => {
                let shown = content.to_vec();
                self.limiter.push(
                    findings,
                    Finding::must(
                        "imap.literal-header",
                        RFC_LITERAL,
                        format!("malformed literal header: {why}"),
                    )
                    .with_bytes(&shown),
                );
                None
            }
            LitHeader::Literal {
                len,
                non_sync,
                binary,
                header_len,
            } => {
                if non_sync {
                    let shown = content.to_vec();
                    self.limiter.push(
                        findings,
                        Finding::must(
                            "imap.literal-plus",
                            RFC_LITERAL,
                            "server sent a non-synchronizing literal `{n+}`; only clients may",
                        )
                        .with_bytes(&shown),
                    );
                }
                Some((len, binary, non_sync, header_len, eol))
            }
        }
    }
}

/// Drop a trailing CRLF or LF.
fn strip_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// Findings per rule are capped so that a server repeating one mistake on
/// every response (a bare LF, say) does not bury everything else.
#[derive(Debug, Clone, Default)]
struct Limiter {
    counts: Vec<(&'static str, u32)>,
}

/// Findings of one rule reported per connection before the rest are counted silently.
const PER_RULE: u32 = 20;

impl Limiter {
    fn push(&mut self, out: &mut Vec<Finding>, mut f: Finding) {
        let count = match self.counts.iter_mut().find(|(r, _)| *r == f.rule) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                self.counts.push((f.rule, 1));
                1
            }
        };
        if count < PER_RULE {
            out.push(f);
        } else if count == PER_RULE {
            f.message
                .push_str(" (further findings of this rule on this connection are not reported)");
            out.push(f);
        }
    }
}

// ---------------------------------------------------------------------------
// Response grammar
// ---------------------------------------------------------------------------

const RFC_CODES: &str = "RFC 9051 sections 7.1 and 9 (resp-text-code)";
const RFC_FETCH: &str = "RFC 9051 sections 7.5.2 and 9 (msg-att)";
const RFC_NUMBER: &str = "RFC 9051 sections 4.2 and 9 (number, nz-number)";
const RFC_STRING: &str = "RFC 9051 sections 4.3 and 9 (quoted)";
const RFC_ENVELOPE: &str = "RFC 9051 sections 7.5.2 and 9 (envelope); RFC 3501 section 7.4.2";
const RFC_BODY: &str = "RFC 9051 sections 7.5.2 and 9 (body); RFC 3501 section 7.4.2";

/// Grammar findings reported for one response; past this the response is
/// broken enough that more would only repeat the first.
const MAX_PARSE_FINDINGS: u32 = 4;

/// A string as the server sent it (RFC 9051 section 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Str<'a> {
    /// The inside of a quoted string, escapes still in place.
    Quoted(&'a [u8]),
    /// A literal; `data` is `None` when it was streamed rather than kept.
    Literal {
        len: u64,
        data: Option<&'a [u8]>,
        binary: bool,
    },
    /// An atom where the grammar allows one (astring).
    Atom(&'a [u8]),
    Nil,
}

impl<'a> Str<'a> {
    /// Octets of the value (quoted: after unescaping); `None` for NIL.
    pub fn octets(&self) -> Option<u64> {
        match self {
            Str::Quoted(q) => {
                let mut n = 0u64;
                let mut esc = false;
                for &b in q.iter() {
                    if b == b'\\' && !esc {
                        esc = true;
                        continue;
                    }
                    esc = false;
                    n += 1;
                }
                Some(n)
            }
            Str::Literal { len, .. } => Some(*len),
            Str::Atom(a) => Some(a.len() as u64),
            Str::Nil => None,
        }
    }

    /// The value with quoting undone; `None` for NIL or a streamed literal.
    pub fn decoded(&self) -> Option<Vec<u8>> {
        match self {
            Str::Quoted(q) => {
                let mut out = Vec::with_capacity(q.len());
                let mut esc = false;
                for &b in q.iter() {
                    if b == b'\\' && !esc {
                        esc = true;
                        continue;
                    }
                    esc = false;
                    out.push(b);
                }
                Some(out)
            }
            Str::Literal { data, .. } => data.map(<[u8]>::to_vec),
            Str::Atom(a) => Some(a.to_vec()),
            Str::Nil => None,
        }
    }
}

/// A response code (RFC 9051 section 7.1): the ones the session uses are
/// parsed, the rest kept as name and raw argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code<'a> {
    Alert,
    Parse,
    ReadOnly,
    ReadWrite,
    TryCreate,
    UidNotSticky,
    Closed,
    UidValidity(u32),
    UidNext(u32),
    Unseen(u32),
    HighestModSeq(u64),
    PermanentFlags(Vec<&'a [u8]>),
    Capability(Vec<&'a [u8]>),
    Other { name: &'a [u8], arg: Option<&'a [u8]> },
}

/// The condition, optional code and text of a status response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    pub cond: Cond,
    pub code: Option<Code<'a>>,
    pub text: &'a [u8],
}

/// Which body-like FETCH item a [`Section`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// `BODY[section]<origin>`
    Body,
    /// `BINARY[section]<origin>` (RFC 9051 / RFC 3516)
    Binary,
    /// `RFC822` (IMAP4rev1): the whole message, like `BODY[]`.
    Rfc822,
    /// `RFC822.HEADER` (IMAP4rev1)
    Rfc822Header,
    /// `RFC822.TEXT` (IMAP4rev1)
    Rfc822Text,
}

/// A `BODY[...]`, `BINARY[...]` or `RFC822*` item of a FETCH response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    pub kind: SectionKind,
    /// Between `[` and `]`; empty for the whole message.
    pub section: &'a [u8],
    /// `<origin>` of a partial fetch.
    pub origin: Option<u64>,
    pub value: Str<'a>,
}

/// The data items of one FETCH response (RFC 9051 section 7.5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetch<'a> {
    pub seq: u32,
    pub flags: Option<Vec<&'a [u8]>>,
    pub uid: Option<u32>,
    pub rfc822_size: Option<u64>,
    /// The quoted date-time, without the quotes.
    pub internal_date: Option<&'a [u8]>,
    /// The raw parenthesized envelope.
    pub envelope: Option<&'a [u8]>,
    /// The raw `BODYSTRUCTURE` (or non-extensible `BODY`).
    pub body_structure: Option<&'a [u8]>,
    pub modseq: Option<u64>,
    pub sections: Vec<Section<'a>>,
    /// Items this grammar does not model: name and raw value.
    pub other: Vec<(&'a [u8], &'a [u8])>,
}

impl Fetch<'_> {
    /// Whether the response carries data other than flags and modseq, i.e.
    /// more than an unsolicited flag update.
    pub fn has_data(&self) -> bool {
        self.rfc822_size.is_some()
            || self.internal_date.is_some()
            || self.envelope.is_some()
            || self.body_structure.is_some()
            || !self.sections.is_empty()
            || !self.other.is_empty()
    }
}

/// Untagged data (RFC 9051 sections 7.1-7.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged<'a> {
    /// `* OK/NO/BAD/PREAUTH/BYE ...`
    Status(Status<'a>),
    Capability(Vec<&'a [u8]>),
    Enabled(Vec<&'a [u8]>),
    Flags(Vec<&'a [u8]>),
    List {
        lsub: bool,
        attributes: Vec<&'a [u8]>,
        delimiter: Option<u8>,
        mailbox: Str<'a>,
    },
    MailboxStatus {
        mailbox: Str<'a>,
        items: Vec<(&'a [u8], u64)>,
    },
    Search(Vec<u32>),
    Exists(u32),
    Recent(u32),
    Expunge(u32),
    Fetch(Fetch<'a>),
    /// A response this grammar keeps raw (ESEARCH, ID, NAMESPACE, ...).
    Other {
        name: &'a [u8],
        rest: &'a [u8],
    },
}

/// One server response, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// `tag OK/NO/BAD ...`: the completion of the command with that tag.
    Tagged {
        tag: &'a [u8],
        status: Status<'a>,
    },
    Untagged(Untagged<'a>),
    /// `+ ...`: a command continuation request.
    Continue {
        code: Option<Code<'a>>,
        text: &'a [u8],
    },
    /// Too broken to classify; the findings say why. `tag` is set when the
    /// line started with what looks like a command tag.
    Unparsed {
        tag: Option<&'a [u8]>,
    },
}

/// ATOM-CHAR: any CHAR except atom-specials (RFC 9051 section 9).
fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// ASTRING-CHAR: ATOM-CHAR or `]`.
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// A tag: 1*<any ASTRING-CHAR except "+">.
fn is_tag(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(|&b| is_astring_char(b) && b != b'+')
}

/// date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
fn valid_date_time(s: &[u8]) -> bool {
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
    ];
    let d = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
    let c = |i: usize, ch: u8| s.get(i) == Some(&ch);
    s.len() == 26
        && (d(0) || c(0, b' '))
        && d(1)
        && c(2, b'-')
        && MONTHS.iter().any(|m| s[3..6].eq_ignore_ascii_case(m))
        && c(6, b'-')
        && (7..11).all(d)
        && c(11, b' ')
        && d(12)
        && d(13)
        && c(14, b':')
        && d(15)
        && d(16)
        && c(17, b':')
        && d(18)
        && d(19)
        && c(20, b' ')
        && (c(21, b'+') || c(21, b'-'))
        && (22..26).all(d)
}

/// Classify one framed response and check it against the grammar of RFC
/// 9051 section 9 (and RFC 3501 where rev1 differs), pragmatically: each
/// deviation is a finding with its position, and parsing goes on.
pub fn parse_response<'a>(frame: &Frame<'a>, findings: &mut Vec<Finding>) -> Response<'a> {
    let mut p = Parser::new(frame, findings);
    p.response()
}

struct Parser<'a, 'f> {
    b: &'a [u8],
    pos: usize,
    lits: &'a [LiteralSpan],
    li: usize,
    truncated: bool,
    out: &'f mut Vec<Finding>,
    errors: u32,
}

impl<'a, 'f> Parser<'a, 'f> {
    fn new(frame: &Frame<'a>, out: &'f mut Vec<Finding>) -> Parser<'a, 'f> {
        let bytes = frame.bytes;
        // The final line ending, if it lies after the last literal's data.
        let floor = frame
            .literals
            .last()
            .map(|l| {
                if l.inline {
                    l.data.saturating_add(l.len as usize)
                } else {
                    l.data
                }
            })
            .unwrap_or(0);
        let mut end = bytes.len();
        if !frame.truncated {
            if bytes.ends_with(b"\r\n") && end >= floor + 2 {
                end -= 2;
            } else if bytes.ends_with(b"\n") && end > floor {
                end -= 1;
            }
        }
        Parser {
            b: &bytes[..end],
            pos: 0,
            lits: frame.literals,
            li: 0,
            truncated: frame.truncated,
            out,
            errors: 0,
        }
    }

    fn err(&mut self, rule: &'static str, rfc: &'static str, msg: &str) {
        self.report(Severity::Must, rule, rfc, msg);
    }

    fn report(&mut self, sev: Severity, rule: &'static str, rfc: &'static str, msg: &str) {
        if self.truncated && self.pos >= self.b.len() {
            return;
        }
        self.errors = self.errors.saturating_add(1);
        if self.errors > MAX_PARSE_FINDINGS {
            return;
        }
        let lo = self.pos.saturating_sub(24).min(self.b.len());
        let hi = self.pos.saturating_add(40).min(self.b.len());
        self.out.push(
            Finding::new(sev, rule, rfc, format!("{msg} (at octet {})", self.pos))
                .with_bytes(&self.b[lo..hi]),
        );
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn peek_at(&self, i: usize) -> Option<u8> {
        self.b.get(self.pos + i).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.b[start..self.pos]
    }

    fn atom(&mut self) -> &'a [u8] {
        self.take_while(is_atom_char)
    }

    /// Exactly one SP; a missing or doubled space is a finding.
    fn sp(&mut self, what: &str) -> bool {
        if self.eat(b' ') {
            if self.peek() == Some(b' ') {
                self.err(
                    "imap.response-syntax",
                    RFC_SYNTAX,
                    "two spaces where the grammar has one",
                );
                while self.eat(b' ') {}
            }
            true
        } else {
            self.err("imap.response-syntax", RFC_SYNTAX, &format!("expected SP {what}"));
            false
        }
    }

    fn number(&mut self) -> Option<u64> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return None;
        }
        let mut n: u64 = 0;
        for d in digits {
            n = match n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d - b'0'))) {
                Some(v) => v,
                None => {
                    self.err("imap.number", RFC_NUMBER, "number too large");
                    return None;
                }
            };
        }
        Some(n)
    }

    /// number (32-bit), or nz-number when `nonzero`.
    fn num32(&mut self, what: &str, nonzero: bool) -> Option<u32> {
        let Some(n) = self.number() else {
            self.err("imap.number", RFC_NUMBER, &format!("expected a number ({what})"));
            return None;
        };
        if n > u64::from(u32::MAX) {
            self.err(
                "imap.number",
                RFC_NUMBER,
                &format!("{what} {n} exceeds the 32-bit range"),
            );
            return None;
        }
        if nonzero && n == 0 {
            self.err("imap.number", RFC_NUMBER, &format!("{what} must be non-zero"));
        }
        Some(n as u32)
    }

    fn num64(&mut self, what: &str) -> Option<u64> {
        let Some(n) = self.number() else {
            self.err("imap.number", RFC_NUMBER, &format!("expected a number ({what})"));
            return None;
        };
        if n > i64::MAX as u64 {
            self.err("imap.number", RFC_NUMBER, &format!("{what} exceeds number64"));
        }
        Some(n)
    }

    /// A literal (or literal8) header at `pos`, matched with the framer's span.
    fn literal(&mut self, allow8: bool) -> Option<Str<'a>> {
        let at = self.pos;
        let binary = self.peek() == Some(b'~');
        while self.lits.get(self.li).is_some_and(|l| l.header < at) {
            self.li += 1;
        }
        match self.lits.get(self.li).copied() {
            Some(sp) if sp.header == at => {
                self.li += 1;
                if binary && !allow8 {
                    self.err(
                        "imap.literal8",
                        RFC_BINARY,
                        "literal8 `~{n}` outside a BINARY[] fetch item",
                    );
                }
                let (data, end) = if sp.inline {
                    let end = sp.data.saturating_add(sp.len as usize).min(self.b.len());
                    (self.b.get(sp.data..end), end)
                } else {
                    (None, sp.data)
                };
                self.pos = end.min(self.b.len());
                Some(Str::Literal {
                    len: sp.len,
                    data,
                    binary: sp.binary,
                })
            }
            _ => {
                if !(self.truncated && self.lits.len() <= self.li) {
                    self.err(
                        "imap.response-syntax",
                        RFC_SYNTAX,
                        "`{` does not start a literal here (a literal header ends its line)",
                    );
                }
                None
            }
        }
    }

    fn quoted(&mut self) -> Option<Str<'a>> {
        self.pos += 1;
        let start = self.pos;
        loop {
            let Some(i) = self
                .b
                .get(self.pos..)
                .and_then(|r| memchr::memchr3(b'"', b'\\', b'\r', r))
            else {
                self.pos = self.b.len();
                self.err("imap.quoted", RFC_STRING, "unterminated quoted string");
                return None;
            };
            self.pos += i;
            match self.peek() {
                Some(b'"') => {
                    let s = &self.b[start..self.pos];
                    self.pos += 1;
                    return Some(Str::Quoted(s));
                }
                Some(b'\\') => {
                    if matches!(self.peek_at(1), Some(b'"') | Some(b'\\')) {
                        self.pos += 2;
                    } else {
                        self.err(
                            "imap.quoted",
                            RFC_STRING,
                            "backslash in a quoted string may only escape `\"` or `\\`",
                        );
                        self.pos += 1;
                    }
                }
                _ => {
                    self.err("imap.quoted", RFC_STRING, "CR inside a quoted string");
                    self.pos += 1;
                }
            }
        }
    }

    /// string = quoted / literal (literal8 where `allow8`).
    fn string(&mut self, allow8: bool) -> Option<Str<'a>> {
        match (self.peek(), self.peek_at(1)) {
            (Some(b'"'), _) => self.quoted(),
            (Some(b'{'), _) | (Some(b'~'), Some(b'{')) => self.literal(allow8),
            _ => {
                self.err(
                    "imap.response-syntax",
                    RFC_SYNTAX,
                    "expected a string (quoted or literal)",
                );
                None
            }
        }
    }

    fn nstring(&mut self, allow8: bool) -> Option<Str<'a>> {
        let nil = self
            .b
            .get(self.pos..self.pos + 3)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"NIL"));
        if nil && !self.peek_at(3).is_some_and(is_atom_char) {
            self.pos += 3;
            return Some(Str::Nil);
        }
        self.string(allow8)
    }

    fn astring(&mut self) -> Option<Str<'a>> {
        match (self.peek(), self.peek_at(1)) {
            (Some(b'"'), _) | (Some(b'{'), _) => self.string(false),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    self.err("imap.response-syntax", RFC_SYNTAX, "expected an astring");
                    None
                } else {
                    Some(Str::Atom(a))
                }
            }
        }
    }

    /// Skip one value (atom, number, string, or a parenthesized list of
    /// values) and return its raw bytes; used for ENVELOPE, BODYSTRUCTURE
    /// and items this grammar does not model.
    fn value_raw(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let mut depth = 0u32;
        loop {
            match (self.peek(), self.peek_at(1)) {
                (None, _) => {
                    if depth > 0 {
                        self.err("imap.response-syntax", RFC_SYNTAX, "unbalanced parentheses");
                        return None;
                    }
                    break;
                }
                (Some(b'('), _) => {
                    depth += 1;
                    self.pos += 1;
                    if depth > 64 {
                        self.err(
                            "imap.response-syntax",
                            RFC_SYNTAX,
                            "parentheses nested deeper than 64",
                        );
                        return None;
                    }
                    continue;
                }
                (Some(b')'), _) => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                    self.pos += 1;
                }
                (Some(b' '), _) => {
                    if depth == 0 {
                        break;
                    }
                    self.pos += 1;
                    continue;
                }
                (Some(b'"'), _) => {
                    self.quoted()?;
                }
                (Some(b'{'), _) | (Some(b'~'), Some(b'{')) => {
                    self.literal(false)?;
                }
                _ => {
                    let t = self.take_while(|c| !matches!(c, b' ' | b'(' | b')' | b'"' | b'{'));
                    if t.is_empty() {
                        self.err("imap.response-syntax", RFC_SYNTAX, "unexpected octet in a value");
                        return None;
                    }
                }
            }
            if depth == 0 {
                break;
            }
        }
        Some(&self.b[start..self.pos])
    }

    // ENVELOPE and BODY/BODYSTRUCTURE (RFC 9051 section 9; RFC 3501 section 9).
    // Each check reports its first deviation and stops: the caller goes on
    // after the whole (balanced) value either way.

    fn env_err(&mut self, msg: &str) -> bool {
        self.err("imap.envelope", RFC_ENVELOPE, msg);
        false
    }

    fn body_err(&mut self, msg: &str) -> bool {
        self.err("imap.bodystructure", RFC_BODY, msg);
        false
    }

    /// Whether an nstring starts here (quoted, literal or NIL).
    fn at_nstring(&self) -> bool {
        let nil = self
            .b
            .get(self.pos..self.pos + 3)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"NIL"))
            && !self.peek_at(3).is_some_and(is_atom_char);
        nil || self.at_string()
    }

    fn at_string(&self) -> bool {
        matches!(self.peek(), Some(b'"') | Some(b'{'))
    }

    fn at_nil(&self) -> bool {
        self.at_nstring() && !self.at_string()
    }

    /// envelope = "(" env-date SP env-subject SP env-from SP env-sender SP
    /// env-reply-to SP env-to SP env-cc SP env-bcc SP env-in-reply-to SP
    /// env-message-id ")"
    fn envelope(&mut self) -> bool {
        const FIELDS: [&str; 10] = [
            "date",
            "subject",
            "from",
            "sender",
            "reply-to",
            "to",
            "cc",
            "bcc",
            "in-reply-to",
            "message-id",
        ];
        if !self.eat(b'(') {
            return self.env_err("expected `(` to open the envelope");
        }
        for (i, what) in FIELDS.iter().enumerate() {
            if i > 0 && !self.eat(b' ') {
                if self.peek() == Some(b')') {
                    return self.env_err(&format!(
                        "the envelope ends after {i} fields; it has 10 (the {what} field is missing)"
                    ));
                }
                return self.env_err(&format!("expected SP before the envelope's {what} field"));
            }
            let ok = if (2..8).contains(&i) {
                self.address_list(what)
            } else if self.at_nstring() {
                self.nstring(false).is_some()
            } else {
                self.env_err(&format!("the envelope's {what} field must be a string or NIL"))
            };
            if !ok {
                return false;
            }
        }
        if !self.eat(b')') {
            return self.env_err("the envelope has more than 10 fields, or is not closed by `)`");
        }
        true
    }

    /// env-from etc.: "(" 1*address ")" / nil; address = "(" addr-name SP
    /// addr-adl SP addr-mailbox SP addr-host ")", each an nstring.
    fn address_list(&mut self, what: &str) -> bool {
        if self.at_nil() {
            self.pos += 3;
            return true;
        }
        if !self.eat(b'(') {
            return self.env_err(&format!(
                "the envelope's {what} field must be a list of addresses or NIL"
            ));
        }
        if self.peek() != Some(b'(') {
            return self.env_err(&format!("the envelope's {what} list needs at least one address"));
        }
        // `1*address` has no SP between addresses, but the RFCs' own FETCH
        // example (RFC 3501 and 9051 section 6.4.5) puts one there, and
        // clients accept both: a space is tolerated.
        while self.eat(b'(')
            || (self.peek() == Some(b' ')
                && self.peek_at(1) == Some(b'(')
                && self.eat(b' ')
                && self.eat(b'('))
        {
            for part in 0..4 {
                if part > 0 && !self.eat(b' ') {
                    return self
                        .env_err("an address has four fields (name, adl, mailbox, host) separated by SP");
                }
                if !self.at_nstring() {
                    return self.env_err("an address field must be a string or NIL");
                }
                if self.nstring(false).is_none() {
                    return false;
                }
            }
            if !self.eat(b')') {
                return self.env_err("an address has four fields and ends with `)`");
            }
        }
        if !self.eat(b')') {
            return self.env_err(&format!(
                "the envelope's {what} list holds addresses only and ends with `)`"
            ));
        }
        true
    }

    /// A `string` of the body grammar, decoded (for media types).
    fn body_string(&mut self, what: &str) -> Option<Vec<u8>> {
        if !self.at_string() {
            self.body_err(&format!("the {what} must be a string"));
            return None;
        }
        let s = self.string(false)?;
        Some(s.decoded().unwrap_or_default())
    }

    fn body_nstring(&mut self, what: &str) -> bool {
        if !self.at_nstring() {
            return self.body_err(&format!("the {what} must be a string or NIL"));
        }
        self.nstring(false).is_some()
    }

    fn body_number(&mut self, what: &str) -> bool {
        if self.number().is_none() {
            return self.body_err(&format!("expected a number: {what}"));
        }
        true
    }

    fn body_sp(&mut self, what: &str) -> bool {
        self.eat(b' ') || self.body_err(&format!("expected SP before {what}"))
    }

    /// body-fld-param = "(" string SP string *(SP string SP string) ")" / nil
    fn body_params(&mut self) -> bool {
        if self.at_nil() {
            self.pos += 3;
            return true;
        }
        if !self.eat(b'(') {
            return self.body_err("body parameters must be a list of attribute/value strings, or NIL");
        }
        let mut n = 0;
        loop {
            if n > 0 && !self.eat(b' ') {
                break;
            }
            if self.body_string("body parameter").is_none() {
                return false;
            }
            n += 1;
        }
        if n % 2 != 0 {
            return self.body_err("body parameters come in attribute/value pairs");
        }
        self.eat(b')') || self.body_err("body parameters not closed by `)`")
    }

    /// The optional extension fields after md5 (single part) or params
    /// (multipart): [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc
    /// *(SP body-extension)]]].
    fn body_ext_rest(&mut self) -> bool {
        if !self.eat(b' ') {
            return true;
        }
        // body-fld-dsp = "(" string SP body-fld-param ")" / nil
        if self.at_nil() {
            self.pos += 3;
        } else if self.eat(b'(') {
            if self.body_string("disposition type").is_none()
                || !self.body_sp("the disposition parameters")
                || !self.body_params()
            {
                return false;
            }
            if !self.eat(b')') {
                return self.body_err("body disposition not closed by `)`");
            }
        } else {
            return self.body_err("the body disposition must be `(type params)` or NIL");
        }
        if !self.eat(b' ') {
            return true;
        }
        // body-fld-lang = nstring / "(" string *(SP string) ")"
        if self.eat(b'(') {
            loop {
                if self.body_string("language").is_none() {
                    return false;
                }
                if !self.eat(b' ') {
                    break;
                }
            }
            if !self.eat(b')') {
                return self.body_err("body language list not closed by `)`");
            }
        } else if !self.body_nstring("body language") {
            return false;
        }
        if !self.eat(b' ') {
            return true;
        }
        if !self.body_nstring("body location") {
            return false;
        }
        while self.eat(b' ') {
            if !self.body_extension(0) {
                return false;
            }
        }
        true
    }

    /// body-extension = nstring / number / number64 / "(" body-extension *(SP body-extension) ")"
    fn body_extension(&mut self, depth: u32) -> bool {
        if depth > 16 {
            return self.body_err("body extensions nested too deeply");
        }
        if self.eat(b'(') {
            loop {
                if !self.body_extension(depth + 1) {
                    return false;
                }
                if !self.eat(b' ') {
                    break;
                }
            }
            return self.eat(b')') || self.body_err("body extension list not closed by `)`");
        }
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return self.body_number("body extension");
        }
        self.body_nstring("body extension")
    }

    /// body = "(" (body-type-1part / body-type-mpart) ")"; extension data
    /// only in BODYSTRUCTURE (`extended`), never in BODY (RFC 9051 section 7.5.2).
    fn body(&mut self, extended: bool, depth: u32) -> bool {
        if depth > 32 {
            return self.body_err("body parts nested deeper than 32");
        }
        if !self.eat(b'(') {
            return self.body_err("expected `(` to open a body part");
        }
        if self.peek() == Some(b'(') {
            // body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
            while self.peek() == Some(b'(') {
                if !self.body(extended, depth + 1) {
                    return false;
                }
            }
            if !self.body_sp("the multipart subtype") || self.body_string("multipart subtype").is_none() {
                return false;
            }
            if self.eat(b' ') {
                if !extended {
                    return self.body_err("BODY carries extension data, which only BODYSTRUCTURE may");
                }
                if !self.body_params() || !self.body_ext_rest() {
                    return false;
                }
            }
        } else {
            let Some(kind) = self.body_string("media type") else {
                return false;
            };
            if !self.body_sp("the media subtype") {
                return false;
            }
            let Some(sub) = self.body_string("media subtype") else {
                return false;
            };
            // body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP body-fld-octets
            let fields = self.body_sp("the body parameters")
                && self.body_params()
                && self.body_sp("the body id")
                && self.body_nstring("body id")
                && self.body_sp("the body description")
                && self.body_nstring("body description")
                && self.body_sp("the body encoding")
                && self.body_string("body encoding").is_some()
                && self.body_sp("the body size")
                && self.body_number("the body size in octets");
            if !fields {
                return false;
            }
            let text = kind.eq_ignore_ascii_case(b"TEXT");
            let message = kind.eq_ignore_ascii_case(b"MESSAGE")
                && (sub.eq_ignore_ascii_case(b"RFC822") || sub.eq_ignore_ascii_case(b"GLOBAL"))
                && self.peek() == Some(b' ')
                && self.peek_at(1) == Some(b'(');
            if text {
                if !self.eat(b' ') || !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return self.body_err(
                        "a TEXT part needs its size in lines (body-fld-lines) after its size in octets",
                    );
                }
                if !self.body_number("the size in lines") {
                    return false;
                }
            } else if message {
                // body-type-msg = ... SP envelope SP body SP body-fld-lines
                self.pos += 1;
                if !self.envelope() {
                    return false;
                }
                if !self.body_sp("the encapsulated message's body") || !self.body(extended, depth + 1) {
                    return false;
                }
                if !self.body_sp("the size in lines") || !self.body_number("the size in lines") {
                    return false;
                }
            }
            if self.eat(b' ') {
                if !extended {
                    return self.body_err("BODY carries extension data, which only BODYSTRUCTURE may");
                }
                // body-ext-1part = body-fld-md5 [SP body-fld-dsp ...]
                if !self.body_nstring("body MD5") || !self.body_ext_rest() {
                    return false;
                }
            }
        }
        self.eat(b')') || self.body_err("a body part is not closed by `)` where the grammar ends")
    }

    /// Skip to the end of the current item: SP or `)` at this depth, or the end.
    fn recover(&mut self) {
        let mut depth = 0u32;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.pos += 1;
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == b'\\' {
                            self.pos += 1;
                        } else if c == b'"' {
                            break;
                        }
                    }
                    continue;
                }
                b'{' | b'~' => {
                    let at = self.pos;
                    while self.lits.get(self.li).is_some_and(|l| l.header < at) {
                        self.li += 1;
                    }
                    if let Some(sp) = self.lits.get(self.li).copied().filter(|l| l.header == at) {
                        self.li += 1;
                        let end = if sp.inline {
                            sp.data.saturating_add(sp.len as usize)
                        } else {
                            sp.data
                        };
                        self.pos = end.min(self.b.len());
                        continue;
                    }
                }
                b'(' | b'[' => depth += 1,
                b')' | b']' => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                }
                b' ' if depth == 0 => return,
                _ => {}
            }
            self.pos += 1;
        }
        self.pos = self.pos.min(self.b.len());
    }

    fn expect_end(&mut self, what: &str) {
        if !self.at_end() {
            self.err(
                "imap.response-syntax",
                RFC_SYNTAX,
                &format!("unexpected data after {what}"),
            );
        }
    }

    fn response(&mut self) -> Response<'a> {
        match self.peek() {
            None => {
                self.err("imap.response-syntax", RFC_SYNTAX, "empty response line");
                Response::Unparsed { tag: None }
            }
            Some(b'+') => {
                self.pos += 1;
                // RFC 3501 requires SP and text; RFC 9051 makes both optional.
                if self.at_end() {
                    return Response::Continue {
                        code: None,
                        text: b"",
                    };
                }
                if !self.eat(b' ') {
                    self.err("imap.response-syntax", RFC_SYNTAX, "expected SP after `+`");
                }
                let mut code = None;
                if self.peek() == Some(b'[') {
                    code = self.resp_code();
                    self.eat(b' ');
                }
                let text = &self.b[self.pos..];
                self.pos = self.b.len();
                Response::Continue { code, text }
            }
            Some(b'*') => {
                self.pos += 1;
                if !self.sp("after `*`") {
                    return Response::Unparsed { tag: None };
                }
                self.untagged()
            }
            Some(_) => self.tagged(),
        }
    }

    fn tagged(&mut self) -> Response<'a> {
        let tag = self.take_while(|b| b != b' ');
        if !is_tag(tag) {
            self.pos = 0;
            self.err(
                "imap.tag",
                RFC_SYNTAX,
                "a tag is 1*ASTRING-CHAR without `+` (no parentheses, quotes, `*`, `%`, `{` or controls)",
            );
            self.pos = tag.len();
        }
        if !self.sp("after the tag") {
            return Response::Unparsed { tag: Some(tag) };
        }
        let word = self.atom();
        let cond = if word.eq_ignore_ascii_case(b"OK") {
            Cond::Ok
        } else if word.eq_ignore_ascii_case(b"NO") {
            Cond::No
        } else if word.eq_ignore_ascii_case(b"BAD") {
            Cond::Bad
        } else {
            self.err(
                "imap.response-syntax",
                RFC_SYNTAX,
                "a tagged response must be OK, NO or BAD (PREAUTH and BYE are untagged only)",
            );
            return Response::Unparsed { tag: Some(tag) };
        };
        let status = self.resp_text(cond);
        Response::Tagged { tag, status }
    }

    /// [SP] ["[" resp-text-code "]" SP] text
    fn resp_text(&mut self, cond: Cond) -> Status<'a> {
        let mut code = None;
        if !self.at_end() {
            self.sp("before the response text");
            if self.peek() == Some(b'[') {
                code = self.resp_code();
                if !self.at_end() && !self.eat(b' ') {
                    self.err(
                        "imap.response-code",
                        RFC_CODES,
                        "expected SP after the response code",
                    );
                }
            }
        }
        let start = self.pos.min(self.b.len());
        if self.lits.iter().any(|l| l.header >= start) {
            self.err(
                "imap.literal-in-text",
                RFC_SYNTAX,
                "the response text ends in a literal header `{n}`, which text cannot hold; clients read \
                 the next n octets as literal data",
            );
        }
        let text = &self.b[start..];
        self.pos = self.b.len();
        Status { cond, code, text }
    }

    fn resp_code(&mut self) -> Option<Code<'a>> {
        self.pos += 1; // [
        let name = self.atom();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let code = if name.is_empty() {
            self.err("imap.response-code", RFC_CODES, "empty response code");
            None
        } else if is("ALERT") {
            Some(Code::Alert)
        } else if is("PARSE") {
            Some(Code::Parse)
        } else if is("READ-ONLY") {
            Some(Code::ReadOnly)
        } else if is("READ-WRITE") {
            Some(Code::ReadWrite)
        } else if is("TRYCREATE") {
            Some(Code::TryCreate)
        } else if is("UIDNOTSTICKY") {
            Some(Code::UidNotSticky)
        } else if is("CLOSED") {
            Some(Code::Closed)
        } else if is("UIDVALIDITY") || is("UIDNEXT") || is("UNSEEN") {
            if self.eat(b' ') {
                self.num32("in the response code", true).map(|n| {
                    if is("UIDVALIDITY") {
                        Code::UidValidity(n)
                    } else if is("UIDNEXT") {
                        Code::UidNext(n)
                    } else {
                        Code::Unseen(n)
                    }
                })
            } else {
                self.err(
                    "imap.response-code",
                    RFC_CODES,
                    "response code needs SP and a number",
                );
                None
            }
        } else if is("HIGHESTMODSEQ") {
            if self.eat(b' ') {
                self.num64("HIGHESTMODSEQ").map(Code::HighestModSeq)
            } else {
                self.err(
                    "imap.response-code",
                    RFC_CODES,
                    "HIGHESTMODSEQ needs SP and a number",
                );
                None
            }
        } else if is("PERMANENTFLAGS") {
            if self.eat(b' ') {
                self.flag_list(true).map(Code::PermanentFlags)
            } else {
                self.err(
                    "imap.response-code",
                    RFC_CODES,
                    "PERMANENTFLAGS needs SP and a flag list",
                );
                None
            }
        } else if is("CAPABILITY") {
            if self.eat(b' ') {
                Some(Code::Capability(self.capability_list()))
            } else {
                self.err(
                    "imap.response-code",
                    RFC_CODES,
                    "CAPABILITY needs SP and capabilities",
                );
                None
            }
        } else {
            let arg = if self.eat(b' ') {
                let a = self.take_while(|b| b != b']');
                Some(a)
            } else {
                None
            };
            Some(Code::Other { name, arg })
        };
        if !self.eat(b']') {
            self.err("imap.response-code", RFC_CODES, "response code not closed by `]`");
            if let Some(i) = memchr::memchr(b']', &self.b[self.pos.min(self.b.len())..]) {
                self.pos += i + 1;
            } else {
                self.pos = self.b.len();
            }
        }
        code
    }

    /// capability *(SP capability), up to `]` or the end; checks for the version atom.
    fn capability_list(&mut self) -> Vec<&'a [u8]> {
        let mut caps = Vec::new();
        loop {
            let c = self.atom();
            if c.is_empty() {
                self.err("imap.response-syntax", RFC_SYNTAX, "expected a capability name");
                break;
            }
            caps.push(c);
            if !self.eat(b' ') {
                break;
            }
        }
        let versioned = caps
            .iter()
            .any(|c| c.eq_ignore_ascii_case(b"IMAP4rev1") || c.eq_ignore_ascii_case(b"IMAP4rev2"));
        if !versioned && !caps.is_empty() {
            self.report(
                Severity::Must,
                "imap.capability-version",
                "RFC 9051 section 7.2.2 (RFC 3501 section 7.2.1)",
                "the capability list names neither IMAP4rev2 nor IMAP4rev1",
            );
        }
        caps
    }

    /// "(" [flag *(SP flag)] ")"; `\*` only where `perm` (PERMANENTFLAGS).
    fn flag_list(&mut self, perm: bool) -> Option<Vec<&'a [u8]>> {
        if !self.eat(b'(') {
            self.err(
                "imap.response-syntax",
                RFC_SYNTAX,
                "expected `(` to open a flag list",
            );
            return None;
        }
        let mut flags = Vec::new();
        loop {
            if self.eat(b')') {
                return Some(flags);
            }
            if self.at_end() {
                self.err("imap.response-syntax", RFC_SYNTAX, "flag list not closed by `)`");
                return Some(flags);
            }
            if !flags.is_empty() && !self.sp("between flags") {
                let before = self.pos;
                self.recover();
                if self.pos == before {
                    // Stuck at `]` or similar: the list is over as far as we can tell.
                    return Some(flags);
                }
                continue;
            }
            let start = self.pos;
            let system = self.eat(b'\\');
            let name = self.atom();
            if name.is_empty() {
                if system && perm && self.eat(b'*') {
                    flags.push(&self.b[start..self.pos]);
                    continue;
                }
                self.err(
                    "imap.flag",
                    "RFC 9051 sections 2.3.2 and 9 (flag)",
                    "invalid flag (a flag is an atom, or `\\` and an atom)",
                );
                self.recover();
                if self.pos == start {
                    self.pos += 1;
                }
                continue;
            }
            flags.push(&self.b[start..self.pos]);
        }
    }

    fn untagged(&mut self) -> Response<'a> {
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return self.message_data();
        }
        let name = self.atom();
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let data = if is("OK") || is("NO") || is("BAD") || is("PREAUTH") || is("BYE") {
            let cond = if is("OK") {
                Cond::Ok
            } else if is("NO") {
                Cond::No
            } else if is("BAD") {
                Cond::Bad
            } else if is("PREAUTH") {
                Cond::Preauth
            } else {
                Cond::Bye
            };
            return Response::Untagged(Untagged::Status(self.resp_text(cond)));
        } else if is("CAPABILITY") {
            if !self.sp("and at least one capability") {
                return Response::Untagged(Untagged::Capability(Vec::new()));
            }
            Untagged::Capability(self.capability_list())
        } else if is("ENABLED") {
            let mut caps = Vec::new();
            while self.eat(b' ') {
                let c = self.atom();
                if c.is_empty() {
                    self.err("imap.response-syntax", RFC_SYNTAX, "expected a capability name");
                    break;
                }
                caps.push(c);
            }
            Untagged::Enabled(caps)
        } else if is("FLAGS") {
            self.sp("before the flag list");
            Untagged::Flags(self.flag_list(false).unwrap_or_default())
        } else if is("LIST") || is("LSUB") {
            self.mailbox_list(is("LSUB"))
        } else if is("STATUS") {
            self.mailbox_status()
        } else if is("SEARCH") {
            let mut nums = Vec::new();
            while self.eat(b' ') {
                if self.peek() == Some(b'(') {
                    self.value_raw();
                    continue;
                }
                match self.num32("in SEARCH", true) {
                    Some(n) => nums.push(n),
                    None => {
                        self.recover();
                    }
                }
            }
            Untagged::Search(nums)
        } else {
            const KNOWN: &[&str] = &[
                "ESEARCH",
                "ID",
                "NAMESPACE",
                "SORT",
                "THREAD",
                "VANISHED",
                "QUOTA",
                "QUOTAROOT",
                "METADATA",
                "ACL",
                "LISTRIGHTS",
                "MYRIGHTS",
                "XLIST",
                "LANGUAGE",
                "COMPARATOR",
                "GENURLID",
                "URLFETCH",
                "CONVERTED",
            ];
            if name.is_empty() {
                self.err(
                    "imap.response-syntax",
                    RFC_SYNTAX,
                    "expected a response name after `* `",
                );
                return Response::Unparsed { tag: None };
            }
            if !KNOWN.iter().any(|k| is(k)) {
                self.report(
                    Severity::Note,
                    "imap.unknown-response",
                    "RFC 9051 section 7",
                    "untagged response of a kind this checker does not know",
                );
            }
            let rest = &self.b[self.pos..];
            self.pos = self.b.len();
            return Response::Untagged(Untagged::Other { name, rest });
        };
        self.expect_end("the response data");
        Response::Untagged(data)
    }

    fn message_data(&mut self) -> Response<'a> {
        let n = self.number();
        let Some(n) = n else {
            return Response::Unparsed { tag: None };
        };
        if n > u64::from(u32::MAX) {
            self.err("imap.number", RFC_NUMBER, "number exceeds the 32-bit range");
        }
        let n32 = n.min(u64::from(u32::MAX)) as u32;
        if !self.sp("after the number") {
            return Response::Unparsed { tag: None };
        }
        let name = self.atom();
        let is = |k: &str| name.eq_ignore_ascii_case(k.as_bytes());
        let data = if is("EXISTS") {
            Untagged::Exists(n32)
        } else if is("RECENT") {
            Untagged::Recent(n32)
        } else if is("EXPUNGE") || is("FETCH") {
            if n == 0 {
                self.err(
                    "imap.number",
                    RFC_NUMBER,
                    "a message sequence number must be non-zero",
                );
            }
            if is("EXPUNGE") {
                Untagged::Expunge(n32)
            } else {
                if !self.sp("after FETCH") {
                    return Response::Untagged(Untagged::Fetch(Fetch {
                        seq: n32,
                        ..Fetch::default()
                    }));
                }
                Untagged::Fetch(self.fetch(n32))
            }
        } else {
            self.report(
                Severity::Note,
                "imap.unknown-response",
                "RFC 9051 section 7",
                "untagged numbered response of a kind this checker does not know",
            );
            let rest = &self.b[self.pos..];
            self.pos = self.b.len();
            return Response::Untagged(Untagged::Other { name, rest });
        };
        self.expect_end("the message data");
        Response::Untagged(data)
    }

    fn mailbox_list(&mut self, lsub: bool) -> Untagged<'a> {
        let mut out = Untagged::List {
            lsub,
            attributes: Vec::new(),
            delimiter: None,
            mailbox: Str::Nil,
        };
        if !self.sp("before the mailbox attributes") {
            return out;
        }
        let attributes = self.flag_list(false).unwrap_or_default();
        if !self.sp("before the hierarchy delimiter") {
            return out;
        }
        let delimiter = match self.peek() {
            Some(b'"') => match self.quoted() {
                Some(Str::Quoted(q)) if q.len() == 1 => Some(q[0]),
                Some(Str::Quoted(q)) if q.len() == 2 && q[0] == b'\\' => Some(q[1]),
                _ => {
                    self.err(
                        "imap.response-syntax",
                        RFC_SYNTAX,
                        "the hierarchy delimiter is one quoted character or NIL",
                    );
                    None
                }
            },
            _ => {
                let a = self.atom();
                if !a.eq_ignore_ascii_case(b"NIL") {
                    self.err(
                        "imap.response-syntax",
                        RFC_SYNTAX,
                        "the hierarchy delimiter is one quoted character or NIL",
                    );
                }
                None
            }
        };
        if !self.sp("before the mailbox name") {
            return out;
        }
        let mailbox = self.astring().unwrap_or(Str::Nil);
        // mbox-list-extended (RFC 9051): SP "(" ... ")"
        if self.eat(b' ') {
            self.value_raw();
        }
        out = Untagged::List {
            lsub,
            attributes,
            delimiter,
            mailbox,
        };
        out
    }

    fn mailbox_status(&mut self) -> Untagged<'a> {
        let mut items = Vec::new();
        if !self.sp("before the mailbox name") {
            return Untagged::MailboxStatus {
                mailbox: Str::Nil,
                items,
            };
        }
        let mailbox = self.astring().unwrap_or(Str::Nil);
        if self.sp("before the status items") && self.eat(b'(') {
            loop {
                if self.eat(b')') {
                    break;
                }
                if self.at_end() {
                    self.err(
                        "imap.response-syntax",
                        RFC_SYNTAX,
                        "status list not closed by `)`",
                    );
                    break;
                }
                let before = self.pos;
                if !items.is_empty() && !self.sp("between status items") {
                    self.recover();
                    if self.pos == before {
                        break;
                    }
                    continue;
                }
                let name = self.atom();
                if name.is_empty() || !self.sp("after a status item name") {
                    self.recover();
                    if self.pos == before {
                        break;
                    }
                    continue;
                }
                match self.num64("status item value") {
                    Some(v) => items.push((name, v)),
                    None => self.recover(),
                }
            }
        }
        Untagged::MailboxStatus { mailbox, items }
    }

    fn fetch(&mut self, seq: u32) -> Fetch<'a> {
        let mut f = Fetch {
            seq,
            ..Fetch::default()
        };
        if !self.eat(b'(') {
            self.err(
                "imap.fetch-syntax",
                RFC_FETCH,
                "expected `(` to open the FETCH data",
            );
            self.pos = self.b.len();
            return f;
        }
        let mut first = true;
        loop {
            let before = self.pos;
            if self.eat(b')') {
                break;
            }
            if self.at_end() {
                self.err("imap.fetch-syntax", RFC_FETCH, "FETCH data not closed by `)`");
                return f;
            }
            if !first && !self.eat(b' ') {
                self.err(
                    "imap.fetch-syntax",
                    RFC_FETCH,
                    "expected SP between FETCH data items",
                );
                self.recover();
            } else if !self.fetch_item(&mut f) {
                self.recover();
            }
            first = false;
            if self.pos == before {
                self.pos += 1;
            }
        }
        f
    }

    /// One msg-att item; false when it could not be parsed (the caller recovers).
    fn fetch_item(&mut self, f: &mut Fetch<'a>) -> bool {
        let name = self.take_while(|c| !matches!(c, b' ' | b'[' | b'(' | b')' | b'<'));
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if name.is_empty() {
            self.err("imap.fetch-syntax", RFC_FETCH, "expected a FETCH data item name");
            return false;
        }
        if (is("BODY") || is("BINARY") || is("BINARY.SIZE")) && self.peek() == Some(b'[') {
            let section = self.section();
            let origin = if self.eat(b'<') {
                let o = self.num64("partial origin");
                if !self.eat(b'>') {
                    self.err("imap.fetch-syntax", RFC_FETCH, "partial origin not closed by `>`");
                    return false;
                }
                o
            } else {
                None
            };
            if !self.sp("after the section") {
                return false;
            }
            if is("BINARY.SIZE") {
                return match self.num64("BINARY.SIZE") {
                    Some(_) => {
                        f.other.push((name, section));
                        true
                    }
                    None => false,
                };
            }
            let binary = is("BINARY");
            let Some(value) = self.nstring(binary) else {
                return false;
            };
            f.sections.push(Section {
                kind: if binary {
                    SectionKind::Binary
                } else {
                    SectionKind::Body
                },
                section,
                origin,
                value,
            });
            return true;
        }
        if !self.sp("after the data item name") {
            return false;
        }
        if is("FLAGS") {
            f.flags = self.flag_list(false);
            f.flags.is_some()
        } else if is("UID") {
            f.uid = self.num32("UID", true);
            f.uid.is_some()
        } else if is("RFC822.SIZE") {
            f.rfc822_size = self.num64("RFC822.SIZE");
            f.rfc822_size.is_some()
        } else if is("INTERNALDATE") {
            match self.string(false) {
                Some(Str::Quoted(d)) => {
                    if !valid_date_time(d) {
                        self.err(
                            "imap.internaldate",
                            "RFC 9051 section 9 (date-time)",
                            "INTERNALDATE is not \"dd-Mon-yyyy hh:mm:ss +zzzz\"",
                        );
                    }
                    f.internal_date = Some(d);
                    true
                }
                Some(_) => {
                    self.err(
                        "imap.internaldate",
                        "RFC 9051 section 9 (date-time)",
                        "INTERNALDATE must be quoted",
                    );
                    true
                }
                None => false,
            }
        } else if is("ENVELOPE") || is("BODYSTRUCTURE") || is("BODY") {
            if self.peek() != Some(b'(') {
                self.err("imap.fetch-syntax", RFC_FETCH, "expected `(`");
                return false;
            }
            let (start, li) = (self.pos, self.li);
            let raw = self.value_raw();
            if raw.is_some() {
                // The balanced value is known; check its inner grammar within it,
                // then go on after it whatever the check found.
                let (end, li_end, full) = (self.pos, self.li, self.b);
                self.b = &full[..end];
                self.pos = start;
                self.li = li;
                if is("ENVELOPE") {
                    self.envelope();
                } else {
                    self.body(is("BODYSTRUCTURE"), 0);
                }
                self.b = full;
                self.pos = end;
                self.li = li_end;
            }
            if is("ENVELOPE") {
                f.envelope = raw;
            } else {
                f.body_structure = raw;
            }
            raw.is_some()
        } else if is("RFC822") || is("RFC822.HEADER") || is("RFC822.TEXT") {
            let Some(value) = self.nstring(false) else {
                return false;
            };
            let kind = if is("RFC822") {
                SectionKind::Rfc822
            } else if is("RFC822.HEADER") {
                SectionKind::Rfc822Header
            } else {
                SectionKind::Rfc822Text
            };
            f.sections.push(Section {
                kind,
                section: b"",
                origin: None,
                value,
            });
            true
        } else if is("MODSEQ") {
            if !self.eat(b'(') {
                self.err(
                    "imap.fetch-syntax",
                    RFC_FETCH,
                    "MODSEQ value must be parenthesized",
                );
                return false;
            }
            f.modseq = self.num64("MODSEQ");
            if !self.eat(b')') {
                self.err("imap.fetch-syntax", RFC_FETCH, "MODSEQ value not closed by `)`");
                return false;
            }
            true
        } else {
            match self.value_raw() {
                Some(raw) => {
                    f.other.push((name, raw));
                    true
                }
                None => false,
            }
        }
    }

    /// `[section]`, with parenthesized header lists inside; returns the inside.
    fn section(&mut self) -> &'a [u8] {
        self.pos += 1; // [
        let start = self.pos;
        let mut depth = 0u32;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.quoted();
                    continue;
                }
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b']' if depth == 0 => {
                    let s = &self.b[start..self.pos];
                    self.pos += 1;
                    return s;
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.err("imap.fetch-syntax", RFC_FETCH, "section not closed by `]`");
        &self.b[start..]
    }
}

// ---------------------------------------------------------------------------
// Command side
// ---------------------------------------------------------------------------

/// The connection states of RFC 9051 section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    NotAuthenticated,
    Authenticated,
    Selected,
    Logout,
}

/// A literal in a client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLiteral {
    pub len: u64,
    /// `{n}`: the client must wait for a `+` continuation before the data.
    /// `{n+}` (LITERAL+ / LITERAL-, RFC 7888) is sent without waiting.
    pub sync: bool,
    /// `~{n}` literal8 (APPEND of binary data, RFC 3516 / RFC 9051).
    pub binary: bool,
}

/// Why a client line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    Empty,
    /// The tag is missing or has characters a tag cannot have.
    BadTag,
    NoVerb,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CommandError::Empty => "empty command",
            CommandError::BadTag => "the tag is missing or invalid (1*ASTRING-CHAR without `+`)",
            CommandError::NoVerb => "no command name after the tag",
        })
    }
}

impl std::error::Error for CommandError {}

/// A client command (RFC 9051 sections 2.2.1 and 6): tag, verb, arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    /// Upper-cased command name; for `UID FETCH` etc. the name after UID.
    pub verb: String,
    /// The command was prefixed with UID (RFC 9051 section 6.4.9).
    pub uid: bool,
    /// Everything after the verb as sent (later lines and literal data
    /// included), without the final line ending.
    pub args: Vec<u8>,
    pub literals: Vec<ClientLiteral>,
}

/// The literal a command line ends with, if any (`line` with or without its CRLF).
pub fn line_literal(line: &[u8]) -> Option<ClientLiteral> {
    let l = strip_eol(line);
    let tail = &l[l.len().saturating_sub(TAIL)..];
    match literal_header(tail, tail.len() == l.len()) {
        LitHeader::Literal {
            len,
            non_sync,
            binary,
            ..
        } => Some(ClientLiteral {
            len,
            sync: !non_sync,
            binary,
        }),
        _ => None,
    }
}

/// Whether a client may send a literal of `len` octets as `{n+}` without
/// waiting: LITERAL+ allows any size; LITERAL- and IMAP4rev2 (which
/// includes it, RFC 9051 section 4.3 and appendix E) up to 4096 octets
/// (RFC 7888 section 5). `capabilities` as the server listed them.
pub fn nonsync_allowed(capabilities: &[String], len: u64) -> bool {
    let has = |n: &str| capabilities.iter().any(|c| c.eq_ignore_ascii_case(n));
    has("LITERAL+") || (len <= 4096 && (has("LITERAL-") || has("IMAP4rev2")))
}

const ANY_STATE: &[&str] = &["CAPABILITY", "NOOP", "LOGOUT", "ID"];
const NOT_AUTHENTICATED: &[&str] = &["STARTTLS", "AUTHENTICATE", "LOGIN"];
const AUTHENTICATED: &[&str] = &[
    "ENABLE",
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "NAMESPACE",
    "STATUS",
    "APPEND",
    "IDLE",
    "GETQUOTA",
    "GETQUOTAROOT",
    "SETQUOTA",
    "GETACL",
    "SETACL",
    "DELETEACL",
    "LISTRIGHTS",
    "MYRIGHTS",
    "GETMETADATA",
    "SETMETADATA",
    "COMPRESS",
    "XLIST",
];
const SELECTED: &[&str] = &[
    "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "SORT", "THREAD",
];
const UID_COMMANDS: &[&str] = &[
    "FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD",
];

/// Whether a command is valid in a state (RFC 9051 sections 6.1-6.4, plus
/// the common extensions: ID, IDLE, NAMESPACE, MOVE, QUOTA, ACL, METADATA,
/// SORT/THREAD, COMPRESS). `None` for a command this table does not know.
pub fn legal_in(verb: &str, uid: bool, state: State) -> Option<bool> {
    let verb = verb.to_ascii_uppercase();
    let v = verb.as_str();
    if uid {
        return UID_COMMANDS.contains(&v).then_some(state == State::Selected);
    }
    let known = ANY_STATE.contains(&v)
        || NOT_AUTHENTICATED.contains(&v)
        || AUTHENTICATED.contains(&v)
        || SELECTED.contains(&v);
    if !known {
        return None;
    }
    Some(match state {
        State::NotAuthenticated => ANY_STATE.contains(&v) || NOT_AUTHENTICATED.contains(&v),
        State::Authenticated => ANY_STATE.contains(&v) || AUTHENTICATED.contains(&v),
        State::Selected => ANY_STATE.contains(&v) || AUTHENTICATED.contains(&v) || SELECTED.contains(&v),
        State::Logout => false,
    })
}

/// A top-level argument of a client command, for arity checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    Atom,
    Quoted,
    Literal,
    List,
}

/// Split arguments at the top level; `None` when quoting or parentheses are unbalanced.
fn client_args(args: &[u8]) -> Option<Vec<Arg>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            b' ' => i += 1,
            b'"' => {
                i += 1;
                loop {
                    match args.get(i) {
                        None | Some(b'\r') | Some(b'\n') => return None,
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push(Arg::Quoted);
            }
            b'{' | b'~' if args[i] == b'{' || args.get(i + 1) == Some(&b'{') => {
                let close = memchr::memchr(b'}', &args[i..])? + i;
                let line_end = memchr::memchr(b'\n', &args[close..]).map(|n| n + close + 1);
                let len = line_literal(&args[i..=close]).map(|l| l.len)?;
                i = match line_end {
                    Some(e) => e.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)),
                    None => args.len(),
                };
                out.push(Arg::Literal);
            }
            b'(' => {
                let mut depth = 0usize;
                while i < args.len() {
                    match args[i] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        b'"' => {
                            i += 1;
                            while i < args.len() && args[i] != b'"' {
                                i += if args[i] == b'\\' { 2 } else { 1 };
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if depth != 0 {
                    return None;
                }
                out.push(Arg::List);
            }
            b')' => return None,
            _ => {
                while i < args.len() && !matches!(args[i], b' ' | b'(' | b')' | b'"') {
                    i += 1;
                }
                out.push(Arg::Atom);
            }
        }
    }
    Some(out)
}

impl Command {
    /// Parse a command as it goes on the wire: the first line and, when it
    /// has literals, their data and the following line(s). A single line
    /// without its CRLF is accepted too.
    pub fn parse(text: &[u8]) -> Result<Command, CommandError> {
        let text = strip_eol(text);
        if text.is_empty() {
            return Err(CommandError::Empty);
        }
        let first_end = memchr::memchr(b'\n', text).unwrap_or(text.len());
        let first = strip_eol(&text[..first_end]);
        let (tag, rest) = match memchr::memchr(b' ', first) {
            Some(i) => (&first[..i], &text[i + 1..]),
            None => (first, &b""[..]),
        };
        if !is_tag(tag) {
            return Err(CommandError::BadTag);
        }
        let word_end = |r: &[u8]| {
            r.iter()
                .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
                .unwrap_or(r.len())
        };
        let n = word_end(rest);
        let mut verb = rest[..n].to_ascii_uppercase();
        let mut rest = rest.get(n + 1..).unwrap_or(b"");
        let mut uid = false;
        if verb == b"UID" {
            uid = true;
            let m = word_end(rest);
            verb = rest[..m].to_ascii_uppercase();
            rest = rest.get(m + 1..).unwrap_or(b"");
        }
        if verb.is_empty() || !verb.iter().all(|&b| is_atom_char(b)) {
            return Err(CommandError::NoVerb);
        }
        // Literals: each line that ends in a literal header is followed by its data.
        let mut literals = Vec::new();
        let mut pos = 0usize;
        while pos < text.len() {
            let end = memchr::memchr(b'\n', &text[pos..]).map_or(text.len(), |i| pos + i + 1);
            if let Some(lit) = line_literal(&text[pos..end]) {
                literals.push(lit);
                pos = end.saturating_add(usize::try_from(lit.len).unwrap_or(usize::MAX));
            } else {
                pos = end;
            }
        }
        Ok(Command {
            tag: String::from_utf8_lossy(tag).into_owned(),
            verb: String::from_utf8_lossy(&verb).into_owned(),
            uid,
            args: rest.to_vec(),
            literals,
        })
    }

    /// Synchronizing literals: each needs a `+` from the server before its data.
    pub fn sync_literals(&self) -> usize {
        self.literals.iter().filter(|l| l.sync).count()
    }

    /// Whether the command is valid in `state` (see [`legal_in`]).
    pub fn legal_in(&self, state: State) -> Option<bool> {
        legal_in(&self.verb, self.uid, state)
    }

    /// How the command is shown in messages: credentials never are.
    pub fn label(&self) -> String {
        let verb = if self.uid {
            format!("UID {}", self.verb)
        } else {
            self.verb.clone()
        };
        if matches!(self.verb.as_str(), "LOGIN" | "AUTHENTICATE") || self.args.is_empty() {
            return if self.args.is_empty() {
                verb
            } else {
                format!("{verb} ...")
            };
        }
        let first = strip_eol(&self.args[..memchr::memchr(b'\n', &self.args).unwrap_or(self.args.len())]);
        let shown: String = String::from_utf8_lossy(&first[..first.len().min(60)]).into_owned();
        format!("{verb} {shown}")
    }

    /// Whether the arguments fit the command's syntax, as far as counting
    /// them can tell; `None` for commands this check does not cover.
    pub fn well_formed(&self) -> Option<bool> {
        let args = client_args(&self.args);
        let Some(args) = args else {
            return Some(false);
        };
        let n = args.len();
        let astrings = |k: usize| args.iter().take(k).all(|a| *a != Arg::List);
        let ok = match (self.uid, self.verb.as_str()) {
            (false, "CAPABILITY" | "NOOP" | "LOGOUT" | "STARTTLS" | "CHECK" | "CLOSE" | "UNSELECT")
            | (false, "EXPUNGE" | "IDLE" | "NAMESPACE") => n == 0,
            (false, "LOGIN") => n == 2 && astrings(2),
            (false, "SELECT" | "EXAMINE" | "CREATE") => (1..=2).contains(&n) && astrings(1),
            (false, "DELETE" | "SUBSCRIBE" | "UNSUBSCRIBE") => n == 1 && astrings(1),
            (false, "RENAME") => (2..=3).contains(&n) && astrings(2),
            (false, "LSUB") => n == 2,
            (false, "LIST") => n >= 2,
            (false, "STATUS") => n == 2 && args[1] == Arg::List,
            (false, "APPEND") => n >= 2 && args[n - 1] == Arg::Literal,
            (false, "AUTHENTICATE" | "ENABLE") | (true, "SEARCH") | (false, "SEARCH") => n >= 1,
            (_, "FETCH") => (2..=3).contains(&n),
            (_, "STORE") => n >= 3,
            (_, "COPY" | "MOVE") => n == 2,
            (true, "EXPUNGE") => n == 1,
            _ => return None,
        };
        Some(ok)
    }
}

/// Generates tags `prefix0001`, `prefix0002`, ... (RFC 9051 section 2.2.1:
/// a new tag for every command).
#[derive(Debug, Clone)]
pub struct TagGen {
    prefix: String,
    n: u32,
}

impl TagGen {
    /// A prefix that cannot be part of a tag is replaced by `a`.
    pub fn new(prefix: &str) -> TagGen {
        let prefix = if is_tag(prefix.as_bytes()) { prefix } else { "a" };
        TagGen {
            prefix: prefix.to_string(),
            n: 0,
        }
    }

    pub fn next_tag(&mut self) -> String {
        self.n = self.n.wrapping_add(1);
        format!("{}{:04}", self.prefix, self.n)
    }
}

/// A sequence set or UID set (RFC 9051 section 9, sequence-set); `*` is
/// kept as `u32::MAX` and resolved when testing membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(Vec<(u32, u32)>);

impl SeqSet {
    /// `None` for anything but numbers, `*`, `:` and `,` (e.g. `$` of SEARCHRES).
    pub fn parse(s: &[u8]) -> Option<SeqSet> {
        let num = |t: &[u8]| -> Option<u32> {
            if t == b"*" {
                Some(u32::MAX)
            } else if !t.is_empty() && t.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(t).ok()?.parse().ok()
            } else {
                None
            }
        };
        let mut out = Vec::new();
        for part in s.split(|&b| b == b',') {
            let (a, b) = match part.iter().position(|&b| b == b':') {
                Some(i) => (num(&part[..i])?, num(&part[i + 1..])?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            if out.len() >= 4096 {
                return None;
            }
            out.push((a, b));
        }
        (!out.is_empty()).then_some(SeqSet(out))
    }

    /// Whether `n` is in the set, `*` standing for `star`.
    pub fn contains(&self, n: u32, star: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let a = if a == u32::MAX { star } else { a };
            let b = if b == u32::MAX { star } else { b };
            (a.min(b)..=a.max(b)).contains(&n)
        })
    }
}

// ---------------------------------------------------------------------------
// Session model
// ---------------------------------------------------------------------------

const RFC_TAGS: &str = "RFC 9051 sections 2.2.2 and 7";
const RFC_STATES: &str = "RFC 9051 sections 3 and 6";
const RFC_UID: &str = "RFC 9051 section 2.3.1.1";
const RFC_EXAMINE: &str = "RFC 9051 section 6.3.3 (RFC 3501 section 6.3.2)";

/// Messages of the selected mailbox tracked one by one; past this only the
/// count is kept, so a server announcing `* 4000000000 EXISTS` costs little.
pub const MAX_TRACKED_MESSAGES: usize = 200_000;
/// Commands in flight tracked at once.
const MAX_PENDING: usize = 4096;
/// Tags of completed commands remembered, to tell a second completion from an unknown tag.
const DONE_TAGS: usize = 64;
/// How far the UID order check looks for the nearest neighbour with a known UID.
const UID_NEIGHBOURS: usize = 64;

const SEEN: u8 = 1;
const ANSWERED: u8 = 2;
const FLAGGED: u8 = 4;
const DELETED: u8 = 8;
const DRAFT: u8 = 16;
const SYSTEM_FLAGS: u8 = SEEN | ANSWERED | FLAGGED | DELETED | DRAFT;

/// The system flag a flag name stands for (0 for keywords and `\Recent`).
fn flag_bit(f: &[u8]) -> u8 {
    let is = |n: &str| f.eq_ignore_ascii_case(n.as_bytes());
    if is("\\Seen") {
        SEEN
    } else if is("\\Answered") {
        ANSWERED
    } else if is("\\Flagged") {
        FLAGGED
    } else if is("\\Deleted") {
        DELETED
    } else if is("\\Draft") {
        DRAFT
    } else {
        0
    }
}

fn flag_names(mask: u8) -> String {
    let names = [
        (SEEN, "\\Seen"),
        (ANSWERED, "\\Answered"),
        (FLAGGED, "\\Flagged"),
        (DELETED, "\\Deleted"),
        (DRAFT, "\\Draft"),
    ];
    names
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the session knows about one message of the selected mailbox.
#[derive(Debug, Clone, Copy, Default)]
struct Msg {
    /// 0: not known yet.
    uid: u32,
    flags: u8,
    flags_known: bool,
    /// Flags a completed STORE set / cleared, checked at the next FLAGS seen.
    exp_set: u8,
    exp_clear: u8,
    /// A completed non-PEEK body fetch must have set \Seen.
    exp_seen_body: bool,
    size: Option<u64>,
    body: Option<u64>,
    size_reported: bool,
    /// Present when the SELECT/EXAMINE completed (its UID is below that UIDNEXT).
    old: bool,
    /// Body data arrived in a running FETCH that sets \Seen, not yet confirmed.
    want_seen: bool,
    /// ... and before it the message was known not to be \Seen.
    was_unseen: bool,
}

/// The selected mailbox as the server described it.
#[derive(Debug, Clone, Default)]
struct Mailbox {
    read_only: bool,
    exists: Option<u32>,
    uidvalidity: Option<u32>,
    /// UIDNEXT as reported while selecting.
    uidnext: Option<u32>,
    msgs: Vec<Msg>,
    /// The SELECT/EXAMINE has completed.
    selected: bool,
}

impl Mailbox {
    fn msg(&mut self, seq: u32) -> Option<&mut Msg> {
        self.msgs.get_mut((seq as usize).checked_sub(1)?)
    }
}

/// A SELECT/EXAMINE in flight: the mailbox it builds and the data seen.
#[derive(Debug, Clone, Default)]
struct Selecting {
    examine: bool,
    mailbox: Mailbox,
    exists: bool,
    flags: bool,
    uidvalidity: bool,
    uidnext: bool,
    permanent_flags: bool,
    list: bool,
    recent: bool,
}

/// A STORE in flight, for the flags it promises.
#[derive(Debug, Clone)]
struct StoreOp {
    set: SeqSet,
    uid: bool,
    /// +1 add, -1 remove, 0 replace.
    mode: i8,
    mask: u8,
}

impl StoreOp {
    /// `set [+|-]FLAGS[.SILENT] flags`; `None` for forms not modelled (modifiers, `$`).
    fn parse(args: &[u8], uid: bool) -> Option<StoreOp> {
        let mut parts = args.splitn(3, |&b| b == b' ');
        let set = SeqSet::parse(parts.next()?)?;
        let item = parts.next()?.to_ascii_uppercase();
        let flags = parts.next().unwrap_or(b"");
        let (mode, name) = match item.first() {
            Some(b'+') => (1, &item[1..]),
            Some(b'-') => (-1, &item[1..]),
            _ => (0, &item[..]),
        };
        if name != b"FLAGS" && name != b"FLAGS.SILENT" {
            return None;
        }
        let mask = flags
            .split(|&b| matches!(b, b' ' | b'(' | b')'))
            .fold(0u8, |m, f| m | flag_bit(f));
        Some(StoreOp { set, uid, mode, mask })
    }

    fn covers(&self, m: &Msg, seq: u32, exists: u32) -> bool {
        if self.uid {
            m.uid != 0 && self.set.contains(m.uid, u32::MAX - 1)
        } else {
            self.set.contains(seq, exists)
        }
    }

    fn apply(&self, set: &mut u8, clear: &mut u8) {
        match self.mode {
            1 => {
                *set |= self.mask;
                *clear &= !self.mask;
            }
            -1 => {
                *clear |= self.mask;
                *set &= !self.mask;
            }
            _ => {
                *set = self.mask;
                *clear = SYSTEM_FLAGS & !self.mask;
            }
        }
    }
}

/// A command waiting for its tagged completion.
#[derive(Debug, Clone)]
struct Pending {
    tag: String,
    verb: String,
    uid: bool,
    label: String,
    /// `+` continuations the command may still get (u32::MAX: any number).
    continuations: u32,
    well_formed: Option<bool>,
    /// A BAD to this command would be implausible if it is well formed.
    bad_checkable: bool,
    select: Option<Box<Selecting>>,
    /// FETCH: whether it sets \Seen (a non-PEEK body item).
    fetch_sets_seen: Option<bool>,
    store: Option<StoreOp>,
    /// Messages (by sequence number) that got body data in this FETCH.
    bodies: Vec<u32>,
    expunged: bool,
    /// LOGIN sent on a cleartext connection whose capabilities, when it was
    /// sent, said LOGINDISABLED (the completion's own CAPABILITY code, after
    /// login, no longer does).
    login_disabled: bool,
}

/// The state model of one IMAP connection (RFC 9051 / RFC 3501) and what
/// the server said about the selected mailbox, for cross-checks. Feed it
/// every command the client sends ([`Session::command`], before sending)
/// and every response ([`Session::response`]); findings come out.
#[derive(Debug, Clone)]
pub struct Session {
    pub state: State,
    /// The connection is protected by TLS (implicit, or after STARTTLS).
    pub tls: bool,
    greeted: bool,
    capabilities: Vec<String>,
    rev2_enabled: bool,
    pending: Vec<Pending>,
    done: VecDeque<String>,
    bye: bool,
    logged_out: bool,
    mailbox: Option<Mailbox>,
    limiter: Limiter,
}

impl Session {
    pub fn new(tls: bool) -> Session {
        Session {
            state: State::NotAuthenticated,
            tls,
            greeted: false,
            capabilities: Vec::new(),
            rev2_enabled: false,
            pending: Vec::new(),
            done: VecDeque::new(),
            bye: false,
            logged_out: false,
            mailbox: None,
            limiter: Limiter::default(),
        }
    }

    /// Capabilities last announced (upper-cased); cleared by STARTTLS.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c.eq_ignore_ascii_case(name))
    }

    /// IMAP4rev2 rules apply: enabled, or the only version offered (RFC 9051 appendix E).
    pub fn rev2(&self) -> bool {
        self.rev2_enabled || (self.has_capability("IMAP4rev2") && !self.has_capability("IMAP4rev1"))
    }

    /// Commands sent and not completed yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether a command with this tag is waiting for its completion.
    pub fn is_pending(&self, tag: &str) -> bool {
        self.pending.iter().any(|p| p.tag == tag)
    }

    /// The server said BYE (or the greeting was BYE).
    pub fn bye_seen(&self) -> bool {
        self.bye
    }

    /// Messages in the selected mailbox, as EXISTS/EXPUNGE left it.
    pub fn exists(&self) -> Option<u32> {
        self.mailbox.as_ref()?.exists
    }

    pub fn uidvalidity(&self) -> Option<u32> {
        self.mailbox.as_ref()?.uidvalidity
    }

    /// Whether the selected mailbox is read-only (EXAMINE, or `[READ-ONLY]`).
    pub fn read_only(&self) -> Option<bool> {
        self.mailbox.as_ref().map(|m| m.read_only)
    }

    /// The UID the server gave message `seq`, if known.
    pub fn uid_of(&self, seq: u32) -> Option<u32> {
        let m = self.mailbox.as_ref()?.msgs.get((seq as usize).checked_sub(1)?)?;
        (m.uid != 0).then_some(m.uid)
    }

    /// Report a finding through this session's per-rule cap.
    pub fn report(&mut self, findings: &mut Vec<Finding>, f: Finding) {
        self.limiter.push(findings, f);
    }

    fn set_capabilities(&mut self, caps: &[&[u8]]) {
        self.capabilities = caps
            .iter()
            .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
            .collect();
    }

    /// The client is about to send `cmd`.
    pub fn command(&mut self, cmd: &Command, _findings: &mut Vec<Finding>) {
        let verb = cmd.verb.as_str();
        let mut p = Pending {
            tag: cmd.tag.clone(),
            verb: cmd.verb.clone(),
            uid: cmd.uid,
            label: cmd.label(),
            continuations: cmd.sync_literals().min(u32::MAX as usize - 1) as u32,
            well_formed: cmd.well_formed(),
            bad_checkable: false,
            select: None,
            fetch_sets_seen: None,
            store: None,
            bodies: Vec::new(),
            expunged: false,
            login_disabled: verb == "LOGIN" && !cmd.uid && self.has_capability("LOGINDISABLED") && !self.tls,
        };
        p.bad_checkable = !cmd.uid
            && match verb {
                "CAPABILITY" | "NOOP" | "LOGOUT" | "CLOSE" | "EXPUNGE" | "SELECT" | "EXAMINE" => true,
                "LOGIN" => !self.has_capability("LOGINDISABLED"),
                _ => false,
            };
        match (cmd.uid, verb) {
            (false, "AUTHENTICATE") => p.continuations = u32::MAX,
            (false, "IDLE") => p.continuations = 1,
            (false, "SELECT" | "EXAMINE") => {
                p.select = Some(Box::new(Selecting {
                    examine: verb == "EXAMINE",
                    ..Selecting::default()
                }));
            }
            (_, "FETCH") => {
                let items = cmd.args.splitn(2, |&b| b == b' ').nth(1).unwrap_or(b"");
                let up = items.to_ascii_uppercase();
                let sets = up.split(|&b| matches!(b, b' ' | b'(' | b')')).any(|t| {
                    t.starts_with(b"BODY[")
                        || t.starts_with(b"BINARY[")
                        || t == b"RFC822"
                        || t == b"RFC822.TEXT"
                });
                p.fetch_sets_seen = Some(sets);
            }
            (_, "STORE") => p.store = StoreOp::parse(&cmd.args, cmd.uid),
            _ => {}
        }
        if self.pending.len() < MAX_PENDING {
            self.pending.push(p);
        }
    }

    /// One response from the server, as framed and parsed.
    pub fn response(&mut self, frame: &Frame<'_>, resp: &Response<'_>, findings: &mut Vec<Finding>) {
        let line = frame.first_line();
        if !self.greeted {
            self.greeted = true;
            if self.greeting(resp, line, findings) {
                return;
            }
        }
        if self.logged_out {
            self.report(
                findings,
                Finding::must(
                    "imap.after-logout",
                    "RFC 9051 section 6.1.3",
                    "response after the LOGOUT completion; the server must close the connection",
                )
                .with_bytes(line),
            );
            return;
        }
        match resp {
            Response::Continue { .. } => self.continuation(line, findings),
            Response::Tagged { tag, status } => self.completion(tag, Some(status), line, findings),
            Response::Unparsed { tag: Some(tag) } => self.completion(tag, None, line, findings),
            Response::Unparsed { tag: None } => {}
            Response::Untagged(u) => self.untagged(u, line, findings),
        }
    }

    /// The connection ended (EOF or reset).
    pub fn closed(&mut self, findings: &mut Vec<Finding>) {
        let logout_pending = self.pending.iter().any(|p| p.verb == "LOGOUT");
        if !self.pending.is_empty() && (!self.bye || logout_pending) {
            let tags: Vec<&str> = self.pending.iter().take(5).map(|p| p.label.as_str()).collect();
            let f = Finding::must(
                "imap.missing-completion",
                RFC_TAGS,
                format!(
                    "the connection ended with {} command(s) never completed: {}",
                    self.pending.len(),
                    tags.join(", ")
                ),
            );
            self.report(findings, f);
        }
        if self.greeted && !self.bye && !self.logged_out {
            self.report(
                findings,
                Finding::note(
                    "imap.close-without-bye",
                    "RFC 9051 section 7.1.5",
                    "the server closed the connection without a BYE",
                ),
            );
        }
        self.pending.clear();
        self.state = State::Logout;
    }

    /// Returns true when the response was the greeting and is fully handled.
    fn greeting(&mut self, resp: &Response<'_>, line: &[u8], findings: &mut Vec<Finding>) -> bool {
        let Response::Untagged(Untagged::Status(s)) = resp else {
            self.report(
                findings,
                Finding::must(
                    "imap.greeting",
                    "RFC 9051 sections 7.1 and 9 (greeting)",
                    "the first response must be an untagged OK, PREAUTH or BYE",
                )
                .with_bytes(line),
            );
            return false;
        };
        if let Some(Code::Capability(c)) = &s.code {
            self.set_capabilities(c);
        }
        match s.cond {
            Cond::Ok => self.state = State::NotAuthenticated,
            Cond::Preauth => {
                self.state = State::Authenticated;
                if !self.tls {
                    self.report(
                        findings,
                        Finding::should(
                            "imap.preauth-cleartext",
                            "RFC 9051 section 7.1.4",
                            "PREAUTH greeting on a connection without TLS",
                        )
                        .with_bytes(line),
                    );
                }
            }
            Cond::Bye => {
                self.bye = true;
                self.state = State::Logout;
            }
            Cond::No | Cond::Bad => {
                self.report(
                    findings,
                    Finding::must(
                        "imap.greeting",
                        "RFC 9051 sections 7.1 and 9 (greeting)",
                        "the greeting must be OK, PREAUTH or BYE",
                    )
                    .with_bytes(line),
                );
            }
        }
        true
    }

    fn continuation(&mut self, line: &[u8], findings: &mut Vec<Finding>) {
        match self.pending.iter_mut().find(|p| p.continuations > 0) {
            Some(p) => {
                if p.continuations != u32::MAX {
                    p.continuations -= 1;
                }
            }
            None => self.report(
                findings,
                Finding::must(
                    "imap.continuation-unexpected",
                    "RFC 9051 section 7.6 (RFC 3501 section 7.5)",
                    "`+` continuation request while no command waits for one (no synchronizing literal, \
                     AUTHENTICATE or IDLE in progress)",
                )
                .with_bytes(line),
            ),
        }
    }

    fn completion(
        &mut self,
        tag: &[u8],
        status: Option<&Status<'_>>,
        line: &[u8],
        findings: &mut Vec<Finding>,
    ) {
        let Some(i) = self.pending.iter().position(|p| p.tag.as_bytes() == tag) else {
            let again = self.done.iter().any(|t| t.as_bytes() == tag);
            let f = if again {
                Finding::must(
                    "imap.duplicate-completion",
                    RFC_TAGS,
                    "a second tagged completion for a command that was already completed",
                )
            } else {
                Finding::must(
                    "imap.unknown-tag",
                    RFC_TAGS,
                    "tagged completion with a tag no command in progress has",
                )
            };
            self.report(findings, f.with_bytes(line));
            return;
        };
        let p = self.pending.remove(i);
        if self.done.len() >= DONE_TAGS {
            self.done.pop_front();
        }
        self.done.push_back(p.tag.clone());
        let Some(st) = status else { return };
        if let Some(Code::Capability(c)) = &st.code {
            self.set_capabilities(c);
        }
        match st.cond {
            Cond::Ok => self.completed_ok(p, st, line, findings),
            Cond::No => self.completed_no(p, line, findings),
            Cond::Bad => self.completed_bad(p, line, findings),
            Cond::Preauth | Cond::Bye => {}
        }
    }

    fn completed_ok(&mut self, p: Pending, st: &Status<'_>, line: &[u8], findings: &mut Vec<Finding>) {
        let legal = legal_in(&p.verb, p.uid, self.state);
        if legal == Some(false) {
            let f = Finding::must(
                "imap.state",
                RFC_STATES,
                format!(
                    "OK to {} in the {:?} state, where it is not allowed",
                    p.label, self.state
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
            return;
        }
        match (p.uid, p.verb.as_str()) {
            (false, "LOGIN") => {
                if p.login_disabled {
                    self.report(
                        findings,
                        Finding::must(
                            "imap.logindisabled",
                            "RFC 9051 sections 6.2.3 and 7.2.2 (LOGINDISABLED)",
                            "LOGIN succeeded on a connection without TLS although LOGINDISABLED was advertised",
                        )
                        .with_bytes(line),
                    );
                }
                self.state = State::Authenticated;
            }
            (false, "AUTHENTICATE") => self.state = State::Authenticated,
            (false, "STARTTLS") => {
                self.tls = true;
                // RFC 9051 section 6.2.1: capabilities from before TLS are discarded.
                self.capabilities.clear();
            }
            (false, "SELECT" | "EXAMINE") => self.finish_select(p, st, line, findings),
            (false, "CLOSE" | "UNSELECT") => {
                self.state = State::Authenticated;
                self.mailbox = None;
            }
            (false, "LOGOUT") => {
                if !self.bye {
                    self.report(
                        findings,
                        Finding::must(
                            "imap.logout-bye",
                            "RFC 9051 section 6.1.3",
                            "LOGOUT completed without an untagged BYE before the OK",
                        )
                        .with_bytes(line),
                    );
                }
                self.state = State::Logout;
                self.logged_out = true;
            }
            (_, "FETCH") => self.finish_fetch(&p, true, findings),
            (_, "STORE") => self.finish_store(&p, line, findings),
            _ => {}
        }
    }

    fn completed_no(&mut self, p: Pending, line: &[u8], findings: &mut Vec<Finding>) {
        if p.select.is_some() {
            // RFC 9051 section 6.3.2: a failed SELECT leaves no mailbox selected.
            if self.state == State::Selected {
                self.state = State::Authenticated;
            }
            self.mailbox = None;
        }
        if p.verb == "FETCH" {
            self.finish_fetch(&p, false, findings);
        }
        if p.well_formed == Some(false) {
            let f = Finding::should(
                "imap.no-for-malformed",
                "RFC 9051 sections 7.1.2 and 7.1.3",
                format!(
                    "NO to `{}`, whose arguments are malformed; that is a BAD (protocol error)",
                    p.label
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
    }

    fn completed_bad(&mut self, p: Pending, line: &[u8], findings: &mut Vec<Finding>) {
        if p.verb == "FETCH" {
            self.finish_fetch(&p, false, findings);
        }
        if p.bad_checkable
            && p.well_formed == Some(true)
            && legal_in(&p.verb, p.uid, self.state) == Some(true)
        {
            let f = Finding::should(
                "imap.bad-for-valid",
                "RFC 9051 section 7.1.3",
                format!(
                    "BAD to `{}`, a well-formed command valid in the {:?} state; BAD reports protocol errors",
                    p.label, self.state
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
    }

    fn finish_select(&mut self, p: Pending, st: &Status<'_>, line: &[u8], findings: &mut Vec<Finding>) {
        let Some(sel) = p.select else { return };
        let mut mb = sel.mailbox;
        let read_only = matches!(st.code, Some(Code::ReadOnly));
        if sel.examine && !read_only {
            self.report(
                findings,
                Finding::must(
                    "imap.examine-read-only",
                    RFC_EXAMINE,
                    "the tagged OK to EXAMINE must begin with the [READ-ONLY] response code",
                )
                .with_bytes(line),
            );
        }
        mb.read_only = sel.examine || read_only;
        let rev2 = self.rev2();
        let mut must = Vec::new();
        let mut should = Vec::new();
        if !sel.exists {
            must.push("EXISTS");
        }
        if !sel.flags {
            must.push("FLAGS");
        }
        if !sel.uidvalidity {
            must.push("OK [UIDVALIDITY]");
        }
        if rev2 && !sel.list {
            must.push("LIST");
        }
        if !sel.uidnext {
            should.push("OK [UIDNEXT]");
        }
        if !sel.permanent_flags {
            should.push("OK [PERMANENTFLAGS]");
        }
        if !rev2 && !sel.recent {
            should.push("RECENT");
        }
        let verb = if sel.examine { "EXAMINE" } else { "SELECT" };
        if !must.is_empty() {
            let f = Finding::must(
                "imap.select-required",
                "RFC 9051 section 6.3.2 (RFC 3501 section 6.3.1)",
                format!(
                    "{verb} completed without the required untagged {}",
                    must.join(", ")
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
        if !should.is_empty() {
            let f = Finding::should(
                "imap.select-recommended",
                "RFC 9051 section 6.3.2 (RFC 3501 section 6.3.1)",
                format!(
                    "{verb} completed without {} (listed as required, but the RFC tells clients to cope \
                     without, and its own examples omit them)",
                    should.join(", ")
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
        mb.selected = true;
        for m in &mut mb.msgs {
            m.old = true;
        }
        self.mailbox = Some(mb);
        self.state = State::Selected;
    }

    fn finish_fetch(&mut self, p: &Pending, ok: bool, findings: &mut Vec<Finding>) {
        let Some(mb) = self.mailbox.as_mut() else { return };
        let arm = ok && p.fetch_sets_seen == Some(true) && !mb.read_only && !p.expunged;
        let mut unreported = Vec::new();
        for &seq in &p.bodies {
            let Some(m) = mb.msg(seq) else { continue };
            if !m.want_seen {
                continue;
            }
            m.want_seen = false;
            if arm {
                if m.was_unseen {
                    unreported.push(seq);
                }
                m.exp_seen_body = true;
                m.flags |= SEEN;
            }
        }
        for seq in unreported.into_iter().take(3) {
            let f = Finding::should(
                "imap.fetch-seen-flags",
                "RFC 9051 section 6.4.5 (BODY[])",
                format!(
                    "FETCH of message {seq}'s body set \\Seen but the FETCH responses did not include the \
                     changed FLAGS"
                ),
            );
            self.report(findings, f);
        }
    }

    fn finish_store(&mut self, p: &Pending, line: &[u8], findings: &mut Vec<Finding>) {
        let Some(mb) = self.mailbox.as_mut() else { return };
        if mb.read_only {
            // Nothing may change in a read-only mailbox, so OK ("store completed")
            // misreports what happened; RFC 9051 words the result codes, not a MUST.
            let f = Finding::should(
                "imap.read-only-store",
                RFC_EXAMINE,
                format!(
                    "OK to `{}` in a read-only mailbox, where nothing may change; the result should be NO",
                    p.label
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
            return;
        }
        let (Some(op), Some(exists)) = (&p.store, mb.exists) else {
            return;
        };
        for (i, m) in mb.msgs.iter_mut().enumerate() {
            if op.covers(m, i as u32 + 1, exists) {
                op.apply(&mut m.exp_set, &mut m.exp_clear);
                if op.mask & SEEN != 0 {
                    m.exp_seen_body = false;
                }
                // What the flags are now, as far as this client can tell.
                let (mut set, mut clear) = (0, 0);
                op.apply(&mut set, &mut clear);
                m.flags = (m.flags | set) & !clear;
            }
        }
    }

    /// Take the mailbox untagged data goes to: the one a running SELECT
    /// builds when that SELECT is the oldest command in flight, else the
    /// selected one. Put back with [`Session::put_target`].
    fn take_target(&mut self) -> Option<(Mailbox, bool)> {
        if let Some(sel) = self.pending.first_mut().and_then(|p| p.select.as_mut()) {
            return Some((std::mem::take(&mut sel.mailbox), true));
        }
        self.mailbox.take().map(|m| (m, false))
    }

    fn put_target(&mut self, mb: Mailbox, selecting: bool) {
        if selecting {
            if let Some(sel) = self.pending.first_mut().and_then(|p| p.select.as_mut()) {
                sel.mailbox = mb;
            }
        } else {
            self.mailbox = Some(mb);
        }
    }

    fn selecting(&mut self) -> Option<&mut Selecting> {
        self.pending.first_mut().and_then(|p| p.select.as_deref_mut())
    }

    fn untagged(&mut self, u: &Untagged<'_>, line: &[u8], findings: &mut Vec<Finding>) {
        match u {
            Untagged::Status(s) => self.untagged_status(s, line, findings),
            Untagged::Capability(c) => self.set_capabilities(c),
            Untagged::Enabled(c) if c.iter().any(|c| c.eq_ignore_ascii_case(b"IMAP4rev2")) => {
                self.rev2_enabled = true;
            }
            Untagged::Flags(_) => {
                if let Some(s) = self.selecting() {
                    s.flags = true;
                }
            }
            Untagged::List { .. } => {
                if let Some(s) = self.selecting() {
                    s.list = true;
                }
            }
            Untagged::Recent(_) => {
                if let Some(s) = self.selecting() {
                    s.recent = true;
                }
            }
            Untagged::Exists(n) => {
                if let Some(s) = self.selecting() {
                    s.exists = true;
                }
                if let Some((mut mb, sel)) = self.take_target() {
                    self.on_exists(&mut mb, *n, line, findings);
                    self.put_target(mb, sel);
                }
            }
            Untagged::Expunge(n) => {
                if let Some((mut mb, sel)) = self.take_target() {
                    self.on_expunge(&mut mb, *n, line, findings);
                    self.put_target(mb, sel);
                }
            }
            Untagged::Fetch(f) => {
                if let Some((mut mb, sel)) = self.take_target() {
                    self.on_fetch(&mut mb, f, line, findings);
                    self.put_target(mb, sel);
                }
            }
            Untagged::Search(nums) => {
                let seq_search = self.pending.first().is_some_and(|p| p.verb == "SEARCH" && !p.uid);
                let uid_search = self.pending.first().is_some_and(|p| p.verb == "SEARCH" && p.uid);
                if uid_search {
                    self.check_uid_search(nums, line, findings);
                }
                let exists = self.exists();
                if let (true, Some(e)) = (seq_search, exists) {
                    if let Some(&n) = nums.iter().find(|&&n| n > e) {
                        let f = Finding::must(
                            "imap.seq-range",
                            "RFC 9051 section 2.3.1.2",
                            format!("SEARCH returned message {n}, but the mailbox has {e} messages"),
                        )
                        .with_bytes(line);
                        self.report(findings, f);
                    }
                }
            }
            _ => {}
        }
    }

    /// UID SEARCH answers with UIDs (RFC 9051 section 6.4.9): when every
    /// message's UID is known, a number that is none of them is a sequence
    /// number or an invented UID.
    fn check_uid_search(&mut self, nums: &[u32], line: &[u8], findings: &mut Vec<Finding>) {
        let Some(mb) = self.mailbox.as_ref() else { return };
        let all_known = mb.exists == Some(mb.msgs.len() as u32) && mb.msgs.iter().all(|m| m.uid != 0);
        if !all_known {
            return;
        }
        if let Some(&n) = nums.iter().find(|&&n| !mb.msgs.iter().any(|m| m.uid == n)) {
            let f = Finding::must(
                "imap.uid-search",
                "RFC 9051 sections 6.4.4 and 6.4.9 (UID SEARCH)",
                format!("UID SEARCH returned {n}, which is not the UID of any message in the mailbox"),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
    }

    fn untagged_status(&mut self, s: &Status<'_>, line: &[u8], findings: &mut Vec<Finding>) {
        match s.cond {
            Cond::Bye => {
                self.bye = true;
                if !self.pending.iter().any(|p| p.verb == "LOGOUT") {
                    // The server is closing the connection (RFC 9051 section 7.1.5).
                    self.state = State::Logout;
                }
            }
            Cond::Preauth => self.report(
                findings,
                Finding::must(
                    "imap.response-syntax",
                    "RFC 9051 sections 7.1.4 and 9",
                    "PREAUTH is only valid as the greeting",
                )
                .with_bytes(line),
            ),
            _ => {}
        }
        let Some(code) = &s.code else { return };
        match code {
            Code::Capability(c) => self.set_capabilities(c),
            Code::UidValidity(v) => {
                if let Some(sel) = self.selecting() {
                    sel.uidvalidity = true;
                }
                if let Some((mut mb, sel)) = self.take_target() {
                    if mb.uidvalidity.is_some_and(|old| old != *v) {
                        // New UIDVALIDITY: every UID known so far is void (RFC 9051 section 2.3.1.1).
                        for m in &mut mb.msgs {
                            m.uid = 0;
                        }
                    }
                    if mb.uidvalidity.is_some_and(|old| old != *v) {
                        mb.uidnext = None;
                    }
                    mb.uidvalidity = Some(*v);
                    self.put_target(mb, sel);
                }
            }
            Code::UidNext(n) => {
                if let Some(sel) = self.selecting() {
                    sel.uidnext = true;
                    sel.mailbox.uidnext = Some(*n);
                }
            }
            Code::PermanentFlags(_) => {
                if let Some(sel) = self.selecting() {
                    sel.permanent_flags = true;
                }
            }
            _ => {}
        }
    }

    fn on_exists(&mut self, mb: &mut Mailbox, n: u32, line: &[u8], findings: &mut Vec<Finding>) {
        if let Some(old) = mb.exists {
            if n < old {
                let f = Finding::must(
                    "imap.exists-decrease",
                    "RFC 9051 section 5.2 (RFC 3501 section 5.2)",
                    format!("EXISTS went from {old} to {n}; only EXPUNGE may reduce the message count"),
                )
                .with_bytes(line);
                self.report(findings, f);
            }
        }
        mb.exists = Some(n);
        let tracked = (n as usize).min(MAX_TRACKED_MESSAGES);
        if mb.msgs.len() < tracked {
            let fresh = Msg {
                old: !mb.selected,
                ..Msg::default()
            };
            mb.msgs.resize(tracked, fresh);
        } else {
            mb.msgs.truncate(tracked);
        }
    }

    fn on_expunge(&mut self, mb: &mut Mailbox, n: u32, line: &[u8], findings: &mut Vec<Finding>) {
        let first = self.pending.first();
        let forbidden = match first {
            None => Some("while no command was in progress"),
            Some(p) if !p.uid && matches!(p.verb.as_str(), "FETCH" | "STORE" | "SEARCH") => {
                Some("while responding to FETCH, STORE or SEARCH")
            }
            _ => None,
        };
        if let Some(when) = forbidden {
            let f = Finding::must(
                "imap.expunge-timing",
                "RFC 9051 section 7.5.1 (RFC 3501 section 7.4.1)",
                format!("EXPUNGE sent {when}, which desynchronizes sequence numbers"),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
        if mb.read_only && mb.selected && self.pending.iter().any(|p| p.verb == "EXPUNGE") {
            let f = Finding::must(
                "imap.read-only-write",
                RFC_EXAMINE,
                "EXPUNGE removed a message from a read-only mailbox",
            )
            .with_bytes(line);
            self.report(findings, f);
        }
        for p in &mut self.pending {
            p.expunged = true;
        }
        match mb.exists {
            Some(e) if n > e || n == 0 => {
                let f = Finding::must(
                    "imap.expunge-range",
                    "RFC 9051 section 7.5.1 (RFC 3501 section 7.4.1)",
                    format!("EXPUNGE {n}, but the mailbox has {e} messages"),
                )
                .with_bytes(line);
                self.report(findings, f);
            }
            Some(e) => {
                mb.exists = Some(e - 1);
                let i = n as usize - 1;
                if i < mb.msgs.len() {
                    mb.msgs.remove(i);
                }
            }
            None => {}
        }
    }

    fn on_fetch(&mut self, mb: &mut Mailbox, f: &Fetch<'_>, line: &[u8], findings: &mut Vec<Finding>) {
        let seq = f.seq;
        if let Some(e) = mb.exists {
            if seq > e || seq == 0 {
                let msg = format!("FETCH for message {seq}, but the mailbox has {e} messages");
                let f = Finding::must("imap.seq-range", "RFC 9051 sections 2.3.1.2 and 7.5.2", msg)
                    .with_bytes(line);
                self.report(findings, f);
                return;
            }
        }
        let owner = self.pending.iter().position(|p| p.fetch_sets_seen.is_some());
        if let Some(o) = owner {
            if self.pending[o].uid && f.uid.is_none() && f.has_data() {
                let f = Finding::must(
                    "imap.uid-missing",
                    "RFC 9051 section 6.4.9",
                    "a FETCH response to UID FETCH must include the UID item",
                )
                .with_bytes(line);
                self.report(findings, f);
            }
        }
        // A flag update for a message UID STORE changed is "caused by" that
        // command, so it carries the UID too (RFC 9051 section 6.4.9, RFC 3501
        // section 6.4.8). Updates for other messages may be unsolicited.
        if f.uid.is_none() && f.flags.is_some() {
            let known = mb.msgs.get((seq as usize).wrapping_sub(1)).map_or(0, |m| m.uid);
            let caused = self.pending.iter().any(|p| {
                p.store
                    .as_ref()
                    .is_some_and(|op| op.uid && known != 0 && op.set.contains(known, u32::MAX - 1))
            });
            if caused {
                let f = Finding::must(
                    "imap.uid-missing",
                    "RFC 9051 section 6.4.9; RFC 3501 section 6.4.8",
                    format!("the FETCH response for message {seq} (UID {known}) to UID STORE must include the UID item"),
                )
                .with_bytes(line);
                self.report(findings, f);
            }
        }
        let Some(idx) = (seq as usize).checked_sub(1).filter(|&i| i < mb.msgs.len()) else {
            return;
        };
        if let Some(u) = f.uid {
            self.check_uid(mb, idx, u, line, findings);
        }
        // Body data, for RFC822.SIZE and \Seen.
        let sets_seen = owner.and_then(|o| self.pending[o].fetch_sets_seen) == Some(true) && !mb.read_only;
        let mut got_body = false;
        for s in &f.sections {
            let whole = matches!(s.kind, SectionKind::Body | SectionKind::Rfc822) && s.section.is_empty();
            if whole && s.origin.is_none() {
                if let Some(n) = s.value.octets() {
                    mb.msgs[idx].body = Some(n);
                }
            }
            if !matches!(s.kind, SectionKind::Rfc822Header) {
                got_body = true;
            }
        }
        if let Some(sz) = f.rfc822_size {
            mb.msgs[idx].size = Some(sz);
        }
        let m = mb.msgs[idx];
        if let (Some(sz), Some(body), false) = (m.size, m.body, m.size_reported) {
            if sz != body {
                mb.msgs[idx].size_reported = true;
                let f = Finding::must(
                    "imap.rfc822-size",
                    "RFC 9051 section 6.4.5 (RFC822.SIZE, BODY[])",
                    format!("message {seq}: RFC822.SIZE is {sz} but BODY[] has {body} octets"),
                )
                .with_bytes(line);
                self.report(findings, f);
            }
        }
        if sets_seen && got_body {
            let m = &mut mb.msgs[idx];
            if !m.want_seen {
                m.want_seen = true;
                m.was_unseen = m.flags_known && m.flags & SEEN == 0;
                if let Some(o) = owner {
                    if self.pending[o].bodies.len() < MAX_TRACKED_MESSAGES {
                        self.pending[o].bodies.push(seq);
                    }
                }
            }
        }
        if let Some(flags) = &f.flags {
            let new = flags.iter().fold(0u8, |m, f| m | flag_bit(f));
            self.check_flags(mb, idx, new, owner, line, findings);
        }
    }

    fn check_uid(&mut self, mb: &mut Mailbox, idx: usize, u: u32, line: &[u8], findings: &mut Vec<Finding>) {
        let seq = idx + 1;
        let old = mb.msgs[idx].uid;
        if old != 0 && old != u {
            let f = Finding::must(
                "imap.uid-stable",
                RFC_UID,
                format!(
                    "message {seq} had UID {old} and now has UID {u}, with no EXPUNGE or new UIDVALIDITY"
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
        let lo = idx.saturating_sub(UID_NEIGHBOURS);
        let prev = mb.msgs[lo..idx]
            .iter()
            .enumerate()
            .rev()
            .find(|(_, m)| m.uid != 0);
        if let Some((j, p)) = prev {
            if p.uid >= u {
                let f = Finding::must(
                    "imap.uid-order",
                    RFC_UID,
                    format!(
                        "message {seq} has UID {u}, not above message {}'s UID {}",
                        lo + j + 1,
                        p.uid
                    ),
                )
                .with_bytes(line);
                self.report(findings, f);
            }
        }
        let hi = (idx + 1 + UID_NEIGHBOURS).min(mb.msgs.len());
        let next = mb.msgs[idx + 1..hi].iter().enumerate().find(|(_, m)| m.uid != 0);
        if let Some((j, n)) = next {
            if n.uid <= u {
                let f = Finding::must(
                    "imap.uid-order",
                    RFC_UID,
                    format!(
                        "message {seq} has UID {u}, not below message {}'s UID {}",
                        idx + j + 2,
                        n.uid
                    ),
                )
                .with_bytes(line);
                self.report(findings, f);
            }
        }
        if let (true, Some(next)) = (mb.msgs[idx].old, mb.uidnext) {
            if u >= next {
                let f = Finding::must(
                    "imap.uidnext",
                    RFC_UID,
                    format!("message {seq} existed at selection but has UID {u}, not below UIDNEXT {next}"),
                )
                .with_bytes(line);
                self.report(findings, f);
            }
        }
        mb.msgs[idx].uid = u;
    }

    fn check_flags(
        &mut self,
        mb: &mut Mailbox,
        idx: usize,
        new: u8,
        owner: Option<usize>,
        line: &[u8],
        findings: &mut Vec<Finding>,
    ) {
        let seq = idx as u32 + 1;
        let exists = mb.exists.unwrap_or(0);
        let m = mb.msgs[idx];
        let stores: Vec<StoreOp> = self
            .pending
            .iter()
            .filter_map(|p| p.store.as_ref())
            .filter(|op| op.covers(&m, seq, exists))
            .cloned()
            .collect();
        let store_running = !stores.is_empty();
        // \Seen appearing during a FETCH that must not set it.
        if let Some(o) = owner {
            let became_seen = m.flags_known && m.flags & SEEN == 0 && new & SEEN != 0;
            if became_seen && !store_running && mb.selected {
                let f = if mb.read_only {
                    Some(Finding::must(
                        "imap.read-only-seen",
                        RFC_EXAMINE,
                        format!("message {seq} became \\Seen in a read-only mailbox"),
                    ))
                } else if self.pending[o].fetch_sets_seen == Some(false) {
                    Some(Finding::must(
                        "imap.peek-seen",
                        "RFC 9051 section 6.4.5 (BODY.PEEK)",
                        format!("message {seq} became \\Seen during a FETCH with no non-PEEK body item"),
                    ))
                } else {
                    None
                };
                if let Some(f) = f {
                    self.report(findings, f.with_bytes(line));
                }
            }
        }
        // Flags promised by completed (and running) STOREs and body fetches.
        let (mut set, mut clear, mut seen_body) = (m.exp_set, m.exp_clear, m.exp_seen_body);
        for op in &stores {
            op.apply(&mut set, &mut clear);
            if op.mask & SEEN != 0 {
                seen_body = false;
            }
        }
        let missing = set & !new;
        let extra = clear & new;
        if missing != 0 || extra != 0 {
            let mut what = Vec::new();
            if missing != 0 {
                what.push(format!("without {}", flag_names(missing)));
            }
            if extra != 0 {
                what.push(format!("still with {}", flag_names(extra)));
            }
            let f = Finding::must(
                "imap.store-flags",
                "RFC 9051 section 6.4.6 (STORE)",
                format!(
                    "message {seq} shows FLAGS {} after STORE changed them",
                    what.join(" and ")
                ),
            )
            .with_bytes(line);
            self.report(findings, f);
        } else if seen_body && new & SEEN == 0 {
            let f = Finding::must(
                "imap.fetch-seen",
                "RFC 9051 section 6.4.5 (BODY[])",
                format!("message {seq} is not \\Seen after a FETCH of its body without PEEK"),
            )
            .with_bytes(line);
            self.report(findings, f);
        }
        let m = &mut mb.msgs[idx];
        if !store_running {
            m.exp_set = 0;
            m.exp_clear = 0;
            m.exp_seen_body = false;
        }
        if m.want_seen && new & SEEN != 0 {
            m.want_seen = false;
        }
        m.flags = new;
        m.flags_known = true;
    }
}

// ---------------------------------------------------------------------------
// Reader: framer + grammar + session
// ---------------------------------------------------------------------------

/// What [`Reader::feed`] produced.
#[derive(Debug)]
pub enum ReadEvent<'a> {
    /// A complete response, already checked by the session.
    Response {
        frame: Frame<'a>,
        response: Response<'a>,
    },
    /// A streamed literal begins (see [`FramerEvent::LiteralStart`]).
    LiteralStart {
        len: u64,
        binary: bool,
        prefix: &'a [u8],
    },
    LiteralData(&'a [u8]),
    LiteralEnd,
}

/// The always-on validation of one IMAP connection: every byte from the
/// server goes through [`Reader::feed`], every command through
/// [`Reader::command`] before it is sent.
#[derive(Debug)]
pub struct Reader {
    framer: ResponseFramer,
    pub session: Session,
    scratch: Vec<Finding>,
}

impl Reader {
    pub fn new(limits: Limits, tls: bool) -> Reader {
        Reader {
            framer: ResponseFramer::new(limits),
            session: Session::new(tls),
            scratch: Vec::new(),
        }
    }

    /// The client is about to send `cmd`.
    pub fn command(&mut self, cmd: &Command, findings: &mut Vec<Finding>) {
        self.session.command(cmd, findings);
    }

    /// Like [`ResponseFramer::feed`]: call with the rest of the input until
    /// it returns `None`. Responses are parsed and applied to the session.
    pub fn feed<'a>(
        &'a mut self,
        input: &'a [u8],
        findings: &mut Vec<Finding>,
    ) -> (usize, Option<ReadEvent<'a>>) {
        let (used, ev) = self.framer.feed(input, findings);
        let ev = match ev {
            None => None,
            Some(FramerEvent::Response(frame)) => {
                let mut tmp = std::mem::take(&mut self.scratch);
                let response = parse_response(&frame, &mut tmp);
                for f in tmp.drain(..) {
                    self.session.report(findings, f);
                }
                self.scratch = tmp;
                self.session.response(&frame, &response, findings);
                Some(ReadEvent::Response { frame, response })
            }
            Some(FramerEvent::LiteralStart { len, binary, prefix }) => {
                Some(ReadEvent::LiteralStart { len, binary, prefix })
            }
            Some(FramerEvent::LiteralData(d)) => Some(ReadEvent::LiteralData(d)),
            Some(FramerEvent::LiteralEnd) => Some(ReadEvent::LiteralEnd),
        };
        (used, ev)
    }

    /// Feed a whole chunk, discarding the events (findings still come out).
    /// Returns the number of complete responses in it.
    pub fn feed_all(&mut self, mut input: &[u8], findings: &mut Vec<Finding>) -> usize {
        let mut responses = 0;
        loop {
            let (used, ev) = self.feed(input, findings);
            let done = ev.is_none();
            if matches!(ev, Some(ReadEvent::Response { .. })) {
                responses += 1;
            }
            input = &input[used..];
            if done {
                return responses;
            }
        }
    }

    /// The connection ended: partial responses and commands never completed.
    pub fn closed(&mut self, findings: &mut Vec<Finding>) {
        self.framer.finish(findings);
        self.session.closed(findings);
    }

    /// Literal octets seen so far (kept and streamed).
    pub fn literal_octets(&self) -> u64 {
        self.framer.literal_octets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let s = parse_status("* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n").unwrap();
        assert_eq!(
            (s.tag, s.cond, s.code),
            ("*", Cond::Ok, Some("CAPABILITY IMAP4rev1 STARTTLS"))
        );
        assert_eq!(s.text, "Dovecot ready.");
        let s = parse_status("a1 NO [AUTHENTICATIONFAILED] Authentication failed.").unwrap();
        assert_eq!(
            (s.tag, s.cond, s.code),
            ("a1", Cond::No, Some("AUTHENTICATIONFAILED"))
        );
        assert_eq!(parse_status("* BYE bye").unwrap().cond, Cond::Bye);
        assert!(parse_status("* 3 EXISTS").is_none());
        assert!(parse_status("a1 PREAUTH x").is_none());
    }

    #[test]
    fn capability_lists() {
        assert_eq!(
            capabilities("* CAPABILITY IMAP4rev1 LOGINDISABLED").unwrap(),
            vec!["IMAP4REV1", "LOGINDISABLED"]
        );
        assert_eq!(
            capabilities("* OK [CAPABILITY IMAP4rev2 AUTH=PLAIN] hi").unwrap(),
            vec!["IMAP4REV2", "AUTH=PLAIN"]
        );
        assert!(capabilities("* OK hi").is_none());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quote("a\r\nb").is_none());
    }

    // ----- helpers -------------------------------------------------------

    /// Replay a C:/S: trace. `C: line` is a client command (registered before
    /// the server bytes that follow it), `C+ line` client continuation data
    /// (not a command), `S: text` one server line (CRLF added; literal data
    /// is written as its lines), `EOF` the connection closing. Server bytes
    /// are fed in 7-octet pieces to exercise the chunking.
    fn replay_with(reader: &mut Reader, script: &str) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut server: Vec<u8> = Vec::new();
        let flush = |reader: &mut Reader, server: &mut Vec<u8>, findings: &mut Vec<Finding>| {
            for piece in server.chunks(7) {
                reader.feed_all(piece, findings);
            }
            reader.feed_all(b"", findings);
            server.clear();
        };
        for line in script.lines() {
            if let Some(c) = line.strip_prefix("C: ") {
                flush(reader, &mut server, &mut findings);
                let c = c.replace("\\r\\n", "\r\n");
                let cmd = Command::parse(c.as_bytes()).expect("test command parses");
                reader.command(&cmd, &mut findings);
            } else if line.starts_with("C+") {
                flush(reader, &mut server, &mut findings);
            } else if let Some(s) = line.strip_prefix("S:") {
                server.extend_from_slice(s.strip_prefix(' ').unwrap_or(s).as_bytes());
                server.extend_from_slice(b"\r\n");
            } else if line == "EOF" {
                flush(reader, &mut server, &mut findings);
                reader.closed(&mut findings);
            } else if !line.trim().is_empty() {
                panic!("bad trace line: {line}");
            }
        }
        flush(reader, &mut server, &mut findings);
        findings
    }

    fn replay(script: &str) -> (Reader, Vec<Finding>) {
        let mut r = Reader::new(Limits::default(), false);
        let f = replay_with(&mut r, script);
        (r, f)
    }

    fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule).collect()
    }

    fn fires(script: &str, rule: &str) {
        let (_, f) = replay(script);
        assert!(rules(&f).contains(&rule), "expected {rule}, got {f:#?}");
    }

    fn quiet(script: &str, rule: &str) {
        let (_, f) = replay(script);
        assert!(!rules(&f).contains(&rule), "did not expect {rule}, got {f:#?}");
    }

    /// Feed raw bytes (no trace syntax) in a selected mailbox of 4 messages,
    /// after registering `cmds`.
    fn raw(cmds: &[&str], bytes: &[u8]) -> Vec<Finding> {
        let mut r = Reader::new(Limits::default(), true);
        let mut f = Vec::new();
        r.feed_all(b"* PREAUTH ready\r\n", &mut f);
        r.command(&Command::parse(b"s SELECT INBOX").unwrap(), &mut f);
        r.feed_all(
            b"* FLAGS ()\r\n* OK [PERMANENTFLAGS ()] p\r\n* 4 EXISTS\r\n* 0 RECENT\r\n\
              * OK [UIDVALIDITY 1] v\r\n* OK [UIDNEXT 5] n\r\ns OK [READ-WRITE] done\r\n",
            &mut f,
        );
        assert!(f.is_empty(), "{f:?}");
        for c in cmds {
            r.command(&Command::parse(c.as_bytes()).unwrap(), &mut f);
        }
        r.feed_all(bytes, &mut f);
        f
    }

    fn frames(bytes: &[u8], limits: Limits, chunk: usize) -> (Vec<Vec<u8>>, Vec<u64>, Vec<Finding>) {
        let mut fr = ResponseFramer::new(limits);
        let mut findings = Vec::new();
        let mut out = Vec::new();
        let mut streamed = Vec::new();
        let mut cur = 0u64;
        for piece in bytes.chunks(chunk.max(1)).chain(std::iter::once(&b""[..])) {
            let mut rest = piece;
            loop {
                let (used, ev) = fr.feed(rest, &mut findings);
                rest = &rest[used..];
                match ev {
                    None => break,
                    Some(FramerEvent::Response(fm)) => out.push(fm.bytes.to_vec()),
                    Some(FramerEvent::LiteralStart { .. }) => cur = 0,
                    Some(FramerEvent::LiteralData(d)) => cur += d.len() as u64,
                    Some(FramerEvent::LiteralEnd) => streamed.push(cur),
                }
            }
        }
        (out, streamed, findings)
    }

    const LOGGED_IN: &str = "S: * OK [CAPABILITY IMAP4rev1] ready
C: a1 LOGIN alice pw
S: a1 OK done";

    /// Logged in and INBOX selected read-write with 4 messages, UIDs 1-4 unseen.
    fn selected(rest: &str) -> String {
        format!(
            "{LOGGED_IN}
C: s1 SELECT INBOX
S: * FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)
S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.
S: * 4 EXISTS
S: * 0 RECENT
S: * OK [UIDVALIDITY 1700000000] UIDs valid
S: * OK [UIDNEXT 5] Predicted next UID
S: s1 OK [READ-WRITE] Select completed
C: s2 FETCH 1:4 (UID FLAGS)
S: * 1 FETCH (UID 1 FLAGS ())
S: * 2 FETCH (UID 2 FLAGS ())
S: * 3 FETCH (UID 3 FLAGS ())
S: * 4 FETCH (UID 4 FLAGS ())
S: s2 OK done
{rest}"
        )
    }

    // ----- traces from the RFCs and from Dovecot --------------------------

    /// RFC 3501 section 8, the IMAP4rev1 sample session.
    const RFC3501_SAMPLE: &str = r#"S: * OK IMAP4rev1 Service Ready
C: a001 login mrc secret
S: a001 OK LOGIN completed
C: a002 select inbox
S: * 18 EXISTS
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * 2 RECENT
S: * OK [UNSEEN 17] Message 17 is the first unseen message
S: * OK [UIDVALIDITY 3857529045] UIDs valid
S: a002 OK [READ-WRITE] SELECT completed
C: a003 fetch 12 full
S: * 12 FETCH (FLAGS (\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) ((NIL NIL "minutes" "CNRI.Reston.VA.US") ("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL "<B27397-0100000@cac.washington.edu>") BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))
S: a003 OK FETCH completed
C: a004 fetch 12 body[header]
S: * 12 FETCH (BODY[HEADER] {342}
S: Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
S: From: Terry Gray <gray@cac.washington.edu>
S: Subject: IMAP4rev1 WG mtg summary and minutes
S: To: imap@cac.washington.edu
S: cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>
S: Message-Id: <B27397-0100000@cac.washington.edu>
S: MIME-Version: 1.0
S: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
S:
S: )
S: a004 OK FETCH completed
C: a005 store 12 +flags \deleted
S: * 12 FETCH (FLAGS (\Seen \Deleted))
S: a005 OK +FLAGS completed
C: a006 logout
S: * BYE IMAP4rev1 server terminating connection
S: a006 OK LOGOUT completed
EOF"#;

    /// RFC 9051 section 8, the IMAP4rev2 sample session (STARTTLS, SCRAM, ENABLE).
    const RFC9051_SAMPLE: &str = r#"S: * OK [CAPABILITY STARTTLS AUTH=SCRAM-SHA-256 LOGINDISABLED IMAP4rev2] IMAP4rev2 Service Ready
C: a000 starttls
S: a000 OK Proceed with TLS negotiation
C: A001 AUTHENTICATE SCRAM-SHA-256 biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=
S: + cj1yT3ByTkdmd0ViZVJXZ2JORWtxTyVodllEcFdVYTJSYVRDQWZ1eEZJbGopaE5sRiRrMCxzPVcyMlphSjBTTlk3c29Fc1VFamI2Z1E9PSxpPTQwOTY=
C+ Yz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==
S: + dj02cnJpVFJCaTIzV3BSUi93dHVwK21NaFVaVW4vZEI1bkxUSlJzamw5NUc0PQ==
C+
S: A001 OK SCRAM-SHA-256 authentication successful
C: babc ENABLE IMAP4rev2
S: * ENABLED IMAP4rev2
S: babc OK Some capabilities enabled
C: a002 select inbox
S: * 18 EXISTS
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * OK [UIDVALIDITY 3857529045] UIDs valid
S: * LIST () "/" INBOX ("OLDNAME" ("inbox"))
S: a002 OK [READ-WRITE] SELECT completed
C: a003 fetch 12 full
S: * 12 FETCH (FLAGS (\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes" (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) ((NIL NIL "minutes" "CNRI.Reston.VA.US") ("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL "<B27397-0100000@cac.washington.edu>") BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))
S: a003 OK FETCH completed
C: a004 fetch 12 body[header]
S: * 12 FETCH (BODY[HEADER] {342}
S: Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
S: From: Terry Gray <gray@cac.washington.edu>
S: Subject: IMAP4rev2 WG mtg summary and minutes
S: To: imap@cac.washington.edu
S: cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>
S: Message-Id: <B27397-0100000@cac.washington.edu>
S: MIME-Version: 1.0
S: Content-Type: TEXT/PLAIN; CHARSET=US-ASCII
S:
S: )
S: a004 OK FETCH completed
C: a005 store 12 +flags \deleted
S: * 12 FETCH (FLAGS (\Seen \Deleted))
S: a005 OK +FLAGS completed
C: a006 logout
S: * BYE IMAP4rev2 server terminating connection
S: a006 OK LOGOUT completed
EOF"#;

    /// A session with Dovecot 2.3.19.1 (ci/dovecot/start.sh, user alice),
    /// captured byte for byte.
    const DOVECOT: &str = r#"S: * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready.
C: a1 CAPABILITY
S: * CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN
S: a1 OK Pre-login capabilities listed, post-login capabilities have more.
C: a2 LOGIN alice alice-secret-pw
S: * CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY
S: a2 OK Logged in
C: a3 SELECT INBOX
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Flags permitted.
S: * 4 EXISTS
S: * 0 RECENT
S: * OK [UNSEEN 1] First unseen.
S: * OK [UIDVALIDITY 1700000000] UIDs valid
S: * OK [UIDNEXT 5] Predicted next UID
S: a3 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).
C: a4 FETCH 1:4 (UID RFC822.SIZE FLAGS INTERNALDATE)
S: * 1 FETCH (UID 1 RFC822.SIZE 339 FLAGS () INTERNALDATE "14-Nov-2023 22:14:20 +0000")
S: * 2 FETCH (UID 2 RFC822.SIZE 405 FLAGS () INTERNALDATE "14-Nov-2023 22:15:20 +0000")
S: * 3 FETCH (UID 3 RFC822.SIZE 208281 FLAGS () INTERNALDATE "14-Nov-2023 22:16:20 +0000")
S: * 4 FETCH (UID 4 RFC822.SIZE 266 FLAGS () INTERNALDATE "14-Nov-2023 22:17:20 +0000")
S: a4 OK Fetch completed (0.001 + 0.000 secs).
C: a5 FETCH 1 (BODY.PEEK[])
S: * 1 FETCH (BODY[] {339}
S: From: Mailcheck Sender <sender@mailcheck.test>
S: To: alice <alice@mailcheck.test>
S: Subject: mailcheck test 1: short message
S: Date: Tue, 14 Nov 2023 22:14:20 +0000
S: Message-ID: <msg1.alice@mailcheck.test>
S: MIME-Version: 1.0
S: Content-Type: text/plain; charset=us-ascii
S:
S: Hello alice,
S:
S: This is a short test message from mailcheck.
S:
S: Bye.
S: )
S: a5 OK Fetch completed (0.001 + 0.000 secs).
C: a6 FETCH 4 (BODY[])
S: * 4 FETCH (FLAGS (\Seen) BODY[] {266}
S: From: Mailcheck Sender <sender@mailcheck.test>
S: To: alice <alice@mailcheck.test>
S: Subject: mailcheck test 4: empty body
S: Date: Tue, 14 Nov 2023 22:17:20 +0000
S: Message-ID: <msg4.alice@mailcheck.test>
S: MIME-Version: 1.0
S: Content-Type: text/plain; charset=us-ascii
S:
S: )
S: a6 OK Fetch completed (0.001 + 0.000 secs).
C: a7 STORE 2 +FLAGS (\Flagged)
S: * 2 FETCH (FLAGS (\Flagged))
S: a7 OK Store completed (0.001 + 0.000 secs).
C: a8 UID FETCH 2 (FLAGS)
S: * 2 FETCH (UID 2 FLAGS (\Flagged))
S: a8 OK Fetch completed (0.001 + 0.000 secs).
C: a9 FETCH 2 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])
S: * 2 FETCH (ENVELOPE ("Tue, 14 Nov 2023 22:15:20 +0000" "mailcheck test 2: dot-stuffing lines" (("Mailcheck Sender" NIL "sender" "mailcheck.test")) (("Mailcheck Sender" NIL "sender" "mailcheck.test")) (("Mailcheck Sender" NIL "sender" "mailcheck.test")) (("alice" NIL "alice" "mailcheck.test")) NIL NIL NIL "<msg2.alice@mailcheck.test>") BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 131 8 NIL NIL NIL NIL) BODY[HEADER.FIELDS (SUBJECT)] {49}
S: Subject: mailcheck test 2: dot-stuffing lines
S:
S: )
S: a9 OK Fetch completed (0.001 + 0.000 secs).
C: a10 SEARCH UNSEEN
S: * SEARCH 1 2 3
S: a10 OK Search completed (0.001 + 0.000 secs).
C: a11 EXAMINE INBOX
S: * OK [CLOSED] Previous mailbox closed.
S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
S: * OK [PERMANENTFLAGS ()] Read-only mailbox.
S: * 4 EXISTS
S: * 0 RECENT
S: * OK [UNSEEN 1] First unseen.
S: * OK [UIDVALIDITY 1700000000] UIDs valid
S: * OK [UIDNEXT 5] Predicted next UID
S: a11 OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).
C: a12 STORE 1 +FLAGS (\Deleted)
S: a12 OK Store ignored with read-only mailbox (0.001 + 0.000 secs).
C: a13 LIST "" "*"
S: * LIST (\HasNoChildren) "/" INBOX
S: a13 OK List completed (0.001 + 0.000 secs).
C: a14 STATUS INBOX (MESSAGES UIDNEXT UNSEEN)
S: * STATUS INBOX (MESSAGES 4 UIDNEXT 5 UNSEEN 3)
S: a14 OK [CLIENTBUG] Status on selected mailbox completed (0.001 + 0.000 secs).
C: a15 LOGOUT
S: * BYE Logging out
S: a15 OK Logout completed (0.001 + 0.000 secs).
EOF"#;

    #[test]
    fn rfc3501_sample_session() {
        let (r, f) = replay(RFC3501_SAMPLE);
        // The sample's SELECT omits UIDNEXT and PERMANENTFLAGS: SHOULD-level only.
        assert_eq!(rules(&f), vec!["imap.select-recommended"], "{f:#?}");
        assert!(f[0].message.contains("UIDNEXT") && f[0].message.contains("PERMANENTFLAGS"));
        assert_eq!(f[0].severity, Severity::Should);
        assert_eq!(r.session.state, State::Logout);
        assert_eq!(r.session.exists(), Some(18));
    }

    #[test]
    fn rfc9051_sample_session() {
        let (r, f) = replay(RFC9051_SAMPLE);
        assert_eq!(rules(&f), vec!["imap.select-recommended"], "{f:#?}");
        assert!(r.session.tls);
        assert!(r.session.rev2());
        assert_eq!(r.session.state, State::Logout);
    }

    #[test]
    fn dovecot_session() {
        let mut r = Reader::new(Limits::default(), false);
        let (before_logout, _) = DOVECOT.split_once("C: a15 LOGOUT").unwrap();
        let f = replay_with(&mut r, before_logout);
        // Dovecot says OK to STORE in an EXAMINEd mailbox ("Store ignored").
        assert_eq!(rules(&f), vec!["imap.read-only-store"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Should);
        assert_eq!(r.session.state, State::Selected);
        assert_eq!(r.session.exists(), Some(4));
        assert_eq!(r.session.read_only(), Some(true));
        assert_eq!(r.session.uidvalidity(), Some(1_700_000_000));
        assert!(r.session.has_capability("CONDSTORE"));
        let (_, f) = replay(DOVECOT);
        assert_eq!(rules(&f), vec!["imap.read-only-store"]);
    }

    #[test]
    fn dovecot_session_in_any_chunking() {
        let mut bytes = Vec::new();
        for line in DOVECOT.lines() {
            if let Some(s) = line.strip_prefix("S:") {
                bytes.extend_from_slice(s.strip_prefix(' ').unwrap_or(s).as_bytes());
                bytes.extend_from_slice(b"\r\n");
            }
        }
        let (whole, _, f0) = frames(&bytes, Limits::default(), bytes.len());
        assert!(f0.is_empty());
        assert_eq!(whole.len(), 46);
        for chunk in 1..=41 {
            let (got, _, f) = frames(&bytes, Limits::default(), chunk);
            assert_eq!(got, whole, "chunk size {chunk}");
            assert!(f.is_empty());
        }
        // Streaming every literal instead of keeping it changes nothing but the events.
        let small = Limits {
            max_inline_literal: 16,
            ..Limits::default()
        };
        let (got, streamed, _) = frames(&bytes, small, 5);
        assert_eq!(got.len(), whole.len());
        assert_eq!(streamed, vec![339, 266, 49]);
    }

    // ----- framing -----------------------------------------------------------

    #[test]
    fn literal_octet_counts_are_exact_and_binary_safe() {
        let data: Vec<u8> = (0u8..=255).cycle().take(1000).filter(|&b| b != 0).collect();
        let mut bytes = format!("* 1 FETCH (BODY[] {{{}}}\r\n", data.len()).into_bytes();
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(b" UID 7)\r\n");
        for chunk in [1, 2, 3, 64, 5000] {
            let mut r = Reader::new(Limits::default(), false);
            let mut f = Vec::new();
            r.feed_all(b"* OK hi\r\n", &mut f);
            let mut seen = None;
            for piece in bytes.chunks(chunk) {
                let mut rest = piece;
                loop {
                    let (used, ev) = r.feed(rest, &mut f);
                    rest = &rest[used..];
                    match ev {
                        None => break,
                        Some(ReadEvent::Response {
                            response: Response::Untagged(Untagged::Fetch(fe)),
                            ..
                        }) => seen = Some((fe.uid, fe.sections[0].value.decoded())),
                        Some(_) => {}
                    }
                }
            }
            assert!(f.is_empty(), "{f:?}");
            assert_eq!(seen, Some((Some(7), Some(data.clone()))), "chunk {chunk}");
        }
    }

    #[test]
    fn several_literals_in_one_response_and_streaming_bound() {
        let big = vec![b'x'; 300_000];
        let mut bytes = b"* 3 FETCH (BODY[HEADER] {5}\r\nHe: v BODY[] {300000}\r\n".to_vec();
        bytes.extend_from_slice(&big);
        bytes.extend_from_slice(b" FLAGS (\\Seen))\r\n");
        let mut fr = ResponseFramer::new(Limits::default());
        let mut findings = Vec::new();
        let mut streamed = 0u64;
        let mut max_piece = 0;
        let mut response = None;
        for piece in bytes.chunks(64 * 1024) {
            let mut rest = piece;
            loop {
                let (used, ev) = fr.feed(rest, &mut findings);
                rest = &rest[used..];
                match ev {
                    None => break,
                    Some(FramerEvent::LiteralData(d)) => {
                        streamed += d.len() as u64;
                        max_piece = max_piece.max(d.len());
                    }
                    Some(FramerEvent::LiteralStart { len, prefix, .. }) => {
                        assert_eq!(len, 300_000);
                        assert!(prefix.ends_with(b"BODY[] {300000}\r\n"));
                    }
                    Some(FramerEvent::Response(fm)) => response = Some(fm.bytes.to_vec()),
                    Some(FramerEvent::LiteralEnd) => {}
                }
            }
        }
        assert_eq!(streamed, 300_000);
        assert!(max_piece <= 64 * 1024);
        let response = response.unwrap();
        // The big literal was not kept: the response holds the text and the small literal only.
        assert!(response.len() < 100, "{}", response.len());
        assert!(findings.is_empty());
    }

    #[test]
    fn bare_lf() {
        let f = raw(&[], b"* 5 EXISTS\n");
        assert_eq!(rules(&f), vec!["imap.crlf"]);
        assert!(raw(&[], b"* 5 EXISTS\r\n").is_empty());
        // A literal header ending in a bare LF still frames the literal.
        let f = raw(
            &["a1 FETCH 1 BODY.PEEK[]"],
            b"* 1 FETCH (BODY[] {2}\nab)\r\na1 OK\r\n",
        );
        assert_eq!(rules(&f), vec!["imap.crlf"]);
    }

    #[test]
    fn line_length() {
        let limits = Limits {
            max_line: 100,
            ..Limits::default()
        };
        let mut r = Reader::new(limits, false);
        let mut f = Vec::new();
        r.feed_all(b"* OK ready\r\n", &mut f);
        let long = [b"* OK ".as_slice(), &[b'x'; 300], b"\r\n* 1 EXISTS\r\n"].concat();
        assert_eq!(r.feed_all(&long, &mut f), 2);
        assert_eq!(rules(&f), vec!["imap.line-length"]);
        let mut f = Vec::new();
        r.feed_all(&[b"* OK ".as_slice(), &[b'x'; 50], b"\r\n"].concat(), &mut f);
        assert!(f.is_empty());
    }

    #[test]
    fn literal_header_rules() {
        for bad in [
            &b"* OK see {-5}\r\n"[..],
            b"* OK {}\r\n",
            b"* OK {99999999999999999999}\r\n",
        ] {
            let f = raw(&[], bad);
            assert!(rules(&f).contains(&"imap.literal-header"), "{f:?}");
        }
        assert!(!rules(&raw(&[], b"* OK {curly} text\r\n")).contains(&"imap.literal-header"));
        let f = raw(
            &["a1 FETCH 1 BODY.PEEK[]"],
            b"* 1 FETCH (BODY[] {3+}\r\nabc)\r\na1 OK\r\n",
        );
        assert_eq!(rules(&f), vec!["imap.literal-plus"]);
        let f = raw(
            &["a1 FETCH 1 BODY.PEEK[]"],
            b"* 1 FETCH (BODY[] {3}\r\nabc)\r\na1 OK\r\n",
        );
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn nul_only_in_literal8() {
        let f = raw(
            &["a1 FETCH 1 BODY.PEEK[]"],
            b"* 1 FETCH (BODY[] {3}\r\na\0c)\r\na1 OK\r\n",
        );
        assert_eq!(rules(&f), vec!["imap.literal-nul"]);
        let f = raw(
            &["a1 FETCH 1 BINARY.PEEK[]"],
            b"* 1 FETCH (BINARY[] ~{3}\r\na\0c)\r\na1 OK\r\n",
        );
        assert!(f.is_empty(), "{f:?}");
        let f = raw(
            &["a1 FETCH 1 BODY.PEEK[]"],
            b"* 1 FETCH (BODY[] ~{3}\r\nabc)\r\na1 OK\r\n",
        );
        assert_eq!(rules(&f), vec!["imap.literal8"]);
    }

    #[test]
    fn incomplete_at_eof() {
        let mut r = Reader::new(Limits::default(), false);
        let mut f = Vec::new();
        r.feed_all(b"* OK hi\r\n* 1 FETCH (BODY[] {10}\r\nabc", &mut f);
        r.closed(&mut f);
        assert!(rules(&f).contains(&"imap.incomplete"), "{f:?}");
        let mut r = Reader::new(Limits::default(), false);
        let mut f = Vec::new();
        r.feed_all(b"* OK hi\r\n* BYE", &mut f);
        r.closed(&mut f);
        assert!(rules(&f).contains(&"imap.incomplete"));
        let mut r = Reader::new(Limits::default(), false);
        let mut f = Vec::new();
        r.feed_all(b"* OK hi\r\n* BYE bye\r\n", &mut f);
        r.closed(&mut f);
        assert!(f.is_empty(), "{f:?}");
    }

    // ----- grammar --------------------------------------------------------------

    fn parse_one(bytes: &[u8]) -> (Vec<Finding>, String) {
        let mut f = Vec::new();
        let mut fr = ResponseFramer::new(Limits::default());
        let (_, ev) = fr.feed(bytes, &mut f);
        let Some(FramerEvent::Response(frame)) = ev else {
            panic!("no response")
        };
        let resp = parse_response(&frame, &mut f);
        (f, format!("{resp:?}"))
    }

    #[test]
    fn fetch_items_parsed() {
        let mut f = Vec::new();
        let bytes =
            b"* 12 FETCH (FLAGS (\\Seen $Junk) UID 4827313 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" \
RFC822.SIZE 44827 ENVELOPE (\"Wed, 17 Jul 1996\" \"a (b) \\\"c\\\"\" NIL NIL NIL NIL NIL NIL NIL \"<x@y>\") \
BODYSTRUCTURE (\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 3028 92) BODY[TEXT]<0> {5}\r\nhello \
BINARY[1] ~{2}\r\n\0\x01 MODSEQ (12345) X-GM-MSGID 1278455344230334865)\r\n";
        let mut fr = ResponseFramer::new(Limits::default());
        let (_, ev) = fr.feed(bytes, &mut f);
        let Some(FramerEvent::Response(frame)) = ev else {
            panic!()
        };
        let Response::Untagged(Untagged::Fetch(fe)) = parse_response(&frame, &mut f) else {
            panic!()
        };
        assert!(f.is_empty(), "{f:#?}");
        assert_eq!(fe.seq, 12);
        assert_eq!(fe.flags, Some(vec![&b"\\Seen"[..], b"$Junk"]));
        assert_eq!(fe.uid, Some(4827313));
        assert_eq!(fe.rfc822_size, Some(44827));
        assert_eq!(fe.internal_date, Some(&b"17-Jul-1996 02:44:25 -0700"[..]));
        assert!(fe.envelope.unwrap().ends_with(b"\"<x@y>\")"));
        assert!(fe.body_structure.unwrap().starts_with(b"(\"TEXT\""));
        assert_eq!(fe.modseq, Some(12345));
        assert_eq!(fe.sections.len(), 2);
        assert_eq!(
            (fe.sections[0].kind, fe.sections[0].section, fe.sections[0].origin),
            (SectionKind::Body, &b"TEXT"[..], Some(0))
        );
        assert_eq!(fe.sections[0].value.decoded().unwrap(), b"hello");
        assert_eq!(fe.sections[1].kind, SectionKind::Binary);
        assert_eq!(fe.sections[1].value.octets(), Some(2));
        assert_eq!(Str::Quoted(br#"a\\b\"c"#).octets(), Some(5));
        assert_eq!(Str::Quoted(br#"a\\b\"c"#).decoded().unwrap(), br#"a\b"c"#);
        assert_eq!(fe.other, vec![(&b"X-GM-MSGID"[..], &b"1278455344230334865"[..])]);
    }

    #[test]
    fn status_codes_and_data_parsed() {
        let mut f = Vec::new();
        let cases: &[(&[u8], &str)] = &[
            (
                b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
                "UidValidity(3857529045)",
            ),
            (
                b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
                "PermanentFlags",
            ),
            (b"a1 OK [READ-ONLY] EXAMINE completed\r\n", "ReadOnly"),
            (b"a1 NO [TRYCREATE] no such mailbox\r\n", "TryCreate"),
            (b"* OK [ALERT] System shutdown in 10 minutes\r\n", "Alert"),
            (b"a2 OK [APPENDUID 38505 3955] APPEND completed\r\n", "Other"),
            (b"* LIST (\\Noselect) \"/\" ~/Mail/foo\r\n", "List"),
            (b"* LSUB () \".\" #news.comp.mail.misc\r\n", "lsub: true"),
            (
                b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n",
                "MailboxStatus",
            ),
            (b"* SEARCH 2 84 882\r\n", "Search([2, 84, 882])"),
            (b"* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n", "Other"),
            (b"* ENABLED CONDSTORE QRESYNC\r\n", "Enabled"),
            (b"* ID (\"name\" \"Dovecot\")\r\n", "Other"),
            (b"* 23 EXISTS\r\n", "Exists(23)"),
            (b"* 44 EXPUNGE\r\n", "Expunge(44)"),
            (b"* 5 RECENT\r\n", "Recent(5)"),
            (b"+ Ready for additional command text\r\n", "Continue"),
            (b"+\r\n", "Continue"),
            (b"* PREAUTH IMAP4rev1 server logged in as Smith\r\n", "Preauth"),
            (b"* BYE Autologout; idle for too long\r\n", "Bye"),
        ];
        for (bytes, want) in cases {
            let (found, resp) = parse_one(bytes);
            f.extend(found);
            assert!(
                resp.contains(want),
                "{} -> {resp}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(f.is_empty(), "{f:#?}");
    }

    fn grammar_fires(bytes: &[u8], rule: &str) {
        let (f, resp) = parse_one(bytes);
        assert!(
            rules(&f).contains(&rule),
            "{} -> {resp}: {f:#?}",
            String::from_utf8_lossy(bytes)
        );
    }

    fn grammar_quiet(bytes: &[u8]) {
        let (f, resp) = parse_one(bytes);
        assert!(
            f.is_empty(),
            "{} -> {resp}: {f:#?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn frame_text_keeps_literal_headers_and_drops_their_data() {
        let mut f = Vec::new();
        let mut fr = ResponseFramer::new(Limits::default());
        let bytes = b"* 1 FETCH (BODY[] {5}\r\nab\r\nc RFC822.SIZE 5 BODY[HEADER] {2}\r\n\r\n)\r\n";
        let (_, ev) = fr.feed(bytes, &mut f);
        let Some(FramerEvent::Response(frame)) = ev else {
            panic!("no response")
        };
        assert_eq!(
            String::from_utf8_lossy(&frame.text()),
            "* 1 FETCH (BODY[] {5} RFC822.SIZE 5 BODY[HEADER] {2})"
        );
        assert_eq!(frame.first_line(), b"* 1 FETCH (BODY[] {5}");
        // Streamed literals (too large to keep) are left out the same way.
        let limits = Limits {
            max_inline_literal: 2,
            ..Limits::default()
        };
        let mut fr = ResponseFramer::new(limits);
        let mut rest = &bytes[..];
        let mut text = None;
        loop {
            let (used, ev) = fr.feed(rest, &mut f);
            rest = &rest[used..];
            match ev {
                Some(FramerEvent::Response(frame)) => text = Some(frame.text()),
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&text.expect("framed")),
            "* 1 FETCH (BODY[] {5} RFC822.SIZE 5 BODY[HEADER] {2})"
        );
    }

    #[test]
    fn envelope_grammar() {
        let good = b"* 1 FETCH (ENVELOPE (\"Tue, 14 Nov 2023 22:14:20 +0000\" \"subject\" ((\"A\" NIL \"a\" \"x.test\")) ((\"A\" NIL \"a\" \"x.test\")) ((NIL NIL \"a\" \"x.test\")(NIL NIL \"b\" \"x.test\")) ((NIL NIL \"g\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL \"<id@x>\"))\r\n";
        grammar_quiet(good);
        grammar_quiet(b"* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n");
        // A literal subject, and the RFC example's space between addresses.
        grammar_quiet(b"* 1 FETCH (ENVELOPE (NIL {3}\r\na\"b NIL NIL NIL ((NIL NIL \"a\" \"b\") (NIL NIL \"c\" \"d\")) NIL NIL NIL NIL) UID 3)\r\n");
        let short = b"* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL) UID 3)\r\n";
        let (f, _) = parse_one(short);
        assert_eq!(rules(&f), vec!["imap.envelope"], "{f:#?}");
        assert!(f[0].message.contains("message-id"), "{f:#?}");
        // The rest of the response is still parsed after a bad envelope.
        assert!(format!("{:?}", parse_one(short).1).contains("uid: Some(3)"));
        grammar_fires(
            b"* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n",
            "imap.envelope",
        );
        grammar_fires(
            b"* 1 FETCH (ENVELOPE (NIL NIL \"a@b\" NIL NIL NIL NIL NIL NIL NIL))\r\n",
            "imap.envelope",
        );
        grammar_fires(
            b"* 1 FETCH (ENVELOPE (NIL NIL () NIL NIL NIL NIL NIL NIL NIL))\r\n",
            "imap.envelope",
        );
        grammar_fires(
            b"* 1 FETCH (ENVELOPE (NIL NIL ((NIL \"a\" \"b\")) NIL NIL NIL NIL NIL NIL NIL))\r\n",
            "imap.envelope",
        );
        grammar_fires(
            b"* 1 FETCH (ENVELOPE (x NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n",
            "imap.envelope",
        );
    }

    #[test]
    fn body_structure_grammar() {
        for good in [
            &b"* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\n"[..],
            b"* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 131 8 NIL NIL NIL NIL))\r\n",
            b"* 1 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 2 1 NIL NIL NIL)(\"image\" \"png\" (\"name\" \"a.png\") NIL NIL \"base64\" 100 NIL (\"attachment\" (\"filename\" \"a.png\")) NIL NIL) \"mixed\" (\"boundary\" \"x\") NIL NIL NIL))\r\n",
            b"* 1 FETCH (BODYSTRUCTURE (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 300 (NIL \"s\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL) 12 NIL NIL (\"en\" \"de\") \"loc\" 5 (1 \"x\")))\r\n",
            b"* 1 FETCH (BODY ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 2 1)(\"text\" \"html\" NIL NIL NIL \"7bit\" 2 1) \"alternative\"))\r\n",
            b"* 1 FETCH (BODYSTRUCTURE (\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"BASE64\" 4))\r\n",
        ] {
            grammar_quiet(good);
        }
        for (bad, says) in [
            (&b"* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 131 NIL NIL NIL NIL))\r\n"[..], "lines"),
            (b"* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 30 2 NIL))\r\n", "extension"),
            (b"* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" NIL NIL \"7BIT\" 30 2))\r\n", "encoding"),
            (b"* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\") NIL NIL \"7BIT\" 30 2))\r\n", "pairs"),
            (b"* 1 FETCH (BODY (TEXT \"PLAIN\" NIL NIL NIL \"7BIT\" 30 2))\r\n", "media type"),
            (b"* 1 FETCH (BODY ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 2 1)))\r\n", "subtype"),
        ] {
            let (f, resp) = parse_one(bad);
            assert_eq!(rules(&f), vec!["imap.bodystructure"], "{} -> {resp}: {f:#?}", String::from_utf8_lossy(bad));
            assert!(f[0].message.contains(says), "{says}: {f:#?}");
        }
    }

    #[test]
    fn uid_store_and_uid_search_answer_with_uids() {
        let base =
            selected("C: u1 UID STORE 3 +FLAGS (\\Flagged)\nS: * 3 FETCH (FLAGS (\\Flagged))\nS: u1 OK done");
        fires(&base, "imap.uid-missing");
        quiet(
            &base.replace("(FLAGS (\\Flagged))", "(FLAGS (\\Flagged) UID 3)"),
            "imap.uid-missing",
        );
        // An update for another message during UID STORE may be unsolicited.
        quiet(
            &base.replace("S: * 3 FETCH (FLAGS", "S: * 2 FETCH (FLAGS"),
            "imap.uid-missing",
        );
        // Plain STORE needs no UID.
        quiet(&base.replace("UID STORE", "STORE"), "imap.uid-missing");
        let search = |answer: &str| {
            selected(&format!(
                "C: e1 STORE 1 +FLAGS.SILENT (\\Deleted)\nS: e1 OK done\nC: e2 EXPUNGE\nS: * 1 EXPUNGE\nS: e2 OK done\nC: u2 UID SEARCH ALL\nS: * SEARCH {answer}\nS: u2 OK done"
            ))
        };
        quiet(&search("2 3 4"), "imap.uid-search");
        // Sequence numbers 1-3 instead of UIDs 2-4.
        fires(&search("1 2 3"), "imap.uid-search");
    }

    #[test]
    fn response_syntax() {
        grammar_fires(b"* 3  EXISTS\r\n", "imap.response-syntax");
        grammar_fires(b"a1 DONE ok\r\n", "imap.response-syntax");
        grammar_fires(b"a1 BYE no\r\n", "imap.response-syntax");
        grammar_fires(b"* LIST (\\Noselect) \"//\" foo\r\n", "imap.response-syntax");
        grammar_fires(b"*OK\r\n", "imap.response-syntax");
        grammar_quiet(b"* 3 EXISTS\r\n");
        grammar_quiet(b"a1 ok lower-case condition is fine\r\n");
    }

    #[test]
    fn tag_syntax() {
        grammar_fires(b"a(1 OK done\r\n", "imap.tag");
        grammar_fires(b"a+1 OK done\r\n", "imap.tag");
        grammar_quiet(b"A.001] OK done\r\n");
    }

    #[test]
    fn response_code_syntax() {
        grammar_fires(b"* OK [UIDVALIDITY x] bad\r\n", "imap.response-code");
        grammar_fires(b"* OK [UIDNEXT 5 bad\r\n", "imap.response-code");
        grammar_fires(b"* OK [PERMANENTFLAGS] bad\r\n", "imap.response-code");
        grammar_quiet(b"* OK [UIDNEXT 5] Predicted next UID\r\n");
        grammar_quiet(b"* NO [UNKNOWN-CODE with args] unknown codes are fine\r\n");
    }

    #[test]
    fn number_ranges() {
        grammar_fires(b"* 0 EXPUNGE\r\n", "imap.number");
        grammar_fires(b"* 4294967296 EXISTS\r\n", "imap.number");
        grammar_fires(b"* 1 FETCH (UID 0)\r\n", "imap.number");
        grammar_fires(b"* OK [UIDVALIDITY 0] zero\r\n", "imap.number");
        grammar_quiet(b"* 4294967295 EXISTS\r\n");
        grammar_quiet(b"* 0 EXISTS\r\n");
    }

    #[test]
    fn quoted_strings() {
        grammar_fires(b"* LIST () \"/\" \"a\\b\"\r\n", "imap.quoted");
        grammar_fires(b"* LIST () \"/\" \"unterminated\r\n", "imap.quoted");
        grammar_quiet(b"* LIST () \"/\" \"a \\\"quoted\\\" \\\\ name\"\r\n");
    }

    #[test]
    fn flags_syntax() {
        grammar_fires(b"* FLAGS (\\Seen \\*)\r\n", "imap.flag");
        grammar_fires(b"* FLAGS (\\Seen ())\r\n", "imap.flag");
        grammar_quiet(b"* OK [PERMANENTFLAGS (\\Seen \\*)] ok\r\n");
        grammar_quiet(b"* FLAGS (\\Answered $Forwarded NonJunk)\r\n");
    }

    #[test]
    fn internaldate_syntax() {
        grammar_fires(
            b"* 1 FETCH (INTERNALDATE \"1-Jul-1996 02:44:25 -0700\")\r\n",
            "imap.internaldate",
        );
        grammar_fires(
            b"* 1 FETCH (INTERNALDATE \"17-Jly-1996 02:44:25 -0700\")\r\n",
            "imap.internaldate",
        );
        grammar_fires(
            b"* 1 FETCH (INTERNALDATE \"17-Jul-1996 02:44:25\")\r\n",
            "imap.internaldate",
        );
        grammar_quiet(b"* 1 FETCH (INTERNALDATE \" 1-Jul-1996 02:44:25 -0700\")\r\n");
    }

    #[test]
    fn fetch_syntax_and_recovery() {
        grammar_fires(b"* 1 FETCH UID 5\r\n", "imap.fetch-syntax");
        grammar_fires(b"* 1 FETCH (UID 5\r\n", "imap.fetch-syntax");
        grammar_fires(b"* 1 FETCH (UID 5  FLAGS ())\r\n", "imap.fetch-syntax");
        // A broken item does not hide the ones after it.
        let mut f = Vec::new();
        let bytes = b"* 1 FETCH (INTERNALDATE 17 UID 9 RFC822.SIZE 3)\r\n";
        let mut fr = ResponseFramer::new(Limits::default());
        let (_, ev) = fr.feed(bytes, &mut f);
        let Some(FramerEvent::Response(frame)) = ev else {
            panic!()
        };
        let Response::Untagged(Untagged::Fetch(fe)) = parse_response(&frame, &mut f) else {
            panic!()
        };
        assert_eq!((fe.uid, fe.rfc822_size), (Some(9), Some(3)));
        assert_eq!(rules(&f), vec!["imap.response-syntax"]);
        assert!(f[0].message.contains("at octet"), "{}", f[0].message);
        grammar_quiet(b"* 1 FETCH (UID 5 FLAGS () BODY[HEADER.FIELDS (FROM \"X-]\")] NIL)\r\n");
    }

    #[test]
    fn literal8_placement() {
        let f = raw(
            &["a1 FETCH 1 BODY.PEEK[]"],
            b"* 1 FETCH (RFC822.TEXT ~{2}\r\nab)\r\na1 OK\r\n",
        );
        assert_eq!(rules(&f), vec!["imap.literal8"]);
        let f = raw(
            &["a1 FETCH 1 BINARY.PEEK[1]"],
            b"* 1 FETCH (BINARY[1] ~{2}\r\nab)\r\na1 OK\r\n",
        );
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn literal_in_status_text() {
        let f = raw(&["a1 NOOP"], b"a1 OK done {5}\r\nhello\r\n");
        assert!(rules(&f).contains(&"imap.literal-in-text"), "{f:?}");
        assert!(raw(&["a1 NOOP"], b"a1 OK done 5}\r\n").is_empty());
    }

    #[test]
    fn capability_version() {
        grammar_fires(b"* CAPABILITY IDLE LITERAL+\r\n", "imap.capability-version");
        grammar_fires(b"* OK [CAPABILITY IDLE] hi\r\n", "imap.capability-version");
        grammar_quiet(b"* CAPABILITY IMAP4rev2 IDLE\r\n");
    }

    #[test]
    fn unknown_response_is_a_note() {
        let (f, _) = parse_one(b"* XYZZY 1 2 3\r\n");
        assert_eq!(rules(&f), vec!["imap.unknown-response"]);
        assert_eq!(f[0].severity, Severity::Note);
        let (f, _) = parse_one(b"* 3 XYZZY\r\n");
        assert_eq!(rules(&f), vec!["imap.unknown-response"]);
        grammar_quiet(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
    }

    // ----- session ------------------------------------------------------------

    #[test]
    fn greeting_rules() {
        fires("S: a1 OK hello", "imap.greeting");
        fires("S: * NO go away", "imap.greeting");
        quiet("S: * OK hello", "imap.greeting");
        let (r, f) = replay("S: * BYE too busy");
        assert!(f.is_empty());
        assert_eq!(r.session.state, State::Logout);
        let (r, f) = replay("S: * PREAUTH welcome");
        assert_eq!(rules(&f), vec!["imap.preauth-cleartext"]);
        assert_eq!(r.session.state, State::Authenticated);
        let mut r = Reader::new(Limits::default(), true);
        assert!(replay_with(&mut r, "S: * PREAUTH welcome").is_empty());
        fires("S: * OK hi\nS: * PREAUTH again", "imap.response-syntax");
    }

    #[test]
    fn tags_and_completions() {
        fires("S: * OK hi\nC: a1 NOOP\nS: a2 OK done", "imap.unknown-tag");
        fires(
            "S: * OK hi\nC: a1 NOOP\nS: a1 OK done\nS: a1 OK again",
            "imap.duplicate-completion",
        );
        quiet(
            "S: * OK hi\nC: a1 NOOP\nS: a1 OK done\nC: a2 NOOP\nS: a2 OK done",
            "imap.unknown-tag",
        );
        // Pipelined commands may complete in any order.
        let (r, f) =
            replay("S: * OK hi\nC: a1 NOOP\nC: a2 CAPABILITY\nS: * CAPABILITY IMAP4rev1\nS: a2 OK\nS: a1 OK");
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(r.session.pending(), 0);
        fires("S: * OK hi\nC: a1 NOOP\nEOF", "imap.missing-completion");
        quiet(
            "S: * OK hi\nC: a1 NOOP\nS: * BYE shutting down\nEOF",
            "imap.missing-completion",
        );
        fires(
            "S: * OK hi\nC: a1 LOGOUT\nS: * BYE bye\nEOF",
            "imap.missing-completion",
        );
        fires("S: * OK hi\nEOF", "imap.close-without-bye");
        quiet(
            "S: * OK hi\nS: * BYE idle too long\nEOF",
            "imap.close-without-bye",
        );
    }

    #[test]
    fn continuations() {
        fires(
            "S: * OK hi\nC: a1 NOOP\nS: + go on",
            "imap.continuation-unexpected",
        );
        quiet(
            "S: * OK hi\nC: a1 LOGIN {5}\\r\\nalice {2}\\r\\npw\nS: + ok\nS: + ok\nS: a1 OK",
            "imap.continuation-unexpected",
        );
        fires(
            "S: * OK hi\nC: a1 LOGIN {5}\\r\\nalice pw\nS: + ok\nS: + again\nS: a1 OK",
            "imap.continuation-unexpected",
        );
        quiet(
            "S: * OK hi\nC: a1 LOGIN {5+}\\r\\nalice pw\nS: a1 OK",
            "imap.continuation-unexpected",
        );
        fires(
            "S: * OK hi\nC: a1 LOGIN {5+}\\r\\nalice pw\nS: + no wait needed\nS: a1 OK",
            "imap.continuation-unexpected",
        );
        quiet(
            &selected("C: i1 IDLE\nS: + idling\nS: * 5 EXISTS\nC+ DONE\nS: i1 OK"),
            "imap.continuation-unexpected",
        );
    }

    #[test]
    fn state_rules() {
        let s = format!("{LOGGED_IN}\nC: a2 FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS ())\nS: a2 OK done");
        fires(&s, "imap.state");
        quiet(
            &selected("C: a2 FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS ())\nS: a2 OK done"),
            "imap.state",
        );
        fires("S: * OK hi\nC: a1 SELECT INBOX\nS: a1 OK", "imap.state");
        fires(
            &format!("{LOGGED_IN}\nC: a2 LOGIN bob pw\nS: a2 OK"),
            "imap.state",
        );
        let (r, f) = replay(&selected("C: c1 CLOSE\nS: c1 OK"));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(r.session.state, State::Authenticated);
        // A failed SELECT leaves no mailbox selected.
        let (r, _) = replay(&selected("C: x1 SELECT nosuch\nS: x1 NO no such mailbox"));
        assert_eq!(r.session.state, State::Authenticated);
        assert_eq!(r.session.exists(), None);
        let (r, _) = replay(&selected("C: u1 UNSELECT\nS: u1 OK"));
        assert_eq!(r.session.state, State::Authenticated);
    }

    #[test]
    fn logindisabled() {
        let s = "S: * OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\nC: a1 LOGIN alice pw\nS: a1 OK";
        fires(s, "imap.logindisabled");
        quiet("S: * OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\nC: a1 LOGIN alice pw\nS: a1 NO disabled", "imap.logindisabled");
        let after_tls =
            "S: * OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\nC: t1 STARTTLS\nS: t1 OK go\n\
C: a0 CAPABILITY\nS: * CAPABILITY IMAP4rev1 AUTH=PLAIN\nS: a0 OK\nC: a1 LOGIN alice pw\nS: a1 OK";
        quiet(after_tls, "imap.logindisabled");
        let mut r = Reader::new(Limits::default(), true);
        assert!(replay_with(&mut r, s).is_empty());
    }

    #[test]
    fn logout_rules() {
        fires("S: * OK hi\nC: a1 LOGOUT\nS: a1 OK bye", "imap.logout-bye");
        quiet(
            "S: * OK hi\nC: a1 LOGOUT\nS: * BYE bye\nS: a1 OK bye",
            "imap.logout-bye",
        );
        fires(
            "S: * OK hi\nC: a1 LOGOUT\nS: * BYE bye\nS: a1 OK bye\nS: * OK more",
            "imap.after-logout",
        );
        quiet(
            "S: * OK hi\nC: a1 LOGOUT\nS: * BYE bye\nS: a1 OK bye\nEOF",
            "imap.after-logout",
        );
    }

    #[test]
    fn bad_and_no_plausibility() {
        fires("S: * OK hi\nC: a1 NOOP\nS: a1 BAD what?", "imap.bad-for-valid");
        quiet(
            "S: * OK hi\nC: a1 NOOP extra\nS: a1 BAD what?",
            "imap.bad-for-valid",
        );
        quiet(
            "S: * OK hi\nC: a1 SELECT INBOX\nS: a1 BAD not logged in",
            "imap.bad-for-valid",
        );
        quiet(
            "S: * OK hi\nC: a1 FETCH 1 (FOO)\nS: a1 BAD unknown item",
            "imap.bad-for-valid",
        );
        fires(
            &format!("{LOGGED_IN}\nC: a2 SELECT\nS: a2 NO which mailbox?"),
            "imap.no-for-malformed",
        );
        quiet(
            &format!("{LOGGED_IN}\nC: a2 SELECT nosuch\nS: a2 NO no such mailbox"),
            "imap.no-for-malformed",
        );
        fires(
            "S: * OK hi\nC: a1 LOGIN alice\nS: a1 NO bad",
            "imap.no-for-malformed",
        );
    }

    #[test]
    fn select_required_data() {
        let s = format!(
            "{LOGGED_IN}\nC: s1 SELECT INBOX\nS: * FLAGS ()\nS: * 2 EXISTS\nS: s1 OK [READ-WRITE] done"
        );
        let (_, f) = replay(&s);
        let req = f
            .iter()
            .find(|f| f.rule == "imap.select-required")
            .expect("select-required");
        assert!(
            req.message.contains("UIDVALIDITY") && !req.message.contains("EXISTS"),
            "{}",
            req.message
        );
        quiet(&selected(""), "imap.select-required");
        quiet(&selected(""), "imap.select-recommended");
        fires(
            &format!(
                "{LOGGED_IN}\nC: s1 SELECT INBOX\nS: * FLAGS ()\nS: * 2 EXISTS\nS: * 0 RECENT\n\
S: * OK [UIDVALIDITY 1] v\nS: s1 OK [READ-WRITE] done"
            ),
            "imap.select-recommended",
        );
        // IMAP4rev2 requires LIST and no longer RECENT.
        let rev2 = "S: * OK [CAPABILITY IMAP4rev2] hi\nC: a1 LOGIN a b\nS: a1 OK\nC: s1 SELECT INBOX\n\
S: * FLAGS ()\nS: * 2 EXISTS\nS: * OK [UIDVALIDITY 1] v\nS: * OK [UIDNEXT 9] n\nS: * OK [PERMANENTFLAGS ()] p\n\
S: s1 OK [READ-WRITE] done";
        let (_, f) = replay(rev2);
        assert_eq!(rules(&f), vec!["imap.select-required"]);
        assert!(f[0].message.contains("LIST"));
        let with_list = rev2.replace("S: s1 OK", "S: * LIST () \"/\" INBOX\nS: s1 OK");
        assert!(replay(&with_list).1.is_empty());
    }

    #[test]
    fn examine_is_read_only() {
        let base = format!(
            "{LOGGED_IN}\nC: e1 EXAMINE INBOX\nS: * FLAGS ()\nS: * OK [PERMANENTFLAGS ()] ro\nS: * 2 EXISTS\n\
S: * 0 RECENT\nS: * OK [UIDVALIDITY 1] v\nS: * OK [UIDNEXT 3] n"
        );
        fires(&format!("{base}\nS: e1 OK done"), "imap.examine-read-only");
        let ro = format!("{base}\nS: e1 OK [READ-ONLY] done");
        quiet(&ro, "imap.examine-read-only");
        fires(
            &format!("{ro}\nC: st STORE 1 +FLAGS (\\Seen)\nS: st OK"),
            "imap.read-only-store",
        );
        quiet(
            &format!("{ro}\nC: st STORE 1 +FLAGS (\\Seen)\nS: st NO read-only"),
            "imap.read-only-store",
        );
        quiet(
            &selected("C: st STORE 1 +FLAGS (\\Seen)\nS: * 1 FETCH (FLAGS (\\Seen))\nS: st OK"),
            "imap.read-only-store",
        );
        fires(
            &format!("{ro}\nC: x EXPUNGE\nS: * 1 EXPUNGE\nS: x OK"),
            "imap.read-only-write",
        );
        quiet(
            &selected("C: x EXPUNGE\nS: * 1 EXPUNGE\nS: x OK"),
            "imap.read-only-write",
        );
        let fetch = format!(
            "{ro}\nC: f1 FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS ())\nS: f1 OK\nC: f2 FETCH 1 (FLAGS BODY[])\n\
S: * 1 FETCH (FLAGS (\\Seen) BODY[] {{2}}\nS: \nS: )\nS: f2 OK"
        );
        fires(&fetch, "imap.read-only-seen");
        quiet(
            &fetch.replace("FLAGS (\\Seen) BODY", "FLAGS () BODY"),
            "imap.read-only-seen",
        );
    }

    #[test]
    fn message_counts() {
        fires(
            &selected("C: n NOOP\nS: * 3 EXISTS\nS: n OK"),
            "imap.exists-decrease",
        );
        quiet(
            &selected("C: n NOOP\nS: * 4 EXPUNGE\nS: * 3 EXISTS\nS: n OK"),
            "imap.exists-decrease",
        );
        fires(
            &selected("C: n NOOP\nS: * 5 EXPUNGE\nS: n OK"),
            "imap.expunge-range",
        );
        quiet(
            &selected("C: n NOOP\nS: * 4 EXPUNGE\nS: * 3 EXPUNGE\nS: n OK"),
            "imap.expunge-range",
        );
        fires(
            &selected("C: n NOOP\nS: * 4 EXPUNGE\nS: * 4 EXPUNGE\nS: n OK"),
            "imap.expunge-range",
        );
        fires(
            &selected("C: f FETCH 1 FLAGS\nS: * 2 EXPUNGE\nS: * 1 FETCH (FLAGS ())\nS: f OK"),
            "imap.expunge-timing",
        );
        fires(&selected("S: * 2 EXPUNGE"), "imap.expunge-timing");
        quiet(
            &selected("C: f UID FETCH 1 FLAGS\nS: * 2 EXPUNGE\nS: * 1 FETCH (UID 1 FLAGS ())\nS: f OK"),
            "imap.expunge-timing",
        );
        quiet(
            &selected("C: i IDLE\nS: + idling\nS: * 2 EXPUNGE\nC+ DONE\nS: i OK"),
            "imap.expunge-timing",
        );
        fires(
            &selected("C: f FETCH 5 FLAGS\nS: * 5 FETCH (FLAGS ())\nS: f OK"),
            "imap.seq-range",
        );
        quiet(
            &selected("C: n NOOP\nS: * 5 EXISTS\nS: * 5 FETCH (FLAGS ())\nS: n OK"),
            "imap.seq-range",
        );
        fires(
            &selected("C: q SEARCH ALL\nS: * SEARCH 1 5\nS: q OK"),
            "imap.seq-range",
        );
        quiet(
            &selected("C: q UID SEARCH ALL\nS: * SEARCH 1 5\nS: q OK"),
            "imap.seq-range",
        );
        let (r, f) = replay(&selected("C: n NOOP\nS: * 2 EXPUNGE\nS: * 5 EXISTS\nS: n OK"));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(r.session.exists(), Some(5));
        assert_eq!(r.session.uid_of(2), Some(3));
    }

    #[test]
    fn uid_rules() {
        fires(
            &selected("C: f UID FETCH 1 (RFC822.SIZE)\nS: * 1 FETCH (RFC822.SIZE 10)\nS: f OK"),
            "imap.uid-missing",
        );
        quiet(
            &selected("C: f UID FETCH 1 (RFC822.SIZE)\nS: * 1 FETCH (UID 1 RFC822.SIZE 10)\nS: f OK"),
            "imap.uid-missing",
        );
        // An unsolicited flag update during a UID command needs no UID.
        quiet(&selected("C: f UID FETCH 1 (RFC822.SIZE)\nS: * 2 FETCH (FLAGS (\\Seen))\nS: * 1 FETCH (UID 1 RFC822.SIZE 10)\nS: f OK"), "imap.uid-missing");
        fires(
            &selected("C: f FETCH 2 UID\nS: * 2 FETCH (UID 7)\nS: f OK"),
            "imap.uid-stable",
        );
        quiet(
            &selected("C: n NOOP\nS: * 1 EXPUNGE\nS: n OK\nC: f FETCH 1 UID\nS: * 1 FETCH (UID 2)\nS: f OK"),
            "imap.uid-stable",
        );
        quiet(
            &selected("C: n NOOP\nS: * OK [UIDVALIDITY 99] new\nS: * 1 FETCH (UID 40)\nS: n OK"),
            "imap.uid-stable",
        );
        let order = format!(
            "{LOGGED_IN}\nC: s1 SELECT INBOX\nS: * FLAGS ()\nS: * OK [PERMANENTFLAGS ()] p\nS: * 3 EXISTS\nS: * 0 RECENT\n\
S: * OK [UIDVALIDITY 1] v\nS: * OK [UIDNEXT 50] n\nS: s1 OK [READ-WRITE] ok\nC: f FETCH 1:3 UID"
        );
        fires(
            &format!("{order}\nS: * 1 FETCH (UID 10)\nS: * 2 FETCH (UID 30)\nS: * 3 FETCH (UID 20)\nS: f OK"),
            "imap.uid-order",
        );
        fires(
            &format!("{order}\nS: * 3 FETCH (UID 20)\nS: * 2 FETCH (UID 20)\nS: f OK"),
            "imap.uid-order",
        );
        quiet(
            &format!("{order}\nS: * 3 FETCH (UID 40)\nS: * 1 FETCH (UID 10)\nS: * 2 FETCH (UID 30)\nS: f OK"),
            "imap.uid-order",
        );
        fires(
            &format!("{order}\nS: * 3 FETCH (UID 50)\nS: f OK"),
            "imap.uidnext",
        );
        quiet(
            &format!("{order}\nS: * 3 FETCH (UID 49)\nS: f OK"),
            "imap.uidnext",
        );
        // A message that arrived after the SELECT may have any higher UID.
        quiet(
            &format!("{order}\nS: * 4 EXISTS\nS: * 4 FETCH (UID 50)\nS: f OK"),
            "imap.uidnext",
        );
    }

    #[test]
    fn rfc822_size_against_body() {
        let s = selected("C: f FETCH 1 (RFC822.SIZE BODY.PEEK[])\nS: * 1 FETCH (RFC822.SIZE 5 BODY[] {4}\nS: ab\nS: )\nS: f OK");
        fires(&s, "imap.rfc822-size");
        quiet(&s.replace("SIZE 5", "SIZE 4"), "imap.rfc822-size");
        // Across commands, and not for partial or section fetches.
        quiet(&selected("C: f FETCH 1 (RFC822.SIZE)\nS: * 1 FETCH (RFC822.SIZE 9)\nS: f OK\nC: g FETCH 1 (BODY.PEEK[]<0.4> BODY.PEEK[TEXT])\nS: * 1 FETCH (BODY[]<0> {4}\nS: ab\nS:  BODY[TEXT] {2}\nS: \nS: )\nS: g OK"), "imap.rfc822-size");
        fires(&selected("C: f FETCH 1 (RFC822.SIZE)\nS: * 1 FETCH (RFC822.SIZE 9)\nS: f OK\nC: g FETCH 1 (RFC822)\nS: * 1 FETCH (RFC822 {4}\nS: ab\nS: )\nS: g OK"), "imap.rfc822-size");
    }

    #[test]
    fn store_flags_seen_by_fetch() {
        let store = "C: st STORE 1:2 +FLAGS.SILENT (\\Flagged \\Answered)\nS: st OK";
        fires(
            &selected(&format!(
                "{store}\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS (\\Flagged))\nS: f OK"
            )),
            "imap.store-flags",
        );
        quiet(
            &selected(&format!(
                "{store}\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS (\\Answered \\Flagged))\nS: f OK"
            )),
            "imap.store-flags",
        );
        fires(
            &selected("C: st STORE 2 +FLAGS (\\Deleted)\nS: * 2 FETCH (FLAGS ())\nS: st OK"),
            "imap.store-flags",
        );
        fires(&selected("C: st UID STORE 3 -FLAGS (\\Seen)\nS: st OK\nC: f FETCH 3 FLAGS\nS: * 3 FETCH (FLAGS (\\Seen))\nS: f OK"), "imap.store-flags");
        quiet(&selected("C: st UID STORE 3 -FLAGS (\\Seen)\nS: st OK\nC: f FETCH 4 FLAGS\nS: * 4 FETCH (FLAGS (\\Seen))\nS: f OK"), "imap.store-flags");
        fires(&selected("C: st STORE 1 FLAGS (\\Draft)\nS: st OK\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS (\\Draft \\Seen))\nS: f OK"), "imap.store-flags");
        // A failed STORE promises nothing.
        quiet(&selected("C: st STORE 1 +FLAGS (\\Flagged)\nS: st NO cannot\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS ())\nS: f OK"), "imap.store-flags");
    }

    #[test]
    fn body_fetch_sets_seen_peek_does_not() {
        let body = "C: b FETCH 1 BODY[]\nS: * 1 FETCH (BODY[] {2}\nS: \nS: )\nS: b OK";
        // Flags not reported with the body (SHOULD), and not set at all (MUST).
        let (_, f) = replay(&selected(&format!(
            "{body}\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS ())\nS: f OK"
        )));
        assert!(rules(&f).contains(&"imap.fetch-seen-flags"), "{f:?}");
        assert!(rules(&f).contains(&"imap.fetch-seen"), "{f:?}");
        let (_, f) = replay(&selected(&format!(
            "{body}\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS (\\Seen))\nS: f OK"
        )));
        assert_eq!(rules(&f), vec!["imap.fetch-seen-flags"]);
        let reported = "C: b FETCH 1 BODY[]\nS: * 1 FETCH (BODY[] {2}\nS: \nS:  FLAGS (\\Seen))\nS: b OK";
        quiet(&selected(reported), "imap.fetch-seen-flags");
        quiet(
            &selected(&format!(
                "{reported}\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS (\\Seen))\nS: f OK"
            )),
            "imap.fetch-seen",
        );
        // A later STORE -FLAGS \Seen lifts the expectation.
        quiet(&selected(&format!("{body}\nC: st STORE 1 -FLAGS.SILENT (\\Seen)\nS: st OK\nC: f FETCH 1 FLAGS\nS: * 1 FETCH (FLAGS ())\nS: f OK")), "imap.fetch-seen");
        // PEEK must not set \Seen.
        fires(&selected("C: p FETCH 1 (FLAGS BODY.PEEK[])\nS: * 1 FETCH (FLAGS (\\Seen) BODY[] {2}\nS: \nS: )\nS: p OK"), "imap.peek-seen");
        quiet(
            &selected(
                "C: p FETCH 1 (FLAGS BODY.PEEK[])\nS: * 1 FETCH (FLAGS () BODY[] {2}\nS: \nS: )\nS: p OK",
            ),
            "imap.peek-seen",
        );
        quiet(
            &selected(
                "C: p FETCH 1 (FLAGS BODY[])\nS: * 1 FETCH (FLAGS (\\Seen) BODY[] {2}\nS: \nS: )\nS: p OK",
            ),
            "imap.peek-seen",
        );
    }

    #[test]
    fn findings_per_rule_are_capped() {
        let mut r = Reader::new(Limits::default(), false);
        let mut f = Vec::new();
        r.feed_all(b"* OK hi\r\n", &mut f);
        for _ in 0..100 {
            r.feed_all(b"* OK bare\n", &mut f);
        }
        assert_eq!(f.len(), PER_RULE as usize);
        assert!(f.last().unwrap().message.contains("not reported"));
    }

    // ----- command side ----------------------------------------------------------

    #[test]
    fn commands_parse() {
        let c = Command::parse(b"a1 UID fetch 1:* (FLAGS)\r\n").unwrap();
        assert_eq!((c.tag.as_str(), c.verb.as_str(), c.uid), ("a1", "FETCH", true));
        assert_eq!(c.args, b"1:* (FLAGS)");
        assert_eq!(c.legal_in(State::Selected), Some(true));
        assert_eq!(c.legal_in(State::Authenticated), Some(false));
        let c = Command::parse(b"a2 LOGIN {5}\r\nalice {11+}\r\nsecret pass\r\n").unwrap();
        assert_eq!(c.literals.len(), 2);
        assert_eq!(c.sync_literals(), 1);
        assert!(!c.literals[1].sync);
        assert_eq!(c.label(), "LOGIN ...");
        assert_eq!(c.well_formed(), Some(true));
        let c = Command::parse(b"a3 APPEND INBOX (\\Seen) ~{3}").unwrap();
        assert!(c.literals[0].binary && c.literals[0].sync);
        assert_eq!(Command::parse(b""), Err(CommandError::Empty));
        assert_eq!(Command::parse(b"a+1 NOOP"), Err(CommandError::BadTag));
        assert_eq!(Command::parse(b"a1"), Err(CommandError::NoVerb));
        assert_eq!(Command::parse(b"a1 UID"), Err(CommandError::NoVerb));
        assert_eq!(
            line_literal(b"a1 LOGIN {5}\r\n"),
            Some(ClientLiteral {
                len: 5,
                sync: true,
                binary: false
            })
        );
        assert_eq!(line_literal(b"a1 LOGIN alice pw"), None);
        assert_eq!(
            Command::parse(b"a1 SELECT \"INBOX\" (CONDSTORE)")
                .unwrap()
                .well_formed(),
            Some(true)
        );
        assert_eq!(
            Command::parse(b"a1 SELECT \"INBOX").unwrap().well_formed(),
            Some(false)
        );
        assert_eq!(Command::parse(b"a1 XFOO bar").unwrap().well_formed(), None);
    }

    #[test]
    fn state_table() {
        use State::*;
        assert_eq!(legal_in("noop", false, NotAuthenticated), Some(true));
        assert_eq!(legal_in("LOGIN", false, NotAuthenticated), Some(true));
        assert_eq!(legal_in("LOGIN", false, Authenticated), Some(false));
        assert_eq!(legal_in("SELECT", false, NotAuthenticated), Some(false));
        assert_eq!(legal_in("SELECT", false, Selected), Some(true));
        assert_eq!(legal_in("FETCH", false, Authenticated), Some(false));
        assert_eq!(legal_in("CLOSE", false, Selected), Some(true));
        assert_eq!(legal_in("NOOP", false, Logout), Some(false));
        assert_eq!(legal_in("XAPPLEPUSHSERVICE", false, Selected), None);
        assert_eq!(legal_in("LOGIN", true, Selected), None);
    }

    #[test]
    fn tags_and_literal_helpers() {
        let mut g = TagGen::new("mc");
        assert_eq!(g.next_tag(), "mc0001");
        assert_eq!(g.next_tag(), "mc0002");
        assert_eq!(TagGen::new("a b").next_tag(), "a0001");
        let caps = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(nonsync_allowed(&caps(&["IMAP4rev1", "LITERAL+"]), 1 << 30));
        assert!(nonsync_allowed(&caps(&["LITERAL-"]), 4096));
        assert!(!nonsync_allowed(&caps(&["LITERAL-"]), 4097));
        assert!(nonsync_allowed(&caps(&["IMAP4rev2"]), 100));
        assert!(!nonsync_allowed(&caps(&["IMAP4rev1"]), 1));
        let s = SeqSet::parse(b"1,3:5,9:*").unwrap();
        assert!(s.contains(4, 20) && s.contains(15, 20) && !s.contains(2, 20) && !s.contains(21, 20));
        assert!(SeqSet::parse(b"$").is_none());
        assert!(SeqSet::parse(b"1,,2").is_none());
    }

    // ----- robustness --------------------------------------------------------------

    /// Random damage to real traffic, in random chunking: never a panic, and
    /// memory stays bounded (the framer keeps at most a line and small literals).
    #[test]
    fn garbage_never_panics() {
        let mut base = Vec::new();
        for script in [DOVECOT, RFC3501_SAMPLE, RFC9051_SAMPLE] {
            for line in script.lines() {
                if let Some(s) = line.strip_prefix("S:") {
                    base.extend_from_slice(s.strip_prefix(' ').unwrap_or(s).as_bytes());
                    base.extend_from_slice(b"\r\n");
                }
            }
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"{}[]()\"\\ *+~0123456789\r\n\0abcFETCHOKUID<>.";
        for _ in 0..300 {
            let mut data = base.clone();
            for _ in 0..(rnd() % 40) {
                let i = (rnd() as usize) % data.len();
                data[i] = alphabet[(rnd() as usize) % alphabet.len()];
            }
            let mut r = Reader::new(
                Limits {
                    max_line: 512,
                    max_inline_literal: 64,
                    max_inline_total: 256,
                },
                false,
            );
            let mut f = Vec::new();
            for c in [
                "a1 LOGIN x y",
                "a2 SELECT INBOX",
                "a3 FETCH 1:* (FLAGS BODY[])",
                "a4 UID STORE 1:* +FLAGS (\\Seen)",
            ] {
                r.command(&Command::parse(c.as_bytes()).unwrap(), &mut f);
            }
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = 1 + (rnd() as usize) % 50;
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                r.feed_all(piece, &mut f);
                rest = tail;
                assert!(
                    r.framer.buf.capacity() <= 64 * 1024,
                    "{}",
                    r.framer.buf.capacity()
                );
            }
            r.closed(&mut f);
            let _ = Command::parse(&data[..data.len().min(200)]);
        }
    }
}
