//! Runs one scenario against the target: steps in order, every byte through
//! the protocol module, a redacted transcript, findings and step outcomes.

use super::body::BodyMatcher;
use super::outcome::*;
use crate::finding::{line_text, Finding, Severity};
use crate::proto::pop3::{self, BodySummary, Command, MultilineDecoder};
use crate::scenario::pattern::Pattern;
use crate::scenario::template::{Template, Value, Vars};
use crate::scenario::{Exchange, ImapExpect, Protocol, Requirement, Scenario, Step, StepKind};
use crate::secret::{Redactor, Secret};
use crate::wire::{Conn, Security, Target, TlsSettings, WireError};
use std::time::{Duration, Instant};

/// Longest line the reader accepts in one piece; longer lines arrive in pieces.
const READ_CAP: usize = 64 * 1024;
/// Transcript lines kept per scenario, and body lines kept per reply.
const TRANSCRIPT_CAP: usize = 600;
const BODY_TRANSCRIPT_LINES: u64 = 12;
/// Findings kept per scenario (the rest are counted).
const FINDINGS_CAP: usize = 100;

/// Everything a run needs to know about the target and the user's choices.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    pub tls: TlsSettings,
    /// Upgrade with STLS right after each greeting.
    pub starttls: bool,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub vars: Vec<(String, String)>,
    pub timeout: Duration,
    pub allow_destructive: bool,
    /// Also run scenarios that complete an SMTP DATA transaction.
    pub allow_send: bool,
    /// Targets for the other protocols of the run: sessions that speak
    /// another protocol (`sessions:`) connect to these.
    pub others: Vec<Target>,
}

impl RunConfig {
    /// The target for `protocol`: the run's own, or one of the others.
    pub fn target_for(&self, protocol: Protocol) -> Option<&Target> {
        std::iter::once(&self.target)
            .chain(&self.others)
            .find(|t| t.protocol == protocol)
    }

    /// Whether sessions on `target` upgrade with STLS/STARTTLS first.
    pub fn starttls_for(&self, target: &Target) -> bool {
        target.security == Security::Plain && (self.starttls || target.starttls)
    }

    /// Variables every scenario starts with, besides `user` and `password`:
    /// `rcpt` (the user when it is an address), `from` (defaults to `rcpt`),
    /// `rcpt_domain` and a per-run `nonce`; `--var` overrides each.
    pub fn builtin_vars(&self) -> Vec<(String, String)> {
        let given = |k: &str| self.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut out = Vec::new();
        let rcpt = given("rcpt").or_else(|| self.user.clone().filter(|u| u.contains('@')));
        if let Some(r) = &rcpt {
            out.push(("rcpt".to_string(), r.clone()));
            if let Some((_, d)) = r.rsplit_once('@') {
                out.push(("rcpt_domain".to_string(), d.to_string()));
            }
        }
        if let Some(f) = given("from").or(rcpt) {
            out.push(("from".to_string(), f));
        }
        out.push(("nonce".to_string(), nonce()));
        out
    }
    /// The redactor for this run: the password, and anything else secret.
    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::new();
        if let Some(p) = &self.password {
            r.add(p);
        }
        r
    }
}

/// What one look at the server told us before the scenarios run: used to
/// skip scenarios whose `requires:` the server cannot meet.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub greeting: String,
    pub capabilities: Option<Vec<String>>,
    pub apop_timestamp: bool,
    pub tls: bool,
    /// CAPA got +OK but its reply was broken (e.g. no terminator): scenarios
    /// that require capabilities then run, and fail, instead of being skipped.
    pub capa_broken: bool,
    /// SMTP: STARTTLS worked during discovery, so `requires: [tls]`
    /// scenarios can upgrade themselves.
    pub tls_available: bool,
}

/// Why a scenario stopped early.
pub(crate) enum Stop {
    /// A step did not match (already recorded as a failed step).
    Mismatch,
    /// The network or the scenario itself failed; the text says how.
    Error(String),
}

impl From<WireError> for Stop {
    fn from(e: WireError) -> Stop {
        Stop::Error(e.to_string())
    }
}

/// A short random token, unique enough to tell this run's messages apart.
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// The state of one scenario while it runs.
pub(crate) struct Run<'a> {
    pub(crate) config: &'a RunConfig,
    pub(crate) redactor: Redactor,
    pub(crate) vars: Vars,
    pub(crate) conn: Option<Conn>,
    pub(crate) session: pop3::Session,
    pub(crate) history: pop3::History,
    pub(crate) session_no: u32,
    pub(crate) transcript: Vec<TranscriptEntry>,
    pub(crate) omitted: u64,
    pub(crate) findings: Vec<Finding>,
    pub(crate) findings_omitted: usize,
    pub(crate) steps: Vec<StepOutcome>,
    /// The id of the step running now, for findings.
    pub(crate) step_id: String,
    /// Set by `exchange` when it returns `Stop::Mismatch`.
    pub(crate) pending_mismatch: Option<Mismatch>,
    /// The IMAP connection state, for IMAP targets.
    pub(crate) imap: Option<super::imap::ImapConn>,
    /// The SMTP connection state, for SMTP targets.
    pub(crate) smtp: Option<super::smtp::SmtpConn>,
    /// Where the current connection goes (sessions may speak another protocol).
    pub(crate) target: Target,
    /// The greeting line of the current connection (without CRLF), for `greeting:` steps.
    pub(crate) greeting: Vec<u8>,
    /// The named connection the fields above belong to (`main` by default).
    current: String,
    /// Other named connections of the scenario, set aside while one runs.
    parked: Vec<Parked>,
    /// Sessions of the scenario that speak another protocol.
    sessions: Vec<(String, Protocol)>,
}

