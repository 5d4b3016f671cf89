//! The SMTP server (RFC 5321) over the shared [`Store`]: mail accepted
//! here is delivered to the recipients' INBOX, where the POP3 and IMAP
//! sessions see it.
//!
//! Three kinds of listener ([`Port`]): the relay port (port 25 style:
//! STARTTLS offered, AUTH only after TLS, local recipients need no AUTH),
//! the submission port (RFC 6409: AUTH required before MAIL, and only after
//! STARTTLS) and implicit TLS submission (RFC 8314, port 465 style). The
//! extensions: PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS
//! and AUTH PLAIN / LOGIN / CRAM-MD5.
//!
//! This file is the asynchronous shell: it frames input into lines with a
//! bounded buffer, answers every command already received before it waits
//! for more (so pipelined batches get their replies in order, in one
//! write), runs the STARTTLS handshake and enforces the timeouts. What each
//! line means is decided in [`session`], synchronously.

mod command;
mod data;
mod sasl;
mod session;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;

use super::faults::{Fault, Faults};
use super::store::Store;
use session::{Action, Input, Session};

/// The name the server greets with and writes into Received headers.
pub(super) const HOSTNAME: &str = "mailcheck.local";

/// Time allowed for a graceful close (TLS close_notify, FIN).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Replies are written out once this many octets are waiting, and the
/// buffer is shrunk back afterwards.
const OUT_CHUNK: usize = 64 * 1024;

/// Which listener a session came in on; it decides what AUTH is needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    /// Plain SMTP with STARTTLS; local delivery needs no AUTH.
    Relay,
    /// Message submission (RFC 6409): STARTTLS, then AUTH before MAIL.
    Submission,
    /// Implicit-TLS submission (RFC 8314): AUTH before MAIL.
    Smtps,
}

impl Port {
    fn requires_auth(self) -> bool {
        matches!(self, Port::Submission | Port::Smtps)
    }
}

/// Configuration every session of a server shares.
pub(super) struct Shared {
    pub store: Arc<Store>,
    pub faults: Faults,
    pub tls: TlsAcceptor,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub greeting_delay: Duration,
    /// The SIZE limit: larger messages are refused (RFC 1870).
    pub max_message_size: usize,
}

