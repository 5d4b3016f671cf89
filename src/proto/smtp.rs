//! SMTP (RFC 5321) as the client sees it: the reply grammar (three-digit
//! codes, `-` continuation lines with one code, 512-octet lines, CRLF),
//! enhanced status codes (RFC 2034, RFC 3463), the EHLO keyword list, the
//! transaction state model (greeting -> EHLO/HELO -> MAIL -> RCPT -> DATA,
//! reset by RSET and by STARTTLS, RFC 3207), AUTH rules (RFC 4954), SIZE
//! (RFC 1870), and the sending side's own craft: dot-stuffing message data
//! and encoding AUTH responses.
//!
//! Everything is pure: replies in, findings out. The runner feeds every
//! line it reads through [`ReplyReader`] and every reply through
//! [`Session::reply`], so these checks run whatever a scenario asks.

use crate::finding::Finding;
use base64::Engine;
use md5::{Digest, Md5};
use std::collections::VecDeque;

/// Longest reply line, CRLF included (RFC 5321 section 4.5.3.1.5).
pub const REPLY_LINE_MAX: usize = 512;
/// Longest command line, CRLF included (RFC 5321 section 4.5.3.1.4).
pub const COMMAND_LINE_MAX: usize = 512;
/// Longest line of message text, CRLF included (RFC 5321 section 4.5.3.1.6).
pub const TEXT_LINE_MAX: usize = 1000;
/// Most lines one reply may have before we stop keeping them.
const REPLY_LINES_KEPT: usize = 1000;
/// Most bytes of one reply line kept (longer ones are reported and cut).
const LINE_KEPT: usize = 4096;

const RFC_REPLY: &str = "RFC 5321 section 4.2";
const RFC_MULTILINE: &str = "RFC 5321 section 4.2.1";
const RFC_LINE_LIMIT: &str = "RFC 5321 section 4.5.3.1.5";
const RFC_CRLF: &str = "RFC 5321 section 2.3.8";
const RFC_ENHANCED: &str = "RFC 2034 section 3, RFC 3463 section 2";
const RFC_SEQUENCE: &str = "RFC 5321 sections 3.3 and 4.1.4";
const RFC_EHLO: &str = "RFC 5321 section 4.1.1.1";
const RFC_STARTTLS: &str = "RFC 3207 section 4.2";
const RFC_AUTH: &str = "RFC 4954 section 4";
const RFC_SIZE: &str = "RFC 1870 section 6";

/// One line of a reply: code, whether more lines follow, and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    pub more: bool,
    pub text: &'a str,
}

/// Parse `250-SIZE 1000` / `250 OK` / `220` (RFC 5321 section 4.2), leniently:
/// the probe uses it to read replies without judging them.
pub fn parse_line(line: &str) -> Option<ReplyLine<'_>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let digits = line.get(..3)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&digits.as_bytes()[0]) {
        return None;
    }
    let code = digits.parse().ok()?;
    match line.as_bytes().get(3) {
        None => Some(ReplyLine {
            code,
            more: false,
            text: "",
        }),
        Some(b' ') => Some(ReplyLine {
            code,
            more: false,
            text: &line[4..],
        }),
        Some(b'-') => Some(ReplyLine {
            code,
            more: true,
            text: &line[4..],
        }),
        Some(_) => None,
    }
}

/// A complete reply: its code and the text of every line (after the code
/// and its separator).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl std::fmt::Display for Enhanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// The enhanced code at the start of a reply text, if there is one.
pub fn parse_enhanced(text: &str) -> Option<Enhanced> {
    let word = text.split([' ', '\t']).next()?;
    let mut parts = word.split('.');
    let (c, s, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let num = |p: &str, max_len: usize| {
        (!p.is_empty() && p.len() <= max_len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
    };
    let class = num(c, 1)?;
    Some(Enhanced {
        class: u8::try_from(class).ok()?,
        subject: num(s, 3)?,
        detail: num(d, 3)?,
    })
}

impl Reply {
    /// All lines joined, as a user would see them.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {l}", self.code))
            .collect::<Vec<_>>()
            .join(" / ")
    }

    /// The first line as `CODE TEXT` (the separator written as a space),
    /// which is what `S:` patterns are matched against.
    pub fn first_line(&self) -> String {
        match self.lines.first().map(String::as_str) {
            None | Some("") => self.code.to_string(),
            Some(t) => format!("{} {t}", self.code),
        }
    }

    /// The first digit: 2 done, 3 send more, 4 temporary, 5 permanent.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The enhanced status code of the first line.
    pub fn enhanced(&self) -> Option<Enhanced> {
        parse_enhanced(self.lines.first()?)
    }

    /// EHLO keywords (first word of each line after the first), upper-cased.
    pub fn ehlo_keywords(&self) -> Vec<String> {
        self.lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(|k| k.to_ascii_uppercase())
            .collect()
    }

    /// Parameters of one EHLO keyword (e.g. the mechanisms after `AUTH`).
    pub fn ehlo_params(&self, keyword: &str) -> Option<Vec<String>> {
        self.lines.iter().skip(1).find_map(|l| {
            let mut words = l.split_whitespace();
            let k = words.next()?;
            k.eq_ignore_ascii_case(keyword)
                .then(|| words.map(str::to_string).collect())
        })
    }
}

/// Assembles reply lines into replies, checking each line's grammar.
///
/// Lines arrive as `Conn::read_line` gives them: whole, or in pieces when
/// longer than its cap (`complete == false` for all but the last piece).
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
    partial: Vec<u8>,
    partial_len: usize,
    /// Set once a line of this reply had the wrong code, so that one finding
    /// is made per reply rather than per line.
    code_mismatch_seen: bool,
}