/// A connection that is not the current one.
struct Parked {
    name: String,
    number: u32,
    conn: Option<Conn>,
    imap: Option<super::imap::ImapConn>,
    smtp: Option<super::smtp::SmtpConn>,
    target: Target,
    session: pop3::Session,
    greeting: Vec<u8>,
}

/// The connection steps run on unless they name another.
const MAIN_SESSION: &str = "main";

/// Skip reason for a scenario this run cannot or must not execute.
pub fn skip_reason(scenario: &Scenario, config: &RunConfig, info: &ServerInfo) -> Option<String> {
    if scenario.destructive && !config.allow_destructive {
        return Some("deletes mail: run with --allow-destructive to include it".into());
    }
    if scenario.sends && !config.allow_send {
        return Some("sends mail: run with --allow-send to include it".into());
    }
    for r in &scenario.requires {
        let missing = match r {
            Requirement::Credentials => (config.user.is_none() || config.password.is_none()).then(|| {
                "needs credentials: pass --user and set MAILCHECK_PASSWORD or --password-file".to_string()
            }),
            Requirement::ApopTimestamp => {
                (!info.apop_timestamp).then(|| "the greeting offers no APOP timestamp".to_string())
            }
            Requirement::Tls => (!info.tls).then(|| {
                "needs a TLS connection (pop3s://, imaps://, smtps://, submission:// or --starttls)"
                    .to_string()
            }),
            Requirement::Plaintext => (config.target.security == Security::Implicit
                || config.starttls_for(&config.target))
            .then(|| {
                "needs a plaintext start (a pop3://, imap:// or smtp:// target without --starttls)"
                    .to_string()
            }),
            Requirement::Var(v) => {
                let set = config.vars.iter().any(|(k, _)| k == v)
                    || config.builtin_vars().iter().any(|(k, _)| k == v);
                (!set).then(|| match v.as_str() {
                    "rcpt" => {
                        "needs a recipient on the server: --var rcpt=ADDRESS (or a --user that is an address)"
                            .to_string()
                    }
                    _ => format!("needs --var {v}=VALUE"),
                })
            }
            Requirement::Target(p) => config
                .target_for(*p)
                .is_none()
                .then(|| format!("needs a target for {p} too: add --target {p}://HOST")),
            // `CAPA` itself is met by a server that answers CAPA (RFC 2449), whatever it lists.
            Requirement::Capability(_) if info.capa_broken => None,
            Requirement::Capability(c) if c == "CAPA" => info
                .capabilities
                .is_none()
                .then(|| "the server does not answer CAPA".to_string()),
            Requirement::Capability(c) => match &info.capabilities {
                None => Some(format!("needs {c}, and the server does not answer CAPA")),
                Some(caps) if !caps.iter().any(|x| x == c) => {
                    let list = match config.target.protocol {
                        Protocol::Imap => "CAPABILITY",
                        Protocol::Smtp => "its EHLO reply",
                        Protocol::Pop3 => "CAPA",
                    };
                    Some(format!("the server does not advertise {c} in {list}"))
                }
                Some(_) => None,
            },
            Requirement::Preauth | Requirement::AnyCapability(_) => added_requirement(r, info),
        };
        if missing.is_some() {
            return missing;
        }
    }
    None
}

/// Why a requirement added for IMAP is not met (`None` when it is).
fn added_requirement(r: &Requirement, info: &ServerInfo) -> Option<String> {
    match r {
        Requirement::Preauth => (!info.greeting.to_ascii_uppercase().starts_with("* PREAUTH")).then(|| {
            "the server greets with * OK, not * PREAUTH: sessions start unauthenticated".to_string()
        }),
        // Like `Capability`: a broken capability list runs the scenario (and it fails).
        Requirement::AnyCapability(_) if info.capa_broken => None,
        Requirement::AnyCapability(cs) => match &info.capabilities {
            None => Some(format!(
                "needs one of {}, and the server lists no capabilities",
                cs.join(", ")
            )),
            Some(caps) if !cs.iter().any(|c| caps.contains(c)) => {
                Some(format!("the server advertises none of {}", cs.join(", ")))
            }
            Some(_) => None,
        },
        _ => None,
    }
}

/// One connection to learn the greeting and CAPA (after `--starttls` when set).
pub async fn discover(config: &RunConfig) -> Result<ServerInfo, WireError> {
    let mut run = Run::new(config);
    run.open_session().await.map_err(|e| match e {
        Stop::Error(m) => WireError::Usage(m),
        Stop::Mismatch => WireError::Usage("unexpected reply while connecting".into()),
    })?;
    let mut info = ServerInfo {
        greeting: run
            .transcript
            .iter()
            .find(|t| t.direction == Direction::Server)
            .map(|t| t.text.clone())
            .unwrap_or_default(),
        apop_timestamp: run.session.greeting_timestamp.is_some(),
        tls: run.conn.as_ref().is_some_and(|c| c.is_tls()),
        capabilities: None,
        capa_broken: false,
        tls_available: false,
    };
    if run.smtp.is_some() {
        let mut all: Vec<String> = Vec::new();
        let learn = |run: &Run<'_>, all: &mut Vec<String>| {
            for c in run
                .smtp
                .as_ref()
                .map(|s| s.session.capabilities())
                .unwrap_or_default()
            {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        };
        if run.smtp_ehlo().await.is_ok() {
            learn(&run, &mut all);
            // Servers offer more after STARTTLS (AUTH, often): learn that too.
            let plain = run.conn.as_ref().is_some_and(|c| !c.is_tls());
            if plain && all.iter().any(|c| c == "STARTTLS") && run.smtp_starttls(None).await.is_ok() {
                info.tls_available = true;
                if run.smtp_ehlo().await.is_ok() {
                    learn(&run, &mut all);
                }
            }
        }
        info.capabilities = Some(all);
        let _ = run.exchange(&internal(fixed("QUIT"), None, None)).await;
        return Ok(info);
    }
    if let Some(imap) = &run.imap {
        info.capabilities = Some(imap.capabilities());
        let mut all: Vec<String> = Vec::new();
        let learn = |run: &Run<'_>, all: &mut Vec<String>| {
            for c in run.imap.as_ref().map(|i| i.capabilities()).unwrap_or_default() {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        };
        let caps = internal(fixed("CAPABILITY"), None, None);
        if run.exchange(&caps).await.is_ok() {
            learn(&run, &mut all);
        }
        // IMAP servers announce more after login (UNSELECT, MOVE, ...): scenarios
        // that log in may require those, so learn them too when we can log in.
        if config.user.is_some() && config.password.is_some() && run.login(None, None).await.is_ok() {
            learn(&run, &mut all);
            if run.exchange(&caps).await.is_ok() {
                learn(&run, &mut all);
            }
        }
        info.capabilities = Some(all);
        let _ = run.exchange(&internal(fixed("LOGOUT"), None, None)).await;
        return Ok(info);
    }
    let capa = internal(fixed("CAPA"), None, None);
    match run.exchange(&capa).await {
        Ok(()) => info.capabilities = run.session.capabilities.clone(),
        Err(_) => {
            info.capa_broken = true;
            return Ok(info);
        }
    }
    let quit = internal(fixed("QUIT"), None, None);
    let _ = run.exchange(&quit).await;
    Ok(info)
}

