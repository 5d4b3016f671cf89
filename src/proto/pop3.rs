//! POP3 (RFC 1939, CAPA RFC 2449, STLS RFC 2595): reply grammar, multi-line
//! framing with dot-unstuffing, and the session's state model.
//!
//! The runner feeds every byte the server sends through here, whatever the
//! scenario asks, so a server that answers `+OK` to `STAT` before login, sends
//! a bare LF, or forgets to byte-stuff is caught by any scenario that sees it.

use crate::finding::{Finding, Severity};
use std::collections::{BTreeMap, BTreeSet};

/// Longest reply line allowed, CRLF included (RFC 1939 section 3).
pub const MAX_REPLY: usize = 512;
/// Longest unique-id (RFC 1939 section 7, UIDL).
pub const MAX_UID: usize = 70;

const RFC_GRAMMAR: &str = "RFC 1939 section 3";
const RFC_STATES: &str = "RFC 1939 sections 3-6";

/// The session states of RFC 1939, plus `Closed` for a connection that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Authorization,
    Transaction,
    /// QUIT was accepted in TRANSACTION: the server commits deletions and closes.
    Update,
    Closed,
}

/// The status indicator of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Err,
}

/// A command as the client sent it, split into keyword and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Upper-cased keyword.
    pub verb: String,
    pub args: Vec<String>,
}

impl Command {
    pub fn parse(line: &str) -> Command {
        let mut parts = line.split_ascii_whitespace();
        let verb = parts.next().unwrap_or("").to_ascii_uppercase();
        Command {
            verb,
            args: parts.map(str::to_string).collect(),
        }
    }

    fn msg_arg(&self, i: usize) -> Option<u32> {
        self.args.get(i).and_then(|a| a.parse().ok())
    }

    /// Whether a positive reply to this command is multi-line (RFC 1939, RFC 2449).
    pub fn multiline_on_ok(&self) -> bool {
        match self.verb.as_str() {
            "CAPA" | "RETR" | "TOP" => true,
            "LIST" | "UIDL" => self.args.is_empty(),
            _ => false,
        }
    }