impl ReplyReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one piece of a line. Returns the reply when this line ends it.
    /// `more_waiting` says whether more bytes are already buffered: it decides
    /// whether a line with a broken separator is taken as a continuation.
    pub fn feed(
        &mut self,
        piece: &[u8],
        complete: bool,
        more_waiting: bool,
        found: &mut Vec<Finding>,
    ) -> Option<Reply> {
        self.partial_len += piece.len();
        if self.partial.len() < LINE_KEPT {
            let room = LINE_KEPT - self.partial.len();
            self.partial.extend_from_slice(&piece[..piece.len().min(room)]);
        }
        if !complete {
            return None;
        }
        let line = std::mem::take(&mut self.partial);
        let len = std::mem::replace(&mut self.partial_len, 0);
        self.line(&line, len, more_waiting, found)
    }

    fn line(
        &mut self,
        raw: &[u8],
        len: usize,
        more_waiting: bool,
        found: &mut Vec<Finding>,
    ) -> Option<Reply> {
        let (body, ending) = match raw.strip_suffix(b"\r\n") {
            Some(b) => (b, "CRLF"),
            None => match raw.strip_suffix(b"\n") {
                Some(b) => (b, "LF"),
                None => (raw, "none"),
            },
        };
        if ending == "LF" {
            found.push(
                Finding::must(
                    "smtp.crlf",
                    RFC_CRLF,
                    "a reply line ends in a bare LF instead of CRLF",
                )
                .with_bytes(raw),
            );
        }
        if len > REPLY_LINE_MAX {
            found.push(
                Finding::must(
                    "smtp.reply-too-long",
                    RFC_LINE_LIMIT,
                    format!("a reply line is {len} octets; the limit is {REPLY_LINE_MAX} including CRLF"),
                )
                .with_bytes(&raw[..raw.len().min(80)]),
            );
        }
        let code = parse_code(body);
        let Some(code) = code else {
            found.push(
                Finding::must(
                    "smtp.reply-syntax",
                    RFC_REPLY,
                    "a reply line does not start with a three-digit reply code (2xx to 5xx, second digit 0 to 5)",
                )
                .with_bytes(raw),
            );
            // Without a code nothing says whether more lines follow: the reply ends here.
            let code = self.code.take().unwrap_or(0);
            let mut lines = std::mem::take(&mut self.lines);
            lines.push(String::from_utf8_lossy(body).into_owned());
            self.code_mismatch_seen = false;
            return Some(Reply { code, lines });
        };
        let sep = body.get(3).copied();
        let text_start = if sep.is_some() { 4 } else { 3 };
        let text = body.get(text_start..).unwrap_or_default();
        let more = match sep {
            None | Some(b' ') => false,
            Some(b'-') => true,
            Some(_) => {
                found.push(
                    Finding::must(
                        "smtp.reply-syntax",
                        RFC_REPLY,
                        "the reply code is followed by neither a space nor a hyphen",
                    )
                    .with_bytes(raw),
                );
                // A broken separator with more data already waiting is most
                // likely one line of a longer reply.
                more_waiting
            }
        };
        let text = if sep.is_some_and(|s| s != b' ' && s != b'-') {
            body.get(3..).unwrap_or_default()
        } else {
            text
        };
        if let Some(bad) = text.iter().find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            found.push(
                Finding::must(
                    "smtp.reply-syntax",
                    RFC_REPLY,
                    format!("reply text holds the control character 0x{bad:02x}"),
                )
                .with_bytes(raw),
            );
        }
        match self.code {
            None => self.code = Some(code),
            Some(first) if first != code && !self.code_mismatch_seen => {
                self.code_mismatch_seen = true;
                found.push(
                    Finding::must(
                        "smtp.multiline-code",
                        RFC_MULTILINE,
                        format!("a multi-line reply mixes codes: {first} then {code}"),
                    )
                    .with_bytes(raw),
                );
            }
            Some(_) => {}
        }
        if self.lines.len() < REPLY_LINES_KEPT {
            self.lines.push(String::from_utf8_lossy(text).into_owned());
        }
        if more {
            return None;
        }
        self.code_mismatch_seen = false;
        Some(Reply {
            code: self.code.take().unwrap_or(code),
            lines: std::mem::take(&mut self.lines),
        })
    }
}

/// `Reply-code = %x32-35 %x30-35 %x30-39` (RFC 5321 section 4.2).
fn parse_code(line: &[u8]) -> Option<u16> {
    let d = line.get(..3)?;
    let ok = (b'2'..=b'5').contains(&d[0]) && (b'0'..=b'5').contains(&d[1]) && d[2].is_ascii_digit();
    ok.then(|| u16::from(d[0] - b'0') * 100 + u16::from(d[1] - b'0') * 10 + u16::from(d[2] - b'0'))
}

/// What a command is, as far as the state model cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
    /// A line sent in answer to a 334 challenge during AUTH.
    AuthResponse,
    /// The message text after a 354, up to and including the final `.`.
    Message,
    Other(String),
}

/// A command sent to the server (its text already expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub verb: Verb,
    pub args: String,
    /// For [`Verb::Message`]: octets of the message before stuffing;
    /// otherwise the command line's length with CRLF.
    pub octets: u64,
}