/// An exchange the runner makes itself (discovery, login, STLS).
fn internal(command: Template, reply: Option<Pattern>, multiline: Option<bool>) -> Exchange {
    Exchange {
        command,
        reply,
        untagged: Vec::new(),
        tag: None,
        literal: None,
        multiline,
        body: None,
        imap: ImapExpect::default(),
    }
}

fn fixed(text: &str) -> Template {
    Template {
        source: text.to_string(),
        pieces: vec![crate::scenario::template::Piece::Lit(text.to_string())],
    }
}

/// Run one scenario to its outcome. Never panics on server input; every wait is bounded.
pub async fn run_scenario(scenario: &Scenario, config: &RunConfig, info: &ServerInfo) -> ScenarioOutcome {
    let started = Instant::now();
    let mut outcome = ScenarioOutcome {
        file: scenario.path.display().to_string(),
        name: scenario.name.clone(),
        rfc: scenario.rfc.clone(),
        protocol: scenario.protocol.name().to_string(),
        status: Status::Skipped,
        reason: None,
        duration_ms: 0,
        steps: Vec::new(),
        findings: Vec::new(),
        transcript: Vec::new(),
        transcript_omitted: 0,
    };
    if let Some(reason) = skip_reason(scenario, config, info) {
        outcome.reason = Some(reason);
        return outcome;
    }
    let mut run = Run::new(config);
    run.sessions = scenario.sessions.clone();
    let result = match run.open_session().await {
        Ok(()) => run.steps(&scenario.steps, "").await,
        Err(e) => Err(e),
    };
    run.close().await;
    if run.findings_omitted > 0 {
        run.findings.push(Finding::note(
            "mailcheck.findings-omitted",
            "-",
            format!("{} more findings were left out", run.findings_omitted),
        ));
    }
    let failed_step = run
        .steps
        .iter()
        .any(|s| s.status == Status::Failed && s.severity == Severity::Must);
    let must_finding = run.findings.iter().any(|f| f.severity == Severity::Must);
    outcome.status = match &result {
        Err(Stop::Error(e)) => {
            outcome.reason = Some(run.redactor.redact(e));
            Status::Failed
        }
        _ if failed_step || must_finding => Status::Failed,
        _ => Status::Passed,
    };
    if outcome.status == Status::Failed && outcome.reason.is_none() {
        outcome.reason = run
            .steps
            .iter()
            .find(|s| s.status == Status::Failed && s.severity == Severity::Must)
            .and_then(|s| {
                s.mismatch
                    .as_ref()
                    .map(|m| format!("step {}: {}", s.id, m.message))
            })
            .or_else(|| {
                run.findings
                    .iter()
                    .find(|f| f.severity == Severity::Must)
                    .map(|f| format!("{} ({})", f.message, f.rule))
            });
    }
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    outcome.steps = run.steps;
    outcome.findings = run.findings;
    outcome.transcript = run.transcript;
    outcome.transcript_omitted = run.omitted;
    outcome
}

