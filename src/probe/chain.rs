//! The check chain for one endpoint: DNS -> TCP -> TLS -> greeting ->
//! capabilities -> login -> read-only check, each layer timed and marked.
//! A failed layer stops that endpoint's chain with a diagnosis from the
//! advice table; endpoints run concurrently and never wait for each other.

use super::advice::{self, Advice, Observation, SocketProblem, Stage, TlsProblem};
use super::dns::{DnsError, Resolver};
use super::model::{Endpoint, Service, TlsMode};
use crate::finding::line_text;
use crate::proto::{imap, pop3, smtp};
use crate::secret::{Redactor, Secret};
use crate::wire::{CertProblemKind, CertReport, Conn, TlsSettings, WireError};
use base64::Engine;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest reply line read in one piece.
const READ_CAP: usize = 64 * 1024;
/// Certificates expiring sooner than this are a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// `--resolve HOST:PORT:ADDR`: connect to ADDR, keep HOST for SNI and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub host: String,
    pub port: u16,
    pub addr: IpAddr,
}

impl Pin {
    /// Parse `HOST:PORT:ADDR` (ADDR may be an IPv6 literal, bracketed or not).
    pub fn parse(text: &str) -> Result<Pin, String> {
        let bad =
            || format!("--resolve {text}: write it as HOST:PORT:ADDR, e.g. imap.yandex.ru:993:127.0.0.1");
        let (host, rest) = text.split_once(':').ok_or_else(bad)?;
        let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        Ok(Pin {
            host: host.to_ascii_lowercase(),
            port: port.parse().map_err(|_| bad())?,
            addr: addr.parse().map_err(|_| bad())?,
        })
    }
}

/// Everything the chain needs besides the endpoint.
#[derive(Clone)]
pub struct ProbeConfig {
    pub resolver: Arc<dyn Resolver>,
    pub pins: Vec<Pin>,
    pub tls: TlsSettings,
    pub timeout: Duration,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Dns,
    Tcp,
    Tls,
    Greeting,
    Capabilities,
    Login,
    ReadOnly,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Dns => "dns",
            Layer::Tcp => "tcp",
            Layer::Tls => "tls",
            Layer::Greeting => "greeting",
            Layer::Capabilities => "capabilities",
            Layer::Login => "login",
            Layer::ReadOnly => "read-only",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Ok,
    Warning,
    Failed,
    Skipped,
}

/// One layer's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub layer: Layer,
    pub mark: Mark,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// What the server said, verbatim (redacted), when it matters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<Advice>,
}

/// Certificate facts for the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct TlsSummary {
    pub version: String,
    pub cipher: String,
    pub certificate: CertReport,
    pub days_left: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub endpoint: Endpoint,
    pub url: String,
    pub usable: bool,
    pub duration_ms: u64,
    pub checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSummary>,
    /// Capabilities as the server listed them (after TLS when it was upgraded).
    pub capabilities: Vec<String>,
}

/// Probe every endpoint at once; results come back in the input order.
pub async fn probe_all(endpoints: Vec<Endpoint>, config: &ProbeConfig) -> Vec<EndpointReport> {
    let mut set = tokio::task::JoinSet::new();
    for (i, ep) in endpoints.iter().cloned().enumerate() {
        let cfg = config.clone();
        set.spawn(async move { (i, probe_endpoint(&ep, &cfg).await) });
    }
    let mut out: Vec<Option<EndpointReport>> = vec![None; endpoints.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, report)) = joined {
            out[i] = Some(report);
        }
    }
    out.into_iter()
        .zip(endpoints)
        .map(|(r, ep)| r.unwrap_or_else(|| crashed(ep)))
        .collect()
}

/// A probe task that died (it should not): report it rather than lose the endpoint.
fn crashed(ep: Endpoint) -> EndpointReport {
    EndpointReport {
        url: ep.url(),
        endpoint: ep,
        usable: false,
        duration_ms: 0,
        checks: vec![Check {
            layer: Layer::Dns,
            mark: Mark::Failed,
            duration_ms: None,
            summary: "internal error: the probe task stopped".into(),
            details: Vec::new(),
            server_text: None,
            advice: None,
        }],
        tls: None,
        capabilities: Vec::new(),
    }
}