    /// How the command is shown in a "waiting for" message.
    pub fn label(&self) -> String {
        if self.verb == "PASS" || self.verb == "APOP" || self.verb == "AUTH" {
            return format!("{} ...", self.verb);
        }
        let mut s = self.verb.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// Which commands RFC 1939 / 2449 / 2595 allow in each state.
fn legal_in(verb: &str, state: State) -> Option<bool> {
    const AUTH: &[&str] = &["USER", "PASS", "APOP", "QUIT", "CAPA", "STLS", "AUTH"];
    const TRANS: &[&str] = &[
        "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "QUIT", "CAPA",
    ];
    let known = AUTH.contains(&verb) || TRANS.contains(&verb);
    if !known {
        return None;
    }
    Some(match state {
        State::Authorization => AUTH.contains(&verb),
        State::Transaction => TRANS.contains(&verb),
        State::Update | State::Closed => false,
    })
}

/// Check one status line (the greeting or the first line of a reply).
/// Returns the status when one can be recognised, even a malformed one.
pub fn check_status_line(line: &[u8], complete: bool, findings: &mut Vec<Finding>) -> Option<Status> {
    if line.len() > MAX_REPLY || !complete && line.len() >= MAX_REPLY {
        findings.push(
            Finding::must(
                "pop3.reply-length",
                RFC_GRAMMAR,
                format!(
                    "reply line is {} octets; the limit is {MAX_REPLY} including CRLF",
                    line.len()
                ),
            )
            .with_bytes(&line[..line.len().min(80)]),
        );
    }
    check_line_ending(line, complete, findings);
    let text = strip_eol(line);
    let status = if text.starts_with(b"+OK") && boundary(text, 3) {
        Some(Status::Ok)
    } else if text.starts_with(b"-ERR") && boundary(text, 4) {
        Some(Status::Err)
    } else {
        None
    };
    if status.is_some() {
        return status;
    }
    let lower = text.to_ascii_uppercase();
    let loose = if lower.starts_with(b"+OK") && boundary(text, 3) {
        Some(Status::Ok)
    } else if lower.starts_with(b"-ERR") && boundary(text, 4) {
        Some(Status::Err)
    } else {
        None
    };
    findings.push(
        match loose {
            Some(_) => Finding::must(
                "pop3.status-case",
                RFC_GRAMMAR,
                "status indicator must be sent in upper case (+OK / -ERR)",
            ),
            None => Finding::must(
                "pop3.status",
                RFC_GRAMMAR,
                "reply does not start with +OK or -ERR",
            ),
        }
        .with_bytes(&line[..line.len().min(80)]),
    );
    loose
}

fn boundary(text: &[u8], at: usize) -> bool {
    text.len() == at || text[at] == b' '
}

fn check_line_ending(line: &[u8], complete: bool, findings: &mut Vec<Finding>) {
    if complete && !line.ends_with(b"\r\n") {
        findings.push(
            Finding::must("pop3.crlf", RFC_GRAMMAR, "line ends in a bare LF instead of CRLF")
                .with_bytes(&line[line.len().saturating_sub(40)..]),
        );
    }
}

/// Drop a trailing CRLF or LF.
pub fn strip_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// The APOP timestamp (`<...@...>`) in a greeting, if any (RFC 1939 section 7).
pub fn greeting_timestamp(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(strip_eol(line)).ok()?;
    let start = text.find('<')?;
    let end = start + text[start..].find('>')?;
    let stamp = &text[start..=end];
    (stamp.len() > 2 && stamp.contains('@')).then(|| stamp.to_string())
}

/// The APOP digest: lowercase hex MD5 of timestamp + secret.
pub fn apop_digest(timestamp: &str, secret: &str) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Multi-line framing: finds the terminating `.`, removes byte-stuffing,
/// counts octets, and notes framing violations. One call per line piece;
/// no allocation per line, so a large body streams at memory speed.
#[derive(Debug, Clone)]
pub struct MultilineDecoder {
    at_line_start: bool,
    /// Octets of content after unstuffing, line endings included.
    pub octets: u64,
    pub lines: u64,
    pub ended: bool,
    bare_lf: u64,
    first_bare_lf: Option<Vec<u8>>,
    unstuffed: u64,
    first_unstuffed: Option<Vec<u8>>,
}

impl Default for MultilineDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MultilineDecoder {
    pub fn new() -> Self {
        MultilineDecoder {
            at_line_start: true,
            octets: 0,
            lines: 0,
            ended: false,
            bare_lf: 0,
            first_bare_lf: None,
            unstuffed: 0,
            first_unstuffed: None,
        }
    }

    /// Feed the next piece (a whole line, or part of one when `complete` is
    /// false). Returns the unstuffed content, or `None` for the terminator.
    #[inline]
    pub fn feed<'a>(&mut self, piece: &'a [u8], complete: bool) -> Option<&'a [u8]> {
        let mut content = piece;
        if self.at_line_start && !piece.is_empty() && piece[0] == b'.' {
            if complete && (piece == b".\r\n" || piece == b".\n") {
                if piece.len() == 2 {
                    self.note_bare_lf(piece);
                }
                self.ended = true;
                return None;
            }
            if piece.len() > 1 && piece[1] != b'.' {
                self.unstuffed += 1;
                if self.first_unstuffed.is_none() {
                    self.first_unstuffed = Some(piece[..piece.len().min(60)].to_vec());
                }
            }
            content = &piece[1..];
        }
        if complete {
            self.lines += 1;
            let n = piece.len();
            if n < 2 || piece[n - 2] != b'\r' {
                self.note_bare_lf(piece);
            }
        }
        self.at_line_start = complete;
        self.octets += content.len() as u64;
        Some(content)
    }

    fn note_bare_lf(&mut self, piece: &[u8]) {
        self.bare_lf += 1;
        if self.first_bare_lf.is_none() {
            self.first_bare_lf = Some(piece[piece.len().saturating_sub(40)..].to_vec());
        }
    }

    /// The framing findings of the whole body, one per rule with a count.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        if self.bare_lf > 0 {
            let mut f = Finding::must(
                "pop3.crlf",
                RFC_GRAMMAR,
                format!(
                    "{} line(s) of the multi-line reply end in a bare LF instead of CRLF",
                    self.bare_lf
                ),
            );
            if let Some(b) = &self.first_bare_lf {
                f = f.with_bytes(b);
            }
            out.push(f);
        }
        if self.unstuffed > 0 {
            let mut f = Finding::must(
                "pop3.byte-stuffing",
                RFC_GRAMMAR,
                format!(
                    "{} line(s) begin with '.' but are not byte-stuffed (a content line starting with '.' must be sent with an extra '.')",
                    self.unstuffed
                ),
            );
            if let Some(b) = &self.first_unstuffed {
                f = f.with_bytes(b);
            }
            out.push(f);
        }
        out
    }
}

/// Everything a multi-line body told us, for [`Session::finish`].
#[derive(Debug, Clone, Default)]
pub struct BodySummary {
    pub octets: u64,
    pub lines: u64,
}

