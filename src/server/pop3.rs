//! The POP3 session: accept loop, command parsing, the AUTHORIZATION /
//! TRANSACTION / UPDATE state machine, replies and byte-stuffing, with the
//! [`Fault`] switches applied where each rule is enforced.
//!
//! Command handling ([`Session::handle`]) is synchronous and writes replies
//! into a buffer, so it can be tested without sockets; the async shell
//! around it only reads lines, flushes one write per reply and enforces
//! timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::faults::{Fault, Faults};
use super::store::{Message, Store};

/// RFC 2449: a command line is at most 255 octets including CRLF.
const MAX_COMMAND: usize = 255;

/// How much of an over-long line is kept while looking for its end; the
/// rest is discarded so a client cannot make the server buffer unboundedly.
const MAX_BUFFERED_LINE: usize = 1024;

/// RFC 2449: responses are at most 512 octets; `long-reply` pads past it.
const LONG_REPLY_OCTETS: usize = 600;

/// Dovecot's reply to USER/APOP with `disable_plaintext_auth`, word for word,
/// since clients are expected to recognise it.
const PLAINTEXT_REFUSED: &str =
    "[SYS/PERM] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";

/// Refusal of PASS/APOP under `login-disabled` unless the configuration
/// supplies its own text.
const LOGIN_DISABLED: &str = "[AUTH] Login failure or POP3 disabled";

/// Refusal of a wrong PASS/APOP unless the configuration supplies its own text.
const BAD_CREDENTIALS: &str = "[AUTH] invalid user name or password";

/// Time allowed for a graceful close (TLS close_notify, FIN).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Output is written out once it grows past this, and its buffer is shrunk
/// back afterwards so a RETR of a large message doesn't pin memory.
const OUT_CHUNK: usize = 64 * 1024;

/// Configuration every session of a server shares.
pub(super) struct Shared {
    pub store: Arc<Store>,
    pub faults: Faults,
    pub tls: TlsAcceptor,
    pub apop: bool,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub greeting_delay: Duration,
    pub auth_failure_text: Option<String>,
}