/// Run the chain for one endpoint.
pub async fn probe_endpoint(ep: &Endpoint, config: &ProbeConfig) -> EndpointReport {
    let started = Instant::now();
    let mut redactor = Redactor::new();
    if let Some(p) = &config.password {
        redactor.add(p);
    }
    let mut p = Probe {
        ep,
        config,
        redactor,
        checks: Vec::new(),
        tls: None,
        caps: Vec::new(),
    };
    p.run().await;
    let usable = !p.checks.iter().any(|c| c.mark == Mark::Failed);
    EndpointReport {
        url: ep.url(),
        endpoint: ep.clone(),
        usable,
        duration_ms: started.elapsed().as_millis() as u64,
        checks: p.checks,
        tls: p.tls,
        capabilities: p.caps,
    }
}

/// Stop the chain (the failure is already recorded).
struct Stopped;

/// What CAPA / CAPABILITY / EHLO told us.
#[derive(Debug, Default, Clone)]
struct Caps {
    list: Vec<String>,
    starttls: bool,
    logindisabled: bool,
    auth: Vec<String>,
    size: Option<String>,
}

struct Probe<'a> {
    ep: &'a Endpoint,
    config: &'a ProbeConfig,
    redactor: Redactor,
    checks: Vec<Check>,
    tls: Option<TlsSummary>,
    caps: Vec<String>,
}

fn ms(since: Instant) -> Option<u64> {
    Some(since.elapsed().as_millis() as u64)
}

