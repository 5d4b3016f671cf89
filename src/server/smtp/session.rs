//! One SMTP session's state machine: greeting -> EHLO/HELO -> (STARTTLS,
//! AUTH) -> MAIL -> RCPT... -> DATA -> message -> delivery, with the
//! `smtp-*` [`Fault`] switches applied where each rule is enforced.
//!
//! Like the POP3 and IMAP sessions it is synchronous: [`Session::feed`]
//! takes one input line and appends the reply to a buffer, so every rule
//! can be tested without sockets. Replies carry RFC 3463 enhanced status
//! codes on every 2xx/4xx/5xx reply except the greeting and the EHLO/HELO
//! replies, as RFC 2034 section 4 asks (3xx replies have none).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::super::faults::Fault;
use super::command::{self, Mailbox, PathError};
use super::data::{self, DataReader, Feed, Problem};
use super::sasl::{self, Mechanism, Response};
use super::{Port, Shared, HOSTNAME};
use crate::secret::Secret;

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF.
pub(super) const MAX_COMMAND_LINE: usize = 512;

/// RFC 4954 section 4: AUTH continuation lines may be up to 12288 octets.
const MAX_AUTH_LINE: usize = 12288;

/// RFC 5321 4.5.3.1.8 asks servers to accept at least 100 recipients.
const MAX_RECIPIENTS: usize = 100;

/// The domains this server delivers to: a recipient at any of them is a
/// user of the store, and any other domain would be relaying, which it
/// never does.
pub(super) const LOCAL_DOMAINS: &[&str] = &["localhost", "mailcheck.local", "example.test"];

/// Under `smtp-size-ignored` the limit is not enforced, but the server
/// must still not buffer without bound: this is the most it keeps.
const SIZE_IGNORED_CAP: usize = 64 * 1024 * 1024;

/// `smtp-long-reply` pads the first EHLO line to this many octets.
const LONG_REPLY_OCTETS: usize = 600;

/// What the connection loop must do after a reply is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Continue,
    /// After 221: close the connection.
    Close,
    /// After 220 to STARTTLS: hand the socket to the TLS handshake.
    StartTls,
    /// Stop answering and keep the connection open until the client leaves.
    Stall,
}

/// One line of client input, as the connection loop framed it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Input<'a> {
    /// A whole line including its LF (and CR, if sent).
    Line(&'a [u8]),
    /// A line longer than [`Session::line_limit`], discarded up to its LF;
    /// `crlf` says whether it ended in CRLF.
    TooLong { crlf: bool },
}

struct Helo {
    name: String,
    extended: bool,
}

struct Recipient {
    /// The store account the mail goes to.
    user: String,
    /// The address as the client wrote it.
    address: String,
}

#[derive(Default)]
struct Transaction {
    /// The reverse-path as written; empty for the null sender `<>`.
    from: String,
    recipients: Vec<Recipient>,
}

/// Where an AUTH exchange stands while the client answers a 334.
enum Sasl {
    Plain,
    LoginUser,
    LoginPassword { user: String },
    CramMd5 { challenge: String },
}

enum Mode {
    Command,
    Data(DataReader),
    Auth(Sasl),
}

/// Who a RCPT address is.
enum Resolved {
    User(String),
    Unknown,
    NotLocal,
}

pub(super) struct Session {
    shared: Arc<Shared>,
    port: Port,
    tls_active: bool,
    /// The client's IP address, for the Received header.
    peer: Option<IpAddr>,
    helo: Option<Helo>,
    /// The authenticated user.
    user: Option<String>,
    tx: Option<Transaction>,
    mode: Mode,
}

fn strip_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line)
}

/// Queue ids must be unique per server run so replies and Received headers
/// can be told apart; a counter with the start-up second does that.
fn queue_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("MC{:X}{n:05X}", now_secs())
}

