//! The IMAP session: IMAP4rev1 (RFC 3501) with LITERAL+, SASL-IR, UIDPLUS,
//! MOVE, UNSELECT, IDLE, NAMESPACE, ID, ENABLE and CHILDREN, over the same
//! [`Store`] as the POP3 server, with the `imap-*` [`Fault`] switches
//! applied where each rule is enforced.
//!
//! Like the POP3 session, command handling ([`Session::handle`]) is
//! synchronous and writes responses into a buffer, so it can be tested
//! without sockets. The async shell reads whole commands (answering `+` to
//! synchronizing literals, within size limits), flushes one write per
//! command and runs the interactive parts: AUTHENTICATE continuations, IDLE
//! and STARTTLS.
//!
//! A selected mailbox is a per-session view: the messages in the sequence
//! order this client knows, with the flags it was last told. After each
//! command the view is reconciled with the store by UID, which produces the
//! untagged EXISTS / RECENT / FETCH FLAGS / EXPUNGE updates other sessions
//! (IMAP or POP3) caused.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;

use super::faults::{Fault, Faults};
use super::store::{canonical_mailbox, FlagChange, MailboxError, Message, Store, DELIMITER};
use super::ImapGreeting;

/// `write!` into a `Vec<u8>`, which cannot fail.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!($out, $($arg)*);
    }};
}

/// Time allowed for a graceful close (TLS close_notify, FIN).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most octets of command text (literals not counted) kept for one command;
/// a longer line is read to its end, discarded and answered BAD, so a
/// client cannot make the server buffer unboundedly.
const MAX_LINE: usize = 64 * 1024;

/// Most literal octets one command other than APPEND may carry (LOGIN
/// passwords, SEARCH strings, mailbox names).
const MAX_ARG_LITERALS: usize = 64 * 1024;

/// Largest message APPEND takes; larger synchronizing literals are refused
/// before the client sends them.
const MAX_APPEND: usize = 32 * 1024 * 1024;

/// Nesting limit for SEARCH keys and MIME parts: both recurse, and network
/// input must not be able to overflow the stack.
const MAX_DEPTH: usize = 32;

/// Most MIME parts parsed per message; the rest of a pathological message
/// is treated as epilogue.
const MAX_PARTS: usize = 1000;

/// The system flags; `\*` in PERMANENTFLAGS adds keywords.
const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Configuration every session of a server shares.
pub(super) struct Shared {
    pub store: Arc<Store>,
    pub faults: Faults,
    pub tls: TlsAcceptor,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub greeting_delay: Duration,
    pub login_disabled_on_plaintext: bool,
    pub greeting: ImapGreeting,
}

/// One connection from accept to close. Every failure just ends it.
pub(super) async fn serve_connection(tcp: TcpStream, shared: Arc<Shared>, implicit_tls: bool) {
    // Responses are already written whole; Nagle would only add latency.
    tcp.set_nodelay(true).ok();
    let mut session = Session::new(Arc::clone(&shared), implicit_tls);
    if implicit_tls {
        let Some(tls) = handshake(tcp, &shared).await else {
            return;
        };
        let (_, tls) = session.run(tls, true).await;
        close(tls).await;
        return;
    }
    let (next, tcp) = session.run(tcp, true).await;
    match next {
        Next::Close => close(tcp).await,
        Next::StartTls => {
            let Some(tls) = handshake(tcp, &shared).await else {
                return;
            };
            session.tls_active = true;
            let (_, tls) = session.run(tls, false).await;
            close(tls).await;
        }
    }
}

async fn handshake(tcp: TcpStream, shared: &Shared) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match timeout(shared.handshake_timeout, shared.tls.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        _ => None,
    }
}

async fn close<S: AsyncWrite + Unpin>(mut stream: S) {
    timeout(CLOSE_TIMEOUT, stream.shutdown()).await.ok();
}

/// What the session loop asks its caller to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Close,
    StartTls,
}

/// What one command asks the session loop to do once its response is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Continue,
    Close,
    StartTls,
    /// AUTHENTICATE without an initial response: send `+ ` and read one
    /// line for the command with this tag.
    AuthContinue(String),
    /// IDLE with this tag: send `+ idling` and report changes until DONE.
    Idle(String),
}

/// One line read from the client.
enum Read {
    Line,
    TooLong,
    Closed,
}

/// One command read from the client.
enum Input {
    /// The whole command, literals inline, without the final line ending.
    Command(Vec<u8>),
    /// The line was too long and was discarded; what was kept of its start.
    TooLong(Vec<u8>),
    /// A synchronizing literal too large to take: the client waits for
    /// our refusal and will not send it.
    Refused {
        prefix: Vec<u8>,
        append: bool,
    },
    /// A non-synchronizing literal too large to take: its octets are on
    /// their way regardless, so the session has to end.
    Overflow,
    /// The whole command was read, but is answered BAD with this text
    /// (`imap-literal-plus-refused`).
    Rejected {
        prefix: Vec<u8>,
        text: &'static str,
    },
    Closed,
}

/// The byte stream of one session (plain or TLS) plus its output buffer.
struct Io<S> {
    reader: BufReader<S>,
    out: Vec<u8>,
    idle: Duration,
    /// For the literal faults, which live in command reading.
    faults: Faults,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn new(stream: S, idle: Duration, faults: Faults) -> Self {
        Io {
            reader: BufReader::new(stream),
            out: Vec::with_capacity(4096),
            idle,
            faults,
        }
    }

    /// Appends one LF-terminated line to `buf`, keeping at most `max` octets
    /// of it (the rest is read and dropped); the line must arrive within the
    /// idle timeout. EOF, errors and timeouts all mean the client is gone.
    async fn read_line_into(&mut self, buf: &mut Vec<u8>, max: usize) -> Read {
        let reader = &mut self.reader;
        let read = async move {
            let mut kept = 0usize;
            let mut too_long = false;
            loop {
                let available = reader.fill_buf().await?;
                if available.is_empty() {
                    return Ok::<_, std::io::Error>(Read::Closed);
                }
                let (take, done) = match memchr::memchr(b'\n', available) {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                if !too_long {
                    let fit = take.min(max - kept);
                    buf.extend_from_slice(&available[..fit]);
                    kept += fit;
                    too_long = fit < take;
                }
                reader.consume(take);
                if done {
                    return Ok(if too_long { Read::TooLong } else { Read::Line });
                }
            }
        };
        match timeout(self.idle, read).await {
            Ok(Ok(read)) => read,
            _ => Read::Closed,
        }
    }

    /// Appends exactly `n` octets (a literal) to `buf`, within the idle
    /// timeout; false when the client is gone.
    async fn read_exact_into(&mut self, buf: &mut Vec<u8>, n: usize) -> bool {
        let reader = &mut self.reader;
        let read = async move {
            let mut left = n;
            while left > 0 {
                let available = reader.fill_buf().await?;
                if available.is_empty() {
                    return Ok::<_, std::io::Error>(false);
                }
                let take = left.min(available.len());
                buf.extend_from_slice(&available[..take]);
                reader.consume(take);
                left -= take;
            }
            Ok(true)
        };
        matches!(timeout(self.idle, read).await, Ok(Ok(true)))
    }

    /// Sends everything buffered in one write; false when the client is gone.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let out = &self.out;
        let stream = self.reader.get_mut();
        let write = async move {
            stream.write_all(out).await?;
            stream.flush().await
        };
        let sent = matches!(timeout(self.idle, write).await, Ok(Ok(())));
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            self.out.shrink_to(4096);
        }
        sent
    }

    /// Reads one command with its literals (RFC 9051 section 4.3): a line
    /// ending in `{n}` asks for `+` before the n octets are sent, `{n+}`
    /// (LITERAL+) sends them at once. Sizes are checked before anything is
    /// allocated for them.
    async fn read_command(&mut self) -> Input {
        let mut buf = Vec::new();
        let mut literal_octets = 0usize;
        let mut rejected = false;
        loop {
            let start = buf.len();
            let budget = MAX_LINE.saturating_sub(buf.len() - literal_octets);
            match self.read_line_into(&mut buf, budget).await {
                Read::Closed => return Input::Closed,
                Read::TooLong => return Input::TooLong(buf),
                Read::Line => {}
            }
            let Some((n, synchronizing)) = literal_announcement(&buf[start..]) else {
                let end = strip_eol(&buf).len();
                buf.truncate(end);
                if rejected {
                    let text = "non-synchronizing literals are not accepted";
                    return Input::Rejected { prefix: buf, text };
                }
                return Input::Command(buf);
            };
            rejected |= !synchronizing && self.faults.contains(Fault::ImapLiteralPlusRefused);
            let append = is_append(&buf);
            let limit = if append {
                MAX_APPEND + MAX_ARG_LITERALS
            } else {
                MAX_ARG_LITERALS
            };
            let room = limit.saturating_sub(literal_octets);
            let n = match usize::try_from(n) {
                Ok(n) if n <= room => n,
                _ if synchronizing => return Input::Refused { prefix: buf, append },
                _ => return Input::Overflow,
            };
            if synchronizing && !self.faults.contains(Fault::ImapLiteralNoContinuation) {
                self.out.extend_from_slice(b"+ Ready for literal data\r\n");
                if !self.flush().await {
                    return Input::Closed;
                }
            }
            buf.reserve(n);
            if !self.read_exact_into(&mut buf, n).await {
                return Input::Closed;
            }
            literal_octets += n;
        }
    }

    /// Waits until input is available without consuming it: Some(false)
    /// when the client is gone, None when `deadline` passed first.
    async fn readable_before(&mut self, deadline: Instant) -> Option<bool> {
        match timeout_at(deadline, self.reader.fill_buf()).await {
            Ok(Ok(buf)) => Some(!buf.is_empty()),
            Ok(Err(_)) => Some(false),
            Err(_) => None,
        }
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line)
}

/// `{n}` or `{n+}` at the end of a line: the octet count (saturated) and
/// whether the literal is synchronizing.
fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = strip_eol(line);
    let inner = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', inner)?;
    let spec = &inner[open + 1..];
    let (digits, synchronizing) = match spec.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (spec, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .unwrap_or(u64::MAX);
    Some((n, synchronizing))
}

/// Whether the command being read is APPEND, which may carry a message.
fn is_append(buf: &[u8]) -> bool {
    let mut words = buf.splitn(3, |b| *b == b' ');
    words.next();
    words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
}

/// The tag at the start of a command, if it is a valid one.
fn tag_of(buf: &[u8]) -> Option<String> {
    let mut p = Parser::new(buf);
    p.tag()
}

// ---------------------------------------------------------------------------
// Command parsing

/// Why a command failed: BAD for protocol errors (unknown command, syntax,
/// wrong state), NO for operations that were understood but failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fail {
    Bad(String),
    No(String),
}

type PResult<T> = Result<T, Fail>;

fn bad<T>(text: &str) -> PResult<T> {
    Err(Fail::Bad(text.to_string()))
}

fn no<T>(text: &str) -> PResult<T> {
    Err(Fail::No(text.to_string()))
}

fn is_atom_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !b"(){%*\"\\]".contains(&c)
}

fn is_astring_char(c: u8) -> bool {
    is_atom_char(c) || c == b']'
}

fn is_list_char(c: u8) -> bool {
    is_astring_char(c) || c == b'%' || c == b'*'
}

/// A sequence number or UID in a set; `*` is the largest in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqNum {
    Num(u32),
    Star,
}

impl SeqNum {
    fn value(self, star: u32) -> u32 {
        match self {
            SeqNum::Num(n) => n,
            SeqNum::Star => star,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SeqSet(Vec<(SeqNum, SeqNum)>);

impl SeqSet {
    /// The ranges with `*` resolved, each as (low, high), sorted and merged,
    /// so resolving a set costs no more than the messages it names.
    fn ranges(&self, star: u32) -> Vec<(u32, u32)> {
        let mut ranges: Vec<(u32, u32)> = self
            .0
            .iter()
            .map(|(a, b)| {
                let (a, b) = (a.value(star), b.value(star));
                (a.min(b), a.max(b))
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        merged
    }

    fn contains(&self, n: u32, star: u32) -> bool {
        self.0.iter().any(|(a, b)| {
            let (a, b) = (a.value(star), b.value(star));
            a.min(b) <= n && n <= a.max(b)
        })
    }
}

/// A cursor over one command, literals inline as they came off the wire.
#[derive(Clone, Copy)]
struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn new(b: &'a [u8]) -> Self {
        Parser { b, i: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> PResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            bad(what)
        }
    }

    fn sp(&mut self) -> PResult<()> {
        self.expect(b' ', "syntax error: expected a space")
    }

    fn end(&self) -> PResult<()> {
        if self.at_end() {
            Ok(())
        } else {
            bad("syntax error: unexpected characters at the end of the command")
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }

    fn tag(&mut self) -> Option<String> {
        let tag = self.take_while(|c| is_astring_char(c) && c != b'+');
        if tag.is_empty() {
            return None;
        }
        // Tag characters are ASCII by construction.
        Some(String::from_utf8_lossy(tag).into_owned())
    }

    fn atom(&mut self) -> PResult<&'a [u8]> {
        let atom = self.take_while(is_atom_char);
        if atom.is_empty() {
            return bad("syntax error: expected an atom");
        }
        Ok(atom)
    }

    /// An atom, upper-cased (command names, keywords).
    fn keyword(&mut self) -> PResult<String> {
        Ok(String::from_utf8_lossy(self.atom()?).to_ascii_uppercase())
    }

    fn number64(&mut self) -> PResult<u64> {
        let digits = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() {
            return bad("syntax error: expected a number");
        }
        digits
            .iter()
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| Fail::Bad("number too large".into()))
    }

    fn number(&mut self) -> PResult<u32> {
        u32::try_from(self.number64()?).or_else(|_| bad("number too large"))
    }

    fn nz_number(&mut self) -> PResult<u32> {
        match self.number()? {
            0 => bad("syntax error: 0 is not a valid number here"),
            n => Ok(n),
        }
    }

    fn quoted(&mut self) -> PResult<Vec<u8>> {
        self.expect(b'"', "syntax error: expected a quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return bad("syntax error: unterminated quoted string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return bad("syntax error: invalid escape in quoted string"),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn at_literal(&self) -> bool {
        self.peek() == Some(b'{')
    }

    /// `{n}` / `{n+}`, the line ending and n octets, as the reader put them.
    fn literal(&mut self) -> PResult<&'a [u8]> {
        self.expect(b'{', "syntax error: expected a literal")?;
        let n = self.number64()?;
        self.eat(b'+');
        self.expect(b'}', "syntax error: malformed literal")?;
        self.eat(b'\r');
        self.expect(b'\n', "syntax error: a literal announcement must end the line")?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let end = self
            .i
            .checked_add(n)
            .filter(|end| *end <= self.b.len())
            .ok_or_else(|| Fail::Bad("literal shorter than announced".into()))?;
        let data = &self.b[self.i..end];
        self.i = end;
        Ok(data)
    }

    fn string(&mut self) -> PResult<Cow<'a, [u8]>> {
        match self.peek() {
            Some(b'"') => Ok(Cow::Owned(self.quoted()?)),
            Some(b'{') => Ok(Cow::Borrowed(self.literal()?)),
            _ => bad("syntax error: expected a string"),
        }
    }

    fn astring(&mut self) -> PResult<Cow<'a, [u8]>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let atom = self.take_while(is_astring_char);
                if atom.is_empty() {
                    return bad("syntax error: expected a string or atom");
                }
                Ok(Cow::Borrowed(atom))
            }
        }
    }