impl Command {
    pub fn parse(line: &str) -> Command {
        let line = line.trim_end_matches(['\r', '\n']);
        let (word, args) = match line.split_once(' ') {
            Some((w, a)) => (w, a.to_string()),
            None => (line, String::new()),
        };
        let upper = word.to_ascii_uppercase();
        // `MAIL FROM:` and `RCPT TO:` are two words; the verb is the first.
        let verb = match upper.as_str() {
            "EHLO" => Verb::Ehlo,
            "HELO" => Verb::Helo,
            "MAIL" => Verb::Mail,
            "RCPT" => Verb::Rcpt,
            "DATA" => Verb::Data,
            "RSET" => Verb::Rset,
            "NOOP" => Verb::Noop,
            "QUIT" => Verb::Quit,
            "VRFY" => Verb::Vrfy,
            "EXPN" => Verb::Expn,
            "HELP" => Verb::Help,
            "STARTTLS" => Verb::StartTls,
            "AUTH" => Verb::Auth,
            _ => Verb::Other(upper),
        };
        Command {
            verb,
            args,
            octets: line.len() as u64 + 2,
        }
    }

    /// Longer than a server must accept (RFC 5321 section 4.5.3.1.4): it may refuse it.
    fn over_line_limit(&self) -> bool {
        self.verb != Verb::Message && self.octets > COMMAND_LINE_MAX as u64
    }

    pub fn auth_response() -> Command {
        Command {
            verb: Verb::AuthResponse,
            args: String::new(),
            octets: 0,
        }
    }

    pub fn message(octets: u64) -> Command {
        Command {
            verb: Verb::Message,
            args: String::new(),
            octets,
        }
    }

    /// A short name for messages: the verb, and for AUTH its mechanism only
    /// (the initial response is a secret).
    pub fn label(&self) -> String {
        match &self.verb {
            Verb::Auth => {
                let mech = self.args.split_whitespace().next().unwrap_or("");
                format!("AUTH {mech}").trim_end().to_string()
            }
            Verb::AuthResponse => "AUTH response".into(),
            Verb::Message => "the message text".into(),
            Verb::Mail => "MAIL".into(),
            Verb::Rcpt => "RCPT".into(),
            Verb::Other(v) => v.clone(),
            v => format!("{v:?}").to_ascii_uppercase(),
        }
    }

    /// `SIZE=n` on a MAIL command (RFC 1870).
    fn declared_size(&self) -> Option<u64> {
        self.args.split_whitespace().find_map(|w| {
            let (k, v) = w.split_once('=')?;
            k.eq_ignore_ascii_case("SIZE").then(|| v.parse().ok()).flatten()
        })
    }
}

/// Where the mail transaction stands (RFC 5321 section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    None,
    /// MAIL accepted, no recipient yet.
    Mail,
    /// MAIL and this many recipients accepted.
    Rcpt(u32),
    /// DATA answered 354: the message text is expected.
    Data,
}

/// How the client introduced itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    Ehlo(Reply),
    Helo,
}

/// One SMTP session as the client sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub tls: bool,
    /// Set by an accepted EHLO or HELO; cleared by STARTTLS.
    pub hello: Option<Hello>,
    pub transaction: Transaction,
    pub authenticated: bool,
    /// The server said (530 with "TLS" in the text) that TLS is needed first.
    pub said_tls_required: bool,
    /// The last cleartext EHLO offered AUTH PLAIN/LOGIN: judged once the server claims TLS is required.
    cleartext_auth_offered: bool,
    pending: VecDeque<Command>,
}

impl Session {
    pub fn new(tls: bool) -> Self {
        Session {
            tls,
            hello: None,
            transaction: Transaction::None,
            authenticated: false,
            said_tls_required: false,
            cleartext_auth_offered: false,
            pending: VecDeque::new(),
        }
    }

    /// The EHLO reply in force, if the client said EHLO.
    pub fn ehlo(&self) -> Option<&Reply> {
        match &self.hello {
            Some(Hello::Ehlo(r)) => Some(r),
            _ => None,
        }
    }

    pub fn has_extension(&self, keyword: &str) -> bool {
        self.ehlo()
            .is_some_and(|r| r.ehlo_keywords().iter().any(|k| k.eq_ignore_ascii_case(keyword)))
    }

    /// The advertised SIZE limit; `None` when absent or 0 (no fixed limit).
    pub fn size_limit(&self) -> Option<u64> {
        let p = self.ehlo()?.ehlo_params("SIZE")?;
        p.first()?.parse().ok().filter(|&n| n > 0)
    }