/// The state model of one POP3 connection, plus what the server said about
/// the maildrop in it (sizes, unique-ids, deletions) for cross-checks.
#[derive(Debug, Clone)]
pub struct Session {
    pub state: State,
    pub tls: bool,
    user_accepted: bool,
    pub greeting_timestamp: Option<String>,
    /// CAPA tags (upper-cased first word of each line), once CAPA succeeded.
    pub capabilities: Option<Vec<String>>,
    sizes: BTreeMap<u32, u64>,
    full_listing: bool,
    deleted: BTreeSet<u32>,
    stat: Option<(u64, u64)>,
    /// Unique-ids seen in this session.
    pub uids: BTreeMap<u32, String>,
    // Per-reply parsing state for listings and TOP.
    listing: Vec<(u32, Vec<u8>)>,
    listing_bad: Option<Vec<u8>>,
    capa: Vec<String>,
    top_in_body: bool,
    top_body_lines: u64,
}

impl Session {
    pub fn new(tls: bool) -> Session {
        Session {
            state: State::Authorization,
            tls,
            user_accepted: false,
            greeting_timestamp: None,
            capabilities: None,
            sizes: BTreeMap::new(),
            full_listing: false,
            deleted: BTreeSet::new(),
            stat: None,
            uids: BTreeMap::new(),
            listing: Vec::new(),
            listing_bad: None,
            capa: Vec::new(),
            top_in_body: false,
            top_body_lines: 0,
        }
    }

    /// Messages marked deleted in this session.
    pub fn deleted(&self) -> &BTreeSet<u32> {
        &self.deleted
    }

    /// Check the greeting; `Some(Ok)` means the session may go on.
    pub fn greeting(&mut self, line: &[u8], complete: bool, findings: &mut Vec<Finding>) -> Option<Status> {
        let status = check_status_line(line, complete, findings);
        self.greeting_timestamp = greeting_timestamp(line);
        if status != Some(Status::Ok) {
            self.state = State::Closed;
        }
        status
    }

    /// Whether the body lines of this reply must be shown to [`Session::body_line`].
    pub fn wants_lines(&self, cmd: &Command) -> bool {
        matches!(cmd.verb.as_str(), "LIST" | "UIDL" | "CAPA" | "TOP")
    }

    /// Prepare for a reply to `cmd` (resets per-reply parsing).
    pub fn begin(&mut self, _cmd: &Command) {
        self.listing.clear();
        self.listing_bad = None;
        self.capa.clear();
        self.top_in_body = false;
        self.top_body_lines = 0;
    }