impl Probe<'_> {
    fn push(
        &mut self,
        layer: Layer,
        mark: Mark,
        started: Option<Instant>,
        summary: impl Into<String>,
    ) -> &mut Check {
        let summary = self.redactor.redact(&summary.into());
        self.checks.push(Check {
            layer,
            mark,
            duration_ms: started.and_then(ms),
            summary,
            details: Vec::new(),
            server_text: None,
            advice: None,
        });
        let last = self.checks.len() - 1;
        &mut self.checks[last]
    }

    fn advise(&self, obs: &Observation) -> Option<Advice> {
        advice::advise(self.ep.service, self.ep.port, obs)
    }

    fn fail(
        &mut self,
        layer: Layer,
        started: Option<Instant>,
        summary: String,
        obs: Option<Observation>,
    ) -> Stopped {
        let advice = obs.as_ref().and_then(|o| self.advise(o));
        let server_text = match &obs {
            Some(Observation::Reply { text, .. }) => Some(self.redactor.redact(text)),
            _ => None,
        };
        let check = self.push(layer, Mark::Failed, started, summary);
        check.advice = advice;
        check.server_text = server_text;
        Stopped
    }

    fn skip_rest(&mut self, from: Layer, reason: &str) {
        let order = [
            Layer::Tls,
            Layer::Greeting,
            Layer::Capabilities,
            Layer::Login,
            Layer::ReadOnly,
        ];
        for layer in order {
            if (layer as u8) >= (from as u8) && !self.checks.iter().any(|c| c.layer == layer) {
                self.push(layer, Mark::Skipped, None, reason);
            }
        }
    }

    async fn run(&mut self) {
        let addrs = match self.dns().await {
            Ok(a) => a,
            Err(Stopped) => return self.skip_rest(Layer::Tcp, "not reached: DNS failed"),
        };
        let mut conn = match self.tcp(&addrs).await {
            Ok(c) => c,
            Err(Stopped) => return self.skip_rest(Layer::Tls, "not reached: no TCP connection"),
        };
        if self.protocol_chain(&mut conn).await.is_err() {
            self.skip_rest(Layer::Tls, "not reached: an earlier layer failed");
        }
    }

    async fn dns(&mut self) -> Result<Vec<IpAddr>, Stopped> {
        let ep = self.ep;
        if let Some(pin) = self
            .config
            .pins
            .iter()
            .find(|p| p.host == ep.host.to_ascii_lowercase() && p.port == ep.port)
        {
            self.push(
                Layer::Dns,
                Mark::Ok,
                None,
                format!("{} pinned to {} by --resolve", ep.host, pin.addr),
            );
            return Ok(vec![pin.addr]);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.timeout, self.config.resolver.ips(&ep.host)).await;
        match result {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                self.push(
                    Layer::Dns,
                    Mark::Ok,
                    Some(started),
                    format!("{} -> {}", ep.host, list.join(", ")),
                );
                Ok(addrs)
            }
            Ok(Ok(_)) | Ok(Err(DnsError::NotFound(_))) => Err(self.fail(
                Layer::Dns,
                Some(started),
                format!("{}: no such host name", ep.host),
                Some(Observation::Socket(SocketProblem::DnsNotFound)),
            )),
            Ok(Err(e)) => Err(self.fail(Layer::Dns, Some(started), e.to_string(), None)),
            Err(_) => Err(self.fail(
                Layer::Dns,
                Some(started),
                format!(
                    "{}: DNS lookup timed out after {} s",
                    ep.host,
                    self.config.timeout.as_secs()
                ),
                None,
            )),
        }
    }

    async fn tcp(&mut self, addrs: &[IpAddr]) -> Result<Conn, Stopped> {
        let started = Instant::now();
        let mut last = None;
        for ip in addrs {
            let sa = SocketAddr::new(*ip, self.ep.port);
            match Conn::connect_addr(sa, &self.ep.host, false, &self.config.tls, self.config.timeout).await {
                Ok(conn) => {
                    self.push(Layer::Tcp, Mark::Ok, Some(started), format!("connected to {sa}"));
                    return Ok(conn);
                }
                Err(e) => last = Some(e),
            }
        }
        let (problem, text) = match last {
            Some(WireError::ConnectTimeout { addr, secs }) => (
                SocketProblem::TimedOut,
                format!("port {}: no answer from {addr} within {secs} s", self.ep.port),
            ),
            Some(WireError::Connect { addr, source }) => {
                let problem = match source.kind() {
                    std::io::ErrorKind::ConnectionRefused => SocketProblem::Refused,
                    std::io::ErrorKind::TimedOut => SocketProblem::TimedOut,
                    _ => SocketProblem::Unreachable,
                };
                (problem, format!("cannot connect to {addr}: {source}"))
            }
            Some(other) => (SocketProblem::Unreachable, other.to_string()),
            None => (SocketProblem::Unreachable, "no address to connect to".into()),
        };
        Err(self.fail(
            Layer::Tcp,
            Some(started),
            text,
            Some(Observation::Socket(problem)),
        ))
    }

    async fn protocol_chain(&mut self, conn: &mut Conn) -> Result<(), Stopped> {
        let connected = Instant::now();
        if self.ep.tls == TlsMode::Implicit {
            self.handshake(conn).await?;
        }
        self.greeting(conn, connected).await?;
        let mut caps = self.capabilities(conn, "").await?;
        if !conn.is_tls() {
            if caps.starttls {
                self.starttls(conn).await?;
                caps = self.capabilities(conn, " after TLS").await?;
            } else if self.ep.tls == TlsMode::Starttls {
                let what = self.starttls_word();
                return Err(self.fail(
                    Layer::Tls,
                    None,
                    format!("the server does not offer {what}: passwords would travel unencrypted"),
                    None,
                ));
            } else {
                self.push(
                    Layer::Tls,
                    Mark::Warning,
                    None,
                    "no TLS on this port and no STARTTLS offered",
                );
            }
        }
        if !conn.is_tls() && caps.logindisabled {
            let obs = Observation::Reply {
                service: self.ep.service,
                stage: Stage::Capabilities,
                text: "LOGINDISABLED".into(),
            };
            return Err(self.fail(
                Layer::Login,
                None,
                "LOGIN is disabled on this cleartext connection and STARTTLS is not offered".into(),
                Some(obs),
            ));
        }
        self.caps = caps.list.clone();
        let creds = match (&self.config.user, &self.config.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        match creds {
            Some((user, password)) => {
                self.login(conn, &caps, &user, &password).await?;
                self.read_only(conn).await?;
            }
            None => {
                self.push(
                    Layer::Login,
                    Mark::Skipped,
                    None,
                    "no credentials (--user and MAILCHECK_PASSWORD)",
                );
                self.push(Layer::ReadOnly, Mark::Skipped, None, "needs a login");
                self.goodbye(conn).await;
            }
        }
        Ok(())
    }

    fn starttls_word(&self) -> &'static str {
        match self.ep.service {
            Service::Pop3 => "STLS",
            _ => "STARTTLS",
        }
    }

    async fn handshake(&mut self, conn: &mut Conn) -> Result<(), Stopped> {
        let started = Instant::now();
        let result = conn.start_tls().await;
        let cert = conn.cert.clone();
        match result {
            Ok(()) => {
                let info = conn.tls_info.clone().unwrap_or(crate::wire::TlsInfo {
                    version: String::new(),
                    cipher: String::new(),
                });
                let cert = cert.unwrap_or_default();
                let days_left = (cert.not_after_unix - now_unix()).div_euclid(86_400);
                let mut summary = format!(
                    "{} {}; {} issued by {}; valid until {} ({days_left} days left)",
                    info.version, info.cipher, cert.subject, cert.issuer, cert.not_after
                );
                let mut mark = Mark::Ok;
                let mut advice = None;
                if let Some(problem) = &cert.problem {
                    // Only reachable with --insecure: say what was wrong anyway.
                    mark = Mark::Warning;
                    summary = format!("{summary}; NOT TRUSTED (ignored by --insecure): {problem}");
                    advice = self.advise(&Observation::Tls(self.tls_problem(&cert)));
                } else if days_left < EXPIRY_WARNING_DAYS {
                    mark = Mark::Warning;
                    summary = format!("{summary}; expires soon");
                }
                let check = self.push(Layer::Tls, mark, Some(started), summary);
                check.advice = advice;
                check
                    .details
                    .push(format!("certificate names: {}", cert.names.join(", ")));
                check
                    .details
                    .push(format!("valid from {} to {}", cert.not_before, cert.not_after));
                self.tls = Some(TlsSummary {
                    version: info.version,
                    cipher: info.cipher,
                    certificate: cert,
                    days_left,
                });
                Ok(())
            }
            Err(e) => {
                let problem = match &cert {
                    Some(c) if c.problem.is_some() => self.tls_problem(c),
                    _ => TlsProblem::Other(e.to_string()),
                };
                let summary = e.to_string();
                let stop = self.fail(
                    Layer::Tls,
                    Some(started),
                    summary,
                    Some(Observation::Tls(problem)),
                );
                if let (Some(c), Some(check)) = (cert, self.checks.last_mut()) {
                    check
                        .details
                        .push(format!("certificate: {} issued by {}", c.subject, c.issuer));
                    check.details.push(format!("names: {}", c.names.join(", ")));
                    check
                        .details
                        .push(format!("valid from {} to {}", c.not_before, c.not_after));
                }
                Err(stop)
            }
        }
    }

    /// Turn webpki's verdict into what a user can act on.
    fn tls_problem(&self, cert: &CertReport) -> TlsProblem {
        let now = now_unix();
        match cert.problem_kind {
            Some(CertProblemKind::Expired) => TlsProblem::Expired {
                not_after: cert.not_after.clone(),
            },
            Some(CertProblemKind::NotYetValid) => {
                let built: i64 = env!("MAILCHECK_BUILD_UNIX").parse().unwrap_or(0);
                TlsProblem::NotYetValid {
                    not_before: cert.not_before.clone(),
                    clock_looks_wrong: now + 86_400 < built,
                }
            }
            Some(CertProblemKind::WrongHost) => TlsProblem::WrongHost {
                cert_names: cert.names.clone(),
            },
            Some(CertProblemKind::UnknownIssuer | CertProblemKind::BadSignature) if cert.self_signed() => {
                TlsProblem::SelfSigned {
                    subject: cert.subject.clone(),
                }
            }
            Some(CertProblemKind::UnknownIssuer | CertProblemKind::BadSignature) => {
                let unknown = TlsProblem::UnknownIssuer {
                    issuer: cert.issuer.clone(),
                };
                // An antivirus CA usually signs the leaf directly: name it before
                // guessing at a missing intermediate.
                let antivirus = self
                    .advise(&Observation::Tls(unknown.clone()))
                    .is_some_and(|a| a.id == "cert-antivirus-proxy");
                if cert.intermediates == 0 && !antivirus {
                    TlsProblem::MissingIntermediate {
                        issuer: cert.issuer.clone(),
                    }
                } else {
                    unknown
                }
            }
            _ => TlsProblem::Other(cert.problem.clone().unwrap_or_default()),
        }
    }

    async fn read(&mut self, conn: &mut Conn) -> Result<String, WireError> {
        let line = conn.read_line(READ_CAP).await?;
        Ok(self.redactor.redact(&line_text(line.bytes)))
    }

    /// An SMTP reply: every line up to the one without `-`.
    async fn read_smtp(&mut self, conn: &mut Conn) -> Result<smtp::Reply, WireError> {
        let mut reply = smtp::Reply::default();
        loop {
            let text = self.read(conn).await?;
            match smtp::parse_line(&text) {
                Some(l) => {
                    reply.code = l.code;
                    reply.lines.push(l.text.to_string());
                    if !l.more {
                        return Ok(reply);
                    }
                }
                None => {
                    reply.lines.push(text);
                    return Ok(reply);
                }
            }
        }
    }

    /// IMAP: untagged lines, then the tagged completion.
    async fn read_imap(&mut self, conn: &mut Conn, tag: &str) -> Result<(Vec<String>, String), WireError> {
        let mut untagged = Vec::new();
        loop {
            let text = self.read(conn).await?;
            if text.starts_with(&format!("{tag} ")) {
                return Ok((untagged, text));
            }
            if untagged.len() < 10_000 {
                untagged.push(text);
            }
        }
    }

    /// Send a command, with its secret parts redacted in anything we show.
    async fn send(&mut self, conn: &mut Conn, line: &str) -> Result<(), WireError> {
        conn.send(format!("{line}\r\n").as_bytes()).await
    }

    fn wire_failure(&mut self, layer: Layer, started: Instant, e: WireError, stage: Stage) -> Stopped {
        let obs = match (&e, stage) {
            (WireError::Timeout { .. }, Stage::Greeting) => {
                Some(Observation::Socket(SocketProblem::NoGreeting))
            }
            (WireError::Closed { .. }, Stage::Greeting) => {
                Some(Observation::Socket(SocketProblem::ClosedAfterAccept))
            }
            _ => None,
        };
        let text = self.redactor.redact(&e.to_string());
        self.fail(layer, Some(started), text, obs)
    }

    async fn greeting(&mut self, conn: &mut Conn, connected: Instant) -> Result<(), Stopped> {
        let started = Instant::now();
        conn.waiting_for("the greeting");
        let service = self.ep.service;
        let reply = match service {
            Service::Smtp => self.read_smtp(conn).await.map(|r| (r.code == 220, r.text())),
            Service::Pop3 => self.read(conn).await.map(|t| (t.starts_with("+OK"), t)),
            Service::Imap => self.read(conn).await.map(|t| {
                let ok = imap::parse_status(&t)
                    .is_some_and(|s| s.tag == "*" && matches!(s.cond, imap::Cond::Ok | imap::Cond::Preauth));
                (ok, t)
            }),
        };
        match reply {
            Ok((true, text)) => {
                if service == Service::Imap {
                    if let Some(caps) = imap::capabilities(&text) {
                        self.caps = caps;
                    }
                }
                let check = self.push(Layer::Greeting, Mark::Ok, Some(started), text);
                check.duration_ms = ms(connected);
                Ok(())
            }
            Ok((false, text)) => {
                let obs = Observation::Reply {
                    service,
                    stage: Stage::Greeting,
                    text: text.clone(),
                };
                Err(self.fail(
                    Layer::Greeting,
                    Some(started),
                    format!("the server refuses: {text}"),
                    Some(obs),
                ))
            }
            Err(e) => Err(self.wire_failure(Layer::Greeting, started, e, Stage::Greeting)),
        }
    }

    async fn capabilities(&mut self, conn: &mut Conn, when: &str) -> Result<Caps, Stopped> {
        let started = Instant::now();
        conn.waiting_for("the capability list");
        let result = match self.ep.service {
            Service::Pop3 => self.pop3_capa(conn).await,
            Service::Imap => self.imap_capability(conn).await,
            Service::Smtp => self.smtp_ehlo(conn).await,
        };
        match result {
            Ok(Some(caps)) => {
                let mut parts = Vec::new();
                if caps.starttls {
                    parts.push(format!("{} offered", self.starttls_word()));
                }
                if !caps.auth.is_empty() {
                    parts.push(format!("AUTH {}", caps.auth.join(" ")));
                }
                if caps.logindisabled {
                    parts.push("LOGINDISABLED".into());
                }
                if let Some(size) = &caps.size {
                    parts.push(format!("SIZE {size}"));
                }
                let summary = format!(
                    "{}{when}",
                    if parts.is_empty() {
                        caps.list.join(" ")
                    } else {
                        parts.join("; ")
                    }
                );
                let check = self.push(Layer::Capabilities, Mark::Ok, Some(started), summary);
                check.details.push(caps.list.join(" "));
                Ok(caps)
            }
            Ok(None) => {
                self.push(
                    Layer::Capabilities,
                    Mark::Warning,
                    Some(started),
                    format!("no capability list{when}"),
                );
                Ok(Caps::default())
            }
            Err(e) => Err(self.wire_failure(Layer::Capabilities, started, e, Stage::Capabilities)),
        }
    }

    async fn pop3_capa(&mut self, conn: &mut Conn) -> Result<Option<Caps>, WireError> {
        self.send(conn, "CAPA").await?;
        let first = self.read(conn).await?;
        if !first.starts_with("+OK") {
            return Ok(None);
        }
        let mut decoder = pop3::MultilineDecoder::new();
        let mut caps = Caps::default();
        loop {
            let line = conn.read_line(READ_CAP).await?;
            let complete = line.complete;
            let Some(content) = decoder.feed(line.bytes, complete) else {
                break;
            };
            let text = line_text(content);
            let mut words = text.split_whitespace();
            if let Some(tag) = words.next() {
                let tag = tag.to_ascii_uppercase();
                match tag.as_str() {
                    "STLS" => caps.starttls = true,
                    "SASL" => caps.auth = words.map(str::to_string).collect(),
                    _ => {}
                }
                caps.list.push(text.clone());
            }
        }
        Ok(Some(caps))
    }

    async fn imap_capability(&mut self, conn: &mut Conn) -> Result<Option<Caps>, WireError> {
        let list = if !self.caps.is_empty() && !conn.is_tls() {
            std::mem::take(&mut self.caps)
        } else {
            self.send(conn, "c1 CAPABILITY").await?;
            let (untagged, done) = self.read_imap(conn, "c1").await?;
            let mut list = untagged
                .iter()
                .find_map(|l| imap::capabilities(l))
                .unwrap_or_default();
            if let Some(more) = imap::capabilities(&done) {
                list = more;
            }
            list
        };
        if list.is_empty() {
            return Ok(None);
        }
        Ok(Some(Caps {
            starttls: list.iter().any(|c| c == "STARTTLS"),
            logindisabled: list.iter().any(|c| c == "LOGINDISABLED"),
            auth: list
                .iter()
                .filter_map(|c| c.strip_prefix("AUTH="))
                .map(str::to_string)
                .collect(),
            size: None,
            list,
        }))
    }

    async fn smtp_ehlo(&mut self, conn: &mut Conn) -> Result<Option<Caps>, WireError> {
        self.send(conn, "EHLO mailcheck.invalid").await?;
        let reply = self.read_smtp(conn).await?;
        if reply.code != 250 {
            self.send(conn, "HELO mailcheck.invalid").await?;
            let _ = self.read_smtp(conn).await?;
            return Ok(None);
        }
        let list = reply.ehlo_keywords();
        Ok(Some(Caps {
            starttls: list.iter().any(|c| c == "STARTTLS"),
            logindisabled: false,
            auth: reply.ehlo_params("AUTH").unwrap_or_default(),
            size: reply.ehlo_params("SIZE").and_then(|p| p.into_iter().next()),
            list,
        }))
    }

    async fn starttls(&mut self, conn: &mut Conn) -> Result<(), Stopped> {
        let started = Instant::now();
        conn.waiting_for(format!("the reply to {}", self.starttls_word()));
        let accepted: Result<(bool, String), WireError> = async {
            match self.ep.service {
                Service::Pop3 => {
                    self.send(conn, "STLS").await?;
                    let t = self.read(conn).await?;
                    Ok((t.starts_with("+OK"), t))
                }
                Service::Imap => {
                    self.send(conn, "s1 STARTTLS").await?;
                    let (_, done) = self.read_imap(conn, "s1").await?;
                    let ok = imap::parse_status(&done).is_some_and(|s| s.cond == imap::Cond::Ok);
                    Ok((ok, done))
                }
                Service::Smtp => {
                    self.send(conn, "STARTTLS").await?;
                    let r = self.read_smtp(conn).await?;
                    Ok((r.code == 220, r.text()))
                }
            }
        }
        .await;
        match accepted {
            Ok((true, _)) => {
                if !conn.buffered().is_empty() {
                    let check = self.push(
                        Layer::Tls,
                        Mark::Failed,
                        Some(started),
                        "the server sent data before the TLS handshake",
                    );
                    check
                        .details
                        .push("bytes after the STARTTLS reply would be injected into the TLS session".into());
                    return Err(Stopped);
                }
                self.handshake(conn).await
            }
            Ok((false, text)) => {
                let obs = Observation::Reply {
                    service: self.ep.service,
                    stage: Stage::StartTls,
                    text: text.clone(),
                };
                Err(self.fail(
                    Layer::Tls,
                    Some(started),
                    format!("STARTTLS refused: {text}"),
                    Some(obs),
                ))
            }
            Err(e) => Err(self.wire_failure(Layer::Tls, started, e, Stage::StartTls)),
        }
    }

    async fn login(
        &mut self,
        conn: &mut Conn,
        caps: &Caps,
        user: &str,
        password: &Secret,
    ) -> Result<(), Stopped> {
        let started = Instant::now();
        conn.waiting_for("the login reply");
        let outcome: Result<(bool, String), WireError> = async {
            match self.ep.service {
                Service::Pop3 => {
                    self.send(conn, &format!("USER {user}")).await?;
                    let t = self.read(conn).await?;
                    if !t.starts_with("+OK") {
                        return Ok((false, t));
                    }
                    self.send(conn, &format!("PASS {}", password.expose())).await?;
                    let t = self.read(conn).await?;
                    Ok((t.starts_with("+OK"), t))
                }
                Service::Imap => {
                    let (Some(u), Some(p)) = (imap::quote(user), imap::quote(password.expose())) else {
                        return Ok((false, "the user name or password contains a line break".into()));
                    };
                    self.send(conn, &format!("l1 LOGIN {u} {p}")).await?;
                    let (_, done) = self.read_imap(conn, "l1").await?;
                    let ok = imap::parse_status(&done).is_some_and(|s| s.cond == imap::Cond::Ok);
                    Ok((ok, done))
                }
                Service::Smtp => {
                    let b64 = base64::engine::general_purpose::STANDARD;
                    if caps.auth.iter().any(|m| m.eq_ignore_ascii_case("PLAIN")) || caps.auth.is_empty() {
                        let blob = b64.encode(format!("\0{user}\0{}", password.expose()));
                        self.redactor.add(&Secret::new(blob.clone()));
                        self.send(conn, &format!("AUTH PLAIN {blob}")).await?;
                    } else {
                        self.send(conn, "AUTH LOGIN").await?;
                        let _ = self.read_smtp(conn).await?;
                        self.send(conn, &b64.encode(user)).await?;
                        let _ = self.read_smtp(conn).await?;
                        let blob = b64.encode(password.expose());
                        self.redactor.add(&Secret::new(blob.clone()));
                        self.send(conn, &blob).await?;
                    }
                    let r = self.read_smtp(conn).await?;
                    Ok((r.code == 235, r.text()))
                }
            }
        }
        .await;
        match outcome {
            Ok((true, text)) => {
                self.push(
                    Layer::Login,
                    Mark::Ok,
                    Some(started),
                    format!("logged in as {user}: {text}"),
                );
                Ok(())
            }
            Ok((false, text)) => {
                let obs = Observation::Reply {
                    service: self.ep.service,
                    stage: Stage::Login,
                    text: text.clone(),
                };
                let stop = self.fail(
                    Layer::Login,
                    Some(started),
                    format!("login as {user} refused: {text}"),
                    Some(obs),
                );
                self.goodbye(conn).await;
                Err(stop)
            }
            Err(e) => Err(self.wire_failure(Layer::Login, started, e, Stage::Login)),
        }
    }

    /// The read-only check: nothing is deleted, nothing is sent.
    async fn read_only(&mut self, conn: &mut Conn) -> Result<(), Stopped> {
        let started = Instant::now();
        conn.waiting_for("the read-only check");
        let outcome: Result<(bool, String), WireError> = async {
            match self.ep.service {
                Service::Pop3 => {
                    self.send(conn, "STAT").await?;
                    let t = self.read(conn).await?;
                    let ok = t.starts_with("+OK");
                    let summary = match t.split_whitespace().collect::<Vec<_>>().as_slice() {
                        ["+OK", n, size, ..] => format!("STAT: {n} messages, {size} octets"),
                        _ => t.clone(),
                    };
                    self.send(conn, "QUIT").await?;
                    let _ = self.read(conn).await;
                    Ok((ok, summary))
                }
                Service::Imap => {
                    self.send(conn, "e1 EXAMINE INBOX").await?;
                    let (untagged, done) = self.read_imap(conn, "e1").await?;
                    let ok = imap::parse_status(&done).is_some_and(|s| s.cond == imap::Cond::Ok);
                    let exists = untagged
                        .iter()
                        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS").map(str::to_string));
                    self.send(conn, "z1 LOGOUT").await?;
                    let _ = self.read_imap(conn, "z1").await;
                    let summary = match exists {
                        Some(n) if ok => format!("EXAMINE INBOX: {n} messages (read-only)"),
                        _ => done,
                    };
                    Ok((ok, summary))
                }
                Service::Smtp => {
                    self.send(conn, "QUIT").await?;
                    let r = self.read_smtp(conn).await?;
                    Ok((true, format!("no mail sent; QUIT: {}", r.text())))
                }
            }
        }
        .await;
        match outcome {
            Ok((true, summary)) => {
                self.push(Layer::ReadOnly, Mark::Ok, Some(started), summary);
                Ok(())
            }
            Ok((false, text)) => {
                let obs = Observation::Reply {
                    service: self.ep.service,
                    stage: Stage::ReadOnly,
                    text: text.clone(),
                };
                Err(self.fail(Layer::ReadOnly, Some(started), text, Some(obs)))
            }
            Err(e) => Err(self.wire_failure(Layer::ReadOnly, started, e, Stage::ReadOnly)),
        }
    }

    /// Leave politely when there is nothing more to check.
    async fn goodbye(&mut self, conn: &mut Conn) {
        let line = match self.ep.service {
            Service::Pop3 | Service::Smtp => "QUIT",
            Service::Imap => "z9 LOGOUT",
        };
        let _ = self.send(conn, line).await;
        let _ = conn.wait_closed(Duration::from_millis(500)).await;
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resolve_pins() {
        let p = Pin::parse("imap.yandex.ru:993:127.0.0.1").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.addr.to_string().as_str()),
            ("imap.yandex.ru", 993, "127.0.0.1")
        );
        assert_eq!(Pin::parse("h:1:[::1]").unwrap().addr.to_string(), "::1");
        assert!(Pin::parse("h:x:127.0.0.1").is_err());
        assert!(Pin::parse("h:1").is_err());
    }
}
