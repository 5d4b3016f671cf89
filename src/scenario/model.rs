//! Scenario types: pure data, produced by `load`, consumed by the runner.

use super::pattern::Pattern;
use super::template::Template;
use crate::finding::Severity;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// Which protocol a scenario speaks; decides the target it runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Pop3,
    Imap,
    Smtp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
            Protocol::Smtp => "smtp",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        match name.to_ascii_lowercase().as_str() {
            "pop3" => Some(Protocol::Pop3),
            "imap" => Some(Protocol::Imap),
            "smtp" => Some(Protocol::Smtp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A precondition: when unmet the scenario is skipped with a reason, not failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The run has a user name and a password.
    Credentials,
    /// The greeting carries an APOP timestamp (`<...>`).
    ApopTimestamp,
    /// The connection is (or will be upgraded to) TLS.
    Tls,
    /// The connection starts in plaintext (e.g. to test STLS itself).
    Plaintext,
    /// The server lists this capability (POP3 CAPA tag, e.g. `TOP`, `UIDL`, `STLS`;
    /// an IMAP capability; an SMTP EHLO keyword or `AUTH=PLAIN`).
    Capability(String),
    /// The run defines this variable (`requires: [var:rcpt]`): a recipient
    /// address, say, that only the user can know.
    Var(String),
    /// The run has a target for this protocol too (from `sessions:`).
    Target(Protocol),
    /// The server lists at least one of these (written `LITERAL+|LITERAL-`).
    AnyCapability(Vec<String>),
    /// IMAP: the greeting is `* PREAUTH` (the session starts authenticated).
    Preauth,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Credentials => f.write_str("credentials"),
            Requirement::ApopTimestamp => f.write_str("apop"),
            Requirement::Tls => f.write_str("tls"),
            Requirement::Plaintext => f.write_str("plaintext"),
            Requirement::Capability(c) => f.write_str(c),
            Requirement::Var(v) => write!(f, "var:{v}"),
            Requirement::Target(p) => write!(f, "a {p} target"),
            Requirement::AnyCapability(cs) => f.write_str(&cs.join("|")),
            Requirement::Preauth => f.write_str("preauth"),
        }
    }
}

/// One scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub rfc: String,
    pub description: Option<String>,
    pub protocol: Protocol,
    pub requires: Vec<Requirement>,
    /// Deletes mail (DELE then QUIT): runs only with `--allow-destructive`.
    pub destructive: bool,
    /// Completes an SMTP DATA transaction (sends mail): runs only with `--allow-send`.
    pub sends: bool,
    /// Named sessions that speak another protocol than the scenario's
    /// (`sessions: {mailbox: pop3}`), each on the run's target for it.
    pub sessions: Vec<(String, Protocol)>,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// The protocol a named session speaks.
    pub fn session_protocol(&self, name: &str) -> Protocol {
        self.sessions
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.protocol, |(_, p)| *p)
    }
}

/// Where a step was written, for error messages and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub pos: Position,
    pub kind: StepKind,
    /// `Must` unless the step says `severity: should` (then a mismatch only warns).
    pub severity: Severity,
    pub note: Option<String>,
    /// The connection this step runs on: `main` unless named; a new name opens
    /// a second connection (two sessions on one mailbox).
    pub session: Option<String>,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// `C:` a command, optionally `S:` its expected status line and `body:`.
    Exchange(Box<Exchange>),
    /// Log in with the run's credentials (POP3: USER/PASS; IMAP: LOGIN;
    /// SMTP: AUTH with the best mechanism offered).
    Login {
        user: Option<Template>,
        password: Option<Template>,
        /// SMTP: only when the server offers AUTH and the run has
        /// credentials; otherwise go on unauthenticated (for scenarios that
        /// run against relay and submission ports alike).
        optional: bool,
    },
    /// Log in with APOP using the greeting's timestamp.
    Apop,
    /// Upgrade the connection with STLS (POP3) or STARTTLS (IMAP, SMTP).
    /// SMTP only: `inject` is sent in the same write as STARTTLS, to see
    /// whether the server wrongly runs it after the handshake.
    StartTls { inject: Option<Template> },
    /// SMTP AUTH with one mechanism (PLAIN, LOGIN, CRAM-MD5); `reply` is the
    /// final reply expected (235 unless given).
    Auth {
        mechanism: String,
        user: Option<Template>,
        password: Option<Template>,
        reply: Option<Pattern>,
    },
    /// SMTP DATA: 354, then the message, then the reply to its end.
    Data(Box<DataStep>),
    /// Send these bytes exactly as written (no CRLF added), then read one reply.
    Send { bytes: Template, reply: Option<Pattern> },
    /// Run `steps` again until they all pass or `within` runs out (mail
    /// that is delivered in the background, say).
    Retry {
        within: std::time::Duration,
        every: std::time::Duration,
        steps: Vec<Step>,
    },
    /// Close the connection without QUIT (waits for the server to close its side).
    Drop,
    /// Open a new session: connect, greeting, and the run's `--starttls` if set.
    Reconnect,
    /// IMAP: send all these commands in one write, then read every completion
    /// (matched by tag, in whatever order they come).
    Pipeline(Vec<Exchange>),
    /// Match the greeting line this session was opened with (`greeting:`);
    /// it was read when the connection opened, so nothing is sent.
    Greeting(Pattern),
    /// IMAP: IDLE, wait for `+`, run steps on other sessions, wait for
    /// untagged updates, then DONE and the completion (RFC 9051 section 6.3.13).
    Idle(Box<Idle>),
    /// Run `steps` once per row captured earlier with `body: {rows: NAME}`.
    ForEach {
        rows: String,
        limit: Option<usize>,
        steps: Vec<Step>,
    },
}