/// One connection from accept to close. Every failure just ends it.
pub(super) async fn serve_connection(tcp: TcpStream, shared: Arc<Shared>, port: Port) {
    // Replies are batched already; Nagle would only add latency.
    tcp.set_nodelay(true).ok();
    let peer = tcp.peer_addr().ok().map(|a| a.ip());
    let mut session = Session::new(Arc::clone(&shared), port, peer);
    if port == Port::Smtps {
        let Some(tls) = handshake(tcp, &shared).await else {
            return;
        };
        let (_, tls, _) = run(&mut session, &shared, tls, Vec::new(), true).await;
        close(tls).await;
        return;
    }
    let (next, tcp, pending) = run(&mut session, &shared, tcp, Vec::new(), true).await;
    if next == Next::Close {
        close(tcp).await;
        return;
    }
    let Some(tls) = handshake(tcp, &shared).await else {
        return;
    };
    session.tls_started();
    // Whatever the client sent after STARTTLS in plaintext is gone unless
    // `smtp-starttls-injection` kept it: then it runs as if sent over TLS.
    let (_, tls, _) = run(&mut session, &shared, tls, pending, false).await;
    close(tls).await;
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

/// The outcome of waiting for one line.
enum Read {
    /// A line of at most the limit, including its LF: `input[range]`.
    Line(Range<usize>),
    /// A longer line, discarded up to its LF.
    TooLong { crlf: bool },
    /// The idle timeout passed before the line was complete.
    TimedOut,
    /// EOF or an error.
    Closed,
}

/// The byte stream of one session (plain or TLS), its input buffer and its
/// output buffer.
struct Io<S> {
    stream: S,
    /// Received octets; those before `pos` are consumed.
    input: Vec<u8>,
    pos: usize,
    /// Set while the rest of an over-long line is skipped: whether the last
    /// octet skipped was a CR (so a CRLF split across reads is recognised).
    skipping: Option<bool>,
    out: Vec<u8>,
    idle: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn new(stream: S, input: Vec<u8>, idle: Duration) -> Self {
        Io {
            stream,
            input,
            pos: 0,
            skipping: None,
            out: Vec::with_capacity(4096),
            idle,
        }
    }

    /// Whether a line end is already buffered, so the next read won't wait.
    fn has_line(&self) -> bool {
        memchr::memchr(b'\n', &self.input[self.pos..]).is_some()
    }

    /// Whether unconsumed input is buffered.
    fn has_pending(&self) -> bool {
        self.pos < self.input.len()
    }

    /// Drops all unconsumed input (`smtp-pipelining-drops`).
    fn discard_pending(&mut self) {
        self.input.clear();
        self.pos = 0;
        self.skipping = None;
    }

    /// The unconsumed input, leaving the buffer empty.
    fn take_pending(&mut self) -> Vec<u8> {
        let rest = self.input.split_off(self.pos);
        self.discard_pending();
        rest
    }

    /// The next line, of at most `max` octets with its LF; the whole line
    /// must arrive within the idle timeout. Longer lines are discarded as
    /// they arrive, so the buffer never holds more than `max` plus one read.
    async fn read_line(&mut self, max: usize) -> Read {
        let deadline = Instant::now() + self.idle;
        loop {
            let pending = &self.input[self.pos..];
            if let Some(i) = memchr::memchr(b'\n', pending) {
                let start = self.pos;
                self.pos += i + 1;
                let cr_before = if i > 0 {
                    pending[i - 1] == b'\r'
                } else {
                    self.skipping.unwrap_or(false)
                };
                if self.skipping.take().is_some() || i + 1 > max {
                    return Read::TooLong { crlf: cr_before };
                }
                return Read::Line(start..self.pos);
            }
            if self.skipping.is_some() || pending.len() > max {
                if let Some(&last) = pending.last() {
                    self.skipping = Some(last == b'\r');
                }
                self.input.clear();
                self.pos = 0;
            } else if self.pos > 0 {
                self.input.drain(..self.pos);
                self.pos = 0;
            }
            self.input.reserve(READ_CHUNK);
            match timeout_at(deadline, self.stream.read_buf(&mut self.input)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Read::Closed,
                Err(_) => return Read::TimedOut,
            }
        }
    }

    /// Sends everything buffered; false when the client is gone.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let out = &self.out;
        let stream = &mut self.stream;
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

    /// Reads and drops input until EOF, an error or the idle timeout.
    async fn swallow_until_closed(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = timeout(self.idle, self.stream.read(&mut buf)).await {
            if n == 0 {
                return;
            }
        }
    }
}

/// Serves `stream` until the client leaves, QUIT or STARTTLS; hands back
/// the stream and, under `smtp-starttls-injection`, the input left over.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    shared: &Shared,
    stream: S,
    input: Vec<u8>,
    greet: bool,
) -> (Next, S, Vec<u8>) {
    let mut io = Io::new(stream, input, shared.idle_timeout);
    let next = drive(session, shared, &mut io, greet).await;
    let pending = if next == Next::StartTls && session.has(Fault::SmtpStarttlsInjection) {
        io.take_pending()
    } else {
        Vec::new()
    };
    (next, io.stream, pending)
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    shared: &Shared,
    io: &mut Io<S>,
    greet: bool,
) -> Next {
    if greet {
        // A sleeping session is still aborted by shutdown.
        if !shared.greeting_delay.is_zero() {
            tokio::time::sleep(shared.greeting_delay).await;
        }
        if session.has(Fault::SmtpNoGreeting) {
            io.swallow_until_closed().await;
            return Next::Close;
        }
        session.greeting(&mut io.out);
        if !io.flush().await {
            return Next::Close;
        }
    }
    loop {
        // RFC 2920: answer everything already received, then send the
        // replies together before waiting for more.
        if !io.has_line() && !io.flush().await {
            return Next::Close;
        }
        let written = io.out.len();
        let action = match io.read_line(session.line_limit()).await {
            Read::Closed => return Next::Close,
            Read::TimedOut => {
                session.timed_out(&mut io.out);
                io.flush().await;
                return Next::Close;
            }
            Read::Line(range) => session.feed(Input::Line(&io.input[range]), &mut io.out),
            Read::TooLong { crlf } => session.feed(Input::TooLong { crlf }, &mut io.out),
        };
        if session.has(Fault::SmtpPipeliningDrops) && io.out.len() > written && io.has_pending() {
            io.discard_pending();
        }
        match action {
            Action::Continue => {
                if io.out.len() >= OUT_CHUNK && !io.flush().await {
                    return Next::Close;
                }
            }
            Action::Close => {
                io.flush().await;
                return Next::Close;
            }
            Action::StartTls => {
                return if io.flush().await {
                    Next::StartTls
                } else {
                    Next::Close
                };
            }
            Action::Stall => {
                if io.flush().await {
                    io.swallow_until_closed().await;
                }
                return Next::Close;
            }
        }
    }
}