    /// NIL or a string.
    fn nstring(&mut self) -> PResult<Option<Cow<'a, [u8]>>> {
        if self.peek().is_some_and(|c| c == b'N' || c == b'n') {
            let atom = self.atom()?;
            if atom.eq_ignore_ascii_case(b"NIL") {
                return Ok(None);
            }
            return bad("syntax error: expected NIL or a string");
        }
        self.string().map(Some)
    }

    /// A LIST/LSUB reference or pattern: may contain `%` and `*`.
    fn list_mailbox(&mut self) -> PResult<Cow<'a, [u8]>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let atom = self.take_while(is_list_char);
                if atom.is_empty() {
                    return bad("syntax error: expected a mailbox pattern");
                }
                Ok(Cow::Borrowed(atom))
            }
        }
    }

    /// A mailbox name (RFC 9051 `mailbox`); INBOX in any case is INBOX.
    fn mailbox(&mut self) -> PResult<String> {
        let raw = self.astring()?;
        match std::str::from_utf8(&raw) {
            Ok(name) => Ok(canonical_mailbox(name)),
            Err(_) => no("[CANNOT] mailbox names must be UTF-8"),
        }
    }

    fn seq_number(&mut self) -> PResult<SeqNum> {
        if self.eat(b'*') {
            Ok(SeqNum::Star)
        } else if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            Ok(SeqNum::Num(self.nz_number()?))
        } else {
            bad("syntax error: expected a sequence set")
        }
    }

    fn seq_set(&mut self) -> PResult<SeqSet> {
        let mut ranges = Vec::new();
        loop {
            let a = self.seq_number()?;
            let b = if self.eat(b':') { self.seq_number()? } else { a };
            ranges.push((a, b));
            if !self.eat(b',') {
                return Ok(SeqSet(ranges));
            }
        }
    }

    /// One flag: `\Seen` and the other system flags in canonical spelling,
    /// or a keyword.
    fn flag(&mut self) -> PResult<String> {
        let system = self.eat(b'\\');
        let name = String::from_utf8_lossy(self.atom()?).into_owned();
        if !system {
            return Ok(name);
        }
        if name.eq_ignore_ascii_case("Recent") {
            return bad("\\Recent cannot be set by a client");
        }
        SYSTEM_FLAGS
            .iter()
            .find(|f| f[1..].eq_ignore_ascii_case(&name))
            .map(|f| f.to_string())
            .ok_or_else(|| Fail::Bad(format!("unknown system flag \\{name}")))
    }

    /// `(flag *(SP flag))`, possibly empty.
    fn flag_list(&mut self) -> PResult<Vec<String>> {
        self.expect(b'(', "syntax error: expected a flag list")?;
        let mut flags = Vec::new();
        if self.eat(b')') {
            return Ok(flags);
        }
        loop {
            flags.push(self.flag()?);
            if self.eat(b')') {
                return Ok(flags);
            }
            self.sp()?;
        }
    }
}

// ---------------------------------------------------------------------------
// Output helpers

/// Whether `s` can be sent as a quoted string: 7-bit, no CR/LF/NUL.
fn quotable(s: &[u8]) -> bool {
    s.len() <= 1024
        && s.iter()
            .all(|c| *c != 0 && *c != b'\r' && *c != b'\n' && *c < 0x80)
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    if quotable(s) {
        out.push(b'"');
        for c in s {
            if *c == b'"' || *c == b'\\' {
                out.push(b'\\');
            }
            out.push(*c);
        }
        out.push(b'"');
    } else {
        put_literal(out, s, 0);
    }
}

/// A literal announcing `s.len() + extra` octets: `extra` is only ever
/// non-zero under `imap-literal-miscount`.
fn put_literal(out: &mut Vec<u8>, s: &[u8], extra: usize) {
    put!(out, "{{{}}}\r\n", s.len() + extra);
    out.extend_from_slice(s);
}

fn put_nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// An atom when possible (and not NIL), else a string.
fn put_astring(out: &mut Vec<u8>, s: &[u8]) {
    if !s.is_empty() && s.iter().all(|c| is_astring_char(*c)) && !s.eq_ignore_ascii_case(b"NIL") {
        out.extend_from_slice(s);
    } else {
        put_string(out, s);
    }
}

fn put_flags<'f>(out: &mut Vec<u8>, flags: impl IntoIterator<Item = &'f str>) {
    out.push(b'(');
    for (i, f) in flags.into_iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(f.as_bytes());
    }
    out.push(b')');
}

/// A UID set in compact form: `1:3,7`.
fn compact_set(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && Some(uids[i + 1]) == end.checked_add(1) {
            i += 1;
            end = uids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The tag `imap-wrong-tag` completes a command with: the numeric suffix
/// incremented (A001 becomes A002), or "x" appended.
fn other_tag(tag: &str) -> String {
    let head = tag.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &tag[head.len()..];
    match digits.parse::<u64>() {
        Ok(n) if n < u64::MAX => format!("{head}{:0width$}", n + 1, width = digits.len()),
        _ => format!("{tag}x"),
    }
}

// ---------------------------------------------------------------------------
// Dates

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn month_number(name: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.as_bytes().eq_ignore_ascii_case(name))
        .map(|i| i as u32 + 1)
}

fn small_number(digits: &[u8], max_len: usize) -> Option<u32> {
    if digits.is_empty() || digits.len() > max_len || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A calendar date as a day number, if it exists.
fn day_number(y: i64, m: u32, d: u32) -> Option<i64> {
    let day = days_from_civil(y, m, d);
    (d >= 1 && civil_from_days(day) == (y, m, d)).then_some(day)
}

/// `d-Mon-yyyy` (SEARCH dates), as a day number.
fn parse_date(s: &[u8]) -> Option<i64> {
    let mut parts = s.split(|c| *c == b'-');
    let d = small_number(parts.next()?, 2)?;
    let m = month_number(parts.next()?)?;
    let y = small_number(parts.next()?, 4)?;
    if parts.next().is_some() {
        return None;
    }
    day_number(i64::from(y), m, d)
}

/// `dd-Mon-yyyy hh:mm:ss +zzzz` (APPEND, INTERNALDATE): seconds since the
/// epoch and the zone in minutes.
fn parse_date_time(s: &[u8]) -> Option<(i64, i32)> {
    let s = s.strip_prefix(b" ").unwrap_or(s);
    let mut words = s.split(|c| *c == b' ');
    let day = parse_date(words.next()?)?;
    let mut hms = words.next()?.split(|c| *c == b':');
    let h = small_number(hms.next()?, 2).filter(|h| *h < 24)?;
    let mi = small_number(hms.next()?, 2).filter(|m| *m < 60)?;
    let sec = small_number(hms.next()?, 2).filter(|s| *s < 61)?;
    let zone = words.next()?;
    if hms.next().is_some() || words.next().is_some() || zone.len() != 5 {
        return None;
    }
    let sign = match zone[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh = small_number(&zone[1..3], 2)?;
    let zm = small_number(&zone[3..5], 2).filter(|m| *m < 60)?;
    let zone_minutes = sign * (zh * 60 + zm) as i32;
    let local = day * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    Some((local - i64::from(zone_minutes) * 60, zone_minutes))
}

fn format_date_time(secs: i64, zone_minutes: i32) -> String {
    let local = secs + i64::from(zone_minutes) * 60;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let t = local.rem_euclid(86_400);
    let sign = if zone_minutes < 0 { '-' } else { '+' };
    let z = zone_minutes.unsigned_abs();
    format!(
        "{d:>2}-{}-{y:04} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        MONTHS[(m as usize).saturating_sub(1) % 12],
        t / 3600,
        t / 60 % 60,
        t % 60,
        z / 60,
        z % 60
    )
}

/// The date of an RFC 5322 Date header (time and zone disregarded, as
/// SENTBEFORE/SENTON/SENTSINCE want), as a day number.
fn rfc5322_day(value: &[u8]) -> Option<i64> {
    let value = match memchr::memchr(b',', value) {
        Some(i) => &value[i + 1..],
        None => value,
    };
    let mut words = value.split(|c| c.is_ascii_whitespace()).filter(|w| !w.is_empty());
    let d = small_number(words.next()?, 2)?;
    let m = month_number(words.next()?)?;
    let y = words.next()?;
    let y = match (y.len(), small_number(y, 4)?) {
        (2, y) if y < 50 => 2000 + y,
        (2 | 3, y) => 1900 + y,
        (_, y) => y,
    };
    day_number(i64::from(y), m, d)
}

/// The day of the message's INTERNALDATE in its own zone.
fn internal_day(m: &Message) -> i64 {
    (m.internal_date + i64::from(m.internal_zone) * 60).div_euclid(86_400)
}

// ---------------------------------------------------------------------------
// Messages: header fields, MIME structure, ENVELOPE and BODYSTRUCTURE

/// Splits a message (or MIME part) into its header, including the blank
/// line that ends it, and its body. Without a blank line it is all header.
fn split_header(data: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        pos += line.len();
        if line == b"\r\n" || line == b"\n" {
            return data.split_at(pos);
        }
    }
    (data, &[])
}

/// One header field: its name, its raw value (folding kept) and all of
/// its lines as sent.
struct Field<'a> {
    name: &'a [u8],
    value: &'a [u8],
    raw: &'a [u8],
}

fn fields(header: &[u8]) -> Vec<Field<'_>> {
    // (start, colon, end) of each field; continuation lines extend `end`.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut pos = 0;
    for line in header.split_inclusive(|b| *b == b'\n') {
        let start = pos;
        pos += line.len();
        if strip_eol(line).is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = spans.last_mut() {
                last.2 = pos;
            }
            continue;
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            spans.push((start, start + colon, pos));
        }
    }
    spans
        .into_iter()
        .map(|(start, colon, end)| Field {
            name: header[start..colon].trim_ascii(),
            value: &header[colon + 1..end],
            raw: &header[start..end],
        })
        .collect()
}

/// A field value unfolded (line breaks removed) and trimmed.
fn unfold(value: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = value
        .iter()
        .copied()
        .filter(|c| *c != b'\r' && *c != b'\n')
        .collect();
    v.trim_ascii().to_vec()
}

/// The first field with this name, unfolded.
fn header_value(header: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(header)
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| unfold(f.value))
}

/// HEADER.FIELDS / HEADER.FIELDS.NOT: the matching fields as sent, then
/// the blank line (RFC 3501 section 6.4.5).
fn header_subset(header: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields(header) {
        if names.iter().any(|n| n.eq_ignore_ascii_case(f.name)) != not {
            out.extend_from_slice(f.raw);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Splits a header value at `;` outside quotes and comments.
fn split_params(value: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut depth, mut escaped) = (0, false, 0usize, false);
    for (i, c) in value.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            b'\\' if quoted || depth > 0 => escaped = true,
            b'"' if depth == 0 => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth = depth.saturating_sub(1),
            b';' if !quoted && depth == 0 => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// Removes comments and surrounding space from a structured token.
fn strip_comments(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    for c in s {
        match c {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(*c),
            _ => {}
        }
    }
    out.trim_ascii().to_vec()
}

/// A parameter value: a token or a quoted string (unquoted).
fn param_value(v: &[u8]) -> Vec<u8> {
    let v = v.trim_ascii();
    match v.strip_prefix(b"\"") {
        Some(rest) => {
            let mut out = Vec::new();
            let mut escaped = false;
            for c in rest {
                match (escaped, c) {
                    (false, b'\\') => escaped = true,
                    (false, b'"') => break,
                    _ => {
                        out.push(*c);
                        escaped = false;
                    }
                }
            }
            out
        }
        None => strip_comments(v),
    }
}

/// MIME parameters: upper-cased attributes and their values.
type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// A value with parameters (Content-Type, Content-Disposition): the first
/// part and the parameters.
fn parse_params(value: &[u8]) -> (Vec<u8>, Params) {
    let mut parts = split_params(value).into_iter();
    let first = strip_comments(parts.next().unwrap_or_default());
    let params = parts
        .filter_map(|p| {
            let eq = memchr::memchr(b'=', p)?;
            let attr = strip_comments(&p[..eq]).to_ascii_uppercase();
            (!attr.is_empty()).then(|| (attr, param_value(&p[eq + 1..])))
        })
        .collect();
    (first, params)
}

/// A MIME entity: a message or one body part.
struct Entity<'a> {
    header: &'a [u8],
    body: &'a [u8],
    /// Upper-case media type and subtype.
    media: (String, String),
    params: Params,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Single,
    Multipart(Vec<Entity<'a>>),
    /// message/rfc822: the encapsulated message.
    Message(Box<Entity<'a>>),
}

impl Entity<'_> {
    fn field(&self, name: &str) -> Option<Vec<u8>> {
        header_value(self.header, name)
    }
}

/// Parses a message or body part; `digest` says the default type is
/// message/rfc822 (parts of multipart/digest). `budget` caps the parts of
/// the whole tree and `depth` the nesting.
fn parse_entity<'a>(data: &'a [u8], digest: bool, depth: usize, budget: &mut usize) -> Entity<'a> {
    let (header, body) = split_header(data);
    let parsed = header_value(header, "Content-Type").and_then(|v| {
        let (media, params) = parse_params(&v);
        let slash = memchr::memchr(b'/', &media)?;
        let kind = String::from_utf8_lossy(media[..slash].trim_ascii()).to_ascii_uppercase();
        let sub = String::from_utf8_lossy(media[slash + 1..].trim_ascii()).to_ascii_uppercase();
        (!kind.is_empty() && !sub.is_empty()).then_some(((kind, sub), params))
    });
    let (media, params) = parsed.unwrap_or_else(|| {
        if digest {
            (("MESSAGE".into(), "RFC822".into()), Vec::new())
        } else {
            (
                ("TEXT".into(), "PLAIN".into()),
                vec![(b"CHARSET".to_vec(), b"us-ascii".to_vec())],
            )
        }
    });
    let mut kind = Kind::Single;
    if depth < MAX_DEPTH && *budget > 0 {
        if media.0 == "MULTIPART" {
            let boundary = params.iter().find(|(a, _)| a == b"BOUNDARY").map(|(_, v)| v);
            if let Some(boundary) = boundary.filter(|b| !b.is_empty()) {
                let parts = split_multipart(body, boundary);
                if !parts.is_empty() {
                    let digest = media.1 == "DIGEST";
                    let mut children = Vec::new();
                    for part in parts {
                        if *budget == 0 {
                            break;
                        }
                        *budget -= 1;
                        children.push(parse_entity(part, digest, depth + 1, budget));
                    }
                    kind = Kind::Multipart(children);
                }
            }
        } else if media.0 == "MESSAGE" && media.1 == "RFC822" {
            *budget -= 1;
            kind = Kind::Message(Box::new(parse_entity(body, false, depth + 1, budget)));
        }
    }
    Entity {
        header,
        body,
        media,
        params,
        kind,
    }
}

fn parse_message(data: &[u8]) -> Entity<'_> {
    let mut budget = MAX_PARTS;
    parse_entity(data, false, 0, &mut budget)
}

/// The body parts of a multipart body: what lies between delimiter lines,
/// without the line break before each delimiter (RFC 2046 section 5.1.1).
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut part_start: Option<usize> = None;
    let mut pos = 0;
    for line in body.split_inclusive(|b| *b == b'\n') {
        let line_start = pos;
        pos += line.len();
        let Some(rest) = strip_eol(line)
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        else {
            continue;
        };
        let closing = rest.starts_with(b"--");
        let rest = if closing { &rest[2..] } else { rest };
        if !rest.iter().all(|c| *c == b' ' || *c == b'\t') {
            continue;
        }
        if let Some(start) = part_start {
            let before = &body[..line_start];
            let end = before
                .strip_suffix(b"\r\n")
                .or_else(|| before.strip_suffix(b"\n"))
                .map_or(line_start, <[u8]>::len);
            parts.push(&body[start..end.max(start)]);
        }
        if closing || parts.len() >= MAX_PARTS {
            return parts;
        }
        part_start = Some(pos);
    }
    if let Some(start) = part_start {
        parts.push(&body[start.min(body.len())..]);
    }
    parts
}