impl<'a> Run<'a> {
    fn new(config: &'a RunConfig) -> Self {
        let mut vars = Vars::default();
        if let Some(u) = &config.user {
            vars.set_text("user", u.clone());
        }
        if let Some(p) = &config.password {
            vars.set("password", Value::Secret(p.clone()));
        }
        vars.set_text("host", config.target.host.clone());
        for (k, v) in config.builtin_vars() {
            vars.set_text(&k, v);
        }
        for (k, v) in &config.vars {
            vars.set_text(k, v.clone());
        }
        Run {
            config,
            redactor: config.redactor(),
            vars,
            conn: None,
            session: pop3::Session::new(false),
            history: pop3::History::default(),
            session_no: 0,
            transcript: Vec::new(),
            omitted: 0,
            findings: Vec::new(),
            findings_omitted: 0,
            steps: Vec::new(),
            step_id: "connect".into(),
            pending_mismatch: None,
            imap: None,
            smtp: None,
            target: config.target.clone(),
            greeting: Vec::new(),
            current: MAIN_SESSION.to_string(),
            parked: Vec::new(),
            sessions: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, direction: Direction, text: &str) {
        if self.transcript.len() >= TRANSCRIPT_CAP {
            self.omitted += 1;
            return;
        }
        let text = self.redactor.redact(text);
        self.transcript.push(TranscriptEntry {
            session: self.session_no,
            direction,
            text,
        });
    }

    pub(crate) fn add_findings(&mut self, found: Vec<Finding>) {
        for mut f in found {
            if self.findings.len() >= FINDINGS_CAP {
                self.findings_omitted += 1;
                continue;
            }
            f.step = Some(self.step_id.clone());
            f.message = self.redactor.redact(&f.message);
            f.bytes = f.bytes.map(|b| self.redactor.redact(&b));
            self.findings.push(f);
        }
    }

    /// The user name and password a login step uses: the step's own
    /// templates, else the run's credentials. `what` names the step in errors.
    pub(crate) fn credentials(
        &self,
        user: Option<&Template>,
        password: Option<&Template>,
        what: &str,
    ) -> Result<(String, Secret), Stop> {
        let user = match user {
            Some(t) => t.expand(&self.vars).map_err(Stop::Error)?,
            None => self
                .config
                .user
                .clone()
                .ok_or_else(|| Stop::Error(format!("{what} needs --user")))?,
        };
        let password =
            match password {
                Some(t) => Secret::new(t.expand(&self.vars).map_err(Stop::Error)?),
                None => self.config.password.clone().ok_or_else(|| {
                    Stop::Error(format!("{what} needs MAILCHECK_PASSWORD or --password-file"))
                })?,
            };
        Ok((user, password))
    }

    pub(crate) fn conn(&mut self) -> Result<&mut Conn, Stop> {
        self.conn.as_mut().ok_or_else(|| {
            Stop::Error("the connection is closed (add `reconnect: {}` to open a new one)".into())
        })
    }

    /// Connect, read the greeting, and upgrade with STLS when the run asks for it.
    async fn open_session(&mut self) -> Result<(), Stop> {
        self.session_no += 1;
        let target = &self.target.clone();
        let which = if self.current == MAIN_SESSION {
            String::new()
        } else {
            format!(" (session `{}`)", self.current)
        };
        self.record(Direction::Note, &format!("connect {target}{which}"));
        let conn = Conn::connect(target, &self.config.tls, self.config.timeout).await;
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                if let WireError::Tls { cert: Some(cert), .. } = &e {
                    self.record(
                        Direction::Note,
                        &format!("certificate: subject {} issued by {}", cert.subject, cert.issuer),
                    );
                }
                return Err(e.into());
            }
        };
        if conn.is_tls() {
            self.note_tls(&conn);
        }
        conn.waiting_for("the greeting");
        let starttls = self.config.starttls_for(target);
        if target.protocol == Protocol::Smtp {
            let tls = conn.is_tls();
            if self.vars.get("client").is_none() {
                // EHLO names the client; an address literal is always well-formed.
                let name = match conn.local_addr {
                    Some(std::net::SocketAddr::V4(a)) => format!("[{}]", a.ip()),
                    Some(std::net::SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
                    None => "localhost".to_string(),
                };
                self.vars.set_text("client", name);
            }
            self.conn = Some(conn);
            self.imap = None;
            self.smtp_greeting(tls).await?;
            if starttls {
                self.smtp_ehlo().await?;
                self.smtp_starttls(None).await.map_err(|e| match e {
                    Stop::Mismatch => Stop::Error("--starttls: the server refused STARTTLS".into()),
                    other => other,
                })?;
            }
            return Ok(());
        }
        if target.protocol == Protocol::Imap {
            let tls = conn.is_tls();
            self.conn = Some(conn);
            self.smtp = None;
            self.imap_greeting(tls).await?;
            if starttls {
                self.imap_starttls().await.map_err(|e| match e {
                    Stop::Mismatch => Stop::Error("--starttls: the server refused STARTTLS".into()),
                    other => other,
                })?;
            }
            return Ok(());
        }
        let line = conn.read_line(READ_CAP).await?;
        let (bytes, complete) = (line.bytes.to_vec(), line.complete);
        self.greeting = pop3::strip_eol(&bytes).to_vec();
        self.conn = Some(conn);
        self.imap = None;
        self.smtp = None;
        self.session = pop3::Session::new(target.security == Security::Implicit);
        self.record(Direction::Server, &line_text(&bytes));
        let mut found = Vec::new();
        let status = self.session.greeting(&bytes, complete, &mut found);
        self.add_findings(found);
        if status != Some(pop3::Status::Ok) {
            return Err(Stop::Error(format!(
                "the server's greeting is not +OK: {}",
                line_text(&bytes)
            )));
        }
        if starttls {
            self.starttls().await.map_err(|e| match e {
                Stop::Mismatch => Stop::Error("--starttls: the server refused STLS".into()),
                other => other,
            })?;
        }
        Ok(())
    }

    fn note_tls(&mut self, conn: &Conn) {
        if let Some(cert) = &conn.cert {
            let text = format!(
                "TLS up; certificate for {} issued by {}",
                cert.subject, cert.issuer
            );
            self.record(Direction::Note, &text);
            if let Some(problem) = &cert.problem {
                let msg = format!("certificate problem ignored because of --insecure: {problem}");
                self.record(Direction::Note, &msg);
                self.add_findings(vec![Finding::note("tls.insecure", "RFC 2595 section 2.4", msg)]);
            }
        }
    }

    /// STLS, then the handshake on the same socket (RFC 2595 section 4).
    async fn starttls(&mut self) -> Result<(), Stop> {
        if self.smtp.is_some() {
            return self.smtp_starttls(None).await;
        }
        if self.imap.is_some() {
            return self.imap_starttls().await;
        }
        let stls = internal(fixed("STLS"), Some(ok_pattern()), Some(false));
        self.exchange(&stls).await?;
        Ok(())
    }