    /// One unstuffed content line of the reply to `cmd` (line ending included).
    pub fn body_line(&mut self, cmd: &Command, content: &[u8]) {
        let text = strip_eol(content);
        match cmd.verb.as_str() {
            "LIST" | "UIDL" => {
                let mut parts = text.splitn(3, |b| *b == b' ');
                let n = parts
                    .next()
                    .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u32>().ok());
                let val = parts.next();
                match (n, val) {
                    (Some(n), Some(v)) if !v.is_empty() => self.listing.push((n, v.to_vec())),
                    _ => {
                        if self.listing_bad.is_none() {
                            self.listing_bad = Some(content.to_vec());
                        }
                    }
                }
            }
            "CAPA" => {
                if let Ok(t) = std::str::from_utf8(text) {
                    if let Some(tag) = t.split_ascii_whitespace().next() {
                        self.capa.push(tag.to_ascii_uppercase());
                    }
                }
            }
            "TOP" => {
                if self.top_in_body {
                    self.top_body_lines += 1;
                } else if text.is_empty() {
                    self.top_in_body = true;
                }
            }
            _ => {}
        }
    }

    /// The reply to `cmd` is complete: apply the state model and cross-checks.
    pub fn finish(
        &mut self,
        cmd: &Command,
        status: Status,
        first_line: &[u8],
        body: Option<&BodySummary>,
        findings: &mut Vec<Finding>,
    ) {
        let ok = status == Status::Ok;
        let verb = cmd.verb.as_str();
        if ok {
            if let Some(false) = legal_in(verb, self.state) {
                findings.push(
                    Finding::must(
                        "pop3.state",
                        RFC_STATES,
                        format!(
                            "+OK to {verb} in the {:?} state, where it is not allowed",
                            self.state
                        ),
                    )
                    .with_bytes(first_line),
                );
            }
            self.check_message_reference(cmd, first_line, findings);
        }
        match (verb, status) {
            ("USER", Status::Ok) if self.state == State::Authorization => self.user_accepted = true,
            ("USER", Status::Err) => self.user_accepted = false,
            ("PASS", Status::Ok) if self.state == State::Authorization => {
                if !self.user_accepted {
                    findings.push(Finding::must(
                        "pop3.pass-without-user",
                        "RFC 1939 section 7 (PASS)",
                        "PASS was accepted without an accepted USER before it",
                    ));
                }
                self.enter_transaction();
            }
            ("PASS", Status::Err) => self.user_accepted = false,
            ("APOP", Status::Ok) if self.state == State::Authorization => self.enter_transaction(),
            ("QUIT", Status::Ok) => {
                self.state = if self.state == State::Transaction {
                    State::Update
                } else {
                    State::Closed
                };
            }
            ("STLS", Status::Ok) => {
                if self.tls {
                    // RFC 2595 only says -ERR "MAY result"; a second handshake is still odd.
                    findings.push(Finding::should(
                        "pop3.stls-twice",
                        "RFC 2595 section 4",
                        "+OK to STLS on a connection that already uses TLS",
                    ));
                }
                self.user_accepted = false;
                self.capabilities = None;
            }
            ("CAPA", Status::Ok) if body.is_some() => {
                self.capabilities = Some(std::mem::take(&mut self.capa));
            }
            ("STAT", Status::Ok) if self.state == State::Transaction => {
                self.finish_stat(first_line, findings)
            }
            ("LIST", Status::Ok) if self.state == State::Transaction => {
                self.finish_list(cmd, first_line, findings)
            }
            ("UIDL", Status::Ok) if self.state == State::Transaction => {
                self.finish_uidl(cmd, first_line, findings)
            }
            ("RETR", Status::Ok) if self.state == State::Transaction => self.finish_retr(cmd, body, findings),
            ("TOP", Status::Ok) if self.state == State::Transaction => self.finish_top(cmd, body, findings),
            ("DELE", Status::Ok) if self.state == State::Transaction => {
                if let Some(n) = cmd.msg_arg(0) {
                    self.deleted.insert(n);
                    self.stat = None;
                }
            }
            ("RSET", Status::Ok) if self.state == State::Transaction => {
                self.deleted.clear();
                self.stat = None;
            }
            _ => {}
        }
        if !ok && cmd.multiline_on_ok() && body.is_some() {
            findings.push(Finding::must(
                "pop3.err-multiline",
                RFC_GRAMMAR,
                "-ERR reply followed by multi-line data; negative replies are single lines",
            ));
        }
    }

    fn enter_transaction(&mut self) {
        self.state = State::Transaction;
        self.user_accepted = false;
    }

    /// A positive reply that refers to a message marked deleted breaks RFC 1939 section 6.
    fn check_message_reference(&self, cmd: &Command, first_line: &[u8], findings: &mut Vec<Finding>) {
        if self.state != State::Transaction {
            return;
        }
        let refers = matches!(cmd.verb.as_str(), "RETR" | "DELE" | "TOP" | "LIST" | "UIDL");
        if let (true, Some(n)) = (refers, cmd.msg_arg(0)) {
            if self.deleted.contains(&n) {
                findings.push(
                    Finding::must(
                        "pop3.deleted-message",
                        "RFC 1939 section 6 (DELE)",
                        format!("+OK to {} for message {n}, which is marked as deleted", cmd.verb),
                    )
                    .with_bytes(first_line),
                );
            }
        }
    }

    fn finish_stat(&mut self, first_line: &[u8], findings: &mut Vec<Finding>) {
        let text = strip_eol(first_line);
        let parsed = parse_numbers_after_ok(text, 2);
        let Some(v) = parsed else {
            findings.push(
                Finding::must(
                    "pop3.stat-format",
                    "RFC 1939 section 5 (STAT)",
                    "STAT reply is not `+OK count size`",
                )
                .with_bytes(first_line),
            );
            return;
        };
        let (count, size) = (v[0], v[1]);
        self.stat = Some((count, size));
        self.cross_check_stat(findings);
    }

    fn cross_check_stat(&self, findings: &mut Vec<Finding>) {
        let (Some((count, size)), true) = (self.stat, self.full_listing) else {
            return;
        };
        let live: Vec<u64> = self
            .sizes
            .iter()
            .filter(|(n, _)| !self.deleted.contains(n))
            .map(|(_, s)| *s)
            .collect();
        let (lcount, lsize) = (live.len() as u64, live.iter().sum::<u64>());
        if (count, size) != (lcount, lsize) {
            findings.push(Finding::must(
                "pop3.stat-list-mismatch",
                "RFC 1939 section 5 (STAT, LIST)",
                format!(
                    "STAT says {count} messages, {size} octets; LIST says {lcount} messages, {lsize} octets"
                ),
            ));
        }
    }

    fn finish_list(&mut self, cmd: &Command, first_line: &[u8], findings: &mut Vec<Finding>) {
        if let Some(asked) = cmd.msg_arg(0) {
            let text = strip_eol(first_line);
            match parse_numbers_after_ok(text, 2) {
                Some(v) => {
                    if v[0] != asked as u64 {
                        findings.push(
                            Finding::must(
                                "pop3.list-number",
                                "RFC 1939 section 5 (LIST)",
                                format!("LIST {asked} answered for message {}", v[0]),
                            )
                            .with_bytes(first_line),
                        );
                    }
                    self.learn_size(asked, v[1], findings);
                }
                None => findings.push(
                    Finding::must(
                        "pop3.list-format",
                        "RFC 1939 section 5 (LIST)",
                        "LIST n reply is not `+OK n size`",
                    )
                    .with_bytes(first_line),
                ),
            }
            return;
        }
        if let Some(bad) = self.listing_bad.take() {
            findings.push(
                Finding::must(
                    "pop3.list-format",
                    "RFC 1939 section 5 (LIST)",
                    "scan listing line is not `n size`",
                )
                .with_bytes(&bad),
            );
        }
        let listing = std::mem::take(&mut self.listing);
        let mut prev = 0;
        for (n, v) in &listing {
            if *n <= prev {
                findings.push(Finding::should(
                    "pop3.list-order",
                    "RFC 1939 section 5 (LIST)",
                    format!("scan listing is not in ascending message order ({n} after {prev})"),
                ));
            }
            prev = *n;
            if self.deleted.contains(n) {
                findings.push(Finding::must(
                    "pop3.deleted-message",
                    "RFC 1939 section 6 (DELE)",
                    format!("LIST shows message {n}, which is marked as deleted"),
                ));
            }
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.split(' ').next()?.parse::<u64>().ok())
            {
                Some(size) => self.learn_size(*n, size, findings),
                None => findings.push(
                    Finding::must(
                        "pop3.list-format",
                        "RFC 1939 section 5 (LIST)",
                        "scan listing size is not a number",
                    )
                    .with_bytes(v),
                ),
            }
        }
        self.full_listing = true;
        self.cross_check_stat(findings);
    }

    fn learn_size(&mut self, n: u32, size: u64, findings: &mut Vec<Finding>) {
        if let Some(old) = self.sizes.insert(n, size) {
            if old != size {
                findings.push(Finding::must(
                    "pop3.size-changed",
                    "RFC 1939 section 5 (LIST)",
                    format!("message {n} was listed as {old} octets and now as {size}"),
                ));
            }
        }
    }

    fn finish_uidl(&mut self, cmd: &Command, first_line: &[u8], findings: &mut Vec<Finding>) {
        let mut entries = Vec::new();
        if let Some(asked) = cmd.msg_arg(0) {
            let text = strip_eol(first_line);
            let mut parts = text.splitn(3, |b| *b == b' ');
            let _ok = parts.next();
            let n = parts
                .next()
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u32>().ok());
            match (n, parts.next()) {
                (Some(n), Some(uid)) => {
                    if n != asked {
                        findings.push(
                            Finding::must(
                                "pop3.uidl-number",
                                "RFC 1939 section 7 (UIDL)",
                                format!("UIDL {asked} answered for message {n}"),
                            )
                            .with_bytes(first_line),
                        );
                    }
                    entries.push((n, uid.to_vec()));
                }
                _ => findings.push(
                    Finding::must(
                        "pop3.uidl-format",
                        "RFC 1939 section 7 (UIDL)",
                        "UIDL n reply is not `+OK n unique-id`",
                    )
                    .with_bytes(first_line),
                ),
            }
        } else {
            if let Some(bad) = self.listing_bad.take() {
                findings.push(
                    Finding::must(
                        "pop3.uidl-format",
                        "RFC 1939 section 7 (UIDL)",
                        "unique-id listing line is not `n unique-id`",
                    )
                    .with_bytes(&bad),
                );
            }
            entries = std::mem::take(&mut self.listing);
            let mut seen: BTreeMap<&[u8], u32> = BTreeMap::new();
            for (n, uid) in &entries {
                if let Some(other) = seen.insert(uid.as_slice(), *n) {
                    findings.push(
                        Finding::must(
                            "pop3.uidl-unique",
                            "RFC 1939 section 7 (UIDL)",
                            format!("messages {other} and {n} have the same unique-id"),
                        )
                        .with_bytes(uid),
                    );
                }
                if self.deleted.contains(n) {
                    findings.push(Finding::must(
                        "pop3.deleted-message",
                        "RFC 1939 section 6 (DELE)",
                        format!("UIDL shows message {n}, which is marked as deleted"),
                    ));
                }
            }
        }
        for (n, uid) in entries {
            let valid =
                !uid.is_empty() && uid.len() <= MAX_UID && uid.iter().all(|b| (0x21..=0x7e).contains(b));
            if !valid {
                findings.push(
                    Finding::must(
                        "pop3.uidl-format",
                        "RFC 1939 section 7 (UIDL)",
                        format!("unique-id of message {n} must be 1-70 characters from 0x21 to 0x7E"),
                    )
                    .with_bytes(&uid),
                );
            }
            let uid = String::from_utf8_lossy(&uid).into_owned();
            if let Some(old) = self.uids.insert(n, uid.clone()) {
                if old != uid {
                    findings.push(Finding::must(
                        "pop3.uidl-stable",
                        "RFC 1939 section 7 (UIDL)",
                        format!("message {n} had unique-id `{old}` and now `{uid}` in the same session"),
                    ));
                }
            }
        }
    }

    fn finish_retr(&mut self, cmd: &Command, body: Option<&BodySummary>, findings: &mut Vec<Finding>) {
        let (Some(n), Some(body)) = (cmd.msg_arg(0), body) else {
            return;
        };
        if let Some(&size) = self.sizes.get(&n) {
            if body.octets != size {
                findings.push(Finding::must(
                    "pop3.retr-size",
                    "RFC 1939 sections 5 and 7 (LIST, RETR)",
                    format!("RETR {n} sent {} octets; LIST announced {size}", body.octets),
                ));
            }
        }
    }

    fn finish_top(&mut self, cmd: &Command, body: Option<&BodySummary>, findings: &mut Vec<Finding>) {
        let (Some(n), Some(k), Some(body)) = (
            cmd.msg_arg(0),
            cmd.args.get(1).and_then(|a| a.parse::<u64>().ok()),
            body,
        ) else {
            return;
        };
        if self.top_body_lines > k {
            findings.push(Finding::must(
                "pop3.top-lines",
                "RFC 1939 section 7 (TOP)",
                format!(
                    "TOP {n} {k} returned {} body lines after the headers",
                    self.top_body_lines
                ),
            ));
        }
        if let Some(&size) = self.sizes.get(&n) {
            if body.octets > size {
                findings.push(Finding::must(
                    "pop3.top-size",
                    "RFC 1939 section 7 (TOP)",
                    format!(
                        "TOP {n} {k} sent {} octets, more than the whole message ({size})",
                        body.octets
                    ),
                ));
            }
        }
    }
}