/// The part a section number path names (RFC 3501 section 6.4.5): parts of
/// a message/rfc822 part are numbered within the encapsulated message, and
/// a non-multipart message has only part 1, itself.
fn resolve_part<'e, 'a>(root: &'e Entity<'a>, path: &[u32]) -> Option<&'e Entity<'a>> {
    fn child<'e, 'a>(e: &'e Entity<'a>, n: u32, top: bool) -> Option<&'e Entity<'a>> {
        match &e.kind {
            Kind::Multipart(children) => children.get(usize::try_from(n).ok()?.checked_sub(1)?),
            Kind::Message(inner) if !top => child(inner, n, true),
            _ if top && n == 1 => Some(e),
            _ => None,
        }
    }
    let mut cur = root;
    for (i, n) in path.iter().enumerate() {
        cur = child(cur, *n, i == 0)?;
    }
    Some(cur)
}

fn count_lines(body: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', body).count()
}

/// One address of an address list, or a group's start or end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Addr {
    Mailbox {
        name: Option<Vec<u8>>,
        adl: Option<Vec<u8>>,
        mailbox: Vec<u8>,
        host: Vec<u8>,
    },
    GroupStart(Vec<u8>),
    GroupEnd,
}

enum Tok {
    Word(Vec<u8>),
    Comment(Vec<u8>),
    Angle(Vec<u8>),
    Comma,
    Colon,
    Semi,
}

fn address_tokens(v: &[u8]) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            c if c.is_ascii_whitespace() => i += 1,
            b'"' => {
                let mut word = Vec::new();
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    if v[i] == b'\\' && i + 1 < v.len() {
                        i += 1;
                    }
                    word.push(v[i]);
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Word(word));
            }
            b'(' => {
                let mut depth = 0usize;
                let mut text = Vec::new();
                while i < v.len() {
                    match v[i] {
                        b'\\' if i + 1 < v.len() => {
                            i += 1;
                            text.push(v[i]);
                        }
                        b'(' => {
                            if depth > 0 {
                                text.push(b'(');
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                            text.push(b')');
                        }
                        c => text.push(c),
                    }
                    i += 1;
                }
                toks.push(Tok::Comment(text.trim_ascii().to_vec()));
            }
            b'<' => {
                let end = memchr::memchr(b'>', &v[i..]).map_or(v.len(), |e| i + e);
                toks.push(Tok::Angle(v[i + 1..end].trim_ascii().to_vec()));
                i = end + 1;
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            b':' => {
                toks.push(Tok::Colon);
                i += 1;
            }
            b';' => {
                toks.push(Tok::Semi);
                i += 1;
            }
            _ => {
                let start = i;
                while i < v.len() && !v[i].is_ascii_whitespace() && !b"\"(<,:;".contains(&v[i]) {
                    i += 1;
                }
                toks.push(Tok::Word(v[start..i].to_vec()));
            }
        }
    }
    toks
}

fn addr_spec(spec: &[u8], name: Option<Vec<u8>>) -> Addr {
    let (adl, rest) = match (spec.first(), memchr::memchr(b':', spec)) {
        (Some(b'@'), Some(colon)) => (Some(spec[..colon].to_vec()), &spec[colon + 1..]),
        _ => (None, spec),
    };
    let (mailbox, host) = match memchr::memrchr(b'@', rest) {
        Some(at) => (rest[..at].to_vec(), rest[at + 1..].to_vec()),
        None => (rest.to_vec(), Vec::new()),
    };
    Addr::Mailbox {
        name: name.filter(|n| !n.is_empty()),
        adl,
        mailbox,
        host,
    }
}

/// Collected tokens of the address being parsed.
#[derive(Default)]
struct Pending {
    phrase: Vec<Vec<u8>>,
    angle: Option<Vec<u8>>,
    comment: Option<Vec<u8>>,
}

impl Pending {
    fn flush(&mut self, out: &mut Vec<Addr>) {
        if let Some(spec) = self.angle.take() {
            out.push(addr_spec(&spec, Some(self.phrase.join(&b' '))));
        } else if !self.phrase.is_empty() {
            out.push(addr_spec(&self.phrase.concat(), self.comment.take()));
        }
        self.phrase.clear();
        self.comment = None;
    }
}

/// An RFC 5322 address list, leniently: display names, angle addresses,
/// comments and groups.
fn parse_addresses(value: &[u8]) -> Vec<Addr> {
    let mut out = Vec::new();
    let mut pending = Pending::default();
    let mut in_group = false;
    for tok in address_tokens(value) {
        match tok {
            Tok::Word(w) => pending.phrase.push(w),
            Tok::Comment(c) => {
                pending.comment.get_or_insert(c);
            }
            Tok::Angle(a) => pending.angle = Some(a),
            Tok::Comma => pending.flush(&mut out),
            Tok::Colon if !in_group && pending.angle.is_none() => {
                out.push(Addr::GroupStart(pending.phrase.join(&b' ')));
                pending = Pending::default();
                in_group = true;
            }
            Tok::Colon => pending.phrase.push(b":".to_vec()),
            Tok::Semi => {
                pending.flush(&mut out);
                if in_group {
                    out.push(Addr::GroupEnd);
                    in_group = false;
                }
            }
        }
    }
    pending.flush(&mut out);
    if in_group {
        out.push(Addr::GroupEnd);
    }
    out
}

fn put_addresses(out: &mut Vec<u8>, addrs: &[Addr]) {
    if addrs.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in addrs {
        match a {
            Addr::Mailbox {
                name,
                adl,
                mailbox,
                host,
            } => {
                out.push(b'(');
                put_nstring(out, name.as_deref());
                out.push(b' ');
                put_nstring(out, adl.as_deref());
                out.push(b' ');
                put_string(out, mailbox);
                out.push(b' ');
                put_string(out, host);
                out.push(b')');
            }
            Addr::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                put_string(out, name);
                out.extend_from_slice(b" NIL)");
            }
            Addr::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

/// ENVELOPE (RFC 3501 section 7.4.2): Sender and Reply-To default to From.
fn put_envelope(out: &mut Vec<u8>, header: &[u8]) {
    put_envelope_fields(out, header, true);
}

/// The envelope, with the Message-ID field only when `message_id` (its
/// absence is the `imap-envelope-short` fault).
fn put_envelope_fields(out: &mut Vec<u8>, header: &[u8], message_id: bool) {
    let get = |name: &str| header_value(header, name);
    let addrs = |name: &str| get(name).map(|v| parse_addresses(&v)).unwrap_or_default();
    let from = addrs("From");
    let or_from = |list: Vec<Addr>| if list.is_empty() { from.clone() } else { list };
    out.push(b'(');
    put_nstring(out, get("Date").as_deref());
    out.push(b' ');
    put_nstring(out, get("Subject").as_deref());
    out.push(b' ');
    put_addresses(out, &from);
    out.push(b' ');
    put_addresses(out, &or_from(addrs("Sender")));
    out.push(b' ');
    put_addresses(out, &or_from(addrs("Reply-To")));
    for name in ["To", "Cc", "Bcc"] {
        out.push(b' ');
        put_addresses(out, &addrs(name));
    }
    out.push(b' ');
    put_nstring(out, get("In-Reply-To").as_deref());
    if message_id {
        out.push(b' ');
        put_nstring(out, get("Message-ID").as_deref());
    }
    out.push(b')');
}

fn put_params(out: &mut Vec<u8>, params: &Params) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (attr, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        put_string(out, attr);
        out.push(b' ');
        put_string(out, value);
    }
    out.push(b')');
}

/// The extension data every BODYSTRUCTURE part ends with: disposition,
/// language and location.
fn put_dsp_lang_loc(out: &mut Vec<u8>, e: &Entity<'_>) {
    match e.field("Content-Disposition") {
        Some(v) => {
            let (kind, params) = parse_params(&v);
            out.push(b'(');
            put_string(out, &kind.to_ascii_uppercase());
            out.push(b' ');
            put_params(out, &params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let langs: Vec<Vec<u8>> = e
        .field("Content-Language")
        .map(|v| {
            strip_comments(&v)
                .split(|c| *c == b',')
                .map(|l| l.trim_ascii().to_vec())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    match langs.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        [one] => put_string(out, one),
        many => {
            out.push(b'(');
            for (i, l) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                put_string(out, l);
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    put_nstring(out, e.field("Content-Location").as_deref());
}

/// BODY (`extended` false) or BODYSTRUCTURE (RFC 3501 section 7.4.2).
/// `lines: false` leaves out text parts' line counts (the
/// `imap-bodystructure-no-lines` fault).
fn put_structure(out: &mut Vec<u8>, e: &Entity<'_>, extended: bool, lines: bool) {
    out.push(b'(');
    if let Kind::Multipart(parts) = &e.kind {
        for part in parts {
            put_structure(out, part, extended, lines);
        }
        out.push(b' ');
        put_string(out, e.media.1.as_bytes());
        if extended {
            out.push(b' ');
            put_params(out, &e.params);
            out.push(b' ');
            put_dsp_lang_loc(out, e);
        }
        out.push(b')');
        return;
    }
    // A message/rfc822 part past the nesting limit has no parsed envelope:
    // describe it as opaque data rather than break the grammar.
    let (kind, sub): (&str, &str) = match (&e.kind, e.media.0.as_str(), e.media.1.as_str()) {
        (Kind::Single, "MESSAGE", "RFC822") => ("APPLICATION", "OCTET-STREAM"),
        (_, k, s) => (k, s),
    };
    put_string(out, kind.as_bytes());
    out.push(b' ');
    put_string(out, sub.as_bytes());
    out.push(b' ');
    put_params(out, &e.params);
    out.push(b' ');
    put_nstring(out, e.field("Content-ID").as_deref());
    out.push(b' ');
    put_nstring(out, e.field("Content-Description").as_deref());
    out.push(b' ');
    let encoding = e
        .field("Content-Transfer-Encoding")
        .map(|v| strip_comments(&v).to_ascii_uppercase())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| b"7BIT".to_vec());
    put_string(out, &encoding);
    put!(out, " {}", e.body.len());
    match &e.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            put_envelope(out, inner.header);
            out.push(b' ');
            put_structure(out, inner, extended, lines);
            put!(out, " {}", count_lines(e.body));
        }
        _ if kind == "TEXT" && lines => put!(out, " {}", count_lines(e.body)),
        _ => {}
    }
    if extended {
        out.push(b' ');
        put_nstring(out, e.field("Content-MD5").as_deref());
        out.push(b' ');
        put_dsp_lang_loc(out, e);
    }
    out.push(b')');
}

// ---------------------------------------------------------------------------
// The selected mailbox

/// What reconciling a view does with messages other sessions expunged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expunges {
    /// Keep them: during FETCH, STORE, SEARCH (and COPY) sequence numbers
    /// must not shift under the client (RFC 3501 section 7.4.1).
    Hold,
    Announce,
    /// Drop them without a word (`imap-expunge-silent`).
    Silent,
}

/// A session's view of its selected mailbox.
struct Selected {
    name: String,
    uid_validity: u32,
    read_only: bool,
    /// The messages in the sequence order the client knows, with the flags
    /// it was last told.
    msgs: Vec<Message>,
    /// UIDs this session reports as `\Recent`.
    recent: Vec<u32>,
    /// Everything above this UID is new to the view.
    highest_uid: u32,
    /// Keywords last announced in FLAGS.
    keywords: Vec<String>,
}

impl Selected {
    fn flags_of(&self, idx: usize) -> Vec<&str> {
        let Some(m) = self.msgs.get(idx) else {
            return Vec::new();
        };
        let mut flags: Vec<&str> = m.flags.iter().map(String::as_str).collect();
        if self.is_recent(m.imap_uid) {
            flags.push("\\Recent");
        }
        flags
    }

    /// `recent` is sorted: UIDs are only ever added in ascending order.
    fn is_recent(&self, uid: u32) -> bool {
        self.recent.binary_search(&uid).is_ok()
    }

    fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.imap_uid).ok()
    }

    fn count(&self) -> u32 {
        u32::try_from(self.msgs.len()).unwrap_or(u32::MAX)
    }

    fn recent_count(&self) -> usize {
        self.msgs.iter().filter(|m| self.is_recent(m.imap_uid)).count()
    }

    /// Indices for a sequence set. A number beyond the last message is a
    /// client error (BAD); a range ending in `*` is clamped, so `1:*` in an
    /// empty mailbox names nothing.
    fn by_seq(&self, set: &SeqSet) -> PResult<Vec<usize>> {
        let n = self.count();
        for (a, b) in &set.0 {
            if let (SeqNum::Num(a), SeqNum::Num(b)) = (a, b) {
                if (*a).max(*b) > n {
                    return bad("invalid message sequence number");
                }
            }
        }
        let mut out = Vec::new();
        for (lo, hi) in set.ranges(n) {
            out.extend((lo.max(1)..=hi.min(n)).map(|s| s as usize - 1));
        }
        Ok(out)
    }

    /// Indices for a UID set; UIDs not in the view are ignored (RFC 9051
    /// section 6.4.9), and `n:*` always includes the last message.
    fn by_uid(&self, set: &SeqSet) -> Vec<usize> {
        let star = self.msgs.last().map_or(0, |m| m.imap_uid);
        let mut out = Vec::new();
        for (lo, hi) in set.ranges(star) {
            let start = self.msgs.partition_point(|m| m.imap_uid < lo);
            out.extend((start..self.msgs.len()).take_while(|i| self.msgs[*i].imap_uid <= hi));
        }
        out
    }

    /// Announces FLAGS again when messages carry keywords the client has not
    /// been told about (RFC 9051 section 7.3.5).
    fn announce_keywords(&mut self, out: &mut Vec<u8>) {
        let mut grew = false;
        for k in keywords_of(&self.msgs) {
            if !self.keywords.iter().any(|o| o.eq_ignore_ascii_case(&k)) {
                self.keywords.push(k);
                grew = true;
            }
        }
        if grew {
            put_flags_response(out, &self.keywords);
        }
    }
}

fn keywords_of(msgs: &[Message]) -> Vec<String> {
    let mut keywords: Vec<String> = Vec::new();
    for f in msgs.iter().flat_map(|m| &m.flags) {
        if !f.starts_with('\\') && !keywords.iter().any(|k| k.eq_ignore_ascii_case(f)) {
            keywords.push(f.clone());
        }
    }
    keywords
}

fn put_flags_response(out: &mut Vec<u8>, keywords: &[String]) {
    out.extend_from_slice(b"* FLAGS ");
    put_flags(
        out,
        SYSTEM_FLAGS
            .iter()
            .copied()
            .chain(keywords.iter().map(String::as_str)),
    );
    out.extend_from_slice(b"\r\n");
}

/// Reconciles a view with the store and writes the untagged updates:
/// EXPUNGE (highest number first, so each number is valid when sent),
/// FLAGS for new keywords, FETCH FLAGS for changed flags, EXISTS and
/// RECENT for new mail. False when the mailbox is gone (deleted, renamed,
/// or recreated with another UIDVALIDITY).
fn sync_view(store: &Store, user: &str, sel: &mut Selected, out: &mut Vec<u8>, expunges: Expunges) -> bool {
    let Ok((mailbox, recent)) = store.open_mailbox(user, &sel.name, !sel.read_only) else {
        return false;
    };
    if mailbox.uid_validity != sel.uid_validity {
        return false;
    }
    let find = |uid: u32| {
        mailbox
            .messages
            .binary_search_by_key(&uid, |m| m.imap_uid)
            .ok()
            .map(|i| &mailbox.messages[i])
    };
    if expunges != Expunges::Hold {
        if expunges == Expunges::Announce {
            for i in (0..sel.msgs.len()).rev() {
                if find(sel.msgs[i].imap_uid).is_none() {
                    put!(out, "* {} EXPUNGE\r\n", i + 1);
                }
            }
        }
        sel.msgs.retain(|m| find(m.imap_uid).is_some());
    }
    let mut changed = Vec::new();
    for (i, m) in sel.msgs.iter_mut().enumerate() {
        if let Some(now) = find(m.imap_uid) {
            if now.flags != m.flags {
                m.flags = now.flags.clone();
                changed.push(i);
            }
        }
    }
    let fresh: Vec<Message> = mailbox
        .messages
        .iter()
        .filter(|m| m.imap_uid > sel.highest_uid)
        .cloned()
        .collect();
    for m in &fresh {
        if recent.binary_search(&m.imap_uid).is_ok() {
            sel.recent.push(m.imap_uid);
        }
        sel.highest_uid = sel.highest_uid.max(m.imap_uid);
    }
    let arrived = !fresh.is_empty();
    sel.msgs.extend(fresh);
    sel.announce_keywords(out);
    for i in changed {
        put!(out, "* {} FETCH (FLAGS ", i + 1);
        put_flags(out, sel.flags_of(i));
        out.extend_from_slice(b")\r\n");
    }
    if arrived {
        put!(out, "* {} EXISTS\r\n", sel.msgs.len());
        put!(out, "* {} RECENT\r\n", sel.recent_count());
    }
    true
}

// ---------------------------------------------------------------------------
// FETCH items

#[derive(Debug, Clone, PartialEq, Eq)]
enum SectionText {
    Header,
    Fields { not: bool, names: Vec<Vec<u8>> },
    Text,
    Mime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    parts: Vec<u32>,
    text: Option<SectionText>,
}

impl Section {
    /// The section as echoed in the response: `1.HEADER.FIELDS (FROM)`.
    fn label(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            put!(out, "{p}");
        }
        if let Some(text) = &self.text {
            if !self.parts.is_empty() {
                out.push(b'.');
            }
            match text {
                SectionText::Header => out.extend_from_slice(b"HEADER"),
                SectionText::Text => out.extend_from_slice(b"TEXT"),
                SectionText::Mime => out.extend_from_slice(b"MIME"),
                SectionText::Fields { not, names } => {
                    out.extend_from_slice(if *not {
                        b"HEADER.FIELDS.NOT ("
                    } else {
                        b"HEADER.FIELDS ("
                    });
                    for (i, n) in names.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        put_astring(&mut out, n);
                    }
                    out.push(b')');
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Flags,
    Uid,
    InternalDate,
    Size,
    Envelope,
    Body,
    BodyStructure,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Section {
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
}

impl Item {
    /// Fetching it sets `\Seen` (RFC 3501 section 6.4.5).
    fn reads_body(&self) -> bool {
        matches!(
            self,
            Item::Rfc822 | Item::Rfc822Text | Item::Section { peek: false, .. }
        )
    }

    /// Reads message content without setting `\Seen`.
    fn peeks_body(&self) -> bool {
        matches!(self, Item::Rfc822Header | Item::Section { peek: true, .. })
    }

    fn needs_mime(&self) -> bool {
        match self {
            Item::Body | Item::BodyStructure => true,
            Item::Section { section, .. } => !section.parts.is_empty(),
            _ => false,
        }
    }
}

fn parse_section_text(p: &mut Parser<'_>, has_parts: bool) -> PResult<SectionText> {
    let word = p.take_while(|c| c.is_ascii_alphanumeric() || c == b'.');
    let word = String::from_utf8_lossy(word).to_ascii_uppercase();
    let not = match word.as_str() {
        "HEADER" => return Ok(SectionText::Header),
        "TEXT" => return Ok(SectionText::Text),
        "MIME" if has_parts => return Ok(SectionText::Mime),
        "HEADER.FIELDS" => false,
        "HEADER.FIELDS.NOT" => true,
        _ => return bad("syntax error: invalid section"),
    };
    p.sp()?;
    p.expect(b'(', "syntax error: expected a header field list")?;
    let mut names = Vec::new();
    loop {
        names.push(p.astring()?.into_owned());
        if p.eat(b')') {
            return Ok(SectionText::Fields { not, names });
        }
        p.sp()?;
    }
}

fn parse_fetch_att(p: &mut Parser<'_>) -> PResult<Item> {
    let name = p.take_while(|c| c.is_ascii_alphanumeric() || c == b'.');
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let item = match name.as_str() {
        "FLAGS" => Item::Flags,
        "UID" => Item::Uid,
        "INTERNALDATE" => Item::InternalDate,
        "RFC822.SIZE" => Item::Size,
        "ENVELOPE" => Item::Envelope,
        "BODYSTRUCTURE" => Item::BodyStructure,
        "RFC822" => Item::Rfc822,
        "RFC822.HEADER" => Item::Rfc822Header,
        "RFC822.TEXT" => Item::Rfc822Text,
        "BODY" if p.peek() != Some(b'[') => Item::Body,
        "BODY" | "BODY.PEEK" => {
            p.expect(b'[', "syntax error: expected a section")?;
            let mut parts = Vec::new();
            let mut text = None;
            if p.peek() != Some(b']') {
                loop {
                    if p.peek().is_some_and(|c| c.is_ascii_digit()) {
                        parts.push(p.nz_number()?);
                        if p.eat(b'.') {
                            continue;
                        }
                    } else {
                        text = Some(parse_section_text(p, !parts.is_empty())?);
                    }
                    break;
                }
            }
            p.expect(b']', "syntax error: expected ] after the section")?;
            let partial = if p.eat(b'<') {
                let origin = p.number()?;
                p.expect(b'.', "syntax error: partial needs <origin.count>")?;
                let count = p.nz_number()?;
                p.expect(b'>', "syntax error: expected > after the partial range")?;
                Some((origin, count))
            } else {
                None
            };
            Item::Section {
                peek: name == "BODY.PEEK",
                section: Section { parts, text },
                partial,
            }
        }
        _ => return bad("syntax error: unknown FETCH item"),
    };
    Ok(item)
}

/// A FETCH argument: a macro, one item, or a parenthesised list.
fn parse_fetch_items(p: &mut Parser<'_>) -> PResult<Vec<Item>> {
    if p.eat(b'(') {
        let mut items = Vec::new();
        loop {
            items.push(parse_fetch_att(p)?);
            if p.eat(b')') {
                return Ok(items);
            }
            p.sp()?;
        }
    }
    let mut probe = *p;
    let word = probe.take_while(|c| c.is_ascii_alphabetic());
    let fast = [Item::Flags, Item::InternalDate, Item::Size];
    let expanded: Option<Vec<Item>> = match word.to_ascii_uppercase().as_slice() {
        b"ALL" => Some(fast.into_iter().chain([Item::Envelope]).collect()),
        b"FAST" => Some(fast.to_vec()),
        b"FULL" => Some(fast.into_iter().chain([Item::Envelope, Item::Body]).collect()),
        _ => None,
    };
    match expanded {
        Some(items) if probe.at_end() => {
            *p = probe;
            Ok(items)
        }
        _ => Ok(vec![parse_fetch_att(p)?]),
    }
}

/// The octets a section names, or None when it names nothing (NIL).
fn section_bytes<'a>(
    data: &'a [u8],
    entity: Option<&Entity<'a>>,
    section: &Section,
) -> Option<Cow<'a, [u8]>> {
    if section.parts.is_empty() {
        let (header, body) = split_header(data);
        return Some(match &section.text {
            None => Cow::Borrowed(data),
            Some(SectionText::Header) => Cow::Borrowed(header),
            Some(SectionText::Text) => Cow::Borrowed(body),
            Some(SectionText::Fields { not, names }) => Cow::Owned(header_subset(header, names, *not)),
            Some(SectionText::Mime) => return None,
        });
    }
    let part = resolve_part(entity?, &section.parts)?;
    Some(match &section.text {
        None => Cow::Borrowed(part.body),
        Some(SectionText::Mime) => Cow::Borrowed(part.header),
        Some(text) => {
            let Kind::Message(inner) = &part.kind else {
                return None;
            };
            match text {
                SectionText::Header => Cow::Borrowed(inner.header),
                SectionText::Text => Cow::Borrowed(inner.body),
                SectionText::Fields { not, names } => Cow::Owned(header_subset(inner.header, names, *not)),
                SectionText::Mime => return None,
            }
        }
    })
}

/// One untagged FETCH response; `seen_now` adds FLAGS when this fetch set
/// `\Seen` and the client did not ask for them.
fn put_fetch(out: &mut Vec<u8>, sel: &Selected, idx: usize, items: &[Item], faults: Faults, seen_now: bool) {
    let Some(m) = sel.msgs.get(idx) else {
        return;
    };
    let entity = items.iter().any(Item::needs_mime).then(|| parse_message(&m.data));
    let extra = usize::from(faults.contains(Fault::ImapLiteralMiscount));
    put!(out, "* {} FETCH (", idx + 1);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        match item {
            Item::Flags => {
                out.extend_from_slice(b"FLAGS ");
                put_flags(out, sel.flags_of(idx));
            }
            Item::Uid => {
                let uid = if faults.contains(Fault::ImapUidsDescending) {
                    sel.msgs[sel.msgs.len() - 1 - idx].imap_uid
                } else {
                    m.imap_uid
                };
                put!(out, "UID {uid}");
            }
            Item::InternalDate => {
                let mut date = format_date_time(m.internal_date, m.internal_zone);
                if faults.contains(Fault::ImapInternaldateWrongForm) {
                    // "14-Nov-2023 ..." becomes the RFC 5322 spelling "14 Nov 2023 ...".
                    date = date.replacen('-', " ", 2);
                }
                put!(out, "INTERNALDATE \"{date}\"")
            }
            Item::Size => {
                let size = m.size() + usize::from(faults.contains(Fault::ImapWrongSize));
                put!(out, "RFC822.SIZE {size}")
            }
            Item::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                let short = faults.contains(Fault::ImapEnvelopeShort);
                put_envelope_fields(out, split_header(&m.data).0, !short);
            }
            Item::Body | Item::BodyStructure => {
                let extended = *item == Item::BodyStructure;
                let lines = !faults.contains(Fault::ImapBodystructureNoLines);
                out.extend_from_slice(if extended { b"BODYSTRUCTURE " } else { b"BODY " });
                match &entity {
                    Some(e) => put_structure(out, e, extended, lines),
                    None => put_structure(out, &parse_message(&m.data), extended, lines),
                }
            }
            Item::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                put_literal(out, &m.data, extra);
            }
            Item::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                put_literal(out, split_header(&m.data).0, extra);
            }
            Item::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                put_literal(out, split_header(&m.data).1, extra);
            }
            Item::Section { section, partial, .. } => {
                out.extend_from_slice(b"BODY[");
                out.extend_from_slice(&section.label());
                out.push(b']');
                if let Some((origin, _)) = partial {
                    put!(out, "<{origin}>");
                }
                out.push(b' ');
                match section_bytes(&m.data, entity.as_ref(), section) {
                    Some(bytes) => {
                        let slice = match partial {
                            Some((origin, count)) => {
                                let start = (*origin as usize).min(bytes.len());
                                let end = start.saturating_add(*count as usize).min(bytes.len());
                                &bytes[start..end]
                            }
                            None => &bytes[..],
                        };
                        put_literal(out, slice, extra);
                    }
                    None => out.extend_from_slice(b"NIL"),
                }
            }
        }
    }
    if seen_now && !items.contains(&Item::Flags) {
        out.extend_from_slice(b" FLAGS ");
        put_flags(out, sel.flags_of(idx));
    }
    out.extend_from_slice(b")\r\n");
}