    pub(crate) async fn upgrade_after_stls(&mut self) -> Result<(), Stop> {
        let conn = self.conn()?;
        let early = conn.buffered().to_vec();
        if !early.is_empty() {
            // Bytes here would be read as if they came through TLS ("STARTTLS injection").
            let (rule, rfc, verb) = if self.smtp.is_some() {
                ("smtp.starttls-early-data", "RFC 3207 section 4", "STARTTLS")
            } else if self.imap.is_some() {
                ("imap.starttls-early-data", "RFC 9051 section 6.2.1", "STARTTLS")
            } else {
                ("pop3.stls-early-data", "RFC 2595 section 4", "STLS")
            };
            self.add_findings(vec![Finding::must(
                rule,
                rfc,
                format!("the server sent data after its {verb} reply, before the TLS handshake"),
            )
            .with_bytes(&early)]);
        }
        let conn = self.conn()?;
        let result = conn.start_tls().await;
        if let Err(e) = result {
            self.conn = None;
            return Err(e.into());
        }
        let conn = self.conn.take();
        if let Some(c) = &conn {
            self.note_tls(c);
        }
        self.conn = conn;
        self.session.tls = true;
        Ok(())
    }

    pub(crate) fn steps<'s>(
        &'s mut self,
        steps: &'s [Step],
        prefix: &'s str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Stop>> + 's>> {
        Box::pin(async move {
            for (i, step) in steps.iter().enumerate() {
                let id = format!("{prefix}{}", i + 1);
                self.step(step, &id).await?;
            }
            Ok(())
        })
    }

    /// The name of the connection steps run on now.
    pub(crate) fn current_session(&self) -> &str {
        &self.current
    }