/// A unique CRAM-MD5 challenge (RFC 2195: `<unique.timestamp@host>`).
fn cram_challenge() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("<{}.{n}.{}@{HOSTNAME}>", std::process::id(), now_secs())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// civil_from_days; the IMAP session has its own copy, private to it).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// An RFC 5322 date-time in UTC, for the Received header.
fn rfc5322_date(secs: i64) -> String {
    // 1970-01-01 was a Thursday.
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let time = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

impl Session {
    pub(super) fn new(shared: Arc<Shared>, port: Port, peer: Option<IpAddr>) -> Self {
        Session {
            shared,
            tls_active: port == Port::Smtps,
            port,
            peer,
            helo: None,
            user: None,
            tx: None,
            mode: Mode::Command,
        }
    }

    pub(super) fn has(&self, fault: Fault) -> bool {
        self.shared.faults.contains(fault)
    }

    fn eol(&self) -> &'static [u8] {
        if self.has(Fault::SmtpBareLf) {
            b"\n"
        } else {
            b"\r\n"
        }
    }

    /// The longest line the current mode reads whole.
    pub(super) fn line_limit(&self) -> usize {
        match self.mode {
            Mode::Command => MAX_COMMAND_LINE,
            Mode::Data(_) => data::MAX_RAW_LINE,
            Mode::Auth(_) => MAX_AUTH_LINE,
        }
    }

    /// The RFC 3207 reset after a completed STARTTLS handshake: everything
    /// learned in plaintext is forgotten, so the client must EHLO again.
    pub(super) fn tls_started(&mut self) {
        self.tls_active = true;
        if self.has(Fault::SmtpStarttlsKeepsState) {
            return;
        }
        self.helo = None;
        self.user = None;
        self.tx = None;
        self.mode = Mode::Command;
    }

    /// AUTH is only offered and taken over TLS, since PLAIN and LOGIN send
    /// the password as it is.
    fn auth_allowed(&self) -> bool {
        self.tls_active || self.has(Fault::SmtpAuthInCleartext)
    }

    fn max_size(&self) -> usize {
        self.shared.max_message_size
    }

    /// A single-line reply; `status` is the enhanced status code, empty for
    /// replies that carry none.
    fn reply(&self, out: &mut Vec<u8>, code: u16, status: &str, text: &str) {
        out.extend_from_slice(code.to_string().as_bytes());
        out.push(b' ');
        if !status.is_empty() {
            if code >= 500 && self.has(Fault::SmtpEnhancedClassMismatch) {
                out.push(b'2');
                out.extend_from_slice(&status.as_bytes()[1..]);
            } else {
                out.extend_from_slice(status.as_bytes());
            }
            out.push(b' ');
        }
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(self.eol());
    }

    pub(super) fn greeting(&self, out: &mut Vec<u8>) {
        let text = format!("{HOSTNAME} ESMTP mailcheck ready");
        if self.has(Fault::SmtpBadGreeting) {
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(self.eol());
        } else {
            self.reply(out, 220, "", &text);
        }
    }

    /// The last words before the server drops an idle client (RFC 5321
    /// 4.5.3.2 lets it; 421 says the channel is being closed).
    pub(super) fn timed_out(&self, out: &mut Vec<u8>) {
        let text = format!("{HOSTNAME} idle timeout, closing connection");
        self.reply(out, 421, "4.4.2", &text);
    }

    /// Handles one line of input and appends the reply (if any) to `out`.
    pub(super) fn feed(&mut self, input: Input<'_>, out: &mut Vec<u8>) -> Action {
        match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::Command => match input {
                Input::Line(line) => return self.command(line, out),
                Input::TooLong { .. } => self.reply(
                    out,
                    500,
                    "5.5.2",
                    "line too long (commands are limited to 512 octets)",
                ),
            },
            Mode::Data(mut reader) => {
                match input {
                    Input::Line(line) => {
                        if reader.line(line) == Feed::End {
                            self.end_of_data(reader, out);
                            return Action::Continue;
                        }
                    }
                    Input::TooLong { crlf } => reader.too_long(crlf),
                }
                self.mode = Mode::Data(reader);
            }
            Mode::Auth(step) => match input {
                Input::Line(line) => self.auth_step(step, strip_eol(line), out),
                Input::TooLong { .. } => {
                    self.reply(out, 500, "5.5.6", "authentication exchange line is too long")
                }
            },
        }
        Action::Continue
    }

    fn command(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Action {
        let line = strip_eol(raw);
        let text = match std::str::from_utf8(line) {
            Ok(text) if command::is_command_text(line) => text,
            _ => {
                self.reply(out, 500, "5.5.2", "syntax error: commands are printable US-ASCII");
                return Action::Continue;
            }
        };
        let (verb, args) = command::split_command(text);
        match verb.as_str() {
            "EHLO" => self.hello(args, true, out),
            "HELO" => self.hello(args, false, out),
            "MAIL" => self.mail(args, out),
            "RCPT" => self.rcpt(args, out),
            "DATA" => self.data(args, out),
            "RSET" => self.rset(args, out),
            "NOOP" => self.reply(out, 250, "2.0.0", "OK"),
            "QUIT" => {
                self.reply(out, 221, "2.0.0", &format!("{HOSTNAME} closing connection"));
                return if self.has(Fault::SmtpQuitStaysOpen) {
                    Action::Stall
                } else {
                    Action::Close
                };
            }
            "VRFY" if args.is_empty() => self.reply(out, 501, "5.5.4", "Syntax: VRFY address"),
            // RFC 5321 3.5.3: 252 when the server will not say who exists.
            "VRFY" => self.reply(
                out,
                252,
                "2.5.2",
                "cannot VRFY user, but will accept mail for local recipients",
            ),
            // RFC 5321 3.5.2: EXPN may be disabled; 502 says so.
            "EXPN" => self.reply(out, 502, "5.5.1", "EXPN is not available"),
            "HELP" => self.reply(
                out,
                214,
                "2.0.0",
                "commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
            ),
            "STARTTLS" => return self.starttls(args, out),
            "AUTH" => self.auth(args, out),
            // Recognised but not implemented: 502 (RFC 5321 4.2.4).
            "BDAT" | "TURN" | "ETRN" | "ATRN" | "SEND" | "SOML" | "SAML" => {
                self.reply(out, 502, "5.5.1", "command not implemented")
            }
            _ if self.has(Fault::SmtpUnknownOk) => self.reply(out, 250, "2.0.0", "OK"),
            // Not recognised at all: 500 (RFC 5321 4.2.4).
            _ => self.reply(out, 500, "5.5.2", "command not recognized"),
        }
        Action::Continue
    }

    fn hello(&mut self, args: &str, extended: bool, out: &mut Vec<u8>) {
        // A domain or address literal (RFC 5321 4.1.1.1), leniently: the
        // underscores of Windows host names are let through, but nothing
        // that could change the meaning of the Received field it goes into
        // (no space, `(`, `;`, quotes), and no longer than a domain may be.
        let name_ok = args
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
        if args.is_empty() || !name_ok || args.len() > 255 {
            let verb = if extended { "EHLO" } else { "HELO" };
            self.reply(out, 501, "5.5.4", &format!("Syntax: {verb} hostname"));
            return;
        }
        // RFC 5321 4.1.4: a repeated EHLO/HELO resets the transaction like
        // RSET; authentication stays.
        self.tx = None;
        self.helo = Some(Helo {
            name: args.to_string(),
            extended,
        });
        let first = format!("{HOSTNAME} Hello {args}");
        if !extended {
            self.reply(out, 250, "", &first);
            return;
        }
        let mut lines = vec![
            first,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.max_size()),
            "8BITMIME".to_string(),
        ];
        // RFC 3207 4.2: STARTTLS is not offered once TLS is active.
        if !self.tls_active || self.has(Fault::SmtpStarttlsStillAdvertised) {
            lines.push("STARTTLS".to_string());
        }
        if self.auth_allowed() {
            lines.push(format!("AUTH {}", sasl::MECHANISMS));
        }
        lines.push("ENHANCEDSTATUSCODES".to_string());
        self.ehlo_reply(out, &lines);
    }

    /// The multi-line 250 to EHLO: `250-` on every line but the last.
    fn ehlo_reply(&self, out: &mut Vec<u8>, lines: &[String]) {
        let last = lines.len() - 1;
        for (i, text) in lines.iter().enumerate() {
            let code = if i == 1 && self.has(Fault::SmtpMultilineCodeMismatch) {
                "251"
            } else {
                "250"
            };
            let separator = if text.starts_with("SIZE ") && self.has(Fault::SmtpBadSeparator) {
                ""
            } else if i == last {
                " "
            } else {
                "-"
            };
            let mut line = format!("{code}{separator}{text}");
            if i == 0 && self.has(Fault::SmtpLongReply) {
                line.push(' ');
                while line.len() + self.eol().len() < LONG_REPLY_OCTETS {
                    line.push('x');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(self.eol());
        }
    }

    fn mail(&mut self, args: &str, out: &mut Vec<u8>) {
        if self.helo.is_none() {
            return self.reply(out, 503, "5.5.1", "send EHLO or HELO first");
        }
        if self.tx.is_some() {
            return self.reply(
                out,
                503,
                "5.5.1",
                "nested MAIL command: a transaction is in progress",
            );
        }
        // RFC 6409 4.3 (submission) and RFC 8314 (implicit TLS submission).
        if self.port.requires_auth() && self.user.is_none() {
            return self.reply(out, 530, "5.7.0", "Authentication required");
        }
        let Some((inner, params)) = command::split_path_arg(args, "FROM:") else {
            return self.reply(out, 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]");
        };
        let from = match command::parse_reverse_path(inner) {
            Ok(from) => from,
            Err(PathError::TooLong) => return self.reply(out, 501, "5.1.7", "sender address too long"),
            Err(PathError::Syntax(why)) => {
                return self.reply(out, 501, "5.1.7", &format!("bad sender address syntax: {why}"))
            }
        };
        let Ok(params) = command::parse_params(params) else {
            return self.reply(out, 501, "5.5.4", "malformed MAIL parameter");
        };
        for param in &params {
            match (param.keyword.as_str(), param.value.as_deref()) {
                ("SIZE", value) => {
                    let Some(size) = value.and_then(command::parse_size) else {
                        return self.reply(out, 501, "5.5.4", "SIZE takes a number of octets");
                    };
                    // RFC 1870 section 6: refuse at MAIL what would be refused later.
                    let limit = u64::try_from(self.max_size()).unwrap_or(u64::MAX);
                    if size > limit && !self.has(Fault::SmtpSizeIgnored) {
                        return self.reply(
                            out,
                            552,
                            "5.3.4",
                            "message size exceeds fixed maximum message size",
                        );
                    }
                }
                ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {
                }
                ("BODY", _) => return self.reply(out, 501, "5.5.4", "BODY is 7BIT or 8BITMIME"),
                // RFC 4954 section 5: the AUTH parameter may be ignored.
                ("AUTH", Some(_)) => {}
                _ => return self.reply(out, 555, "5.5.4", "unsupported MAIL parameter"),
            }
        }
        let from = from.map(|m| m.text).unwrap_or_default();
        let reply = format!("sender <{from}> OK");
        self.tx = Some(Transaction {
            from,
            recipients: Vec::new(),
        });
        self.reply(out, 250, "2.1.0", &reply);
    }

    /// Maps a RCPT mailbox to a store account. `Postmaster` (bare or at a
    /// local domain) is the first account, since RFC 5321 4.5.1 requires
    /// that address to work.
    fn resolve(&self, mailbox: &Mailbox) -> Resolved {
        let store = &self.shared.store;
        let postmaster = || store.first_user().map_or(Resolved::Unknown, Resolved::User);
        let Some(domain) = &mailbox.domain else {
            return postmaster();
        };
        if !LOCAL_DOMAINS.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Resolved::NotLocal;
        }
        if mailbox.local.eq_ignore_ascii_case("postmaster") {
            return postmaster();
        }
        store
            .users()
            .into_iter()
            .find(|u| u.eq_ignore_ascii_case(&mailbox.local))
            .map_or(Resolved::Unknown, Resolved::User)
    }

    fn rcpt(&mut self, args: &str, out: &mut Vec<u8>) {
        if self.tx.is_none() {
            if !self.has(Fault::SmtpOutOfOrderOk) {
                return self.reply(out, 503, "5.5.1", "need MAIL before RCPT");
            }
            self.tx = Some(Transaction::default());
        }
        let Some((inner, params)) = command::split_path_arg(args, "TO:") else {
            return self.reply(out, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        };
        let mailbox = match command::parse_forward_path(inner) {
            Ok(m) => m,
            Err(PathError::TooLong) => return self.reply(out, 501, "5.1.3", "recipient address too long"),
            Err(PathError::Syntax(why)) => {
                return self.reply(out, 501, "5.1.3", &format!("bad recipient address syntax: {why}"))
            }
        };
        if !params.is_empty() {
            return self.reply(out, 555, "5.5.4", "RCPT parameters are not supported");
        }
        let count = self.tx.as_ref().map_or(0, |tx| tx.recipients.len());
        if count >= MAX_RECIPIENTS {
            return self.reply(out, 452, "4.5.3", "too many recipients");
        }
        match self.resolve(&mailbox) {
            Resolved::User(user) => {
                let reply = format!("recipient <{}> OK", mailbox.text);
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients.push(Recipient {
                        user,
                        address: mailbox.text,
                    });
                }
                self.reply(out, 250, "2.1.5", &reply);
            }
            Resolved::Unknown => self.reply(
                out,
                550,
                "5.1.1",
                &format!("<{}>: no such user here", mailbox.text),
            ),
            Resolved::NotLocal => self.reply(
                out,
                550,
                "5.7.1",
                "relay access denied: this server delivers to localhost, mailcheck.local and example.test only",
            ),
        }
    }

    fn data(&mut self, args: &str, out: &mut Vec<u8>) {
        if !args.is_empty() {
            return self.reply(out, 501, "5.5.4", "Syntax: DATA (no parameters)");
        }
        if !self.has(Fault::SmtpOutOfOrderOk) {
            match &self.tx {
                None => return self.reply(out, 503, "5.5.1", "need MAIL before DATA"),
                Some(tx) if tx.recipients.is_empty() => {
                    return self.reply(out, 503, "5.5.1", "need RCPT before DATA")
                }
                Some(_) => {}
            }
        }
        self.tx.get_or_insert_with(Transaction::default);
        let limit = if self.has(Fault::SmtpSizeIgnored) {
            SIZE_IGNORED_CAP.max(self.max_size())
        } else {
            self.max_size()
        };
        self.mode = Mode::Data(DataReader::new(
            limit,
            self.has(Fault::SmtpLfDotEndsData),
            !self.has(Fault::SmtpNoDotUnstuff),
        ));
        self.reply(out, 354, "", "End data with <CR><LF>.<CR><LF>");
    }

    /// The reply to the end of data. The transaction ends either way.
    fn end_of_data(&mut self, reader: DataReader, out: &mut Vec<u8>) {
        let tx = self.tx.take().unwrap_or_default();
        match reader.finish() {
            Err(Problem::TooBig) => self.reply(
                out,
                552,
                "5.3.4",
                "message size exceeds fixed maximum message size",
            ),
            Err(Problem::LineTooLong) => self.reply(
                out,
                554,
                "5.6.0",
                "message refused: a text line is longer than 1000 octets",
            ),
            Err(Problem::BareLineEnding) => self.reply(
                out,
                554,
                "5.6.0",
                "message refused: bare CR or LF in the text (lines end in CRLF only)",
            ),
            Ok(body) => {
                let id = queue_id();
                let delivered = self.deliver(&tx, body, &id);
                if delivered == 0 && !tx.recipients.is_empty() {
                    self.reply(out, 552, "5.2.2", "mailbox full")
                } else {
                    self.reply(out, 250, "2.0.0", &format!("OK: queued as {id}"))
                }
            }
        }
    }

    /// The trace fields every delivered copy starts with (RFC 5321 4.4).
    fn trace_fields(&self, tx: &Transaction, id: &str) -> String {
        let helo = self.helo.as_ref().map_or("unknown", |h| h.name.as_str());
        let extended = self.helo.as_ref().is_some_and(|h| h.extended);
        // RFC 3848 protocol names.
        let with = match (extended, self.tls_active, self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, false, true) => "ESMTPA",
            (true, true, false) => "ESMTPS",
            (true, true, true) => "ESMTPSA",
        };
        let tcp_info = match self.peer {
            Some(IpAddr::V4(a)) => format!(" ([{a}])"),
            Some(IpAddr::V6(a)) => format!(" ([IPv6:{a}])"),
            None => String::new(),
        };
        let mut fields = format!(
            "Return-Path: <{}>\r\nReceived: from {helo}{tcp_info}\r\n\tby {HOSTNAME} (mailcheck) with {with} id {id}",
            tx.from
        );
        if let [only] = tx.recipients.as_slice() {
            fields.push_str(&format!("\r\n\tfor <{}>", only.address));
        }
        fields.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now_secs())));
        fields
    }

    /// Adds the message to every recipient's INBOX (once per account, even
    /// if several addresses name it); returns how many accounts got it.
    fn deliver(&self, tx: &Transaction, mut body: Vec<u8>, id: &str) -> usize {
        if self.has(Fault::SmtpStrip8bit) {
            body.iter_mut().for_each(|b| *b &= 0x7f);
        }
        let mut message = self.trace_fields(tx, id).into_bytes();
        message.extend_from_slice(&body);
        drop(body);
        let mut done: Vec<&str> = Vec::new();
        for r in &tx.recipients {
            if done.contains(&r.user.as_str()) {
                continue;
            }
            if self
                .shared
                .store
                .append(&r.user, "INBOX", message.clone(), &[], None)
                .is_ok()
            {
                done.push(&r.user);
            }
        }
        done.len()
    }

    fn rset(&mut self, args: &str, out: &mut Vec<u8>) {
        if !args.is_empty() {
            return self.reply(out, 501, "5.5.4", "Syntax: RSET");
        }
        if !self.has(Fault::SmtpRsetIgnored) {
            self.tx = None;
        }
        self.reply(out, 250, "2.0.0", "OK");
    }

    fn starttls(&mut self, args: &str, out: &mut Vec<u8>) -> Action {
        if !args.is_empty() {
            self.reply(out, 501, "5.5.4", "Syntax: STARTTLS (no parameters allowed)");
        } else if self.tls_active {
            self.reply(out, 503, "5.5.1", "TLS is already active");
        } else if self.helo.is_none() {
            self.reply(out, 503, "5.5.1", "send EHLO first");
        } else if self.tx.is_some() {
            self.reply(
                out,
                503,
                "5.5.1",
                "STARTTLS is not allowed during a mail transaction",
            );
        } else {
            self.reply(out, 220, "2.0.0", "Ready to start TLS");
            if self.has(Fault::SmtpStarttlsEarlyData) {
                self.reply(out, 250, "2.0.0", "plaintext sent before the TLS handshake");
            }
            return Action::StartTls;
        }
        Action::Continue
    }

    fn auth(&mut self, args: &str, out: &mut Vec<u8>) {
        if self.helo.is_none() {
            return self.reply(out, 503, "5.5.1", "send EHLO first");
        }
        if self.user.is_some() {
            return self.reply(out, 503, "5.5.1", "already authenticated");
        }
        if self.tx.is_some() {
            return self.reply(out, 503, "5.5.1", "AUTH is not allowed during a mail transaction");
        }
        if !self.auth_allowed() {
            return self.reply(
                out,
                538,
                "5.7.11",
                "encryption required for requested authentication mechanism (use STARTTLS)",
            );
        }
        let (name, initial) = match args.split_once(' ') {
            Some((name, rest)) => (name, Some(rest.trim_matches(' '))),
            None => (args, None),
        };
        if name.is_empty() {
            return self.reply(out, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
        }
        let Some(mechanism) = Mechanism::parse(name) else {
            return self.reply(out, 504, "5.5.4", "unrecognized authentication type");
        };
        let initial = match initial.map(sasl::decode_response) {
            None => None,
            Some(Some(Response::Data(data))) => Some(data),
            Some(Some(Response::Cancel)) => return self.reply(out, 501, "5.7.0", "authentication cancelled"),
            Some(None) => return self.reply(out, 501, "5.5.2", "cannot decode the initial response"),
        };
        match (mechanism, initial) {
            (Mechanism::Plain, Some(data)) => self.plain(&data, out),
            (Mechanism::Plain, None) => {
                self.mode = Mode::Auth(Sasl::Plain);
                self.reply(out, 334, "", "");
            }
            (Mechanism::Login, Some(data)) => self.login_user(data, out),
            (Mechanism::Login, None) => {
                self.mode = Mode::Auth(Sasl::LoginUser);
                self.reply(out, 334, "", sasl::LOGIN_USER_PROMPT);
            }
            // RFC 4954 section 4: an initial response for a mechanism where
            // the server speaks first is refused with 501.
            (Mechanism::CramMd5, Some(_)) => {
                self.reply(out, 501, "5.5.2", "CRAM-MD5 does not take an initial response")
            }
            (Mechanism::CramMd5, None) => {
                let challenge = cram_challenge();
                self.reply(out, 334, "", &sasl::encode(challenge.as_bytes()));
                self.mode = Mode::Auth(Sasl::CramMd5 { challenge });
            }
        }
    }

    /// A client response to a 334. Its content is never echoed.
    fn auth_step(&mut self, step: Sasl, line: &[u8], out: &mut Vec<u8>) {
        let decoded = std::str::from_utf8(line).ok().and_then(sasl::decode_response);
        let data = match decoded {
            Some(Response::Data(data)) => data,
            Some(Response::Cancel) => return self.reply(out, 501, "5.7.0", "authentication cancelled"),
            None => return self.reply(out, 501, "5.5.2", "cannot decode the response"),
        };
        match step {
            Sasl::Plain => self.plain(&data, out),
            Sasl::LoginUser => self.login_user(data, out),
            Sasl::LoginPassword { user } => {
                let ok = String::from_utf8(data)
                    .ok()
                    .map(Secret::new)
                    .is_some_and(|password| self.password_ok(&user, &password));
                self.authenticated(ok.then_some(user), out);
            }
            Sasl::CramMd5 { challenge } => {
                let user = sasl::decode_cram(&data).filter(|(user, digest)| {
                    self.shared.store.account_password(user).is_some_and(|pw| {
                        sasl::hmac_md5_hex(pw.as_bytes(), challenge.as_bytes()) == *digest
                            || self.has(Fault::SmtpAuthBadOk)
                    })
                });
                self.authenticated(user.map(|(user, _)| user), out);
            }
        }
    }

    fn plain(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let user = sasl::decode_plain(data)
            .filter(|(user, password)| self.password_ok(user, password))
            .map(|(user, _)| user);
        self.authenticated(user, out);
    }

    fn login_user(&mut self, data: Vec<u8>, out: &mut Vec<u8>) {
        match sasl::decode_text(data) {
            Some(user) => {
                self.mode = Mode::Auth(Sasl::LoginPassword { user });
                self.reply(out, 334, "", sasl::LOGIN_PASSWORD_PROMPT);
            }
            None => self.authenticated(None, out),
        }
    }

    fn password_ok(&self, user: &str, password: &Secret) -> bool {
        self.shared
            .store
            .account_password(user)
            .is_some_and(|pw| pw == password.expose() || self.has(Fault::SmtpAuthBadOk))
    }

    fn authenticated(&mut self, user: Option<String>, out: &mut Vec<u8>) {
        match user {
            Some(user) => {
                self.user = Some(user);
                self.reply(out, 235, "2.7.0", "Authentication successful");
            }
            None => self.reply(out, 535, "5.7.8", "Authentication credentials invalid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::faults::Faults;
    use super::super::super::{Store, TlsIdentity};
    use super::*;
    use std::time::Duration;
    use tokio_rustls::TlsAcceptor;

    fn shared(faults: Faults, max_message_size: usize) -> Arc<Shared> {
        let identity = TlsIdentity::generate(&["localhost"]).expect("identity");
        Arc::new(Shared {
            store: Arc::new(Store::fixture()),
            faults,
            tls: TlsAcceptor::from(identity.server_config()),
            idle_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            greeting_delay: Duration::ZERO,
            max_message_size,
        })
    }

    fn session(port: Port, faults: Faults) -> Session {
        Session::new(shared(faults, 1000), port, Some(IpAddr::from([127, 0, 0, 1])))
    }

    /// Feeds one line (CRLF added) and returns the reply as text.
    fn say(s: &mut Session, line: &str) -> String {
        let mut out = Vec::new();
        let wire = format!("{line}\r\n");
        s.feed(Input::Line(wire.as_bytes()), &mut out);
        String::from_utf8(out).expect("ascii")
    }

    fn code(reply: &str) -> &str {
        &reply[..3]
    }

    #[test]
    fn dates_and_ids() {
        assert_eq!(rfc5322_date(1_736_154_000), "Mon, 06 Jan 2025 09:00:00 +0000");
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_ne!(queue_id(), queue_id());
        assert_ne!(cram_challenge(), cram_challenge());
    }

    #[test]
    fn transaction_order_is_enforced() {
        let mut s = session(Port::Relay, Faults::none());
        assert_eq!(
            say(&mut s, "MAIL FROM:<a@b.example>"),
            "503 5.5.1 send EHLO or HELO first\r\n"
        );
        assert_eq!(code(&say(&mut s, "RCPT TO:<alice@localhost>")), "503");
        assert_eq!(code(&say(&mut s, "DATA")), "503");
        assert!(say(&mut s, "HELO client.example").starts_with("250 mailcheck.local Hello"));
        assert_eq!(say(&mut s, "DATA"), "503 5.5.1 need MAIL before DATA\r\n");
        assert_eq!(
            say(&mut s, "MAIL FROM:<a@b.example>"),
            "250 2.1.0 sender <a@b.example> OK\r\n"
        );
        assert_eq!(code(&say(&mut s, "MAIL FROM:<a@b.example>")), "503");
        assert_eq!(say(&mut s, "DATA"), "503 5.5.1 need RCPT before DATA\r\n");
        assert_eq!(
            say(&mut s, "RCPT TO:<nobody@localhost>"),
            "550 5.1.1 <nobody@localhost>: no such user here\r\n"
        );
        assert!(say(&mut s, "RCPT TO:<alice@example.test>").starts_with("250 2.1.5 "));
        assert!(say(&mut s, "RCPT TO:<someone@elsewhere.example>").starts_with("550 5.7.1 "));
        assert_eq!(say(&mut s, "RSET"), "250 2.0.0 OK\r\n");
        assert_eq!(code(&say(&mut s, "RCPT TO:<alice@localhost>")), "503");
        assert_eq!(code(&say(&mut s, "MAIL FROM:<>")), "250");
        assert_eq!(code(&say(&mut s, "RCPT TO:<Postmaster>")), "250");
        assert_eq!(code(&say(&mut s, "RCPT TO:<BOB@MailCheck.Local>")), "250");
        assert_eq!(say(&mut s, "DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    }

    #[test]
    fn syntax_errors() {
        let mut s = session(Port::Relay, Faults::none());
        assert_eq!(code(&say(&mut s, "EHLO")), "501");
        assert_eq!(code(&say(&mut s, "EHLO two words")), "501");
        assert_eq!(code(&say(&mut s, "EHLO x;by")), "501");
        assert_eq!(code(&say(&mut s, "HELO (x)")), "501");
        assert_eq!(code(&say(&mut s, &format!("EHLO {}", "a".repeat(256)))), "501");
        assert_eq!(code(&say(&mut s, "HELO MY_PC")), "250");
        assert_eq!(code(&say(&mut s, "HELO [IPv6:::1]")), "250");
        assert_eq!(code(&say(&mut s, "XYZZY")), "500");
        assert_eq!(code(&say(&mut s, "")), "500");
        assert_eq!(code(&say(&mut s, "BDAT 10 LAST")), "502");
        assert_eq!(code(&say(&mut s, "EXPN staff")), "502");
        assert_eq!(code(&say(&mut s, "VRFY")), "501");
        assert_eq!(say(&mut s, "VRFY alice").get(..10), Some("252 2.5.2 "));
        assert_eq!(code(&say(&mut s, "HELP")), "214");
        assert_eq!(code(&say(&mut s, "NOOP anything")), "250");
        assert!(say(&mut s, "EHLO client.example").starts_with("250-"));
        for (line, want) in [
            ("MAIL FROM:a@b.example", "501 5.5.4"),
            ("MAIL TO:<a@b.example>", "501 5.5.4"),
            ("MAIL FROM:<a@@b.example>", "501 5.1.7"),
            ("MAIL FROM:<a@b.example> SIZE=big", "501 5.5.4"),
            ("MAIL FROM:<a@b.example> SIZE", "501 5.5.4"),
            ("MAIL FROM:<a@b.example> BODY=BINARYMIME", "501 5.5.4"),
            ("MAIL FROM:<a@b.example> FOO=1", "555 5.5.4"),
            ("MAIL FROM:<a@b.example> SIZE=1001", "552 5.3.4"),
        ] {
            assert!(say(&mut s, line).starts_with(want), "{line}");
        }
        assert_eq!(
            code(&say(
                &mut s,
                "MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME AUTH=<>"
            )),
            "250"
        );
        assert!(say(&mut s, "RCPT TO:<alice@localhost> NOTIFY=NEVER").starts_with("555 5.5.4"));
        assert!(say(&mut s, "RCPT TO:<alice>").starts_with("501 5.1.3"));
        assert!(say(&mut s, "RCPT alice@localhost").starts_with("501 5.5.4"));
        assert_eq!(code(&say(&mut s, "DATA now")), "501");
        assert_eq!(code(&say(&mut s, "RSET x")), "501");
        let mut out = Vec::new();
        s.feed(Input::Line(b"NOOP caf\xc3\xa9\r\n"), &mut out);
        assert!(out.starts_with(b"500 5.5.2"));
        out.clear();
        s.feed(Input::TooLong { crlf: true }, &mut out);
        assert!(out.starts_with(b"500 5.5.2 line too long"));
    }

    #[test]
    fn ehlo_lists_extensions_and_resets_the_transaction() {
        let mut s = session(Port::Relay, Faults::none());
        let ehlo = say(&mut s, "EHLO client.example");
        assert_eq!(
            ehlo,
            "250-mailcheck.local Hello client.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n\
             250-8BITMIME\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n"
        );
        assert_eq!(code(&say(&mut s, "MAIL FROM:<a@b.example>")), "250");
        say(&mut s, "EHLO again.example");
        assert_eq!(
            code(&say(&mut s, "RCPT TO:<alice@localhost>")),
            "503",
            "EHLO reset it"
        );

        let mut tls = session(Port::Smtps, Faults::none());
        let ehlo = say(&mut tls, "EHLO client.example");
        assert!(!ehlo.contains("STARTTLS") && ehlo.contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n"));
    }

    #[test]
    fn auth_mechanisms() {
        let b64 = |s: &str| sasl::encode(s.as_bytes());
        let mut s = session(Port::Smtps, Faults::none());
        assert_eq!(code(&say(&mut s, "AUTH PLAIN")), "503", "EHLO first");
        say(&mut s, "EHLO client.example");
        assert_eq!(code(&say(&mut s, "MAIL FROM:<a@b.example>")), "530");
        assert_eq!(code(&say(&mut s, "AUTH GSSAPI")), "504");
        assert_eq!(code(&say(&mut s, "AUTH")), "501");
        assert_eq!(code(&say(&mut s, "AUTH PLAIN !!!")), "501");
        assert_eq!(
            say(&mut s, &format!("AUTH PLAIN {}", b64("\0alice\0wrong"))),
            "535 5.7.8 Authentication credentials invalid\r\n"
        );
        assert_eq!(say(&mut s, "AUTH PLAIN"), "334 \r\n");
        assert_eq!(say(&mut s, "*"), "501 5.7.0 authentication cancelled\r\n");
        assert_eq!(
            say(&mut s, "AUTH LOGIN"),
            format!("334 {}\r\n", sasl::LOGIN_USER_PROMPT)
        );
        assert_eq!(
            say(&mut s, &b64("alice")),
            format!("334 {}\r\n", sasl::LOGIN_PASSWORD_PROMPT)
        );
        assert_eq!(code(&say(&mut s, &b64("nope"))), "535");
        assert_eq!(code(&say(&mut s, &format!("AUTH CRAM-MD5 {}", b64("x")))), "501");
        let challenge = say(&mut s, "AUTH CRAM-MD5");
        assert!(challenge.starts_with("334 "));
        let challenge = String::from_utf8(
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                challenge[4..].trim_end(),
            )
            .expect("base64"),
        )
        .expect("utf8");
        assert!(challenge.starts_with('<') && challenge.ends_with("@mailcheck.local>"));
        let digest = sasl::hmac_md5_hex(b"alice-demo-pw", challenge.as_bytes());
        assert_eq!(
            say(&mut s, &b64(&format!("alice {digest}"))),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert_eq!(code(&say(&mut s, "AUTH PLAIN")), "503", "AUTH twice");
        assert_eq!(code(&say(&mut s, "MAIL FROM:<alice@localhost>")), "250");

        let mut plain = session(Port::Submission, Faults::none());
        say(&mut plain, "EHLO client.example");
        assert_eq!(
            say(
                &mut plain,
                &format!("AUTH PLAIN {}", b64("\0alice\0alice-demo-pw"))
            ),
            "538 5.7.11 encryption required for requested authentication mechanism (use STARTTLS)\r\n"
        );
        assert_eq!(code(&say(&mut plain, "MAIL FROM:<a@b.example>")), "530");
    }

    #[test]
    fn starttls_resets_the_session() {
        let mut s = session(Port::Relay, Faults::none());
        assert_eq!(code(&say(&mut s, "STARTTLS")), "503", "EHLO first");
        say(&mut s, "EHLO client.example");
        assert_eq!(code(&say(&mut s, "STARTTLS now")), "501");
        let mut out = Vec::new();
        assert_eq!(s.feed(Input::Line(b"STARTTLS\r\n"), &mut out), Action::StartTls);
        assert_eq!(out, b"220 2.0.0 Ready to start TLS\r\n");
        s.tls_started();
        assert_eq!(code(&say(&mut s, "MAIL FROM:<a@b.example>")), "503");
        let ehlo = say(&mut s, "EHLO client.example");
        assert!(!ehlo.contains("STARTTLS") && ehlo.contains("AUTH "));
        assert_eq!(code(&say(&mut s, "STARTTLS")), "503");
        assert_eq!(
            code(&say(&mut s, "MAIL FROM:<a@b.example>")),
            "250",
            "relay port needs no AUTH"
        );
    }

    #[test]
    fn faults_change_replies() {
        let mut s = session(Port::Relay, Faults::none().with(Fault::SmtpEnhancedClassMismatch));
        say(&mut s, "EHLO c.example");
        say(&mut s, "MAIL FROM:<>");
        assert!(say(&mut s, "RCPT TO:<nobody@localhost>").starts_with("550 2.1.1 "));
        assert!(say(&mut s, "RCPT TO:<alice@localhost>").starts_with("250 2.1.5 "));

        let mut s = session(Port::Relay, Faults::none().with(Fault::SmtpOutOfOrderOk));
        say(&mut s, "EHLO c.example");
        assert_eq!(code(&say(&mut s, "DATA")), "354");
        let mut s = session(Port::Relay, Faults::none().with(Fault::SmtpOutOfOrderOk));
        say(&mut s, "EHLO c.example");
        assert_eq!(code(&say(&mut s, "RCPT TO:<alice@localhost>")), "250");

        let mut s = session(Port::Relay, Faults::none().with(Fault::SmtpRsetIgnored));
        say(&mut s, "EHLO c.example");
        say(&mut s, "MAIL FROM:<>");
        assert_eq!(code(&say(&mut s, "RSET")), "250");
        assert_eq!(code(&say(&mut s, "MAIL FROM:<>")), "503");

        let mut s = session(Port::Relay, Faults::none().with(Fault::SmtpUnknownOk));
        assert_eq!(say(&mut s, "XYZZY"), "250 2.0.0 OK\r\n");

        let mut s = session(Port::Relay, Faults::none().with(Fault::SmtpSizeIgnored));
        say(&mut s, "EHLO c.example");
        assert_eq!(code(&say(&mut s, "MAIL FROM:<> SIZE=5000")), "250");

        let mut s = session(Port::Submission, Faults::none().with(Fault::SmtpAuthInCleartext));
        assert!(say(&mut s, "EHLO c.example").contains("AUTH PLAIN"));
        let blob = sasl::encode(b"\0bob\0bob-demo-pw");
        assert_eq!(code(&say(&mut s, &format!("AUTH PLAIN {blob}"))), "235");

        let mut s = session(Port::Smtps, Faults::none().with(Fault::SmtpAuthBadOk));
        say(&mut s, "EHLO c.example");
        let blob = sasl::encode(b"\0bob\0wrong");
        assert_eq!(code(&say(&mut s, &format!("AUTH PLAIN {blob}"))), "235");
        let mut s = session(Port::Smtps, Faults::none().with(Fault::SmtpAuthBadOk));
        say(&mut s, "EHLO c.example");
        let blob = sasl::encode(b"\0nobody\0wrong");
        assert_eq!(
            code(&say(&mut s, &format!("AUTH PLAIN {blob}"))),
            "535",
            "only known users"
        );
    }

    #[test]
    fn ehlo_faults() {
        let ehlo = |fault: Fault| {
            let mut s = session(Port::Relay, fault.into());
            say(&mut s, "EHLO c.example")
        };
        assert!(ehlo(Fault::SmtpMultilineCodeMismatch).contains("\r\n251-PIPELINING\r\n"));
        assert!(ehlo(Fault::SmtpBadSeparator).contains("\r\n250SIZE 1000\r\n"));
        let long = ehlo(Fault::SmtpLongReply);
        assert_eq!(long.find("\r\n"), Some(LONG_REPLY_OCTETS - 2));
        assert!(ehlo(Fault::SmtpBareLf).ends_with("\n250 ENHANCEDSTATUSCODES\n"));
        assert!(!ehlo(Fault::SmtpBareLf).contains('\r'));
        let mut s = session(Port::Smtps, Fault::SmtpStarttlsStillAdvertised.into());
        assert!(say(&mut s, "EHLO c.example").contains("250-STARTTLS\r\n"));
    }

    /// Every mode gets arbitrary lines, over-long lines and TLS resets; no
    /// input may panic, and every reply stays well-formed.
    #[test]
    fn arbitrary_input_in_every_mode() {
        let words: &[&[u8]] = &[
            b"EHLO x",
            b"HELO y",
            b"MAIL FROM:<a@b.example> SIZE=10",
            b"RCPT TO:<alice@localhost>",
            b"RCPT TO:<Postmaster>",
            b"DATA",
            b".",
            b"..",
            b"AUTH PLAIN",
            b"AUTH LOGIN",
            b"AUTH CRAM-MD5",
            b"AUTH PLAIN =",
            b"YWxpY2U=",
            b"*",
            b"=",
            b"STARTTLS",
            b"RSET",
            b"QUIT",
            b"\xff\x00\r",
        ];
        let mut state: u64 = 0x0123_4567_89ab_cdef;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for port in [Port::Relay, Port::Submission, Port::Smtps] {
            let mut s = session(port, Faults::none().with(Fault::SmtpAuthInCleartext));
            for _ in 0..5000 {
                let n = next();
                let mut out = Vec::new();
                let action = match n % 10 {
                    0 => s.feed(Input::TooLong { crlf: n % 4 == 0 }, &mut out),
                    1 => {
                        s.tls_started();
                        Action::Continue
                    }
                    2 => {
                        let junk: Vec<u8> = (0..next() % 80).map(|_| (next() % 256) as u8).collect();
                        s.feed(Input::Line(&[&junk[..], b"\r\n"].concat()), &mut out)
                    }
                    _ => {
                        let word = words[(next() % words.len() as u64) as usize];
                        let eol: &[u8] = if n % 5 == 0 { b"\n" } else { b"\r\n" };
                        s.feed(Input::Line(&[word, eol].concat()), &mut out)
                    }
                };
                assert!(matches!(
                    action,
                    Action::Continue | Action::Close | Action::StartTls
                ));
                for line in out.split_inclusive(|b| *b == b'\n') {
                    assert!(line.ends_with(b"\r\n") && line.len() <= 512, "{line:?}");
                    assert!(line[..3].iter().all(u8::is_ascii_digit), "{line:?}");
                }
            }
        }
    }

    #[test]
    fn data_is_delivered_with_trace_fields() {
        let mut s = session(Port::Relay, Faults::none());
        let before = s.shared.store.messages("bob").map(|m| m.len());
        say(&mut s, "EHLO client.example");
        say(&mut s, "MAIL FROM:<sender@remote.example>");
        say(&mut s, "RCPT TO:<bob@localhost>");
        say(&mut s, "RCPT TO:<BOB@example.test>");
        say(&mut s, "DATA");
        assert_eq!(say(&mut s, "Subject: hi"), "");
        assert_eq!(say(&mut s, ""), "");
        assert_eq!(say(&mut s, "..dot"), "");
        let done = say(&mut s, ".");
        assert!(done.starts_with("250 2.0.0 OK: queued as MC"), "{done}");
        let inbox = s.shared.store.messages("bob").expect("bob");
        assert_eq!(Some(inbox.len()), before.map(|n| n + 1), "one copy per account");
        let text = String::from_utf8(inbox.last().expect("new").data.to_vec()).expect("utf8");
        assert!(text.starts_with("Return-Path: <sender@remote.example>\r\nReceived: from client.example ([127.0.0.1])\r\n\tby mailcheck.local (mailcheck) with ESMTP id MC"), "{text}");
        assert!(!text.contains("\tfor <"), "two addresses: no `for`");
        assert!(text.ends_with(" +0000\r\nSubject: hi\r\n\r\n.dot\r\n"), "{text}");
        assert_eq!(
            code(&say(&mut s, "RCPT TO:<bob@localhost>")),
            "503",
            "transaction over"
        );
    }
}