/// One connection from accept to close. Every failure just ends it.
pub(super) async fn serve_connection(tcp: TcpStream, shared: Arc<Shared>, implicit_tls: bool) {
    if shared.faults.contains(Fault::CloseOnAccept) {
        close(tcp).await;
        return;
    }
    // Replies are already written whole; Nagle would only add latency.
    tcp.set_nodelay(true).ok();
    let mut session = Session::new(Arc::clone(&shared), implicit_tls);
    if implicit_tls {
        let Some(tls) = handshake(tcp, &shared).await else {
            return;
        };
        let (_, tls) = session.run(tls, true).await;
        session.finish();
        close(tls).await;
        return;
    }
    let (next, tcp) = session.run(tcp, true).await;
    match next {
        Next::Close => {
            session.finish();
            close(tcp).await;
        }
        Next::StartTls => {
            let Some(tls) = handshake(tcp, &shared).await else {
                session.finish();
                return;
            };
            session.tls_active = true;
            let (_, tls) = session.run(tls, false).await;
            session.finish();
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

/// What one command asks the session loop to do after its reply is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Continue,
    Close,
    StartTls,
    /// Stop answering: swallow input until the client goes away.
    Stall,
}

/// A line read from the client.
enum Line {
    Command,
    TooLong,
    Closed,
}

/// The byte stream of one session (plain or TLS) plus its output buffer.
struct Io<S> {
    reader: BufReader<S>,
    line: Vec<u8>,
    out: Vec<u8>,
    idle: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn new(stream: S, idle: Duration) -> Self {
        Io {
            reader: BufReader::new(stream),
            line: Vec::with_capacity(256),
            out: Vec::with_capacity(4096),
            idle,
        }
    }

    /// Reads one LF-terminated line into `self.line`; the whole line must
    /// arrive within the idle timeout. EOF, errors and timeouts all count as
    /// the client being gone (a partial last line is dropped).
    async fn read_line(&mut self) -> Line {
        let reader = &mut self.reader;
        let line = &mut self.line;
        line.clear();
        let read = async move {
            let mut too_long = false;
            loop {
                let available = reader.fill_buf().await?;
                if available.is_empty() {
                    return Ok::<_, std::io::Error>(Line::Closed);
                }
                let (take, done) = match available.iter().position(|b| *b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                if !too_long {
                    if line.len() + take > MAX_BUFFERED_LINE {
                        too_long = true;
                        line.clear();
                    } else {
                        line.extend_from_slice(&available[..take]);
                    }
                }
                reader.consume(take);
                if done {
                    return Ok(if too_long { Line::TooLong } else { Line::Command });
                }
            }
        };
        match timeout(self.idle, read).await {
            Ok(Ok(line)) => line,
            _ => Line::Closed,
        }
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
        if self.out.capacity() > OUT_CHUNK {
            self.out.shrink_to(4096);
        }
        sent
    }

    /// Reads and drops input until EOF, an error or the idle timeout: the
    /// stalled / silent server faults keep the connection open this way.
    async fn swallow_until_closed(&mut self) {
        loop {
            match timeout(self.idle, self.reader.fill_buf()).await {
                Ok(Ok(buf)) if !buf.is_empty() => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
                _ => return,
            }
        }
    }
}

/// The messages a session works on: a snapshot taken at login, with the
/// session's deletion marks.
struct Maildrop {
    user: String,
    messages: Vec<Message>,
    deleted: Vec<bool>,
}

impl Maildrop {
    fn load(store: &Store, user: &str) -> Option<Self> {
        let messages = store.messages(user)?;
        Some(Maildrop {
            user: user.to_string(),
            deleted: vec![false; messages.len()],
            messages,
        })
    }

    /// Commits deletions by UID, so a concurrent session that already
    /// removed or renumbered messages cannot make us delete the wrong one.
    fn commit(&self, store: &Store) {
        let uids: Vec<&str> = self
            .messages
            .iter()
            .zip(&self.deleted)
            .filter(|(_, deleted)| **deleted)
            .map(|(m, _)| m.uid.as_str())
            .collect();
        if !uids.is_empty() {
            store.delete_messages(&self.user, &uids);
        }
    }
}

enum State {
    Authorization {
        /// Name from an accepted USER, waiting for PASS.
        user: Option<String>,
        /// Maildrop served before login under `commands-before-login`.
        preview: Option<Maildrop>,
    },
    Transaction(Maildrop),
    /// After QUIT: nothing left to do or commit.
    Done,
}

/// Greeting timestamps must be unique per session (APOP replay protection);
/// nanoseconds alone could collide, so they are forced to increase.
fn unique_nanos() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.wrapping_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Lowercase hex MD5 of timestamp + password, as RFC 1939 APOP defines.
pub(super) fn apop_digest(timestamp: &str, password: &str) -> String {
    let digest = Md5::new()
        .chain_update(timestamp.as_bytes())
        .chain_update(password.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends `data` as multi-line response content: every line ends in `eol`
/// (stored CRLF or LF is normalised) and, when `stuff`, a line starting with
/// "." gets another "." in front (RFC 1939 byte-stuffing).
pub(super) fn write_content(out: &mut Vec<u8>, data: &[u8], stuff: bool, eol: &[u8]) {
    out.reserve(data.len() + data.len() / 32 + 16);
    for line in data.split_inclusive(|b| *b == b'\n') {
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if stuff && content.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(content);
        out.extend_from_slice(eol);
    }
}

/// The part of a message TOP sends: the headers, the blank line after them
/// and the first `lines` body lines. A message without a blank line is all
/// headers and is returned whole.
pub(super) fn top_slice(data: &[u8], lines: usize) -> &[u8] {
    let mut pos = 0;
    let mut body_start = None;
    for line in data.split_inclusive(|b| *b == b'\n') {
        pos += line.len();
        if line == b"\r\n" || line == b"\n" {
            body_start = Some(pos);
            break;
        }
    }
    let Some(mut end) = body_start else {
        return data;
    };
    for line in data[end..].split_inclusive(|b| *b == b'\n').take(lines) {
        end += line.len();
    }
    &data[..end]
}

/// A message number: decimal, from 1. Anything else is not a message.
fn parse_msg(arg: &str) -> Option<usize> {
    if arg.is_empty() || arg.len() > 9 || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    arg.parse().ok().filter(|n| *n >= 1)
}

/// A non-negative line count; huge values just mean "everything".
fn parse_count(arg: &str) -> Option<usize> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.parse().unwrap_or(usize::MAX))
}

const TRANSACTION_COMMANDS: &[&str] = &["STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"];

/// Every command this server knows (AUTH is known but unsupported), so
/// `unknown-ok` only affects truly unknown keywords.
const KNOWN_COMMANDS: &[&str] = &[
    "USER", "PASS", "APOP", "QUIT", "CAPA", "STLS", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET",
    "TOP", "UIDL",
];

pub(super) struct Session {
    shared: Arc<Shared>,
    faults: Faults,
    /// APOP timestamp from the greeting, when APOP is offered.
    timestamp: Option<String>,
    /// Per-session value that `unstable-uidl` mixes into UIDs.
    nonce: u64,
    tls_active: bool,
    /// STLS was answered under `stls-ignored-tls`: no second STLS.
    stls_faked: bool,
    state: State,
}

impl Session {
    fn new(shared: Arc<Shared>, tls_active: bool) -> Self {
        let nanos = unique_nanos();
        let timestamp = shared
            .apop
            .then(|| format!("<{}.{}@mailcheck.local>", std::process::id(), nanos));
        Session {
            faults: shared.faults,
            shared,
            timestamp,
            nonce: nanos,
            tls_active,
            stls_faked: false,
            state: State::Authorization {
                user: None,
                preview: None,
            },
        }
    }

    fn has(&self, fault: Fault) -> bool {
        self.faults.contains(fault)
    }

    fn eol(&self) -> &'static [u8] {
        if self.has(Fault::BareLf) {
            b"\n"
        } else {
            b"\r\n"
        }
    }

    /// Serves commands over `stream` until the client leaves, QUIT, or STLS;
    /// hands the stream back so the caller can finish before closing it, or
    /// upgrade it.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: S, greet: bool) -> (Next, S) {
        let mut io = Io::new(stream, self.shared.idle_timeout);
        let next = self.drive(&mut io, greet).await;
        // Bytes pipelined after STLS are dropped with the reader: they were
        // sent in plaintext and must not be executed after the upgrade.
        (next, io.reader.into_inner())
    }

    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut Io<S>, greet: bool) -> Next {
        if greet {
            // A sleeping session is still aborted by shutdown: no need to
            // watch for the client leaving meanwhile.
            if !self.shared.greeting_delay.is_zero() {
                tokio::time::sleep(self.shared.greeting_delay).await;
            }
            if self.has(Fault::NoGreeting) {
                io.swallow_until_closed().await;
                return Next::Close;
            }
            self.greeting(&mut io.out);
            if !io.flush().await {
                return Next::Close;
            }
        }
        loop {
            let action = match io.read_line().await {
                Line::Closed => return Next::Close,
                Line::TooLong => {
                    self.err(&mut io.out, "command line too long");
                    Action::Continue
                }
                Line::Command => {
                    let line = std::mem::take(&mut io.line);
                    let action = self.handle(&line, &mut io.out);
                    io.line = line;
                    action
                }
            };
            if !io.flush().await {
                return Next::Close;
            }
            match action {
                Action::Continue => {}
                Action::Close => return Next::Close,
                Action::StartTls => return Next::StartTls,
                Action::Stall => {
                    io.swallow_until_closed().await;
                    return Next::Close;
                }
            }
        }
    }

    /// End of session without (or after) QUIT: deletions are dropped, unless
    /// `delete-without-quit` says to commit them anyway.
    fn finish(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Done);
        if !self.has(Fault::DeleteWithoutQuit) {
            return;
        }
        match state {
            State::Transaction(drop)
            | State::Authorization {
                preview: Some(drop), ..
            } => drop.commit(&self.shared.store),
            _ => {}
        }
    }

    fn status(&self, out: &mut Vec<u8>, ok: bool, text: &str) {
        let indicator: &[u8] = match (ok, self.has(Fault::LowercaseStatus)) {
            (true, false) => b"+OK",
            (true, true) => b"+ok",
            (false, false) => b"-ERR",
            (false, true) => b"-err",
        };
        out.extend_from_slice(indicator);
        if !text.is_empty() {
            out.push(b' ');
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(self.eol());
    }

    fn ok(&self, out: &mut Vec<u8>, text: &str) {
        self.status(out, true, text);
    }

    fn err(&self, out: &mut Vec<u8>, text: &str) {
        self.status(out, false, text);
    }

    fn line(&self, out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(self.eol());
    }

    fn terminator(&self, out: &mut Vec<u8>) {
        if !self.has(Fault::MissingTerminator) {
            out.push(b'.');
            out.extend_from_slice(self.eol());
        }
    }

    fn greeting(&self, out: &mut Vec<u8>) {
        let mut text = String::from("mailcheck POP3 ready");
        if let Some(ts) = &self.timestamp {
            text.push(' ');
            text.push_str(ts);
        }
        if self.has(Fault::LongReply) {
            // "+OK " + text + eol must come to exactly LONG_REPLY_OCTETS.
            let target = LONG_REPLY_OCTETS - 4 - self.eol().len();
            text.push(' ');
            while text.len() < target {
                text.push('x');
            }
        }
        self.ok(out, &text);
    }

    /// Handles one command line (with its line ending) and appends the
    /// reply to `out`.
    fn handle(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Action {
        if raw.len() > MAX_COMMAND {
            self.err(out, "command line too long");
            return Action::Continue;
        }
        let line = raw
            .strip_suffix(b"\r\n")
            .or_else(|| raw.strip_suffix(b"\n"))
            .unwrap_or(raw);
        let Ok(line) = std::str::from_utf8(line) else {
            self.err(out, "invalid command");
            return Action::Continue;
        };
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        let command = keyword.to_ascii_uppercase();
        let args: Vec<&str> = rest.split_ascii_whitespace().collect();

        if !KNOWN_COMMANDS.contains(&command.as_str()) {
            if self.has(Fault::UnknownOk) {
                self.ok(out, "");
            } else {
                self.err(out, "unknown command");
            }
            return Action::Continue;
        }
        match command.as_str() {
            "CAPA" => return self.capa(out, &args),
            "AUTH" => {
                self.err(out, "SASL authentication is not supported");
                return Action::Continue;
            }
            _ => {}
        }

        match std::mem::replace(&mut self.state, State::Done) {
            State::Authorization { user, preview } => {
                self.authorization(&command, rest, &args, user, preview, out)
            }
            State::Transaction(mut drop) => {
                let action = match command.as_str() {
                    "QUIT" => {
                        if !self.has(Fault::QuitNoCommit) {
                            drop.commit(&self.shared.store);
                        }
                        self.ok(out, "mailcheck POP3 server signing off");
                        return Action::Close;
                    }
                    "USER" | "PASS" | "APOP" | "STLS" => {
                        self.err(out, "already authenticated");
                        Action::Continue
                    }
                    _ => self.transaction(&command, &args, &mut drop, out),
                };
                self.state = State::Transaction(drop);
                action
            }
            State::Done => {
                self.err(out, "session is over");
                Action::Close
            }
        }
    }

    fn authorization(
        &mut self,
        command: &str,
        rest: &str,
        args: &[&str],
        user: Option<String>,
        mut preview: Option<Maildrop>,
        out: &mut Vec<u8>,
    ) -> Action {
        // A pending USER survives unrelated commands; PASS/APOP consume it.
        let mut next_user = user.clone();
        let action = match command {
            "USER" | "APOP" if self.plaintext_refused() => {
                next_user = None;
                self.err(out, PLAINTEXT_REFUSED);
                Action::Continue
            }
            "USER" => {
                if let [name] = args {
                    next_user = Some(name.to_string());
                    self.ok(out, "send PASS");
                } else {
                    self.err(out, "USER needs exactly one argument");
                }
                Action::Continue
            }
            "PASS" => {
                next_user = None;
                // RFC 1939 lets the password contain spaces: take the rest
                // of the line verbatim. It is never echoed or logged.
                match user {
                    None => self.err(out, "USER first"),
                    Some(_) if rest.is_empty() => self.err(out, "PASS needs an argument"),
                    Some(name) => {
                        let accepted = self
                            .shared
                            .store
                            .account_password(&name)
                            .is_some_and(|pw| pw == rest || self.has(Fault::BadPassOk));
                        if accepted && !self.has(Fault::LoginDisabled) && self.login(&name, out) {
                            return Action::Continue;
                        }
                        self.err(out, self.auth_failure());
                    }
                }
                Action::Continue
            }
            "APOP" => {
                next_user = None;
                match (&self.timestamp, args) {
                    (None, _) => self.err(out, "APOP not supported"),
                    (Some(ts), [name, digest]) => {
                        let accepted = self.shared.store.account_password(name).is_some_and(|pw| {
                            digest.eq_ignore_ascii_case(&apop_digest(ts, &pw)) || self.has(Fault::BadPassOk)
                        });
                        let name = name.to_string();
                        if accepted && !self.has(Fault::LoginDisabled) && self.login(&name, out) {
                            return Action::Continue;
                        }
                        self.err(out, self.auth_failure());
                    }
                    (Some(_), _) => self.err(out, "APOP needs a name and a digest"),
                }
                Action::Continue
            }
            "QUIT" => {
                // No UPDATE state from AUTHORIZATION: nothing is committed.
                self.ok(out, "mailcheck POP3 server signing off");
                return Action::Close;
            }
            "STLS" => {
                if self.tls_active || self.stls_faked {
                    self.err(out, "TLS already active");
                    Action::Continue
                } else if !args.is_empty() {
                    self.err(out, "STLS takes no arguments");
                    Action::Continue
                } else if self.has(Fault::StlsIgnoredTls) {
                    self.stls_faked = true;
                    self.ok(out, "Begin TLS negotiation");
                    Action::Continue
                } else {
                    self.ok(out, "Begin TLS negotiation");
                    // The handshake replaces this state's stream; keep the
                    // authorization state (minus any half-done USER).
                    self.state = State::Authorization { user: None, preview };
                    return Action::StartTls;
                }
            }
            cmd if TRANSACTION_COMMANDS.contains(&cmd) => {
                if self.has(Fault::CommandsBeforeLogin) {
                    if preview.is_none() {
                        preview = self
                            .shared
                            .store
                            .first_user()
                            .and_then(|u| Maildrop::load(&self.shared.store, &u));
                    }
                    match preview.as_mut() {
                        Some(drop) => {
                            let action = self.transaction(cmd, args, drop, out);
                            self.state = State::Authorization {
                                user: next_user,
                                preview,
                            };
                            return action;
                        }
                        None => self.err(out, "no maildrop"),
                    }
                } else {
                    self.err(out, "not authenticated");
                }
                Action::Continue
            }
            _ => {
                self.err(out, "command not valid in this state");
                Action::Continue
            }
        };
        if !matches!(self.state, State::Transaction(_)) {
            self.state = State::Authorization {
                user: next_user,
                preview,
            };
        }
        action
    }

    /// Whether `plaintext-login-refused` applies: a faked STLS upgrade is
    /// still plaintext.
    fn plaintext_refused(&self) -> bool {
        self.has(Fault::PlaintextLoginRefused) && !self.tls_active
    }

    /// The text after `-ERR ` for a refused PASS/APOP.
    fn auth_failure(&self) -> &str {
        let default = if self.has(Fault::LoginDisabled) {
            LOGIN_DISABLED
        } else {
            BAD_CREDENTIALS
        };
        self.shared.auth_failure_text.as_deref().unwrap_or(default)
    }

    /// Enters TRANSACTION; false (and no reply) if the account vanished.
    fn login(&mut self, user: &str, out: &mut Vec<u8>) -> bool {
        let Some(drop) = Maildrop::load(&self.shared.store, user) else {
            return false;
        };
        let (count, octets) = self.totals(&drop);
        self.ok(out, &format!("maildrop has {count} messages ({octets} octets)"));
        self.state = State::Transaction(drop);
        true
    }

    fn capa(&self, out: &mut Vec<u8>, args: &[&str]) -> Action {
        if !args.is_empty() {
            self.err(out, "CAPA takes no arguments");
            return Action::Continue;
        }
        self.ok(out, "Capability list follows");
        if self.has(Fault::NoMultilineCapa) {
            return Action::Continue;
        }
        for cap in [
            "TOP",
            "UIDL",
            "USER",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "IMPLEMENTATION mailcheck-embedded",
        ] {
            // Like Dovecot: USER is only advertised where it would work.
            if cap == "USER" && self.plaintext_refused() {
                continue;
            }
            self.line(out, cap);
        }
        let can_upgrade =
            !self.tls_active && !self.stls_faked && matches!(self.state, State::Authorization { .. });
        if can_upgrade {
            self.line(out, "STLS");
        }
        self.terminator(out);
        Action::Continue
    }

    fn visible(&self, drop: &Maildrop, index: usize) -> bool {
        !drop.deleted[index] || self.has(Fault::DeletedVisible)
    }

    /// Size as LIST/STAT report it.
    fn listed_size(&self, message: &Message) -> usize {
        message.size() + usize::from(self.has(Fault::WrongListSize))
    }

    fn totals(&self, drop: &Maildrop) -> (usize, usize) {
        (0..drop.messages.len())
            .filter(|i| self.visible(drop, *i))
            .fold((0, 0), |(n, octets), i| {
                (n + 1, octets + self.listed_size(&drop.messages[i]))
            })
    }

    fn uid(&self, message: &Message) -> String {
        let mut uid = message.uid.clone();
        if self.has(Fault::UnstableUidl) {
            uid = format!("{uid}.{:x}", self.nonce);
        }
        if self.has(Fault::BadUidlFormat) {
            uid = format!("{uid:x<72} bad");
        }
        uid
    }

    /// Resolves a message-number argument to an index, replying -ERR and
    /// returning None when it is malformed, out of range or deleted.
    fn message_arg(&self, drop: &Maildrop, arg: &str, out: &mut Vec<u8>) -> Option<usize> {
        match parse_msg(arg) {
            None => self.err(out, "invalid message number"),
            Some(n) if n > drop.messages.len() => self.err(out, "no such message"),
            Some(n) if !self.visible(drop, n - 1) => self.err(out, &format!("message {n} already deleted")),
            Some(n) => return Some(n - 1),
        }
        None
    }

    fn transaction(&self, command: &str, args: &[&str], drop: &mut Maildrop, out: &mut Vec<u8>) -> Action {
        match (command, args) {
            ("STAT", []) => {
                let (count, octets) = self.totals(drop);
                self.ok(out, &format!("{count} {octets}"));
            }
            ("LIST", []) => {
                let (count, octets) = self.totals(drop);
                self.ok(out, &format!("{count} messages ({octets} octets)"));
                for (i, m) in drop.messages.iter().enumerate() {
                    if self.visible(drop, i) {
                        self.line(out, &format!("{} {}", i + 1, self.listed_size(m)));
                    }
                }
                self.terminator(out);
            }
            ("LIST", [n]) => {
                if let Some(i) = self.message_arg(drop, n, out) {
                    let shown = i + 1 + usize::from(self.has(Fault::ListNMismatch));
                    let size = self.listed_size(&drop.messages[i]);
                    self.ok(out, &format!("{shown} {size}"));
                }
            }
            ("UIDL", []) => {
                self.ok(out, "unique-id listing follows");
                for (i, m) in drop.messages.iter().enumerate() {
                    if self.visible(drop, i) {
                        self.line(out, &format!("{} {}", i + 1, self.uid(m)));
                    }
                }
                self.terminator(out);
            }
            ("UIDL", [n]) => {
                if let Some(i) = self.message_arg(drop, n, out) {
                    self.ok(out, &format!("{} {}", i + 1, self.uid(&drop.messages[i])));
                }
            }
            ("RETR", _) if self.has(Fault::StallRetr) => return Action::Stall,
            ("RETR", [n]) => {
                if let Some(i) = self.message_arg(drop, n, out) {
                    let message = &drop.messages[i];
                    self.ok(out, &format!("{} octets", message.size()));
                    let stuff = !self.has(Fault::NoByteStuffing);
                    write_content(out, &message.data, stuff, self.eol());
                    self.terminator(out);
                }
            }
            ("TOP", [n, lines]) => {
                let Some(lines) = parse_count(lines) else {
                    self.err(out, "invalid line count");
                    return Action::Continue;
                };
                if let Some(i) = self.message_arg(drop, n, out) {
                    let data = &drop.messages[i].data;
                    let part = if self.has(Fault::TopIgnoresLines) {
                        &data[..]
                    } else {
                        top_slice(data, lines)
                    };
                    self.ok(out, "top of message follows");
                    let stuff = !self.has(Fault::NoByteStuffing);
                    write_content(out, part, stuff, self.eol());
                    self.terminator(out);
                }
            }
            ("DELE", [n]) => {
                if let Some(i) = self.message_arg(drop, n, out) {
                    drop.deleted[i] = true;
                    self.ok(out, &format!("message {} deleted", i + 1));
                }
            }
            ("NOOP", []) => self.ok(out, ""),
            ("RSET", []) => {
                if !self.has(Fault::RsetIgnored) {
                    drop.deleted.iter_mut().for_each(|d| *d = false);
                }
                let (count, octets) = self.totals(drop);
                self.ok(out, &format!("maildrop has {count} messages ({octets} octets)"));
            }
            _ => self.err(out, "invalid arguments"),
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in wire.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn byte_stuffing_round_trips() {
        let data = super::super::fixture::dotted();
        let mut wire = Vec::new();
        write_content(&mut wire, &data, true, b"\r\n");
        assert!(wire.windows(11).any(|w| w == b"\r\n..hidden\r"));
        assert!(wire.windows(12).any(|w| w == b"\r\n...double\r"));
        assert!(wire.windows(6).any(|w| w == b"\r\n..\r\n"));
        assert!(!wire.windows(5).any(|w| w == b"\r\n.\r\n"));
        assert_eq!(unstuff(&wire), data);
        let mut raw = Vec::new();
        write_content(&mut raw, &data, false, b"\r\n");
        assert_eq!(raw, data);
    }

    #[test]
    fn content_normalises_line_endings() {
        let mut out = Vec::new();
        write_content(&mut out, b"a\nb\r\nc", true, b"\r\n");
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        out.clear();
        write_content(&mut out, b"a\r\n.b\r\n", true, b"\n");
        assert_eq!(out, b"a\n..b\n");
        out.clear();
        write_content(&mut out, b"", true, b"\r\n");
        assert!(out.is_empty());
    }

    #[test]
    fn top_slices_headers_and_lines() {
        let m = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(top_slice(m, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top_slice(m, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top_slice(m, 99), &m[..]);
        assert_eq!(top_slice(b"A: 1\r\n", 3), b"A: 1\r\n");
        assert_eq!(top_slice(b"A: 1\r\n\r\n", 3), b"A: 1\r\n\r\n");
        assert_eq!(top_slice(b"\r\nbody\r\n", 0), b"\r\n");
    }

    #[test]
    fn apop_digest_matches_rfc1939_example() {
        assert_eq!(
            apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn argument_parsing() {
        assert_eq!(parse_msg("1"), Some(1));
        assert_eq!(parse_msg("0"), None);
        assert_eq!(parse_msg("-1"), None);
        assert_eq!(parse_msg("+1"), None);
        assert_eq!(parse_msg("1x"), None);
        assert_eq!(parse_msg("99999999999999999999"), None);
        assert_eq!(parse_count("0"), Some(0));
        assert_eq!(parse_count("99999999999999999999999"), Some(usize::MAX));
        assert_eq!(parse_count("x"), None);
    }

    fn session(faults: Faults, auth_failure_text: Option<&str>, tls_active: bool) -> Session {
        let identity = super::super::TlsIdentity::generate(&["localhost"]).expect("identity");
        let shared = Shared {
            store: Arc::new(Store::fixture()),
            faults,
            tls: TlsAcceptor::from(identity.server_config()),
            apop: true,
            idle_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            greeting_delay: Duration::ZERO,
            auth_failure_text: auth_failure_text.map(str::to_string),
        };
        Session::new(Arc::new(shared), tls_active)
    }

    /// Runs one command line and returns the whole reply as text.
    fn reply(session: &mut Session, line: &str) -> String {
        let mut out = Vec::new();
        session.handle(format!("{line}\r\n").as_bytes(), &mut out);
        String::from_utf8(out).expect("ascii")
    }

    fn apop_line(session: &Session, user: &str, password: &str) -> String {
        let ts = session.timestamp.as_deref().expect("APOP timestamp");
        format!("APOP {user} {}", apop_digest(ts, password))
    }

    #[test]
    fn plaintext_login_refused_until_tls() {
        let refused = format!("-ERR {PLAINTEXT_REFUSED}\r\n");
        let mut plain = session(Fault::PlaintextLoginRefused.into(), None, false);
        assert!(!reply(&mut plain, "CAPA").contains("\r\nUSER\r\n"));
        assert_eq!(reply(&mut plain, "USER alice"), refused);
        assert_eq!(reply(&mut plain, "PASS alice-demo-pw"), "-ERR USER first\r\n");
        let apop = apop_line(&plain, "alice", "alice-demo-pw");
        assert_eq!(reply(&mut plain, &apop), refused);

        let mut tls = session(Fault::PlaintextLoginRefused.into(), None, true);
        assert!(reply(&mut tls, "CAPA").contains("\r\nUSER\r\n"));
        assert!(reply(&mut tls, "USER alice").starts_with("+OK"));
        assert!(reply(&mut tls, "PASS alice-demo-pw").starts_with("+OK"));
    }

    #[test]
    fn login_disabled_refuses_the_right_password() {
        let mut s = session(Fault::LoginDisabled.into(), None, false);
        assert!(reply(&mut s, "USER alice").starts_with("+OK"));
        assert_eq!(
            reply(&mut s, "PASS alice-demo-pw"),
            format!("-ERR {LOGIN_DISABLED}\r\n")
        );
        let apop = apop_line(&s, "alice", "alice-demo-pw");
        assert_eq!(reply(&mut s, &apop), format!("-ERR {LOGIN_DISABLED}\r\n"));
        assert!(reply(&mut s, "STAT").starts_with("-ERR"));

        let custom = "[AUTH] Sorry, POP3 is off for this account";
        let mut s = session(
            Faults::none().with(Fault::LoginDisabled).with(Fault::BadPassOk),
            Some(custom),
            true,
        );
        assert!(reply(&mut s, "USER alice").starts_with("+OK"));
        assert_eq!(reply(&mut s, "PASS alice-demo-pw"), format!("-ERR {custom}\r\n"));
    }

    #[test]
    fn auth_failure_text_replaces_the_default() {
        let mut s = session(Faults::none(), None, false);
        assert!(reply(&mut s, "USER alice").starts_with("+OK"));
        assert_eq!(reply(&mut s, "PASS wrong"), format!("-ERR {BAD_CREDENTIALS}\r\n"));
        let custom = "[AUTH] Authentication failed.";
        let mut s = session(Faults::none(), Some(custom), false);
        assert!(reply(&mut s, "USER alice").starts_with("+OK"));
        assert_eq!(reply(&mut s, "PASS wrong"), format!("-ERR {custom}\r\n"));
        assert_eq!(reply(&mut s, "APOP alice 0123"), format!("-ERR {custom}\r\n"));
        assert!(reply(&mut s, "USER alice").starts_with("+OK"));
        assert!(reply(&mut s, "PASS alice-demo-pw").starts_with("+OK"));
    }

    #[test]
    fn timestamps_are_unique() {
        let a = unique_nanos();
        let b = unique_nanos();
        assert!(b > a);
    }
}