#[derive(Debug, Clone)]
pub struct Exchange {
    pub command: Template,
    /// The status line (POP3) or the tagged completion without its tag (IMAP).
    pub reply: Option<Pattern>,
    /// IMAP: untagged responses that must appear before the completion, in any order.
    pub untagged: Vec<Pattern>,
    /// IMAP: send this tag instead of a generated one (checks that it is echoed exactly).
    pub tag: Option<String>,
    /// IMAP: data sent as a synchronizing literal after the line (the runner
    /// appends `{n}` and waits for the `+` continuation).
    pub literal: Option<Template>,
    /// Force (or forbid) reading a multi-line body; by default the protocol decides.
    pub multiline: Option<bool>,
    pub body: Option<BodyExpect>,
    /// IMAP: how the untagged responses are matched, and `{n+}` literals.
    pub imap: ImapExpect,
}

/// IMAP additions to an [`Exchange`]: what else the untagged responses must
/// (not) be, beyond "each `S:` pattern matches one of them, in any order".
#[derive(Debug, Clone, Default)]
pub struct ImapExpect {
    /// No untagged response may match any of these (`absent:`).
    pub absent: Vec<Pattern>,
    /// Untagged responses that may appear (`may:`): they capture when they
    /// do, and are allowed under `only`.
    pub may: Vec<Pattern>,
    /// The `S:` untagged patterns match in the order written (`ordered: true`).
    pub ordered: bool,
    /// Every untagged response matches an `S:` or `may:` pattern (`only: true`).
    pub only: bool,
    /// `literal` goes as a non-synchronizing `{n+}` literal (LITERAL+,
    /// RFC 7888): sent with the line, without waiting for `+`.
    pub literal_plus: bool,
}

impl ImapExpect {
    /// Whether anything beyond the default any-order match is asked for.
    pub fn is_default(&self) -> bool {
        self.absent.is_empty() && self.may.is_empty() && !self.ordered && !self.only && !self.literal_plus
    }
}

/// An `idle:` step.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Steps run (on other sessions) once the server has sent `+`.
    pub during: Vec<Step>,
    /// Untagged responses that must arrive before DONE is sent, in any order;
    /// the runner waits for them up to the timeout.
    pub updates: Vec<Pattern>,
    /// After DONE: untagged responses (any order), then the completion.
    pub untagged: Vec<Pattern>,
    pub reply: Pattern,
    pub tag: Option<String>,
}

/// The message an SMTP `data:` step sends.
#[derive(Debug, Clone)]
pub enum MessageSource {
    /// Text from the scenario; line ends become CRLF and lines are dot-stuffed.
    Text(Template),
    /// Bytes written exactly as given after the 354, terminator included:
    /// to see what a server does with bare LF, `\n.\n` or overlong lines.
    Raw(Template),
    /// A file (path resolved against the scenario's folder), streamed from
    /// disk: line ends become CRLF and lines are dot-stuffed, as for `Text`.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct DataStep {
    pub message: MessageSource,
    /// The reply expected after the message (or to DATA itself, when the
    /// server refuses DATA).
    pub reply: Option<Pattern>,
    /// Keep the message as sent (CRLF line ends, before stuffing) under
    /// this name, for `body: {delivered: NAME}` on the receiving side.
    pub capture: Option<String>,
}

/// Expectations on a multi-line body (after dot-unstuffing, without the terminator).
#[derive(Debug, Clone, Default)]
pub struct BodyExpect {
    /// Line by line, exactly this many lines.
    pub lines: Option<Vec<Pattern>>,
    /// Every line matches; its captures become a row when `rows` is set.
    pub each: Option<Pattern>,
    pub rows: Option<String>,
    /// Some line matches each of these.
    pub contains: Vec<Pattern>,
    /// No line matches any of these.
    pub absent: Vec<Pattern>,
    pub count: Option<Template>,
    pub min: Option<usize>,
    pub max: Option<usize>,
    /// Exact octets of the unstuffed body, CRLF line ends included.
    pub octets: Option<Template>,
    /// Keep the whole body (capped) in a variable.
    pub capture: Option<String>,
    /// The whole body equals this (usually `${captured}`).
    pub equals: Option<Template>,
    /// The body is the message an SMTP `data:` step captured under this
    /// name, byte for byte, with only header fields added in front.
    pub delivered: Option<String>,
}

impl BodyExpect {
    /// Whether matching needs each line kept (as opposed to counted).
    pub fn needs_lines(&self) -> bool {
        self.lines.is_some()
            || self.each.is_some()
            || !self.contains.is_empty()
            || !self.absent.is_empty()
            || self.capture.is_some()
            || self.equals.is_some()
            || self.delivered.is_some()
    }
}