// ---------------------------------------------------------------------------
// SEARCH

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateCmp {
    Before,
    On,
    Since,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    All,
    Seq(SeqSet),
    Uid(SeqSet),
    Flag(String, bool),
    Recent(bool),
    New,
    Larger(u64),
    Smaller(u64),
    Header(Vec<u8>, Vec<u8>),
    Body(Vec<u8>),
    Text(Vec<u8>),
    Internal(DateCmp, i64),
    Sent(DateCmp, i64),
    Not(Box<Key>),
    Or(Box<Key>, Box<Key>),
    And(Vec<Key>),
}

fn parse_search_date(p: &mut Parser<'_>) -> PResult<i64> {
    let raw: Vec<u8> = if p.peek() == Some(b'"') {
        p.quoted()?
    } else {
        p.atom()?.to_vec()
    };
    parse_date(&raw).ok_or_else(|| Fail::Bad("syntax error: invalid date (use d-Mon-yyyy)".into()))
}

fn parse_key(p: &mut Parser<'_>, depth: usize) -> PResult<Key> {
    if depth > MAX_DEPTH {
        return bad("search program nested too deeply");
    }
    if p.eat(b'(') {
        let mut keys = vec![parse_key(p, depth + 1)?];
        while !p.eat(b')') {
            p.sp()?;
            keys.push(parse_key(p, depth + 1)?);
        }
        return Ok(Key::And(keys));
    }
    if p.peek().is_some_and(|c| c.is_ascii_digit() || c == b'*') {
        return Ok(Key::Seq(p.seq_set()?));
    }
    let word = p.keyword()?;
    let flag = |name: &str, has: bool| Ok(Key::Flag(name.to_string(), has));
    match word.as_str() {
        "ALL" => Ok(Key::All),
        "ANSWERED" => flag("\\Answered", true),
        "UNANSWERED" => flag("\\Answered", false),
        "DELETED" => flag("\\Deleted", true),
        "UNDELETED" => flag("\\Deleted", false),
        "DRAFT" => flag("\\Draft", true),
        "UNDRAFT" => flag("\\Draft", false),
        "FLAGGED" => flag("\\Flagged", true),
        "UNFLAGGED" => flag("\\Flagged", false),
        "SEEN" => flag("\\Seen", true),
        "UNSEEN" => flag("\\Seen", false),
        "RECENT" => Ok(Key::Recent(true)),
        "OLD" => Ok(Key::Recent(false)),
        "NEW" => Ok(Key::New),
        "KEYWORD" | "UNKEYWORD" => {
            p.sp()?;
            let k = String::from_utf8_lossy(p.atom()?).into_owned();
            Ok(Key::Flag(k, word == "KEYWORD"))
        }
        "BCC" | "CC" | "FROM" | "SUBJECT" | "TO" => {
            p.sp()?;
            Ok(Key::Header(word.into_bytes(), p.astring()?.into_owned()))
        }
        "HEADER" => {
            p.sp()?;
            let field = p.astring()?.into_owned();
            p.sp()?;
            Ok(Key::Header(field, p.astring()?.into_owned()))
        }
        "BODY" | "TEXT" => {
            p.sp()?;
            let s = p.astring()?.into_owned();
            Ok(if word == "BODY" {
                Key::Body(s)
            } else {
                Key::Text(s)
            })
        }
        "LARGER" | "SMALLER" => {
            p.sp()?;
            let n = p.number64()?;
            Ok(if word == "LARGER" {
                Key::Larger(n)
            } else {
                Key::Smaller(n)
            })
        }
        "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
            p.sp()?;
            let day = parse_search_date(p)?;
            let cmp = match word.trim_start_matches("SENT") {
                "BEFORE" => DateCmp::Before,
                "ON" => DateCmp::On,
                _ => DateCmp::Since,
            };
            Ok(if word.starts_with("SENT") {
                Key::Sent(cmp, day)
            } else {
                Key::Internal(cmp, day)
            })
        }
        "UID" => {
            p.sp()?;
            Ok(Key::Uid(p.seq_set()?))
        }
        "NOT" => {
            p.sp()?;
            Ok(Key::Not(Box::new(parse_key(p, depth + 1)?)))
        }
        "OR" => {
            p.sp()?;
            let a = parse_key(p, depth + 1)?;
            p.sp()?;
            let b = parse_key(p, depth + 1)?;
            Ok(Key::Or(Box::new(a), Box::new(b)))
        }
        _ => bad("syntax error: unknown search key"),
    }
}

/// Case-insensitive (ASCII) substring test; the empty needle always matches.
fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    memchr::memmem::find(&hay.to_ascii_lowercase(), &needle.to_ascii_lowercase()).is_some()
}

/// One message as SEARCH sees it.
struct Candidate<'m> {
    seq: u32,
    msg: &'m Message,
    recent: bool,
    header: &'m [u8],
    body: &'m [u8],
    max_seq: u32,
    max_uid: u32,
}

fn date_matches(cmp: DateCmp, day: i64, wanted: i64) -> bool {
    match cmp {
        DateCmp::Before => day < wanted,
        DateCmp::On => day == wanted,
        DateCmp::Since => day >= wanted,
    }
}