    pub fn auth_mechanisms(&self) -> Vec<String> {
        self.ehlo()
            .and_then(|r| r.ehlo_params("AUTH"))
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.to_ascii_uppercase())
            .collect()
    }

    /// Capability names for `requires:`: the EHLO keywords and `AUTH=MECH`
    /// for each mechanism.
    pub fn capabilities(&self) -> Vec<String> {
        let mut out: Vec<String> = self.ehlo().map(Reply::ehlo_keywords).unwrap_or_default();
        out.extend(self.auth_mechanisms().into_iter().map(|m| format!("AUTH={m}")));
        out
    }

    /// Check the greeting (RFC 5321 sections 3.1 and 4.3.2: 220, or 554/421).
    pub fn greet(&mut self, reply: &Reply, found: &mut Vec<Finding>) {
        match reply.code {
            220 | 554 | 421 => {}
            c => found.push(Finding::must(
                "smtp.greeting",
                "RFC 5321 sections 3.1 and 4.3.2",
                format!("the greeting has code {c}; a server greets with 220 (or 554 / 421 to refuse)"),
            )),
        }
    }

    /// A command went out; its reply will be matched in order.
    pub fn sent(&mut self, cmd: Command) {
        if cmd.verb == Verb::Message {
            self.transaction = Transaction::Data;
        }
        self.pending.push_back(cmd);
    }

    /// The reply to the oldest command still waiting: check it against the
    /// rules and move the state. Returns that command.
    pub fn reply(&mut self, reply: &Reply, found: &mut Vec<Finding>) -> Option<Command> {
        let cmd = self.pending.pop_front()?;
        self.check_enhanced(&cmd, reply, found);
        self.check_class(&cmd, reply, found);
        if reply.code == 530 {
            let text = reply.lines.join(" ").to_ascii_uppercase();
            if text.contains("TLS") && !self.tls {
                self.said_tls_required = true;
                if self.cleartext_auth_offered {
                    found.push(Finding::should(
                        "smtp.auth-cleartext",
                        RFC_AUTH,
                        "the server says TLS is required first, yet its cleartext EHLO offered AUTH",
                    ));
                }
            }
        }
        let accepted = reply.is_positive();
        match &cmd.verb {
            Verb::Ehlo if reply.code == 250 => self.ehlo_accepted(reply, found),
            Verb::Helo if reply.code == 250 => {
                self.hello = Some(Hello::Helo);
                self.transaction = Transaction::None;
            }
            Verb::Mail if accepted => {
                if self.hello.is_none() {
                    // "to the degree that they cannot be processed": many
                    // servers (Postfix by default) take MAIL without EHLO.
                    let mut f = self.sequence("MAIL was accepted before EHLO or HELO");
                    f.severity = crate::finding::Severity::Should;
                    found.push(f);
                } else if self.transaction != Transaction::None {
                    found.push(self.sequence("MAIL was accepted inside a mail transaction (a nested MAIL)"));
                }
                if let (Some(limit), Some(size)) = (self.size_limit(), cmd.declared_size()) {
                    if size > limit {
                        found.push(Finding::should(
                            "smtp.size-limit",
                            RFC_SIZE,
                            format!("MAIL with SIZE={size} was accepted although the server's SIZE limit is {limit} (552 expected)"),
                        ));
                    }
                }
                self.transaction = Transaction::Mail;
            }
            Verb::Rcpt if accepted => match self.transaction {
                Transaction::Mail => self.transaction = Transaction::Rcpt(1),
                Transaction::Rcpt(n) => self.transaction = Transaction::Rcpt(n + 1),
                _ => found
                    .push(self.sequence("RCPT was accepted without a MAIL command before it (503 required)")),
            },
            Verb::Data => match (reply.code, self.transaction) {
                (354, Transaction::Rcpt(_)) => self.transaction = Transaction::Data,
                (354, _) => {
                    found.push(self.sequence(
                        "DATA was answered 354 without an accepted MAIL and RCPT (503 or 554 expected)",
                    ));
                    self.transaction = Transaction::Data;
                }
                (c, _) if c / 100 == 2 => found.push(Finding::must(
                    "smtp.data-reply",
                    "RFC 5321 sections 3.3 and 4.3.2",
                    format!("DATA was answered {c}: the server asks for the message with 354, or refuses"),
                )),
                _ => {}
            },
            Verb::Message => {
                if accepted {
                    if let Some(limit) = self.size_limit() {
                        if cmd.octets > limit {
                            found.push(Finding::should(
                                "smtp.size-limit",
                                RFC_SIZE,
                                format!(
                                    "a {}-octet message was accepted although the server's SIZE limit is {limit}",
                                    cmd.octets
                                ),
                            ));
                        }
                    }
                }
                // Accepted or not, the end of the data ends the transaction.
                self.transaction = Transaction::None;
            }
            Verb::Rset => {
                if reply.code != 250 {
                    found.push(Finding::must(
                        "smtp.rset-reply",
                        "RFC 5321 section 4.1.1.5",
                        format!("RSET was answered {}; a server MUST answer 250", reply.code),
                    ));
                }
                if accepted {
                    self.transaction = Transaction::None;
                }
            }
            // An overlong line may be refused (500 line too long, RFC 5321
            // section 4.5.3.1.10); a parameter SHOULD be ignored.
            Verb::Noop if reply.code != 250 && cmd.over_line_limit() => {}
            Verb::Noop if reply.code != 250 && !cmd.args.is_empty() => found.push(Finding::should(
                "smtp.noop-reply",
                "RFC 5321 section 4.1.1.9",
                format!(
                    "NOOP with a parameter was answered {}; servers SHOULD ignore the parameter",
                    reply.code
                ),
            )),
            Verb::Noop if reply.code != 250 => {
                if reply.code == 503 && self.hello.is_none() {
                    found.push(before_hello("NOOP"));
                } else {
                    found.push(Finding::must(
                        "smtp.noop-reply",
                        "RFC 5321 section 4.1.1.9",
                        format!("NOOP was answered {}; a server MUST answer 250", reply.code),
                    ));
                }
            }
            Verb::Vrfy | Verb::Expn | Verb::Help if reply.code == 503 && self.hello.is_none() => {
                found.push(before_hello(&cmd.label()));
            }
            Verb::Quit if reply.code != 221 => found.push(Finding::must(
                "smtp.quit-reply",
                "RFC 5321 section 4.1.1.10",
                format!("QUIT was answered {}; a server MUST answer 221", reply.code),
            )),
            Verb::Auth if reply.code == 235 || reply.code == 334 => {
                if self.authenticated {
                    found.push(Finding::must(
                        "smtp.auth-twice",
                        RFC_AUTH,
                        "a second AUTH was accepted after a successful one (503 required)",
                    ));
                }
                if matches!(self.transaction, Transaction::Mail | Transaction::Rcpt(_)) {
                    found.push(Finding::must(
                        "smtp.auth-in-transaction",
                        RFC_AUTH,
                        "AUTH was accepted during a mail transaction (503 required)",
                    ));
                }
                if reply.code == 235 {
                    self.auth_accepted(found);
                }
            }
            Verb::AuthResponse if reply.code == 235 => self.auth_accepted(found),
            Verb::Other(v) if accepted => found.push(Finding::should(
                "smtp.unknown-accepted",
                "RFC 5321 section 4.2.4",
                format!(
                    "the unknown command `{v}` was answered {}; 500 or 502 expected",
                    reply.code
                ),
            )),
            _ => {}
        }
        Some(cmd)
    }

    fn auth_accepted(&mut self, found: &mut Vec<Finding>) {
        if !self.tls && self.said_tls_required {
            found.push(Finding::must(
                "smtp.auth-cleartext",
                RFC_AUTH,
                "AUTH succeeded over cleartext although the server said TLS is required first",
            ));
        }
        self.authenticated = true;
    }

    fn ehlo_accepted(&mut self, reply: &Reply, found: &mut Vec<Finding>) {
        if reply
            .lines
            .first()
            .is_none_or(|l| l.split_whitespace().next().is_none())
        {
            found.push(Finding::must(
                "smtp.ehlo-syntax",
                RFC_EHLO,
                "the first line of the EHLO reply does not name the server (ehlo-ok-rsp starts with a domain)",
            ));
        }
        for line in reply.lines.iter().skip(1) {
            let keyword = line.split(' ').next().unwrap_or("");
            let valid = keyword.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && keyword.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid {
                found.push(Finding::must(
                    "smtp.ehlo-syntax",
                    RFC_EHLO,
                    format!("`{line}` is not an EHLO line: a keyword of letters, digits and hyphens, then parameters"),
                ));
            }
        }
        let ehlo = reply.clone();
        let keywords = ehlo.ehlo_keywords();
        if self.tls && keywords.iter().any(|k| k == "STARTTLS") {
            found.push(Finding::must(
                "smtp.starttls-after-tls",
                RFC_STARTTLS,
                "the EHLO reply after the TLS handshake still offers STARTTLS",
            ));
        }
        if let Some(p) = ehlo.ehlo_params("SIZE") {
            if p.len() > 1 || p.first().is_some_and(|v| !v.bytes().all(|b| b.is_ascii_digit())) {
                found.push(Finding::must(
                    "smtp.ehlo-syntax",
                    "RFC 1870 section 4",
                    format!("SIZE takes one number, got `{}`", p.join(" ")),
                ));
            }
        }
        let plain_passwords = ehlo
            .ehlo_params("AUTH")
            .unwrap_or_default()
            .iter()
            .any(|m| m.eq_ignore_ascii_case("PLAIN") || m.eq_ignore_ascii_case("LOGIN"));
        if !self.tls {
            self.cleartext_auth_offered = plain_passwords;
            if plain_passwords && self.said_tls_required {
                found.push(Finding::should(
                    "smtp.auth-cleartext",
                    RFC_AUTH,
                    "the server says TLS is required first, yet offers AUTH PLAIN/LOGIN in cleartext",
                ));
            }
        }
        // EHLO also resets any transaction (RFC 5321 section 4.1.4).
        self.transaction = Transaction::None;
        self.hello = Some(Hello::Ehlo(ehlo));
    }

    /// The TLS handshake after STARTTLS completed: back to the state right
    /// after the greeting, forgetting EHLO (RFC 3207 section 4.2).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.hello = None;
        self.transaction = Transaction::None;
        self.authenticated = false;
        self.said_tls_required = false;
    }

    fn sequence(&self, what: &str) -> Finding {
        let after_tls = if self.tls && self.hello.is_none() {
            " (after STARTTLS the session starts over and needs a new EHLO, RFC 3207 section 4.2)"
        } else {
            ""
        };
        Finding::must("smtp.sequence", RFC_SEQUENCE, format!("{what}{after_tls}"))
    }

    /// Enhanced codes: their class matches the reply's; with
    /// ENHANCEDSTATUSCODES advertised they preface every 2xx/4xx/5xx reply
    /// but the greeting and the EHLO/HELO reply.
    fn check_enhanced(&self, cmd: &Command, reply: &Reply, found: &mut Vec<Finding>) {
        let class = reply.class();
        if class == 3 {
            return;
        }
        match reply.enhanced() {
            Some(e) if u16::from(e.class) != class => found.push(Finding::must(
                "smtp.enhanced-code",
                RFC_ENHANCED,
                format!(
                    "reply {} carries the enhanced code {e}, whose class does not match the reply's",
                    reply.code
                ),
            )),
            Some(_) => {}
            None if self.has_extension("ENHANCEDSTATUSCODES")
                && !matches!(cmd.verb, Verb::Ehlo | Verb::Helo) =>
            {
                found.push(Finding::must(
                    "smtp.enhanced-code",
                    RFC_ENHANCED,
                    format!(
                        "the server advertises ENHANCEDSTATUSCODES, but reply `{}` to {} has no enhanced code",
                        reply.first_line(),
                        cmd.label()
                    ),
                ))
            }
            None => {}
        }
    }

    /// 3xx asks for more: only DATA (354) and AUTH (334) may get it; 221 only QUIT.
    fn check_class(&self, cmd: &Command, reply: &Reply, found: &mut Vec<Finding>) {
        let allowed = match reply.code {
            354 => cmd.verb == Verb::Data,
            334 => matches!(cmd.verb, Verb::Auth | Verb::AuthResponse),
            c if c / 100 == 3 => false,
            221 => cmd.verb == Verb::Quit,
            _ => true,
        };
        if !allowed {
            found.push(Finding::must(
                "smtp.reply-code",
                "RFC 5321 section 4.3.2",
                format!(
                    "{} was answered {}, a code that command never gets",
                    cmd.label(),
                    reply.code
                ),
            ));
        }
    }
}