    /// Make `name` the current connection, opening it on first use.
    pub(crate) async fn switch_to(&mut self, name: &str) -> Result<(), Stop> {
        if name == self.current {
            return Ok(());
        }
        let protocol = self
            .sessions
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.config.target.protocol, |(_, p)| *p);
        let target = self.config.target_for(protocol).cloned().ok_or_else(|| {
            Stop::Error(format!(
                "session `{name}` needs a target for {protocol}: add --target {protocol}://HOST"
            ))
        })?;
        let old = Parked {
            name: std::mem::replace(&mut self.current, name.to_string()),
            number: self.session_no,
            conn: self.conn.take(),
            imap: self.imap.take(),
            smtp: self.smtp.take(),
            target: std::mem::replace(&mut self.target, target),
            session: std::mem::replace(&mut self.session, pop3::Session::new(false)),
            greeting: std::mem::take(&mut self.greeting),
        };
        let found = self.parked.iter().position(|p| p.name == name);
        self.parked.push(old);
        match found {
            Some(i) => {
                let p = self.parked.remove(i);
                self.session_no = p.number;
                self.conn = p.conn;
                self.imap = p.imap;
                self.smtp = p.smtp;
                self.target = p.target;
                self.session = p.session;
                self.greeting = p.greeting;
                Ok(())
            }
            None => {
                self.session_no = self.parked.iter().map(|p| p.number).max().unwrap_or(0);
                self.open_session().await
            }
        }
    }

    async fn step(&mut self, step: &Step, id: &str) -> Result<(), Stop> {
        self.step_id = id.to_string();
        let started = Instant::now();
        let session = step.session.as_deref().unwrap_or(MAIN_SESSION);
        let switched = match &step.kind {
            StepKind::ForEach { .. } | StepKind::Retry { .. } => Ok(()),
            _ => self.switch_to(session).await,
        };
        let result = match (&step.kind, switched) {
            (_, Err(e)) => Err(e),
            (kind, Ok(())) => match kind {
                StepKind::Exchange(x) => self.exchange(x).await,
                StepKind::Login {
                    optional: true,
                    user,
                    password,
                } if self.smtp.is_some() => {
                    self.smtp_login_if_offered(user.as_ref(), password.as_ref()).await
                }
                StepKind::Login { user, password, .. } => self.login(user.as_ref(), password.as_ref()).await,
                StepKind::Apop => self.apop().await,
                StepKind::Pipeline(xs) if self.smtp.is_some() => self.smtp_pipeline(xs).await,
                StepKind::Pipeline(xs) => match self.imap.is_some() {
                    true => self.imap_pipeline(xs).await,
                    false => Err(Stop::Error("`pipeline` needs an IMAP or SMTP target".into())),
                },
                StepKind::StartTls { inject } if self.smtp.is_some() => {
                    self.smtp_starttls(inject.as_ref()).await
                }
                StepKind::StartTls { .. } => self.starttls().await,
                StepKind::Auth {
                    mechanism,
                    user,
                    password,
                    reply,
                } if self.smtp.is_some() => {
                    self.smtp_auth(mechanism, user.as_ref(), password.as_ref(), reply.as_ref())
                        .await
                }
                StepKind::Data(d) if self.smtp.is_some() => self.smtp_data(d).await,
                StepKind::Send { bytes, reply } if self.smtp.is_some() => {
                    self.smtp_send_raw(bytes, reply.as_ref()).await
                }
                StepKind::Auth { .. } | StepKind::Data(_) | StepKind::Send { .. } => {
                    Err(Stop::Error("`auth`, `data` and `send` are SMTP steps".into()))
                }
                StepKind::Retry { within, every, steps } => {
                    return self.retry(*within, *every, steps, id).await
                }
                StepKind::Greeting(p) => self.match_greeting(p),
                StepKind::Idle(idle) => match self.imap.is_some() {
                    true => self.imap_idle(idle, id).await,
                    false => Err(Stop::Error("`idle` needs an IMAP target".into())),
                },
                StepKind::Drop => self.drop_conn().await,
                StepKind::Reconnect => {
                    self.drop_conn().await?;
                    self.open_session().await
                }
                StepKind::ForEach { rows, limit, steps } => {
                    return self.foreach(rows, *limit, steps, id).await
                }
            },
        };
        let label = self.label(step);
        let (status, mismatch) = match &result {
            Ok(()) => (Status::Passed, None),
            Err(Stop::Mismatch) => {
                let m = self.pending_mismatch.take();
                (Status::Failed, m)
            }
            Err(Stop::Error(e)) => (
                Status::Failed,
                Some(Mismatch {
                    message: self.redactor.redact(e),
                    expected: None,
                    actual: None,
                }),
            ),
        };
        self.steps.push(StepOutcome {
            id: id.to_string(),
            line: step.pos.line,
            label,
            status,
            severity: step.severity,
            mismatch,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        match result {
            // A SHOULD-level mismatch warns and the scenario goes on.
            Err(Stop::Mismatch) if step.severity == Severity::Should => Ok(()),
            other => other,
        }
    }

    fn label(&self, step: &Step) -> String {
        let text = match &step.kind {
            StepKind::Exchange(x) => {
                let cmd = x
                    .command
                    .expand_masked(&self.vars)
                    .unwrap_or_else(|_| x.command.source.clone());
                match &x.reply {
                    Some(p) => format!("C: {cmd}  S: {}", p.display()),
                    None => format!("C: {cmd}"),
                }
            }
            StepKind::Login { .. } if self.smtp.is_some() => "login (AUTH)".into(),
            StepKind::Login { .. } if self.imap.is_some() => "login (LOGIN)".into(),
            StepKind::Login { .. } => "login (USER/PASS)".into(),
            StepKind::Apop => "login (APOP)".into(),
            StepKind::StartTls { inject: None } => "STLS / STARTTLS".into(),
            StepKind::StartTls { inject: Some(t) } => {
                format!("STARTTLS with `{}` injected behind it", t.source)
            }
            StepKind::Auth { mechanism, .. } => format!("AUTH {mechanism}"),
            StepKind::Data(d) => match &d.message {
                crate::scenario::MessageSource::Text(_) => "DATA and a message".into(),
                crate::scenario::MessageSource::Raw(_) => "DATA and raw message bytes".into(),
                crate::scenario::MessageSource::File(p) => format!("DATA and the message in {}", p.display()),
            },
            StepKind::Send { bytes, .. } => format!("send `{}`", bytes.source.escape_debug()),
            StepKind::Retry { within, .. } => format!("retry for up to {} s", within.as_secs_f64()),
            StepKind::Drop => "drop the connection without QUIT".into(),
            StepKind::Reconnect => "reconnect".into(),
            StepKind::Pipeline(xs) => format!("pipeline of {} commands", xs.len()),
            StepKind::Greeting(p) => format!("greeting  S: {}", p.display()),
            StepKind::Idle(idle) => match idle.updates.len() {
                0 => "IDLE ... DONE".into(),
                n => format!("IDLE, {n} update(s), DONE"),
            },
            StepKind::ForEach { rows, .. } => format!("foreach {rows}"),
        };
        self.redactor.redact(&text)
    }

    async fn foreach(
        &mut self,
        rows: &str,
        limit: Option<usize>,
        steps: &[Step],
        id: &str,
    ) -> Result<(), Stop> {
        let list = match self.vars.get(rows) {
            Some(Value::Rows(r)) => r.clone(),
            _ => return Err(Stop::Error(format!("step {id}: `foreach: {rows}` needs rows captured earlier with `body: {{each: ..., rows: {rows}}}`"))),
        };
        for (r, row) in list.iter().take(limit.unwrap_or(usize::MAX)).enumerate() {
            for (k, v) in row {
                self.vars.set_text(k, v.clone());
            }
            let prefix = format!("{id}[{}].", r + 1);
            self.steps(steps, &prefix).await?;
        }
        Ok(())
    }

    /// Run `steps` until all pass or `within` is over; only the last
    /// attempt's step outcomes are kept (earlier ones are noted).
    async fn retry(
        &mut self,
        within: Duration,
        every: Duration,
        steps: &[Step],
        id: &str,
    ) -> Result<(), Stop> {
        let deadline = Instant::now() + within;
        let mut attempt = 1u32;
        loop {
            let mark = self.steps.len();
            let prefix = format!("{id}.");
            let result = self.steps(steps, &prefix).await;
            let failed_must = self.steps[mark..]
                .iter()
                .any(|s| s.status == Status::Failed && s.severity == Severity::Must);
            let done = result.is_ok() && !failed_must;
            if done || Instant::now() + every > deadline {
                if !done {
                    self.record(
                        Direction::Note,
                        &format!("gave up after {attempt} attempts in {} s", within.as_secs_f64()),
                    );
                }
                return result;
            }
            self.steps.truncate(mark);
            self.record(
                Direction::Note,
                &format!(
                    "attempt {attempt} did not pass; trying again in {} s",
                    every.as_secs_f64()
                ),
            );
            tokio::time::sleep(every).await;
            attempt += 1;
        }
    }

    /// Match the greeting this connection opened with (read before the steps ran).
    fn match_greeting(&mut self, p: &Pattern) -> Result<(), Stop> {
        let greeting = self.greeting.clone();
        if self.capture(p, &[&greeting])? {
            return Ok(());
        }
        self.pending_mismatch = Some(Mismatch {
            message: "the greeting does not match".into(),
            expected: Some(p.display()),
            actual: Some(self.redactor.redact(&line_text(&greeting))),
        });
        Err(Stop::Mismatch)
    }

    /// USER then PASS, each expecting +OK; the templates default to the run's credentials.
    async fn login(&mut self, user: Option<&Template>, password: Option<&Template>) -> Result<(), Stop> {
        if self.smtp.is_some() {
            return self.smtp_login(user, password).await;
        }
        if self.imap.is_some() {
            return self.imap_login(user, password).await;
        }
        let user = user.map_or("${user}", |t| t.source.as_str());
        let password = password.map_or("${password}", |t| t.source.as_str());
        let user_cmd = Template::parse(&format!("USER {user}")).map_err(Stop::Error)?;
        let pass_cmd = Template::parse(&format!("PASS {password}")).map_err(Stop::Error)?;
        for t in [&user_cmd, &pass_cmd] {
            for name in t.var_names() {
                if self.vars.get(name).is_none() {
                    return Err(Stop::Error(format!(
                        "login needs `{name}`: pass --user and set MAILCHECK_PASSWORD or --password-file"
                    )));
                }
            }
        }
        let ok = Some(ok_pattern());
        self.exchange(&internal(user_cmd, ok.clone(), Some(false)))
            .await?;
        self.exchange(&internal(pass_cmd, ok, Some(false))).await
    }

    async fn apop(&mut self) -> Result<(), Stop> {
        if self.imap.is_some() || self.smtp.is_some() {
            return Err(Stop::Error("`apop` is a POP3 step".into()));
        }
        let Some(stamp) = self.session.greeting_timestamp.clone() else {
            return Err(Stop::Error("the greeting has no APOP timestamp `<...>`".into()));
        };
        let (Some(user), Some(pass)) = (self.config.user.clone(), self.config.password.clone()) else {
            return Err(Stop::Error("APOP needs --user and a password".into()));
        };
        let digest = Secret::new(pop3::apop_digest(&stamp, pass.expose()));
        self.redactor.add(&digest);
        self.vars.set("apop_digest", Value::Secret(digest));
        self.vars.set_text("apop_user", user);
        let cmd = Template::parse("APOP ${apop_user} ${apop_digest}").map_err(Stop::Error)?;
        self.exchange(&internal(cmd, Some(ok_pattern()), Some(false)))
            .await
    }

    async fn drop_conn(&mut self) -> Result<(), Stop> {
        if let Some(mut conn) = self.conn.take() {
            self.record(Direction::Note, "close our side without QUIT");
            let closed = conn.drop_connection(self.config.timeout).await;
            if !closed {
                self.record(
                    Direction::Note,
                    "the server did not close its side within the timeout",
                );
            }
        }
        self.history.end_session(&self.session);
        self.session.state = pop3::State::Closed;
        Ok(())
    }

    async fn close(&mut self) {
        if self.conn.is_some() {
            let _ = self.drop_conn().await;
        }
        while let Some(p) = self.parked.pop() {
            self.session_no = p.number;
            self.conn = p.conn;
            self.imap = p.imap;
            self.smtp = p.smtp;
            self.target = p.target;
            self.session = p.session;
            if self.conn.is_some() {
                let _ = self.drop_conn().await;
            }
        }
    }

    /// Send one command, read and validate its reply, match the expectations.
    async fn exchange(&mut self, x: &Exchange) -> Result<(), Stop> {
        if self.smtp.is_some() {
            return self.smtp_exchange(x).await;
        }
        if self.imap.is_some() {
            return self.imap_exchange(x).await;
        }
        let line = x.command.expand(&self.vars).map_err(Stop::Error)?;
        let masked = x.command.expand_masked(&self.vars).map_err(Stop::Error)?;
        let shown = self.redactor.redact(&masked);
        self.record(Direction::Client, &shown);
        let cmd = Command::parse(&line);
        let label = self.redactor.redact(&cmd.label());
        let step_id = self.step_id.clone();
        let mut wire = line.into_bytes();
        wire.extend_from_slice(b"\r\n");
        {
            let conn = self.conn()?;
            conn.send(&wire).await?;
            conn.waiting_for(format!("the reply to `{label}` (step {step_id})"));
        }
        self.session.begin(&cmd);
        let (first, complete) = {
            let conn = self.conn()?;
            let l = conn.read_line(READ_CAP).await?;
            (l.bytes.to_vec(), l.complete)
        };
        self.record(Direction::Server, &line_text(&first));
        let mut found = Vec::new();
        let status = pop3::check_status_line(&first, complete, &mut found);
        self.add_findings(found);

        let multiline = x
            .multiline
            .unwrap_or(status == Some(pop3::Status::Ok) && cmd.multiline_on_ok());
        let mut matcher = match &x.body {
            Some(b) => Some(BodyMatcher::new(b, &self.vars).map_err(Stop::Error)?),
            None => None,
        };
        let mut summary = None;
        if multiline {
            summary = Some(self.read_body(&cmd, &label, matcher.as_mut()).await?);
        }
        if let Some(status) = status {
            let mut found = Vec::new();
            self.session
                .finish(&cmd, status, &first, summary.as_ref(), &mut found);
            self.add_findings(found);
            if cmd.verb == "UIDL" && cmd.args.is_empty() && status == pop3::Status::Ok {
                let mut found = Vec::new();
                self.history.check_uids(&self.session, &mut found);
                self.add_findings(found);
            }
        }

        // The scenario's own expectations.
        let mut mismatch = None;
        if let Some(p) = &x.reply {
            if !self.capture(p, &[pop3::strip_eol(&first)])? {
                mismatch = Some(Mismatch {
                    message: format!("reply to `{label}` does not match"),
                    expected: Some(p.display()),
                    actual: Some(self.redactor.redact(&line_text(&first))),
                })
            }
        }
        if mismatch.is_none() {
            if let Some(m) = matcher {
                let sum = summary.clone().unwrap_or_default();
                if summary.is_none() {
                    mismatch = Some(Mismatch {
                        message: format!("expected a multi-line reply to `{label}`, got a single line"),
                        expected: Some("multi-line reply".into()),
                        actual: Some(self.redactor.redact(&line_text(&first))),
                    });
                } else if let Err(mut e) = m.finish(sum.lines, sum.octets, &mut self.vars) {
                    e.actual = e.actual.map(|a| self.redactor.redact(&a));
                    e.message = format!("reply to `{label}`: {}", e.message);
                    mismatch = Some(e);
                }
            }
        }

        // Connection-level consequences of the reply.
        if status == Some(pop3::Status::Ok) {
            match cmd.verb.as_str() {
                "QUIT" => self.after_quit().await,
                "STLS" if !self.session.tls || self.conn.as_ref().is_some_and(|c| !c.is_tls()) => {
                    self.upgrade_after_stls().await?
                }
                _ => {}
            }
        }
        match mismatch {
            Some(m) => {
                self.pending_mismatch = Some(m);
                Err(Stop::Mismatch)
            }
            None => Ok(()),
        }
    }

    async fn read_body(
        &mut self,
        cmd: &Command,
        label: &str,
        mut matcher: Option<&mut BodyMatcher<'_>>,
    ) -> Result<BodySummary, Stop> {
        let wants_lines = self.session.wants_lines(cmd);
        let mut decoder = MultilineDecoder::new();
        let mut shown: Vec<String> = Vec::new();
        let result: Result<(), WireError> = async {
            let conn = self
                .conn
                .as_mut()
                .ok_or(WireError::Usage("the connection is closed".into()))?;
            conn.waiting_for(format!(
                "the end of the multi-line reply to `{label}` (a line with a single '.')"
            ));
            loop {
                let line = conn.read_line(READ_CAP).await?;
                let complete = line.complete;
                let Some(content) = decoder.feed(line.bytes, complete) else {
                    break;
                };
                if (shown.len() as u64) < BODY_TRANSCRIPT_LINES && complete {
                    shown.push(line_text(line.bytes));
                }
                if wants_lines {
                    self.session.body_line(cmd, content);
                }
                if let Some(m) = matcher.as_deref_mut() {
                    m.feed(content, complete);
                }
            }
            Ok(())
        }
        .await;
        for s in shown {
            self.record(Direction::Server, &s);
        }
        if decoder.lines > BODY_TRANSCRIPT_LINES {
            let more = decoder.lines - BODY_TRANSCRIPT_LINES;
            self.record(
                Direction::Note,
                &format!("... {more} more lines, {} octets in all", decoder.octets),
            );
        }
        self.add_findings(decoder.findings());
        match result {
            Ok(()) => {
                self.record(Direction::Server, ".");
                Ok(BodySummary { octets: decoder.octets, lines: decoder.lines })
            }
            Err(WireError::Timeout { secs, .. }) => Err(Stop::Error(format!(
                "no terminating '.' for the multi-line reply to `{label}` after {secs} s ({} lines, {} octets received)",
                decoder.lines, decoder.octets
            ))),
            Err(WireError::Closed { .. }) => Err(Stop::Error(format!(
                "the server closed the connection before the terminating '.' of the reply to `{label}` ({} lines received)",
                decoder.lines
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Match `p` against `candidates` (lines without their ending); the first
    /// match's captures become variables. False when none matches.
    pub(crate) fn capture(&mut self, p: &Pattern, candidates: &[&[u8]]) -> Result<bool, Stop> {
        let m = p.compile(&self.vars).map_err(Stop::Error)?;
        match candidates.iter().find_map(|c| m.matches(c)) {
            Some(caps) => {
                for (k, v) in caps {
                    self.vars.set_text(&k, v);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// After `+OK` to QUIT the server closes the connection (RFC 1939 section 6).
    async fn after_quit(&mut self) {
        self.await_close(&GOODBYE_POP3).await;
        self.history.end_session(&self.session);
        self.session.state = pop3::State::Closed;
    }

    /// After the goodbye (QUIT, LOGOUT) the server closes; nothing more may come.
    pub(crate) async fn await_close(&mut self, rules: &Goodbye) {
        let Some(mut conn) = self.conn.take() else { return };
        let wait = self.config.timeout.min(Duration::from_secs(5));
        let (closed, extra) = conn.wait_closed(wait).await;
        if !extra.is_empty() {
            let message = format!("the server sent more data after completing {}", rules.verb);
            self.add_findings(vec![
                Finding::must(rules.data_rule, rules.rfc, message).with_bytes(&extra)
            ]);
        }
        if closed {
            self.record(Direction::Note, "the server closed the connection");
        } else {
            let message = format!(
                "the server did not close the connection within {} s after {}",
                wait.as_secs(),
                rules.verb
            );
            let severity = if rules.close_must {
                Severity::Must
            } else {
                Severity::Should
            };
            self.add_findings(vec![Finding::new(severity, rules.close_rule, rules.rfc, message)]);
        }
    }
}

/// Which rules the end of a session is checked against.
pub(crate) struct Goodbye {
    pub verb: &'static str,
    pub rfc: &'static str,
    pub data_rule: &'static str,
    pub close_rule: &'static str,
    /// Staying open is a MUST violation (SMTP), not only a SHOULD (POP3, IMAP).
    pub close_must: bool,
}

const GOODBYE_POP3: Goodbye = Goodbye {
    verb: "QUIT",
    rfc: "RFC 1939 section 6 (QUIT)",
    data_rule: "pop3.data-after-quit",
    close_rule: "pop3.quit-close",
    close_must: false,
};

fn ok_pattern() -> Pattern {
    Pattern::glob("+OK*").expect("static pattern")
}