fn key_matches(key: &Key, c: &Candidate<'_>) -> bool {
    match key {
        Key::All => true,
        Key::Seq(set) => set.contains(c.seq, c.max_seq),
        Key::Uid(set) => set.contains(c.msg.imap_uid, c.max_uid),
        Key::Flag(flag, has) => c.msg.has_flag(flag) == *has,
        Key::Recent(recent) => c.recent == *recent,
        Key::New => c.recent && !c.msg.has_flag("\\Seen"),
        Key::Larger(n) => c.msg.size() as u64 > *n,
        Key::Smaller(n) => (c.msg.size() as u64) < *n,
        Key::Header(name, needle) => fields(c.header)
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name) && contains_ci(&unfold(f.value), needle)),
        Key::Body(needle) => contains_ci(c.body, needle),
        Key::Text(needle) => contains_ci(&c.msg.data, needle),
        Key::Internal(cmp, wanted) => date_matches(*cmp, internal_day(c.msg), *wanted),
        Key::Sent(cmp, wanted) => header_value(c.header, "Date")
            .and_then(|d| rfc5322_day(&d))
            .is_some_and(|day| date_matches(*cmp, day, *wanted)),
        Key::Not(k) => !key_matches(k, c),
        Key::Or(a, b) => key_matches(a, c) || key_matches(b, c),
        Key::And(keys) => keys.iter().all(|k| key_matches(k, c)),
    }
}

// ---------------------------------------------------------------------------
// The session

/// The condition of a tagged completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    No,
    Bad,
}

/// A command that succeeded: the text after `tag OK ` and what follows.
struct Done {
    text: String,
    action: Action,
}

fn done(text: impl Into<String>) -> PResult<Done> {
    Ok(Done {
        text: text.into(),
        action: Action::Continue,
    })
}

fn mailbox_fail(e: MailboxError) -> Fail {
    Fail::No(
        match e {
            MailboxError::NoSuchMailbox => "[NONEXISTENT] no such mailbox",
            MailboxError::AlreadyExists => "[ALREADYEXISTS] mailbox already exists",
            MailboxError::HasChildren => "[HASCHILDREN] mailbox has inferior mailboxes; delete them first",
            MailboxError::Inbox => "[CANNOT] INBOX cannot be deleted",
            MailboxError::InvalidName => "[CANNOT] invalid mailbox name",
            MailboxError::OverQuota => "[OVERQUOTA] account is over its quota",
            MailboxError::NoSuchAccount => "[UNAVAILABLE] account no longer exists",
        }
        .to_string(),
    )
}

/// Where a COPY, MOVE or APPEND target is missing, the client should
/// create it (RFC 9051 section 7.1).
fn target_fail(e: MailboxError) -> Fail {
    match e {
        MailboxError::NoSuchMailbox => Fail::No("[TRYCREATE] no such mailbox".into()),
        other => mailbox_fail(other),
    }
}

/// Commands of the authenticated state (also valid when selected).
const AUTHENTICATED_COMMANDS: &[&str] = &[
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "STATUS",
    "APPEND",
    "NAMESPACE",
    "ENABLE",
    "IDLE",
];

/// Commands of the selected state.
const SELECTED_COMMANDS: &[&str] = &[
    "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID",
];

/// LIST pattern matching: `*` matches anything, `%` anything but the
/// hierarchy delimiter. Linear in the pattern times the name.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let n = name.len();
    let mut states = vec![false; n + 1];
    states[0] = true;
    for &pc in pattern {
        let mut next = vec![false; n + 1];
        match pc {
            b'*' | b'%' => {
                let mut reach = false;
                for j in 0..=n {
                    reach |= states[j];
                    next[j] = reach;
                    if pc == b'%' && j < n && name[j] == DELIMITER as u8 {
                        reach = false;
                    }
                }
            }
            c => {
                for j in 0..n {
                    next[j + 1] = states[j] && name[j] == c;
                }
            }
        }
        states = next;
        if !states.contains(&true) {
            return false;
        }
    }
    states[n]
}

/// LIST matching where INBOX matches case-insensitively.
fn list_matches(pattern: &[u8], name: &str) -> bool {
    if name == "INBOX" {
        wildcard_match(&pattern.to_ascii_uppercase(), b"INBOX")
    } else {
        wildcard_match(pattern, name.as_bytes())
    }
}

fn is_inferior(name: &str, of: &str) -> bool {
    name.len() > of.len() && name.starts_with(of) && name[of.len()..].starts_with(DELIMITER)
}

/// One connection's state: not authenticated (`user` unset), authenticated,
/// or selected (`selected` set); it survives STARTTLS.
pub(super) struct Session {
    shared: Arc<Shared>,
    faults: Faults,
    tls_active: bool,
    /// The account: set by LOGIN / AUTHENTICATE, or by a SELECT before login
    /// under `imap-ok-before-login`.
    user: Option<String>,
    authenticated: bool,
    selected: Option<Selected>,
}

impl Session {
    fn new(shared: Arc<Shared>, tls_active: bool) -> Self {
        let faults = shared.faults;
        Session {
            shared,
            faults,
            tls_active,
            user: None,
            authenticated: false,
            selected: None,
        }
    }

    fn has(&self, fault: Fault) -> bool {
        self.faults.contains(fault)
    }

    /// Passwords are refused until TLS is up.
    fn plaintext_refused(&self) -> bool {
        self.shared.login_disabled_on_plaintext && !self.tls_active
    }

    fn capabilities(&self) -> String {
        let mut caps = Vec::new();
        if !(self.authenticated && self.has(Fault::ImapNoVersionAfterLogin)) {
            caps.push("IMAP4rev1");
        }
        if !self.authenticated {
            // `imap-starttls-stale-capabilities`: TLS changes nothing in the list.
            let plaintext = !self.tls_active || self.has(Fault::ImapStarttlsStaleCapabilities);
            if plaintext {
                caps.push("STARTTLS");
            }
            let disabled = plaintext
                && (self.shared.login_disabled_on_plaintext
                    || self.has(Fault::ImapLoginDespiteLogindisabled));
            if disabled {
                caps.push("LOGINDISABLED");
            } else {
                caps.extend(["AUTH=PLAIN", "SASL-IR"]);
            }
        }
        caps.extend([
            "LITERAL+",
            "UIDPLUS",
            "MOVE",
            "UNSELECT",
            "IDLE",
            "NAMESPACE",
            "ID",
            "ENABLE",
            "CHILDREN",
        ]);
        caps.join(" ")
    }

    fn complete(&self, out: &mut Vec<u8>, tag: &str, status: Status, text: &str) {
        let tag = if self.has(Fault::ImapWrongTag) {
            Cow::Owned(other_tag(tag))
        } else {
            Cow::Borrowed(tag)
        };
        let word = match status {
            Status::Ok => "OK",
            Status::No if self.has(Fault::ImapFailureAsBad) => "BAD",
            Status::No => "NO",
            Status::Bad if self.has(Fault::ImapBadAsNo) => "NO",
            Status::Bad => "BAD",
        };
        put!(out, "{tag} {word} {text}\r\n");
    }

    /// A completion for a command that may not have had a readable tag.
    fn complete_raw(&self, out: &mut Vec<u8>, raw: &[u8], status: Status, text: &str) {
        match tag_of(raw) {
            Some(tag) => self.complete(out, &tag, status, text),
            None => self.complete(out, "*", status, text),
        }
    }

    fn user(&self) -> PResult<String> {
        self.user
            .clone()
            .ok_or_else(|| Fail::Bad("command not valid before login; log in first".into()))
    }

    fn selected_mut(&mut self) -> PResult<&mut Selected> {
        self.selected
            .as_mut()
            .ok_or_else(|| Fail::Bad("no mailbox selected".into()))
    }