/// `+OK a b ...` -> the first `count` numbers after `+OK`.
fn parse_numbers_after_ok(text: &[u8], count: usize) -> Option<Vec<u64>> {
    let text = std::str::from_utf8(text).ok()?;
    let rest = text.strip_prefix("+OK ")?;
    let mut parts = rest.split(' ');
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out.push(p.parse().ok()?);
    }
    Some(out)
}

/// What is remembered across the sessions of one scenario.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The most recent complete unique-id listing, and whether deletions were
    /// committed since (which lets ids disappear).
    last_uids: Option<BTreeMap<u32, String>>,
    committed_since: bool,
}

impl History {
    /// A session ended; remember its ids and whether QUIT committed deletions.
    pub fn end_session(&mut self, session: &Session) {
        if session.state == State::Update && !session.deleted().is_empty() {
            self.committed_since = true;
        }
        if !session.uids.is_empty() && (self.last_uids.is_none() || !self.committed_since) {
            self.last_uids = Some(session.uids.clone());
        }
    }

    /// A new session listed unique-ids: the ones from before must still be there
    /// (RFC 1939: unique-ids persist across sessions).
    pub fn check_uids(&mut self, session: &Session, findings: &mut Vec<Finding>) {
        let Some(old) = &self.last_uids else { return };
        if self.committed_since {
            return;
        }
        let now: BTreeSet<&String> = session.uids.values().collect();
        let missing: Vec<&String> = old.values().filter(|u| !now.contains(u)).collect();
        if !missing.is_empty() && session.uids.len() >= old.len() {
            findings.push(Finding::new(
                Severity::Must,
                "pop3.uidl-stable",
                "RFC 1939 section 7 (UIDL)",
                format!(
                    "{} unique-id(s) from an earlier session are gone although nothing was deleted, e.g. `{}`",
                    missing.len(),
                    missing[0]
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(body: &[u8]) -> (MultilineDecoder, Vec<u8>) {
        let mut d = MultilineDecoder::new();
        let mut out = Vec::new();
        for line in body.split_inclusive(|b| *b == b'\n') {
            match d.feed(line, line.ends_with(b"\n")) {
                Some(c) => out.extend_from_slice(c),
                None => break,
            }
        }
        (d, out)
    }

    #[test]
    fn unstuffs_and_stops_at_terminator() {
        let (d, out) = decode_all(b"a\r\n..b\r\n..\r\n.\r\nnext\r\n");
        assert!(d.ended);
        assert_eq!(out, b"a\r\n.b\r\n.\r\n");
        assert_eq!(d.octets, 10);
        assert!(d.findings().is_empty());
    }

    #[test]
    fn flags_unstuffed_dot_lines_and_bare_lf() {
        let (d, _) = decode_all(b".hidden\r\nx\n.\r\n");
        let f = d.findings();
        assert!(f.iter().any(|f| f.rule == "pop3.byte-stuffing"));
        assert!(f.iter().any(|f| f.rule == "pop3.crlf"));
    }

    #[test]
    fn long_lines_in_pieces_count_once() {
        let mut d = MultilineDecoder::new();
        assert_eq!(d.feed(b".abc", false), Some(&b"abc"[..]));
        assert!(d.findings().iter().any(|f| f.rule == "pop3.byte-stuffing"));
        // A continuation piece starting with '.' is not a line start.
        assert_eq!(d.feed(b".\r\n", true), Some(&b".\r\n"[..]));
        assert!(!d.ended);
        assert_eq!(d.lines, 1);
    }

    #[test]
    fn status_line_grammar() {
        let mut f = Vec::new();
        assert_eq!(check_status_line(b"+OK hi\r\n", true, &mut f), Some(Status::Ok));
        assert_eq!(check_status_line(b"-ERR\r\n", true, &mut f), Some(Status::Err));
        assert!(f.is_empty());
        assert_eq!(check_status_line(b"+ok\r\n", true, &mut f), Some(Status::Ok));
        assert_eq!(f[0].rule, "pop3.status-case");
        f.clear();
        assert_eq!(check_status_line(b"+OKAY\r\n", true, &mut f), None);
        assert_eq!(f[0].rule, "pop3.status");
        f.clear();
        let long = [b"+OK ".as_slice(), &[b'x'; 600], b"\r\n"].concat();
        check_status_line(&long, true, &mut f);
        assert_eq!(f[0].rule, "pop3.reply-length");
        f.clear();
        check_status_line(b"+OK\n", true, &mut f);
        assert_eq!(f[0].rule, "pop3.crlf");
    }

    fn run(s: &mut Session, cmd: &str, first: &[u8], body: &[&[u8]]) -> Vec<Finding> {
        let c = Command::parse(cmd);
        let mut f = Vec::new();
        s.begin(&c);
        let status = check_status_line(first, true, &mut f).unwrap();
        let mut summary = None;
        if !body.is_empty() {
            let mut sum = BodySummary::default();
            for l in body {
                s.body_line(&c, l);
                sum.octets += l.len() as u64;
                sum.lines += 1;
            }
            summary = Some(sum);
        }
        s.finish(&c, status, first, summary.as_ref(), &mut f);
        f
    }

    #[test]
    fn commands_before_login_are_violations() {
        let mut s = Session::new(false);
        let f = run(&mut s, "STAT", b"+OK 1 10\r\n", &[]);
        assert_eq!(f[0].rule, "pop3.state");
        assert!(run(&mut s, "STAT", b"-ERR not yet\r\n", &[]).is_empty());
    }

    #[test]
    fn login_moves_to_transaction() {
        let mut s = Session::new(false);
        assert!(run(&mut s, "USER a", b"+OK\r\n", &[]).is_empty());
        assert!(run(&mut s, "PASS b", b"+OK\r\n", &[]).is_empty());
        assert_eq!(s.state, State::Transaction);
        assert_eq!(run(&mut s, "USER a", b"+OK\r\n", &[])[0].rule, "pop3.state");
    }

    #[test]
    fn pass_without_user() {
        let mut s = Session::new(false);
        assert_eq!(
            run(&mut s, "PASS b", b"+OK\r\n", &[])[0].rule,
            "pop3.pass-without-user"
        );
    }

    fn logged_in() -> Session {
        let mut s = Session::new(false);
        run(&mut s, "USER a", b"+OK\r\n", &[]);
        run(&mut s, "PASS b", b"+OK\r\n", &[]);
        s
    }

    #[test]
    fn stat_list_retr_cross_checks() {
        let mut s = logged_in();
        assert!(run(&mut s, "STAT", b"+OK 2 30\r\n", &[]).is_empty());
        assert!(run(&mut s, "LIST", b"+OK\r\n", &[b"1 10\r\n", b"2 20\r\n"]).is_empty());
        assert!(run(&mut s, "RETR 1", b"+OK\r\n", &[b"12345678\r\n"]).is_empty());
        let f = run(&mut s, "RETR 2", b"+OK\r\n", &[b"x\r\n"]);
        assert_eq!(f[0].rule, "pop3.retr-size");
        let f = run(&mut s, "STAT", b"+OK 2 31\r\n", &[]);
        assert_eq!(f[0].rule, "pop3.stat-list-mismatch");
        let f = run(&mut s, "STAT", b"+OK two\r\n", &[]);
        assert_eq!(f[0].rule, "pop3.stat-format");
        let f = run(&mut s, "LIST 1", b"+OK 2 20\r\n", &[]);
        assert!(f.iter().any(|f| f.rule == "pop3.list-number"));
    }

    #[test]
    fn deleted_messages_are_gone() {
        let mut s = logged_in();
        run(&mut s, "LIST", b"+OK\r\n", &[b"1 10\r\n", b"2 20\r\n"]);
        assert!(run(&mut s, "DELE 1", b"+OK\r\n", &[]).is_empty());
        assert_eq!(
            run(&mut s, "RETR 1", b"+OK\r\n", &[b"0123456\r\n"])[0].rule,
            "pop3.deleted-message"
        );
        let f = run(&mut s, "LIST", b"+OK\r\n", &[b"1 10\r\n", b"2 20\r\n"]);
        assert!(f.iter().any(|f| f.rule == "pop3.deleted-message"));
        let f = run(&mut s, "STAT", b"+OK 2 30\r\n", &[]);
        assert_eq!(f[0].rule, "pop3.stat-list-mismatch");
        assert!(run(&mut s, "STAT", b"+OK 1 20\r\n", &[]).is_empty());
        run(&mut s, "RSET", b"+OK\r\n", &[]);
        assert!(run(&mut s, "STAT", b"+OK 2 30\r\n", &[]).is_empty());
    }

    #[test]
    fn uidl_format_and_uniqueness() {
        let mut s = logged_in();
        assert!(run(&mut s, "UIDL", b"+OK\r\n", &[b"1 abc\r\n", b"2 def\r\n"]).is_empty());
        let f = run(&mut s, "UIDL", b"+OK\r\n", &[b"1 abc\r\n", b"2 abc\r\n"]);
        assert!(f.iter().any(|f| f.rule == "pop3.uidl-unique"));
        let mut s = logged_in();
        let long = [b"1 ".as_slice(), &[b'a'; 71], b"\r\n"].concat();
        let f = run(&mut s, "UIDL", b"+OK\r\n", &[&long]);
        assert!(f.iter().any(|f| f.rule == "pop3.uidl-format"));
    }

    #[test]
    fn uids_persist_across_sessions() {
        let mut h = History::default();
        let mut s1 = logged_in();
        run(&mut s1, "UIDL", b"+OK\r\n", &[b"1 abc\r\n", b"2 def\r\n"]);
        h.end_session(&s1);
        let mut s2 = logged_in();
        run(&mut s2, "UIDL", b"+OK\r\n", &[b"1 xyz\r\n", b"2 def\r\n"]);
        let mut f = Vec::new();
        h.check_uids(&s2, &mut f);
        assert_eq!(f[0].rule, "pop3.uidl-stable");
    }

    #[test]
    fn top_line_count() {
        let mut s = logged_in();
        let f = run(
            &mut s,
            "TOP 1 1",
            b"+OK\r\n",
            &[b"H: v\r\n", b"\r\n", b"one\r\n", b"two\r\n"],
        );
        assert_eq!(f[0].rule, "pop3.top-lines");
        assert!(run(
            &mut s,
            "TOP 1 2",
            b"+OK\r\n",
            &[b"H: v\r\n", b"\r\n", b"one\r\n", b"two\r\n"]
        )
        .is_empty());
    }

    #[test]
    fn apop_digest_matches_rfc_example() {
        // RFC 1939 section 7 example.
        assert_eq!(
            apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
        assert_eq!(
            greeting_timestamp(b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n").as_deref(),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
    }

    #[test]
    fn listing_order_size_changes_and_multiline_errors() {
        let mut s = logged_in();
        assert!(run(&mut s, "LIST", b"+OK\r\n", &[b"1 10\r\n", b"2 20\r\n"]).is_empty());
        let f = run(&mut s, "LIST", b"+OK\r\n", &[b"2 20\r\n", b"1 10\r\n"]);
        assert!(f.iter().any(|f| f.rule == "pop3.list-order"), "{f:?}");
        let f = run(&mut s, "LIST 1", b"+OK 1 11\r\n", &[]);
        assert!(f.iter().any(|f| f.rule == "pop3.size-changed"), "{f:?}");
        assert!(run(&mut s, "RETR 9", b"-ERR no such message\r\n", &[]).is_empty());
        let f = run(&mut s, "RETR 9", b"-ERR no such message\r\n", &[b"data\r\n"]);
        assert!(f.iter().any(|f| f.rule == "pop3.err-multiline"), "{f:?}");
    }

    #[test]
    fn stls_twice_is_a_violation() {
        let mut s = Session::new(true);
        assert_eq!(run(&mut s, "STLS", b"+OK\r\n", &[])[0].rule, "pop3.stls-twice");
    }
}