fn before_hello(verb: &str) -> Finding {
    Finding::should(
        "smtp.before-hello",
        "RFC 5321 section 4.1.4",
        format!("{verb} was refused with 503 before EHLO; servers SHOULD process it normally"),
    )
}

/// Dot-stuffs message text on its way out (RFC 5321 section 4.5.2), making
/// every line end in CRLF. Streams: feed any pieces, then [`DotStuffer::finish`].
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last byte fed was a CR whose LF may come in the next piece.
    pending_cr: bool,
    /// Octets of the normalised message (CRLF line ends, before stuffing).
    pub octets: u64,
    /// The longest line seen, CRLF included.
    pub longest_line: usize,
    line_len: usize,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
            octets: 0,
            longest_line: 0,
            line_len: 0,
        }
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the stuffed form of `input` to `out`. Bare LF and bare CR
    /// become CRLF, so what is sent is always well-formed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 4);
        let mut rest = input;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
            self.end_line(out);
        }
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            self.at_line_start = false;
            match memchr::memchr2(b'\r', b'\n', rest) {
                None => {
                    out.extend_from_slice(rest);
                    self.line_len += rest.len();
                    self.octets += rest.len() as u64;
                    return;
                }
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    self.line_len += i;
                    self.octets += i as u64;
                    let is_cr = rest[i] == b'\r';
                    rest = &rest[i + 1..];
                    if is_cr {
                        match rest.first() {
                            Some(b'\n') => rest = &rest[1..],
                            Some(_) => {}
                            None => {
                                self.pending_cr = true;
                                return;
                            }
                        }
                    }
                    self.end_line(out);
                }
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.octets += 2;
        self.longest_line = self.longest_line.max(self.line_len + 2);
        self.line_len = 0;
        self.at_line_start = true;
    }

    /// End the text (with CRLF if it did not end with one) and append the
    /// terminating `.` line.
    pub fn finish(mut self, out: &mut Vec<u8>) -> (u64, usize) {
        if self.pending_cr || !self.at_line_start {
            self.pending_cr = false;
            self.end_line(out);
        }
        out.extend_from_slice(b".\r\n");
        (self.octets, self.longest_line)
    }
}