    /// Serves commands over `stream` until the client leaves, LOGOUT, or
    /// STARTTLS; hands the stream back so the caller can close or upgrade it.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: S, greet: bool) -> (Next, S) {
        let mut io = Io::new(stream, self.shared.idle_timeout, self.faults);
        let next = self.drive(&mut io, greet).await;
        // Bytes pipelined after STARTTLS are dropped with the reader: they
        // were sent in plaintext and must not be executed after the upgrade.
        (next, io.reader.into_inner())
    }

    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut Io<S>, greet: bool) -> Next {
        if greet {
            // A sleeping session is still aborted by shutdown.
            if !self.shared.greeting_delay.is_zero() {
                tokio::time::sleep(self.shared.greeting_delay).await;
            }
            match self.shared.greeting {
                ImapGreeting::Ok => put!(
                    io.out,
                    "* OK [CAPABILITY {}] mailcheck IMAP ready\r\n",
                    self.capabilities()
                ),
                ImapGreeting::Preauth => {
                    // RFC 9051 section 7.1.4: the connection starts authenticated
                    // (as the first account, like a server that knows its client).
                    if !self.has(Fault::ImapPreauthUnauthenticated) {
                        self.user = self.shared.store.first_user();
                        self.authenticated = self.user.is_some();
                    }
                    put!(
                        io.out,
                        "* PREAUTH [CAPABILITY {}] mailcheck IMAP ready, logged in as {}\r\n",
                        self.capabilities(),
                        self.shared.store.first_user().unwrap_or_default()
                    );
                }
                ImapGreeting::Bye => {
                    // RFC 9051 section 7.1.5: a server that refuses the connection.
                    io.out
                        .extend_from_slice(b"* BYE mailcheck IMAP does not accept connections now\r\n");
                    io.flush().await;
                    return Next::Close;
                }
            }
            if !io.flush().await {
                return Next::Close;
            }
        }
        loop {
            let action = match io.read_command().await {
                Input::Closed => return Next::Close,
                Input::Overflow => {
                    io.out
                        .extend_from_slice(b"* BYE literal too large for this server\r\n");
                    io.flush().await;
                    return Next::Close;
                }
                Input::TooLong(prefix) => {
                    self.complete_raw(&mut io.out, &prefix, Status::Bad, "command line too long");
                    Action::Continue
                }
                Input::Rejected { prefix, text } => {
                    self.complete_raw(&mut io.out, &prefix, Status::Bad, text);
                    Action::Continue
                }
                Input::Refused { prefix, append } => {
                    if append {
                        let text = format!("[TOOBIG] messages are limited to {MAX_APPEND} octets");
                        self.complete_raw(&mut io.out, &prefix, Status::No, &text);
                    } else {
                        self.complete_raw(&mut io.out, &prefix, Status::Bad, "literal too large");
                    }
                    Action::Continue
                }
                Input::Command(cmd) => self.handle(&cmd, &mut io.out),
            };
            if !io.flush().await {
                return Next::Close;
            }
            match action {
                Action::Continue => {}
                Action::Close => return Next::Close,
                Action::StartTls => return Next::StartTls,
                Action::AuthContinue(tag) => {
                    io.out.extend_from_slice(b"+ \r\n");
                    if !io.flush().await {
                        return Next::Close;
                    }
                    let mut line = Vec::new();
                    match io.read_line_into(&mut line, MAX_LINE).await {
                        Read::Closed => return Next::Close,
                        Read::TooLong => self.complete(&mut io.out, &tag, Status::Bad, "response too long"),
                        Read::Line => self.auth_response(&tag, strip_eol(&line), &mut io.out),
                    }
                    if !io.flush().await {
                        return Next::Close;
                    }
                }
                Action::Idle(tag) => {
                    if let Some(next) = self.idle(io, &tag).await {
                        return next;
                    }
                }
            }
        }
    }

    /// IDLE (RFC 2177): reports changes as they happen until the client
    /// sends DONE, or until the idle timeout (then BYE).
    async fn idle<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut Io<S>, tag: &str) -> Option<Next> {
        let mut changes = self.shared.store.watch_changes();
        changes.borrow_and_update();
        if !self.has(Fault::ImapIdleNoContinuation) {
            io.out.extend_from_slice(b"+ idling\r\n");
        }
        if !self.post_sync(&mut io.out, false) || !io.flush().await {
            io.flush().await;
            return Some(Next::Close);
        }
        let deadline = Instant::now() + self.shared.idle_timeout;
        let mut watching = !self.has(Fault::ImapIdleNoUpdates);
        loop {
            tokio::select! {
                readable = io.readable_before(deadline) => match readable {
                    Some(true) => break,
                    Some(false) => return Some(Next::Close),
                    None => {
                        io.out.extend_from_slice(b"* BYE idle for too long\r\n");
                        io.flush().await;
                        return Some(Next::Close);
                    }
                },
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    if !self.post_sync(&mut io.out, false) {
                        io.flush().await;
                        return Some(Next::Close);
                    }
                    if !io.flush().await {
                        return Some(Next::Close);
                    }
                }
            }
        }
        let mut line = Vec::new();
        let status = match io.read_line_into(&mut line, MAX_LINE).await {
            Read::Closed => return Some(Next::Close),
            Read::Line if strip_eol(&line).eq_ignore_ascii_case(b"DONE") => Status::Ok,
            _ => Status::Bad,
        };
        if !self.post_sync(&mut io.out, false) {
            io.flush().await;
            return Some(Next::Close);
        }
        let text = if status == Status::Ok {
            "IDLE terminated"
        } else {
            "expected DONE"
        };
        self.complete(&mut io.out, tag, status, text);
        if io.flush().await {
            None
        } else {
            Some(Next::Close)
        }
    }

    /// Brings the selected view up to date; false (after BYE) when the
    /// mailbox is gone.
    fn post_sync(&mut self, out: &mut Vec<u8>, hold_expunges: bool) -> bool {
        let (Some(sel), Some(user)) = (self.selected.as_mut(), self.user.as_deref()) else {
            return true;
        };
        let mode = if hold_expunges {
            Expunges::Hold
        } else {
            Expunges::Announce
        };
        if sync_view(&self.shared.store, user, sel, out, mode) {
            return true;
        }
        self.selected = None;
        out.extend_from_slice(b"* BYE the selected mailbox was deleted or renamed\r\n");
        false
    }

    /// Handles one command (literals inline, no final line ending) and
    /// appends the responses to `out`.
    fn handle(&mut self, cmd: &[u8], out: &mut Vec<u8>) -> Action {
        let mut p = Parser::new(cmd);
        let Some(tag) = p.tag() else {
            let word = if self.has(Fault::ImapBadAsNo) { "NO" } else { "BAD" };
            put!(out, "* {word} invalid or missing command tag\r\n");
            return Action::Continue;
        };
        let name = match p.sp().and_then(|()| p.keyword()) {
            Ok(name) => name,
            Err(_) => {
                self.complete(out, &tag, Status::Bad, "missing or invalid command name");
                return Action::Continue;
            }
        };
        let sub = {
            let mut q = p;
            q.sp().and_then(|()| q.keyword()).unwrap_or_default()
        };
        let is_fetch = name == "FETCH" || (name == "UID" && sub == "FETCH");
        let hold_expunges = matches!(name.as_str(), "FETCH" | "STORE" | "SEARCH" | "COPY");
        let (status, text, action) = match self.dispatch(&tag, &name, &mut p, out) {
            Ok(Done {
                action: action @ (Action::AuthContinue(_) | Action::Idle(_)),
                ..
            }) => return action,
            Ok(done) => (Status::Ok, done.text, done.action),
            Err(Fail::No(text)) => (Status::No, text, Action::Continue),
            Err(Fail::Bad(text)) => (Status::Bad, text, Action::Continue),
        };
        if action == Action::Continue && !self.post_sync(out, hold_expunges) {
            return Action::Close;
        }
        if !(is_fetch && self.has(Fault::ImapNoCompletion)) {
            self.complete(out, &tag, status, &text);
        }
        if name == "NOOP" && self.has(Fault::ImapDoubleCompletion) {
            self.complete(out, &tag, status, &text);
        }
        action
    }

    /// Runs one command after its tag and name; the state checks come
    /// first so a wrong-state command is BAD whatever its arguments.
    fn dispatch(&mut self, tag: &str, name: &str, p: &mut Parser<'_>, out: &mut Vec<u8>) -> PResult<Done> {
        match name {
            "CAPABILITY" => {
                p.end()?;
                put!(out, "* CAPABILITY {}\r\n", self.capabilities());
                done("CAPABILITY completed")
            }
            "NOOP" => {
                p.end()?;
                done("NOOP completed")
            }
            "LOGOUT" => {
                p.end()?;
                if !self.has(Fault::ImapNoByeOnLogout) {
                    out.extend_from_slice(b"* BYE mailcheck IMAP server logging out\r\n");
                }
                Ok(Done {
                    text: "LOGOUT completed".into(),
                    action: Action::Close,
                })
            }
            "ID" => self.id(p, out),
            "STARTTLS" => self.starttls(p),
            "LOGIN" => self.login(p),
            "AUTHENTICATE" => self.authenticate(tag, p),
            _ if AUTHENTICATED_COMMANDS.contains(&name) => {
                if !self.authenticated {
                    let preview = matches!(name, "SELECT" | "EXAMINE") && self.has(Fault::ImapOkBeforeLogin);
                    if !preview {
                        return bad("command not valid before login; log in first");
                    }
                    if self.user.is_none() {
                        self.user = self.shared.store.first_user();
                    }
                }
                match name {
                    "SELECT" => self.select(p, out, false),
                    "EXAMINE" => self.select(p, out, true),
                    "CREATE" => self.create(p),
                    "DELETE" => self.delete(p, out),
                    "RENAME" => self.rename(p, out),
                    "SUBSCRIBE" | "UNSUBSCRIBE" => self.subscribe(p, name == "SUBSCRIBE"),
                    "LIST" | "LSUB" => self.list(p, out, name == "LSUB"),
                    "STATUS" => self.status(p, out),
                    "APPEND" => self.append(p),
                    "NAMESPACE" => {
                        p.end()?;
                        out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                        done("NAMESPACE completed")
                    }
                    "ENABLE" => self.enable(p, out),
                    _ => {
                        p.end()?;
                        Ok(Done {
                            text: String::new(),
                            action: Action::Idle(tag.to_string()),
                        })
                    }
                }
            }
            _ if SELECTED_COMMANDS.contains(&name) => {
                if self.selected.is_none() {
                    return bad(if self.authenticated {
                        "no mailbox selected"
                    } else {
                        "command not valid before login; log in first"
                    });
                }
                match name {
                    "CHECK" => {
                        p.end()?;
                        done("CHECK completed")
                    }
                    "CLOSE" => self.close(p),
                    "UNSELECT" => {
                        p.end()?;
                        self.selected = None;
                        done("UNSELECT completed")
                    }
                    "EXPUNGE" => {
                        p.end()?;
                        self.expunge(out, None)
                    }
                    "SEARCH" => self.search(p, out, false),
                    "FETCH" => self.fetch(p, out, false),
                    "STORE" => self.store(p, out, false),
                    "COPY" => self.copy(p, out, false, false),
                    "MOVE" => self.copy(p, out, false, true),
                    _ => self.uid(p, out),
                }
            }
            _ => bad("unknown command"),
        }
    }

    fn id(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>) -> PResult<Done> {
        p.sp()?;
        if p.eat(b'(') {
            if !p.eat(b')') {
                loop {
                    p.string()?;
                    p.sp()?;
                    p.nstring()?;
                    if p.eat(b')') {
                        break;
                    }
                    p.sp()?;
                }
            }
        } else if p.nstring()?.is_some() {
            return bad("syntax error: ID takes NIL or a parameter list");
        }
        p.end()?;
        put!(
            out,
            "* ID (\"name\" \"mailcheck\" \"version\" \"{}\")\r\n",
            env!("CARGO_PKG_VERSION")
        );
        done("ID completed")
    }

    fn starttls(&mut self, p: &mut Parser<'_>) -> PResult<Done> {
        p.end()?;
        if self.tls_active {
            return bad("TLS is already active");
        }
        if self.authenticated {
            return bad("STARTTLS is only valid before login");
        }
        Ok(Done {
            text: "Begin TLS negotiation now".into(),
            action: Action::StartTls,
        })
    }

    fn login(&mut self, p: &mut Parser<'_>) -> PResult<Done> {
        p.sp()?;
        let user = p.astring()?;
        p.sp()?;
        let password = p.astring()?;
        p.end()?;
        if self.authenticated {
            return bad("already logged in");
        }
        if self.plaintext_refused() {
            return no("[PRIVACYREQUIRED] LOGIN is disabled on unencrypted connections; use STARTTLS");
        }
        self.check_credentials(&user, &password)
    }

    fn check_credentials(&mut self, user: &[u8], password: &[u8]) -> PResult<Done> {
        let user = std::str::from_utf8(user).unwrap_or_default();
        let accepted = !user.is_empty()
            && self
                .shared
                .store
                .account_password(user)
                .is_some_and(|pw| pw.as_bytes() == password);
        if !accepted {
            return no("[AUTHENTICATIONFAILED] Authentication failed.");
        }
        self.user = Some(user.to_string());
        self.authenticated = true;
        self.selected = None;
        done(format!("[CAPABILITY {}] Logged in", self.capabilities()))
    }

    fn authenticate(&mut self, tag: &str, p: &mut Parser<'_>) -> PResult<Done> {
        p.sp()?;
        let mechanism = p.keyword()?;
        let initial = if p.eat(b' ') {
            let ir = p.take_while(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c));
            if ir.is_empty() {
                return bad("syntax error: invalid initial response");
            }
            Some(ir)
        } else {
            None
        };
        p.end()?;
        if self.authenticated {
            return bad("already logged in");
        }
        if mechanism != "PLAIN" {
            return no("[CANNOT] unsupported authentication mechanism");
        }
        if self.plaintext_refused() {
            return no(
                "[PRIVACYREQUIRED] authentication is disabled on unencrypted connections; use STARTTLS",
            );
        }
        match initial {
            None => Ok(Done {
                text: String::new(),
                action: Action::AuthContinue(tag.to_string()),
            }),
            // RFC 4959: "=" is an empty initial response.
            Some(b"=") => self.auth_plain(b""),
            Some(ir) => self.auth_plain_base64(ir),
        }
    }

    /// The client's line after `+ ` in AUTHENTICATE.
    fn auth_response(&mut self, tag: &str, line: &[u8], out: &mut Vec<u8>) {
        let result = if line == b"*" {
            bad("AUTHENTICATE cancelled")
        } else {
            self.auth_plain_base64(line)
        };
        match result {
            Ok(d) => self.complete(out, tag, Status::Ok, &d.text),
            Err(Fail::No(t)) => self.complete(out, tag, Status::No, &t),
            Err(Fail::Bad(t)) => self.complete(out, tag, Status::Bad, &t),
        }
    }

    fn auth_plain_base64(&mut self, b64: &[u8]) -> PResult<Done> {
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(message) => self.auth_plain(&message),
            Err(_) => bad("invalid base64 in authentication response"),
        }
    }

    /// SASL PLAIN (RFC 4616): authzid NUL authcid NUL password; acting as
    /// another user is not supported.
    fn auth_plain(&mut self, message: &[u8]) -> PResult<Done> {
        let parts: Vec<&[u8]> = message.split(|b| *b == 0).collect();
        let [authz, authc, password] = parts.as_slice() else {
            return no("[AUTHENTICATIONFAILED] Authentication failed.");
        };
        if !authz.is_empty() && authz != authc {
            return no("[AUTHORIZATIONFAILED] cannot act as another user");
        }
        self.check_credentials(authc, password)
    }

    fn select(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>, examine: bool) -> PResult<Done> {
        p.sp()?;
        let name = p.mailbox()?;
        p.end()?;
        let user = self.user()?;
        if self.selected.take().is_some() {
            out.extend_from_slice(b"* OK [CLOSED] previous mailbox closed\r\n");
        }
        let read_only = examine && !self.has(Fault::ImapExamineWritable);
        let (mailbox, recent) = self
            .shared
            .store
            .open_mailbox(&user, &name, !read_only)
            .map_err(mailbox_fail)?;
        let sel = Selected {
            name: mailbox.name.clone(),
            uid_validity: mailbox.uid_validity,
            read_only,
            highest_uid: mailbox.uid_next.saturating_sub(1),
            keywords: keywords_of(&mailbox.messages),
            recent,
            msgs: mailbox.messages,
        };
        put_flags_response(out, &sel.keywords);
        if read_only {
            out.extend_from_slice(b"* OK [PERMANENTFLAGS ()] no permanent flags: read-only\r\n");
        } else {
            out.extend_from_slice(b"* OK [PERMANENTFLAGS ");
            put_flags(out, SYSTEM_FLAGS.iter().copied().chain(["\\*"]));
            out.extend_from_slice(b"] flags permitted\r\n");
        }
        put!(out, "* {} EXISTS\r\n", sel.msgs.len());
        put!(out, "* {} RECENT\r\n", sel.recent_count());
        if let Some(i) = sel.msgs.iter().position(|m| !m.has_flag("\\Seen")) {
            put!(out, "* OK [UNSEEN {}] first unseen message\r\n", i + 1);
        }
        if !self.has(Fault::ImapSelectNoUidvalidity) {
            put!(out, "* OK [UIDVALIDITY {}] UIDs valid\r\n", sel.uid_validity);
        }
        put!(out, "* OK [UIDNEXT {}] predicted next UID\r\n", mailbox.uid_next);
        self.selected = Some(sel);
        done(format!(
            "[{}] {} completed",
            if read_only { "READ-ONLY" } else { "READ-WRITE" },
            if examine { "EXAMINE" } else { "SELECT" }
        ))
    }

    fn create(&mut self, p: &mut Parser<'_>) -> PResult<Done> {
        p.sp()?;
        let name = p.mailbox()?;
        p.end()?;
        let user = self.user()?;
        self.shared
            .store
            .create_mailbox(&user, &name)
            .map_err(mailbox_fail)?;
        done("CREATE completed")
    }

    /// Closes this session's view when `affected` says its mailbox is
    /// going away under it.
    fn close_if(&mut self, out: &mut Vec<u8>, affected: impl Fn(&str) -> bool) {
        if self.selected.as_ref().is_some_and(|s| affected(&s.name)) {
            self.selected = None;
            out.extend_from_slice(b"* OK [CLOSED] the selected mailbox is gone\r\n");
        }
    }

    fn delete(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>) -> PResult<Done> {
        p.sp()?;
        let name = p.mailbox()?;
        p.end()?;
        let user = self.user()?;
        self.shared
            .store
            .delete_mailbox(&user, &name)
            .map_err(mailbox_fail)?;
        self.close_if(out, |selected| selected == name);
        done("DELETE completed")
    }

    fn rename(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>) -> PResult<Done> {
        p.sp()?;
        let from = p.mailbox()?;
        p.sp()?;
        let to = p.mailbox()?;
        p.end()?;
        let user = self.user()?;
        self.shared
            .store
            .rename_mailbox(&user, &from, &to)
            .map_err(mailbox_fail)?;
        // Renaming INBOX leaves an empty INBOX with the same UIDVALIDITY:
        // a view of it just sees the messages expunged.
        if from != "INBOX" {
            self.close_if(out, |selected| selected == from || is_inferior(selected, &from));
        }
        done("RENAME completed")
    }

    fn subscribe(&mut self, p: &mut Parser<'_>, subscribe: bool) -> PResult<Done> {
        p.sp()?;
        let name = p.mailbox()?;
        p.end()?;
        let user = self.user()?;
        self.shared
            .store
            .set_subscribed(&user, &name, subscribe)
            .map_err(mailbox_fail)?;
        done(if subscribe {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        })
    }

    fn list(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>, lsub: bool) -> PResult<Done> {
        p.sp()?;
        let reference = p.list_mailbox()?;
        p.sp()?;
        let pattern = p.list_mailbox()?;
        p.end()?;
        let user = self.user()?;
        let word = if lsub { "LSUB" } else { "LIST" };
        if pattern.is_empty() {
            // RFC 9051 section 6.3.9: the delimiter and the root.
            if !lsub {
                out.extend_from_slice(b"* LIST (\\Noselect) \"/\" \"\"\r\n");
            }
            return done(format!("{word} completed"));
        }
        let full = [&reference[..], &pattern[..]].concat();
        let existing = self.shared.store.mailbox_names(&user);
        let names = if lsub && !self.has(Fault::ImapLsubUnsubscribed) {
            self.shared.store.subscriptions(&user)
        } else {
            existing.clone()
        };
        for name in names.iter().filter(|n| list_matches(&full, n)) {
            let attrs = if lsub {
                if existing.contains(name) {
                    ""
                } else {
                    "\\Noselect"
                }
            } else if existing.iter().any(|e| is_inferior(e, name)) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            };
            put!(out, "* {word} ({attrs}) \"/\" ");
            put_astring(out, name.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        done(format!("{word} completed"))
    }

    fn status(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>) -> PResult<Done> {
        p.sp()?;
        let name = p.mailbox()?;
        p.sp()?;
        p.expect(b'(', "syntax error: expected a list of status items")?;
        let mut items = Vec::new();
        loop {
            let item = p.keyword()?;
            if !matches!(
                item.as_str(),
                "MESSAGES" | "RECENT" | "UIDNEXT" | "UIDVALIDITY" | "UNSEEN" | "DELETED" | "SIZE"
            ) {
                return bad("syntax error: unknown status item");
            }
            items.push(item);
            if p.eat(b')') {
                break;
            }
            p.sp()?;
        }
        p.end()?;
        let user = self.user()?;
        let mailbox = self
            .shared
            .store
            .mailbox(&user, &name)
            .ok_or_else(|| mailbox_fail(MailboxError::NoSuchMailbox))?;
        out.extend_from_slice(b"* STATUS ");
        put_astring(out, mailbox.name.as_bytes());
        out.extend_from_slice(b" (");
        for (i, item) in items.iter().enumerate() {
            let msgs = &mailbox.messages;
            let value = match item.as_str() {
                "MESSAGES" => msgs.len() as u64,
                "RECENT" => msgs.iter().filter(|m| m.recent).count() as u64,
                "UIDNEXT" => u64::from(mailbox.uid_next),
                "UIDVALIDITY" => u64::from(mailbox.uid_validity),
                "UNSEEN" => msgs.iter().filter(|m| !m.has_flag("\\Seen")).count() as u64,
                "DELETED" => msgs.iter().filter(|m| m.has_flag("\\Deleted")).count() as u64,
                _ => msgs.iter().map(|m| m.size() as u64).sum(),
            };
            if i > 0 {
                out.push(b' ');
            }
            put!(out, "{item} {value}");
        }
        out.extend_from_slice(b")\r\n");
        done("STATUS completed")
    }

    fn append(&mut self, p: &mut Parser<'_>) -> PResult<Done> {
        p.sp()?;
        let name = p.mailbox()?;
        p.sp()?;
        let flags = if p.peek() == Some(b'(') {
            let flags = p.flag_list()?;
            p.sp()?;
            flags
        } else {
            Vec::new()
        };
        let date = if p.peek() == Some(b'"') {
            let raw = p.quoted()?;
            p.sp()?;
            Some(parse_date_time(&raw).ok_or_else(|| Fail::Bad("syntax error: invalid date-time".into()))?)
        } else {
            None
        };
        if !p.at_literal() {
            return bad("syntax error: APPEND takes the message as a literal");
        }
        let message = p.literal()?;
        p.end()?;
        let user = self.user()?;
        let (uid_validity, uid) = self
            .shared
            .store
            .append(&user, &name, message, &flags, date)
            .map_err(target_fail)?;
        done(format!("[APPENDUID {uid_validity} {uid}] APPEND completed"))
    }

    fn enable(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>) -> PResult<Done> {
        loop {
            p.sp()?;
            p.atom()?;
            if p.at_end() {
                break;
            }
        }
        if self.selected.is_some() {
            return bad("ENABLE is only valid before a mailbox is selected");
        }
        // Nothing this server implements needs enabling.
        out.extend_from_slice(b"* ENABLED\r\n");
        done("ENABLE completed")
    }

    fn close(&mut self, p: &mut Parser<'_>) -> PResult<Done> {
        p.end()?;
        let user = self.user()?;
        if let Some(sel) = self.selected.take() {
            if !sel.read_only {
                // CLOSE expunges silently (RFC 9051 section 6.4.1).
                self.shared
                    .store
                    .expunge(&user, &sel.name, sel.uid_validity, None);
            }
        }
        done("CLOSE completed")
    }

    fn expunge(&mut self, out: &mut Vec<u8>, uids: Option<SeqSet>) -> PResult<Done> {
        let user = self.user()?;
        let silent = self.has(Fault::ImapExpungeSilent);
        let store = Arc::clone(&self.shared.store);
        let sel = self.selected_mut()?;
        if sel.read_only {
            return no("mailbox is read-only");
        }
        let only: Option<Vec<u32>> = uids.map(|set| {
            sel.by_uid(&set)
                .into_iter()
                .map(|i| sel.msgs[i].imap_uid)
                .collect()
        });
        store.expunge(&user, &sel.name, sel.uid_validity, only.as_deref());
        let mode = if silent {
            Expunges::Silent
        } else {
            Expunges::Announce
        };
        // A vanished mailbox is reported by the sync after the command.
        sync_view(&store, &user, sel, out, mode);
        done("EXPUNGE completed")
    }

    fn search(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>, uid_mode: bool) -> PResult<Done> {
        p.sp()?;
        let mut probe = *p;
        if probe.keyword().is_ok_and(|k| k == "CHARSET") {
            *p = probe;
            p.sp()?;
            let charset = p.astring()?;
            if !charset.eq_ignore_ascii_case(b"US-ASCII") && !charset.eq_ignore_ascii_case(b"UTF-8") {
                return no("[BADCHARSET (US-ASCII UTF-8)] unsupported charset");
            }
            p.sp()?;
        }
        let mut keys = vec![parse_key(p, 0)?];
        while p.eat(b' ') {
            keys.push(parse_key(p, 0)?);
        }
        p.end()?;
        let key = Key::And(keys);
        let uid_mode = uid_mode && !self.has(Fault::ImapUidSearchSeqs);
        let sel = self.selected_mut()?;
        let max_seq = sel.count();
        let max_uid = sel.msgs.last().map_or(0, |m| m.imap_uid);
        out.extend_from_slice(b"* SEARCH");
        for (i, m) in sel.msgs.iter().enumerate() {
            let (header, body) = split_header(&m.data);
            let candidate = Candidate {
                seq: u32::try_from(i + 1).unwrap_or(u32::MAX),
                msg: m,
                recent: sel.is_recent(m.imap_uid),
                header,
                body,
                max_seq,
                max_uid,
            };
            if key_matches(&key, &candidate) {
                if uid_mode {
                    put!(out, " {}", m.imap_uid);
                } else {
                    put!(out, " {}", i + 1);
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        done("SEARCH completed")
    }

    fn fetch(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>, uid_mode: bool) -> PResult<Done> {
        p.sp()?;
        let set = p.seq_set()?;
        p.sp()?;
        let mut items = parse_fetch_items(p)?;
        p.end()?;
        if uid_mode && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        let user = self.user()?;
        let faults = self.faults;
        let store = Arc::clone(&self.shared.store);
        let sel = self.selected_mut()?;
        let indices = if uid_mode {
            sel.by_uid(&set)
        } else {
            sel.by_seq(&set)?
        };
        let peek_sets_seen = faults.contains(Fault::ImapPeekSetsSeen);
        let sets_seen = items
            .iter()
            .any(|i| i.reads_body() || (peek_sets_seen && i.peeks_body()));
        // \Seen is set for the whole set at once, before the responses,
        // so each can report the flags as they now are.
        let mut seen_now = vec![false; sel.msgs.len()];
        if sets_seen && !sel.read_only {
            let unseen: Vec<u32> = indices
                .iter()
                .map(|i| &sel.msgs[*i])
                .filter(|m| !m.has_flag("\\Seen"))
                .map(|m| m.imap_uid)
                .collect();
            let seen = ["\\Seen".to_string()];
            let stored = store.store_flags(
                &user,
                &sel.name,
                sel.uid_validity,
                &unseen,
                FlagChange::Add,
                &seen,
            );
            for (uid, flags) in stored {
                if let Some(i) = sel.index_of_uid(uid) {
                    sel.msgs[i].flags = flags;
                    seen_now[i] = true;
                }
            }
        }
        for idx in indices {
            put_fetch(out, sel, idx, &items, faults, seen_now[idx]);
        }
        done("FETCH completed")
    }

    fn store(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>, uid_mode: bool) -> PResult<Done> {
        p.sp()?;
        let set = p.seq_set()?;
        p.sp()?;
        let item = p.take_while(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
        let (change, silent) = match item.to_ascii_uppercase().as_slice() {
            b"FLAGS" => (FlagChange::Replace, false),
            b"FLAGS.SILENT" => (FlagChange::Replace, true),
            b"+FLAGS" => (FlagChange::Add, false),
            b"+FLAGS.SILENT" => (FlagChange::Add, true),
            b"-FLAGS" => (FlagChange::Remove, false),
            b"-FLAGS.SILENT" => (FlagChange::Remove, true),
            _ => return bad("syntax error: unknown STORE item"),
        };
        p.sp()?;
        let flags = if p.peek() == Some(b'(') {
            p.flag_list()?
        } else {
            let mut flags = vec![p.flag()?];
            while p.eat(b' ') {
                flags.push(p.flag()?);
            }
            flags
        };
        p.end()?;
        let user = self.user()?;
        let store = Arc::clone(&self.shared.store);
        let report_uid = uid_mode && !self.has(Fault::ImapUidStoreNoUid);
        let sel = self.selected_mut()?;
        if sel.read_only {
            return no("mailbox is read-only");
        }
        let indices = if uid_mode {
            sel.by_uid(&set)
        } else {
            sel.by_seq(&set)?
        };
        let uids: Vec<u32> = indices.iter().map(|i| sel.msgs[*i].imap_uid).collect();
        let stored = store.store_flags(&user, &sel.name, sel.uid_validity, &uids, change, &flags);
        let mut changed = Vec::new();
        for (uid, flags) in stored {
            if let Some(idx) = sel.index_of_uid(uid) {
                sel.msgs[idx].flags = flags;
                changed.push(idx);
            }
        }
        sel.announce_keywords(out);
        if !silent {
            for idx in changed {
                put!(out, "* {} FETCH (FLAGS ", idx + 1);
                put_flags(out, sel.flags_of(idx));
                if report_uid {
                    put!(out, " UID {}", sel.msgs[idx].imap_uid);
                }
                out.extend_from_slice(b")\r\n");
            }
        }
        done("STORE completed")
    }

    fn copy(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>, uid_mode: bool, moving: bool) -> PResult<Done> {
        p.sp()?;
        let set = p.seq_set()?;
        p.sp()?;
        let target = p.mailbox()?;
        p.end()?;
        let user = self.user()?;
        let store = Arc::clone(&self.shared.store);
        let word = if moving { "MOVE" } else { "COPY" };
        let lost = !moving && self.has(Fault::ImapCopyLost);
        let announce = if moving && self.has(Fault::ImapMoveSilent) {
            Expunges::Silent
        } else {
            Expunges::Announce
        };
        let sel = self.selected_mut()?;
        if moving && sel.read_only {
            return no("mailbox is read-only");
        }
        let indices = if uid_mode {
            sel.by_uid(&set)
        } else {
            sel.by_seq(&set)?
        };
        let uids: Vec<u32> = indices.iter().map(|i| sel.msgs[*i].imap_uid).collect();
        if store.mailbox(&user, &target).is_none() {
            return Err(target_fail(MailboxError::NoSuchMailbox));
        }
        if lost {
            return done("COPY completed");
        }
        let (target_validity, pairs) = store
            .copy(&user, &sel.name, sel.uid_validity, &uids, &target)
            .map_err(target_fail)?;
        if pairs.is_empty() {
            return done(format!("{word} completed"));
        }
        let from: Vec<u32> = pairs.iter().map(|(f, _)| *f).collect();
        let to: Vec<u32> = pairs.iter().map(|(_, t)| *t).collect();
        let code = format!(
            "COPYUID {target_validity} {} {}",
            compact_set(&from),
            compact_set(&to)
        );
        if !moving {
            return done(format!("[{code}] COPY completed"));
        }
        store.remove(&user, &sel.name, sel.uid_validity, &from);
        // RFC 6851: COPYUID in an untagged OK before the EXPUNGEs.
        put!(out, "* OK [{code}] moved\r\n");
        sync_view(&store, &user, sel, out, announce);
        done("MOVE completed")
    }

    fn uid(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>) -> PResult<Done> {
        p.sp()?;
        match p.keyword()?.as_str() {
            "FETCH" => self.fetch(p, out, true),
            "STORE" => self.store(p, out, true),
            "SEARCH" => self.search(p, out, true),
            "COPY" => self.copy(p, out, true, false),
            "MOVE" => self.copy(p, out, true, true),
            "EXPUNGE" => {
                p.sp()?;
                let set = p.seq_set()?;
                p.end()?;
                self.expunge(out, Some(set))
            }
            _ => bad("unknown UID command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_with(faults: Faults, store: Arc<Store>) -> Session {
        let identity = super::super::TlsIdentity::generate(&["localhost"]).expect("identity");
        let shared = Shared {
            store,
            faults,
            tls: TlsAcceptor::from(identity.server_config()),
            idle_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            greeting_delay: Duration::ZERO,
            login_disabled_on_plaintext: false,
            greeting: ImapGreeting::Ok,
        };
        Session::new(Arc::new(shared), false)
    }

    fn session() -> Session {
        session_with(Faults::none(), Arc::new(Store::fixture()))
    }

    /// Runs one command (literals inline) and returns all responses.
    fn run(s: &mut Session, cmd: &str) -> String {
        let mut out = Vec::new();
        s.handle(cmd.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn logged_in() -> Session {
        let mut s = session();
        assert!(run(&mut s, "a LOGIN alice alice-demo-pw").starts_with("a OK [CAPABILITY IMAP4rev1 "));
        s
    }

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_announcement(b"a LOGIN {5}\r\n"), Some((5, true)));
        assert_eq!(literal_announcement(b"a LOGIN {5+}\n"), Some((5, false)));
        assert_eq!(
            literal_announcement(b"a APPEND x {99999999999999999999999}\r\n"),
            Some((u64::MAX, true))
        );
        assert_eq!(literal_announcement(b"a LOGIN \"{5}\"\r\n"), None);
        assert_eq!(literal_announcement(b"a LOGIN {}\r\n"), None);
        assert_eq!(literal_announcement(b"a LOGIN {x}\r\n"), None);
        assert!(is_append(b"A1 append INBOX {3}\r\n"));
        assert!(!is_append(b"A1 LOGIN append {3}\r\n"));
        assert_eq!(tag_of(b"A1 NOOP").as_deref(), Some("A1"));
        assert_eq!(tag_of(b"+ NOOP"), None);
        assert_eq!(tag_of(b"* NOOP"), None);
    }

    #[test]
    fn parser_strings_sets_and_flags() {
        let mut p = Parser::new(b"atom \"q \\\"x\\\\\" {3}\r\nl\0t NIL");
        assert_eq!(p.astring().ok().as_deref(), Some(&b"atom"[..]));
        p.sp().ok();
        assert_eq!(p.astring().ok().as_deref(), Some(&b"q \"x\\"[..]));
        p.sp().ok();
        assert_eq!(p.astring().ok().as_deref(), Some(&b"l\0t"[..]));
        p.sp().ok();
        assert_eq!(p.nstring().ok(), Some(None));
        assert!(p.end().is_ok());
        assert!(Parser::new(b"{10}\r\nshort").literal().is_err());
        assert!(Parser::new(b"\"open").quoted().is_err());

        let set = Parser::new(b"1:3,7,*,9:5").seq_set().expect("set");
        assert_eq!(set.ranges(20), vec![(1, 3), (5, 9), (20, 20)]);
        assert!(set.contains(20, 20) && set.contains(6, 20) && !set.contains(4, 20));
        assert!(Parser::new(b"0").seq_set().is_err());
        assert!(Parser::new(b"1:").seq_set().is_err());
        assert!(Parser::new(b"99999999999").seq_set().is_err());

        let flags = Parser::new(b"(\\seen \\DELETED $Junk)")
            .flag_list()
            .expect("flags");
        assert_eq!(flags, vec!["\\Seen", "\\Deleted", "$Junk"]);
        assert!(Parser::new(b"(\\Recent)").flag_list().is_err());
        assert!(Parser::new(b"(\\Bogus)").flag_list().is_err());
        assert_eq!(other_tag("A001"), "A002");
        assert_eq!(other_tag("abc"), "abcx");
        assert_eq!(compact_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }

    #[test]
    fn dates_round_trip() {
        for day in [-800_000, -1, 0, 1, 19_000, 20_094, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        let fixture = super::super::fixture::received();
        assert_eq!(format_date_time(fixture[0], 0), " 6-Jan-2025 09:00:00 +0000");
        for (data, at) in super::super::fixture::messages().iter().zip(fixture) {
            let date = header_value(split_header(data).0, "Date").expect("Date");
            assert_eq!(rfc5322_day(&date), Some(at.div_euclid(86_400)));
        }
        let (secs, zone) = parse_date_time(b"17-Jul-1996 02:44:25 -0700").expect("date-time");
        assert_eq!(zone, -420);
        assert_eq!(format_date_time(secs, zone), "17-Jul-1996 02:44:25 -0700");
        assert_eq!(
            parse_date_time(b" 6-Jan-2025 09:00:00 +0000"),
            Some((fixture[0], 0))
        );
        assert_eq!(parse_date_time(b"31-Feb-2025 09:00:00 +0000"), None);
        assert_eq!(parse_date_time(b"6-Jan-2025 25:00:00 +0000"), None);
        assert_eq!(parse_date(b"1-feb-2024"), day_number(2024, 2, 1));
        assert_eq!(parse_date(b"1-Feb"), None);
        assert_eq!(rfc5322_day(b"6 Jan 25 09:00 GMT"), day_number(2025, 1, 6));
    }

    #[test]
    fn list_wildcards() {
        assert!(wildcard_match(b"*", b"a/b/c"));
        assert!(wildcard_match(b"%", b"abc"));
        assert!(!wildcard_match(b"%", b"a/b"));
        assert!(wildcard_match(b"a/%", b"a/b"));
        assert!(!wildcard_match(b"a/%", b"a/b/c"));
        assert!(wildcard_match(b"a*c", b"a/b/c"));
        assert!(!wildcard_match(b"a%c", b"a/b/c"));
        assert!(wildcard_match(b"", b""));
        assert!(!wildcard_match(b"x", b""));
        assert!(list_matches(b"inbox", "INBOX"));
        assert!(list_matches(b"In%", "INBOX"));
        assert!(!list_matches(b"inbox/%", "INBOX"));
    }

    const MULTIPART: &[u8] = b"From: \"Smith, Jo\" <jo@example.com>, bare@example.org (Bare Name)\r\n\
To: team: a@x.org, B <b@y.org>;, <@r1,@r2:c@z.org>\r\n\
Subject: multi\r\n\
\x20part\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\
\r\n\
preamble\r\n\
--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
hello\r\n\
--XX\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: inner\r\n\
\r\n\
inner body\r\n\
--XX\r\n\
Content-Type: application/octet-stream; name=x.bin\r\n\
Content-Disposition: attachment; filename=\"x.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAEC\r\n\
--XX--\r\n\
epilogue\r\n";

    #[test]
    fn mime_structure_and_sections() {
        let root = parse_message(MULTIPART);
        let Kind::Multipart(parts) = &root.kind else {
            panic!("multipart expected");
        };
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].body, b"hello");
        assert_eq!(
            resolve_part(&root, &[2, 1]).map(|e| e.body),
            Some(&b"inner body"[..])
        );
        assert_eq!(resolve_part(&root, &[3]).map(|e| e.body), Some(&b"AAEC"[..]));
        assert!(resolve_part(&root, &[4]).is_none());
        assert!(resolve_part(&root, &[1, 1]).is_none());
        let mut out = Vec::new();
        put_structure(&mut out, &root, true, true);
        let text = String::from_utf8(out).expect("ascii");
        assert!(
            text.starts_with(
                "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 5 0 NIL NIL NIL NIL)"
            ),
            "{text}"
        );
        assert!(text.contains("(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 28 (NIL \"inner\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 10 0 NIL NIL NIL NIL) 2"), "{text}");
        assert!(
            text.contains("\"BASE64\" 4 NIL (\"ATTACHMENT\" (\"FILENAME\" \"x.bin\")) NIL NIL)"),
            "{text}"
        );
        assert!(
            text.ends_with(" \"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL)"),
            "{text}"
        );

        let header_section = Section {
            parts: vec![2],
            text: Some(SectionText::Header),
        };
        assert_eq!(
            section_bytes(MULTIPART, Some(&root), &header_section).as_deref(),
            Some(&b"Subject: inner\r\n\r\n"[..])
        );
        let fields = Section {
            parts: Vec::new(),
            text: Some(SectionText::Fields {
                not: false,
                names: vec![b"subject".to_vec()],
            }),
        };
        assert_eq!(
            section_bytes(MULTIPART, Some(&root), &fields).as_deref(),
            Some(&b"Subject: multi\r\n part\r\n\r\n"[..])
        );
        assert_eq!(fields.label(), b"HEADER.FIELDS (subject)");
    }

    #[test]
    fn envelope_addresses() {
        let mut out = Vec::new();
        put_envelope(&mut out, split_header(MULTIPART).0);
        let text = String::from_utf8(out).expect("ascii");
        assert_eq!(
            text,
            "(NIL \"multi part\" ((\"Smith, Jo\" NIL \"jo\" \"example.com\")(\"Bare Name\" NIL \"bare\" \"example.org\")) \
             ((\"Smith, Jo\" NIL \"jo\" \"example.com\")(\"Bare Name\" NIL \"bare\" \"example.org\")) \
             ((\"Smith, Jo\" NIL \"jo\" \"example.com\")(\"Bare Name\" NIL \"bare\" \"example.org\")) \
             ((NIL NIL \"team\" NIL)(NIL NIL \"a\" \"x.org\")(\"B\" NIL \"b\" \"y.org\")(NIL NIL NIL NIL)\
             (NIL \"@r1,@r2\" \"c\" \"z.org\")) NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn state_rules() {
        let mut s = session();
        assert_eq!(
            run(&mut s, "a1 SELECT INBOX"),
            "a1 BAD command not valid before login; log in first\r\n"
        );
        assert!(run(&mut s, "a2 FETCH 1 FLAGS").starts_with("a2 BAD"));
        assert_eq!(run(&mut s, "a3 FROB"), "a3 BAD unknown command\r\n");
        assert_eq!(run(&mut s, "+x NOOP"), "* BAD invalid or missing command tag\r\n");
        assert!(run(&mut s, "a4 LOGIN alice wrong").starts_with("a4 NO [AUTHENTICATIONFAILED]"));
        assert!(run(&mut s, "a5 LOGIN {5}\r\nalice \"alice-demo-pw\"").starts_with("a5 OK"));
        assert!(run(&mut s, "a6 LOGIN alice alice-demo-pw").starts_with("a6 BAD"));
        assert!(run(&mut s, "a7 STARTTLS").starts_with("a7 BAD"));
        assert_eq!(run(&mut s, "a8 FETCH 1 FLAGS"), "a8 BAD no mailbox selected\r\n");
        assert!(run(&mut s, "a9 ENABLE IMAP4rev2").starts_with("* ENABLED\r\na9 OK"));
        assert!(run(&mut s, "b1 NAMESPACE").starts_with("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"));
        assert!(run(&mut s, "b2 ID (\"name\" \"test\")").starts_with("* ID (\"name\" \"mailcheck\""));
        let logout = run(&mut s, "b3 LOGOUT");
        assert_eq!(
            logout,
            "* BYE mailcheck IMAP server logging out\r\nb3 OK LOGOUT completed\r\n"
        );
    }

    #[test]
    fn select_fetch_store_search_expunge() {
        let mut s = logged_in();
        let select = run(&mut s, "s SELECT inbox");
        assert!(
            select.contains("* 4 EXISTS\r\n* 4 RECENT\r\n* OK [UNSEEN 1]"),
            "{select}"
        );
        assert!(select.contains("* OK [UIDVALIDITY "), "{select}");
        assert!(select.contains("* OK [UIDNEXT 5]"), "{select}");
        assert!(
            select.ends_with("s OK [READ-WRITE] SELECT completed\r\n"),
            "{select}"
        );

        let fetch = run(
            &mut s,
            "f FETCH 1 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])",
        );
        let size = super::super::fixture::plain().len();
        assert_eq!(
            fetch,
            format!(
                "* 1 FETCH (UID 1 RFC822.SIZE {size} FLAGS (\\Recent) BODY[HEADER.FIELDS (Subject)] {{20}}\r\n\
                 Subject: Welcome\r\n\r\n)\r\nf OK FETCH completed\r\n"
            )
        );
        let fetch = run(&mut s, "f FETCH 1 BODY[TEXT]<0.5>");
        assert_eq!(
            fetch,
            "* 1 FETCH (BODY[TEXT]<0> {5}\r\nHello FLAGS (\\Seen \\Recent))\r\nf OK FETCH completed\r\n"
        );
        let fetch = run(&mut s, "f FETCH 1 INTERNALDATE");
        assert!(
            fetch.starts_with("* 1 FETCH (INTERNALDATE \" 6-Jan-2025 09:00:00 +0000\")"),
            "{fetch}"
        );
        assert!(run(&mut s, "f FETCH 5 FLAGS").starts_with("f BAD"));
        assert!(run(&mut s, "f FETCH 1 BOGUS").starts_with("f BAD"));

        let store = run(&mut s, "t STORE 2:3 +FLAGS (\\Deleted $Work)");
        assert_eq!(
            store,
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n\
             * 2 FETCH (FLAGS (\\Deleted $Work \\Recent))\r\n\
             * 3 FETCH (FLAGS (\\Deleted $Work \\Recent))\r\nt OK STORE completed\r\n"
        );
        assert_eq!(
            run(&mut s, "t UID STORE 3 -FLAGS.SILENT ($work)"),
            "t OK STORE completed\r\n"
        );
        assert_eq!(
            run(&mut s, "q SEARCH DELETED"),
            "* SEARCH 2 3\r\nq OK SEARCH completed\r\n"
        );
        assert_eq!(
            run(&mut s, "q SEARCH KEYWORD $Work"),
            "* SEARCH 2\r\nq OK SEARCH completed\r\n"
        );
        assert_eq!(
            run(&mut s, "q UID SEARCH OR SUBJECT dots LARGER 1000000"),
            "* SEARCH 2 3\r\nq OK SEARCH completed\r\n"
        );
        assert_eq!(
            run(&mut s, "q SEARCH SEEN NOT BODY \"nothing like this\""),
            "* SEARCH 1\r\nq OK SEARCH completed\r\n"
        );
        assert_eq!(
            run(
                &mut s,
                "q SEARCH SINCE 6-Jan-2025 BEFORE 7-Jan-2025 SENTON 6-Jan-2025 UID 2:*"
            ),
            "* SEARCH 2 3 4\r\nq OK SEARCH completed\r\n"
        );
        assert!(run(&mut s, "q SEARCH CHARSET KOI8-R ALL").starts_with("q NO [BADCHARSET"));
        let expunge = run(&mut s, "x EXPUNGE");
        assert_eq!(
            expunge,
            "* 3 EXPUNGE\r\n* 2 EXPUNGE\r\nx OK EXPUNGE completed\r\n"
        );
        let uids = run(&mut s, "u UID FETCH 1:* UID");
        assert_eq!(
            uids,
            "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 4)\r\nu OK FETCH completed\r\n"
        );
    }

    #[test]
    fn mailboxes_append_copy_move() {
        let mut s = logged_in();
        assert_eq!(run(&mut s, "c CREATE Archive/2025"), "c OK CREATE completed\r\n");
        assert!(run(&mut s, "c CREATE archive/2025").starts_with("c OK"));
        assert!(run(&mut s, "c CREATE Archive").starts_with("c NO [ALREADYEXISTS]"));
        let list = run(&mut s, "l LIST \"\" *");
        assert_eq!(
            list,
            "* LIST (\\HasNoChildren) \"/\" INBOX\r\n* LIST (\\HasChildren) \"/\" Archive\r\n\
             * LIST (\\HasNoChildren) \"/\" Archive/2025\r\n* LIST (\\HasChildren) \"/\" archive\r\n\
             * LIST (\\HasNoChildren) \"/\" archive/2025\r\nl OK LIST completed\r\n"
        );
        assert_eq!(
            run(&mut s, "l LIST Archive/ %"),
            "* LIST (\\HasNoChildren) \"/\" Archive/2025\r\nl OK LIST completed\r\n"
        );
        assert_eq!(
            run(&mut s, "l LIST \"\" \"\""),
            "* LIST (\\Noselect) \"/\" \"\"\r\nl OK LIST completed\r\n"
        );
        assert!(run(&mut s, "d DELETE Archive").starts_with("d NO [HASCHILDREN]"));
        assert!(run(&mut s, "d DELETE nope").starts_with("d NO [NONEXISTENT]"));
        assert!(run(&mut s, "a APPEND nope {3}\r\nx\r\n").starts_with("a NO [TRYCREATE]"));
        let append = run(
            &mut s,
            "a APPEND Archive (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {8}\r\nA: b\r\n\r\n",
        );
        assert!(append.starts_with("a OK [APPENDUID "), "{append}");
        assert!(append.ends_with(" 1] APPEND completed\r\n"), "{append}");
        assert_eq!(
            run(&mut s, "st STATUS Archive (MESSAGES UNSEEN UIDNEXT RECENT)"),
            "* STATUS Archive (MESSAGES 1 UNSEEN 0 UIDNEXT 2 RECENT 1)\r\nst OK STATUS completed\r\n"
        );
        assert!(run(&mut s, "sub SUBSCRIBE Archive").starts_with("sub OK"));
        assert_eq!(
            run(&mut s, "l LSUB \"\" *"),
            "* LSUB () \"/\" INBOX\r\n* LSUB () \"/\" Archive\r\nl OK LSUB completed\r\n"
        );

        run(&mut s, "s SELECT INBOX");
        assert!(run(&mut s, "c COPY 1 nope").starts_with("c NO [TRYCREATE]"));
        let copy = run(&mut s, "c COPY 1:2 Archive");
        assert!(
            copy.starts_with("c OK [COPYUID ") && copy.contains(" 1:2 2:3] COPY completed"),
            "{copy}"
        );
        let moved = run(&mut s, "m UID MOVE 2,4 Archive");
        assert!(moved.starts_with("* OK [COPYUID "), "{moved}");
        assert!(
            moved.contains(" 2,4 4:5] moved\r\n* 4 EXPUNGE\r\n* 2 EXPUNGE\r\nm OK MOVE completed\r\n"),
            "{moved}"
        );
        let same = run(&mut s, "c COPY 1 INBOX");
        assert!(same.contains("* 3 EXISTS\r\n* 3 RECENT\r\n"), "{same}");
        assert!(run(&mut s, "r RENAME Archive Old").starts_with("r OK"));
        assert!(run(&mut s, "s EXAMINE Old/2025").contains("[READ-ONLY] EXAMINE completed"));
        assert_eq!(
            run(&mut s, "t STORE 1 +FLAGS \\Seen"),
            "t NO mailbox is read-only\r\n"
        );
        assert!(run(&mut s, "x EXPUNGE").starts_with("x NO"));
        assert_eq!(run(&mut s, "u UNSELECT"), "u OK UNSELECT completed\r\n");
        assert!(run(&mut s, "s SELECT INBOX").contains("* 3 EXISTS"));
        run(&mut s, "t STORE 1 +FLAGS (\\Deleted)");
        assert_eq!(run(&mut s, "c CLOSE"), "c OK CLOSE completed\r\n");
        assert!(run(&mut s, "s SELECT INBOX").contains("* 2 EXISTS"));
    }

    #[test]
    fn two_views_stay_in_step() {
        let store = Arc::new(Store::fixture());
        let mut a = session_with(Faults::none(), Arc::clone(&store));
        let mut b = session_with(Faults::none(), Arc::clone(&store));
        for s in [&mut a, &mut b] {
            run(s, "l LOGIN alice alice-demo-pw");
            run(s, "s SELECT INBOX");
        }
        run(&mut a, "t STORE 2 +FLAGS.SILENT (\\Flagged \\Deleted)");
        assert_eq!(
            run(&mut b, "n NOOP"),
            "* 2 FETCH (FLAGS (\\Flagged \\Deleted))\r\nn OK NOOP completed\r\n"
        );
        run(&mut a, "x EXPUNGE");
        // No EXPUNGE while FETCH runs: message 2 is still there for b.
        let fetch = run(&mut b, "f FETCH 2 UID");
        assert_eq!(fetch, "* 2 FETCH (UID 2)\r\nf OK FETCH completed\r\n");
        assert_eq!(run(&mut b, "n NOOP"), "* 2 EXPUNGE\r\nn OK NOOP completed\r\n");
        store
            .add_message("alice", b"Subject: new\r\n\r\nnew\r\n".to_vec())
            .expect("add");
        // b claims the new message's \Recent; a keeps the ones it claimed
        // when it selected first.
        assert_eq!(
            run(&mut b, "n NOOP"),
            "* 4 EXISTS\r\n* 1 RECENT\r\nn OK NOOP completed\r\n"
        );
        assert_eq!(
            run(&mut a, "n NOOP"),
            "* 4 EXISTS\r\n* 3 RECENT\r\nn OK NOOP completed\r\n"
        );
        // A POP3-style removal by another party shows up as an expunge.
        let first = store.messages("alice").expect("alice")[0].uid.clone();
        store.delete_messages("alice", &[&first]);
        assert_eq!(run(&mut a, "n NOOP"), "* 1 EXPUNGE\r\nn OK NOOP completed\r\n");
    }

    #[test]
    fn faults_change_the_responses() {
        let store = || Arc::new(Store::fixture());
        let mut s = session_with(Fault::ImapWrongTag.into(), store());
        assert_eq!(run(&mut s, "a1 NOOP"), "a2 OK NOOP completed\r\n");
        let mut s = session_with(Fault::ImapBadAsNo.into(), store());
        assert_eq!(run(&mut s, "a1 FROB"), "a1 NO unknown command\r\n");
        let mut s = session_with(Fault::ImapOkBeforeLogin.into(), store());
        assert!(run(&mut s, "a1 SELECT INBOX").ends_with("a1 OK [READ-WRITE] SELECT completed\r\n"));
        let mut s = session_with(Fault::ImapNoByeOnLogout.into(), store());
        assert_eq!(run(&mut s, "a1 LOGOUT"), "a1 OK LOGOUT completed\r\n");
        for fault in [
            Fault::ImapNoCompletion,
            Fault::ImapLiteralMiscount,
            Fault::ImapSelectNoUidvalidity,
            Fault::ImapExamineWritable,
            Fault::ImapPeekSetsSeen,
            Fault::ImapUidsDescending,
            Fault::ImapExpungeSilent,
        ] {
            let script = [
                "l LOGIN alice alice-demo-pw",
                "s EXAMINE INBOX",
                "f FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (Subject)])",
                "t STORE 1 +FLAGS (\\Deleted)",
                "x EXPUNGE",
                "s SELECT INBOX",
                "f FETCH 1 BODY.PEEK[TEXT]",
                "f FETCH 1 FLAGS",
                "t STORE 1 +FLAGS (\\Deleted)",
                "x EXPUNGE",
            ];
            let mut good = session();
            let mut bad = session_with(fault.into(), store());
            let transcript = |s: &mut Session| script.iter().map(|c| run(s, c)).collect::<Vec<_>>().concat();
            assert_ne!(transcript(&mut good), transcript(&mut bad), "{fault}");
        }
    }
}