/// Message text with every line ending made CRLF (what the receiver stores,
/// before any header it adds): the reference a delivery check compares with.
/// Agrees with what [`DotStuffer`] sends, minus the stuffing.
pub fn normalise_crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32 + 2);
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `AUTH PLAIN` initial response: base64 of `\0user\0password` (RFC 4616).
pub fn auth_plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// One base64 line of `AUTH LOGIN` (user name or password).
pub fn auth_login_line(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `AUTH CRAM-MD5` answer to a base64 challenge (RFC 2195): base64 of
/// `user HEX(HMAC-MD5(password, challenge))`. `None` when the challenge is not base64.
pub fn auth_cram_md5(user: &str, password: &str, challenge_b64: &str) -> Option<String> {
    let challenge = base64::engine::general_purpose::STANDARD
        .decode(challenge_b64.trim())
        .ok()?;
    let mac = hmac_md5(password.as_bytes(), &challenge);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    Some(base64::engine::general_purpose::STANDARD.encode(format!("{user} {hex}")))
}

/// HMAC-MD5 (RFC 2104), small enough to write out rather than add a crate.
fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..16].copy_from_slice(&Md5::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Md5::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let inner = inner.finalize();
    let mut outer = Md5::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> (Vec<Reply>, Vec<Finding>) {
        let mut r = ReplyReader::new();
        let mut found = Vec::new();
        let mut out = Vec::new();
        let lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(reply) = r.feed(l, true, i + 1 < lines.len(), &mut found) {
                out.push(reply);
            }
        }
        (out, found)
    }

    fn rules(found: &[Finding]) -> Vec<&'static str> {
        found.iter().map(|f| f.rule).collect()
    }

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn parses_reply_lines() {
        assert_eq!(
            parse_line("250-SIZE 100\r\n"),
            Some(ReplyLine {
                code: 250,
                more: true,
                text: "SIZE 100"
            })
        );
        assert_eq!(
            parse_line("250"),
            Some(ReplyLine {
                code: 250,
                more: false,
                text: ""
            })
        );
        assert_eq!(parse_line("25x ok"), None);
        assert_eq!(parse_line("650 nope"), None);
        assert_eq!(parse_line("250_x"), None);
    }

    #[test]
    fn a_multiline_reply_is_one_reply() {
        let (replies, found) =
            read_all(b"250-mx.example\r\n250-SIZE 1000\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n");
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(replies.len(), 1);
        let r = &replies[0];
        assert_eq!(r.ehlo_keywords(), vec!["SIZE", "AUTH", "STARTTLS"]);
        assert_eq!(r.ehlo_params("auth").unwrap(), vec!["PLAIN", "LOGIN"]);
        assert_eq!(r.first_line(), "250 mx.example");
    }

    #[test]
    fn reply_grammar_findings() {
        let (_, f) = read_all(b"250-a\r\n251-b\r\n250 c\r\n");
        assert_eq!(rules(&f), vec!["smtp.multiline-code"]);
        let (_, f) = read_all(b"250 ok\n");
        assert_eq!(rules(&f), vec!["smtp.crlf"]);
        let long = format!("250 {}\r\n", "x".repeat(600));
        let (_, f) = read_all(long.as_bytes());
        assert_eq!(rules(&f), vec!["smtp.reply-too-long"]);
        let (r, f) = read_all(b"hello there\r\n");
        assert_eq!(rules(&f), vec!["smtp.reply-syntax"]);
        assert_eq!(r.len(), 1);
        let (_, f) = read_all(b"260 ok\r\n");
        assert_eq!(rules(&f), vec!["smtp.reply-syntax"]);
        let (_, f) = read_all(b"250 a\x01b\r\n");
        assert_eq!(rules(&f), vec!["smtp.reply-syntax"]);
        // A broken separator in the middle of a reply: still one reply.
        let (r, f) = read_all(b"250-a\r\n250SIZE 100\r\n250 c\r\n");
        assert_eq!(rules(&f), vec!["smtp.reply-syntax"]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].lines.len(), 3);
    }

    #[test]
    fn long_lines_in_pieces_are_measured_whole() {
        let mut found = Vec::new();
        let mut first = b"250 ".to_vec();
        first.extend_from_slice(&[b'y'; 296]);
        let mut r = ReplyReader::new();
        assert!(r.feed(&first, false, true, &mut found).is_none());
        let reply = r.feed(&[b'z'; 300], true, false, &mut found).unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(rules(&found), vec!["smtp.reply-too-long"]);
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(
            parse_enhanced("5.7.1 denied"),
            Some(Enhanced {
                class: 5,
                subject: 7,
                detail: 1
            })
        );
        assert_eq!(parse_enhanced("hello"), None);
        assert_eq!(parse_enhanced("2.0"), None);
        let mut s = ehlo_session(&["mx", "ENHANCEDSTATUSCODES"]);
        let mut f = Vec::new();
        s.sent(Command::parse("RCPT TO:<x@y>"));
        s.reply(&reply(550, &["2.1.1 unknown"]), &mut f);
        assert_eq!(rules(&f), vec!["smtp.enhanced-code"]);
        f.clear();
        s.sent(Command::parse("NOOP"));
        s.reply(&reply(250, &["ok"]), &mut f);
        assert_eq!(rules(&f), vec!["smtp.enhanced-code"]);
        f.clear();
        s.sent(Command::parse("NOOP"));
        s.reply(&reply(250, &["2.0.0 ok"]), &mut f);
        assert!(f.is_empty(), "{f:?}");
    }

    fn ehlo_session(lines: &[&str]) -> Session {
        let mut s = Session::new(false);
        let mut f = Vec::new();
        s.greet(&reply(220, &["mx ESMTP"]), &mut f);
        s.sent(Command::parse("EHLO me"));
        s.reply(&reply(250, lines), &mut f);
        assert!(f.is_empty(), "{f:?}");
        s
    }

    fn answer(s: &mut Session, cmd: &str, code: u16) -> Vec<&'static str> {
        let mut f = Vec::new();
        s.sent(Command::parse(cmd));
        s.reply(&reply(code, &["x"]), &mut f);
        rules(&f)
    }

    #[test]
    fn transaction_order() {
        let mut s = Session::new(false);
        let mut f = Vec::new();
        s.greet(&reply(220, &["mx"]), &mut f);
        assert_eq!(answer(&mut s, "MAIL FROM:<a@b>", 250), vec!["smtp.sequence"]);
        let mut s = ehlo_session(&["mx", "SIZE 100"]);
        assert_eq!(answer(&mut s, "RCPT TO:<a@b>", 250), vec!["smtp.sequence"]);
        assert_eq!(answer(&mut s, "DATA", 354), vec!["smtp.sequence"]);
        let mut s = ehlo_session(&["mx", "SIZE 100"]);
        assert!(answer(&mut s, "RCPT TO:<a@b>", 503).is_empty());
        assert!(answer(&mut s, "MAIL FROM:<a@b>", 250).is_empty());
        assert_eq!(answer(&mut s, "MAIL FROM:<a@b>", 250), vec!["smtp.sequence"]);
        assert!(answer(&mut s, "RCPT TO:<a@b>", 250).is_empty());
        assert!(answer(&mut s, "DATA", 354).is_empty());
        s.sent(Command::message(10));
        s.reply(&reply(250, &["queued"]), &mut f);
        assert_eq!(s.transaction, Transaction::None);
        // RSET clears; a RCPT after it is out of order.
        assert!(answer(&mut s, "MAIL FROM:<a@b>", 250).is_empty());
        assert!(answer(&mut s, "RSET", 250).is_empty());
        assert_eq!(answer(&mut s, "RCPT TO:<a@b>", 250), vec!["smtp.sequence"]);
        assert_eq!(answer(&mut s, "RSET", 500), vec!["smtp.rset-reply"]);
        // DATA asks for the message with 354 (or refuses); a 250 is neither.
        assert!(answer(&mut s, "MAIL FROM:<a@b>", 250).is_empty());
        assert!(answer(&mut s, "RCPT TO:<a@b>", 250).is_empty());
        assert_eq!(answer(&mut s, "DATA", 250), vec!["smtp.data-reply"]);
        assert_eq!(answer(&mut s, "QUIT", 250), vec!["smtp.quit-reply"]);
    }

    #[test]
    fn size_limits() {
        let mut s = ehlo_session(&["mx", "SIZE 100"]);
        assert_eq!(s.size_limit(), Some(100));
        assert_eq!(
            answer(&mut s, "MAIL FROM:<a@b> SIZE=101", 250),
            vec!["smtp.size-limit"]
        );
        assert!(answer(&mut s, "RCPT TO:<a@b>", 250).is_empty());
        assert!(answer(&mut s, "DATA", 354).is_empty());
        let mut f = Vec::new();
        s.sent(Command::message(500));
        s.reply(&reply(250, &["ok"]), &mut f);
        assert_eq!(rules(&f), vec!["smtp.size-limit"]);
        let mut s = ehlo_session(&["mx", "SIZE 100"]);
        assert!(answer(&mut s, "MAIL FROM:<a@b> SIZE=101", 552).is_empty());
    }

    #[test]
    fn starttls_resets_and_must_not_be_offered_again() {
        let mut s = ehlo_session(&["mx", "STARTTLS"]);
        assert!(answer(&mut s, "STARTTLS", 220).is_empty());
        s.tls_started();
        assert_eq!(answer(&mut s, "MAIL FROM:<a@b>", 250), vec!["smtp.sequence"]);
        let mut f = Vec::new();
        s.sent(Command::parse("EHLO me"));
        s.reply(&reply(250, &["mx", "STARTTLS"]), &mut f);
        assert_eq!(rules(&f), vec!["smtp.starttls-after-tls"]);
    }

    #[test]
    fn auth_rules() {
        let mut s = ehlo_session(&["mx", "AUTH PLAIN LOGIN", "STARTTLS"]);
        assert_eq!(
            s.capabilities(),
            vec!["AUTH", "STARTTLS", "AUTH=PLAIN", "AUTH=LOGIN"]
        );
        let mut f = Vec::new();
        s.sent(Command::parse("MAIL FROM:<a@b>"));
        s.reply(
            &reply(530, &["5.7.0 Must issue a STARTTLS command first"]),
            &mut f,
        );
        assert_eq!(rules(&f), vec!["smtp.auth-cleartext"]);
        assert_eq!(
            answer(&mut s, "AUTH PLAIN AGEAYg==", 235),
            vec!["smtp.auth-cleartext"]
        );
        assert_eq!(
            answer(&mut s, "AUTH PLAIN AGEAYg==", 235),
            vec!["smtp.auth-twice", "smtp.auth-cleartext"]
        );
        let mut s = ehlo_session(&["mx", "AUTH PLAIN"]);
        assert!(answer(&mut s, "MAIL FROM:<a@b>", 250).is_empty());
        assert_eq!(
            answer(&mut s, "AUTH PLAIN AGEAYg==", 235),
            vec!["smtp.auth-in-transaction"]
        );
    }

    #[test]
    fn reply_codes_that_a_command_never_gets() {
        let mut s = ehlo_session(&["mx"]);
        assert_eq!(
            answer(&mut s, "NOOP", 354),
            vec!["smtp.reply-code", "smtp.noop-reply"]
        );
        assert_eq!(answer(&mut s, "XYZZY", 250), vec!["smtp.unknown-accepted"]);
        // An overlong NOOP may be refused; a short one with a parameter should not be.
        assert!(answer(&mut s, &format!("NOOP {}", "x".repeat(600)), 500).is_empty());
        let f = {
            let mut f = Vec::new();
            s.sent(Command::parse("NOOP hello"));
            s.reply(&reply(501, &["x"]), &mut f);
            f
        };
        assert_eq!(f[0].severity, crate::finding::Severity::Should);
        let mut s = Session::new(false);
        assert_eq!(answer(&mut s, "NOOP", 503), vec!["smtp.before-hello"]);
        let mut f = Vec::new();
        s.greet(&reply(250, &["hi"]), &mut f);
        assert_eq!(rules(&f), vec!["smtp.greeting"]);
    }

    #[test]
    fn ehlo_lines_are_checked() {
        let mut s = Session::new(false);
        let mut f = Vec::new();
        s.sent(Command::parse("EHLO me"));
        s.reply(&reply(250, &["mx", "SIZE abc", "_BAD x"]), &mut f);
        assert_eq!(rules(&f), vec!["smtp.ehlo-syntax", "smtp.ehlo-syntax"]);
    }

    #[test]
    fn dot_stuffing_streams_and_normalises_line_ends() {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.feed(b".a\r\nb\n..c\r", &mut out);
        s.feed(b"\n.", &mut out);
        let (octets, longest) = s.finish(&mut out);
        assert_eq!(out, b"..a\r\nb\r\n...c\r\n..\r\n.\r\n");
        assert_eq!(octets, ".a\r\nb\r\n..c\r\n.\r\n".len() as u64);
        assert_eq!(longest, 5);
        assert_eq!(normalise_crlf(b".a\nb"), b".a\r\nb\r\n");
        assert_eq!(normalise_crlf(b""), b"");
        assert_eq!(normalise_crlf(b"x\r\n"), b"x\r\n");
    }

    #[test]
    fn auth_encodings() {
        assert_eq!(
            auth_plain("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
        // RFC 2195's example.
        let challenge =
            base64::engine::general_purpose::STANDARD.encode("<1896.697170952@postoffice.reston.mci.net>");
        let answer = auth_cram_md5("tim", "tanstaaftanstaaf", &challenge).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(answer).unwrap();
        assert_eq!(decoded, b"tim b913a602c7eda7a495b4e6e7334d3890");
        assert!(auth_cram_md5("a", "b", "!!").is_none());
    }
}
