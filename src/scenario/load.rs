//! YAML -> [`Scenario`], with errors that point at `file:line:column`.
//!
//! The YAML is first read into `Raw*` structs (unknown keys rejected by
//! serde), then checked and converted into the model. Conversion errors
//! carry the step's position, so every message a user sees names a place.

use super::model::*;
use super::pattern::Pattern;
use super::template::Template;
use crate::finding::Severity;
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A scenario file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The offending source line, shown under the message.
    pub source_line: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(src) = &self.source_line {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            write!(
                f,
                "\n{pad} |\n{num} | {src}\n{pad} | {}^",
                " ".repeat(self.column.saturating_sub(1) as usize)
            )?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  = hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    rfc: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    destructive: bool,
    #[serde(default)]
    sends: bool,
    #[serde(default)]
    sessions: std::collections::BTreeMap<String, String>,
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(rename = "C")]
    c: Option<String>,
    #[serde(rename = "S")]
    s: Option<RawReply>,
    multiline: Option<bool>,
    body: Option<RawBody>,
    tag: Option<String>,
    literal: Option<String>,
    login: Option<RawLogin>,
    apop: Option<Empty>,
    stls: Option<RawStls>,
    auth: Option<RawAuth>,
    data: Option<RawData>,
    send: Option<String>,
    retry: Option<RawRetry>,
    drop: Option<Empty>,
    reconnect: Option<Empty>,
    foreach: Option<String>,
    pipeline: Option<Vec<Spanned<RawStep>>>,
    limit: Option<usize>,
    steps: Option<Vec<Spanned<RawStep>>>,
    severity: Option<String>,
    note: Option<String>,
    session: Option<String>,
    absent: Option<Vec<RawPattern>>,
    may: Option<Vec<RawPattern>>,
    ordered: Option<bool>,
    only: Option<bool>,
    literal_plus: Option<String>,
    greeting: Option<RawPattern>,
    idle: Option<RawIdle>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// `idle: {during: [...], updates: [...], S: ..., tag: ...}`; every key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdle {
    during: Option<Vec<Spanned<RawStep>>>,
    #[serde(default)]
    updates: Vec<RawPattern>,
    #[serde(rename = "S")]
    s: Option<RawReply>,
    tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStls {
    inject: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mechanism: String,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    text: Option<String>,
    raw: Option<String>,
    file: Option<String>,
    capture: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    /// Seconds to keep trying.
    #[serde(rename = "for")]
    within: f64,
    /// Seconds between attempts (default 0.5).
    every: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    user: Option<String>,
    password: Option<String>,
    #[serde(default)]
    optional: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    lines: Option<Vec<RawPattern>>,
    each: Option<RawPattern>,
    rows: Option<String>,
    #[serde(default)]
    contains: Vec<RawPattern>,
    #[serde(default)]
    absent: Vec<RawPattern>,
    count: Option<RawScalar>,
    min: Option<usize>,
    max: Option<usize>,
    octets: Option<RawScalar>,
    capture: Option<String>,
    equals: Option<String>,
    delivered: Option<String>,
}

/// A pattern is a glob string, or `{regex: "..."}`. A visitor, not `untagged`,
/// so a wrong shape gets a precise error.
enum RawPattern {
    Glob(String),
    Regex(String),
}

impl<'de> Deserialize<'de> for RawPattern {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawPattern;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a pattern string like \"+OK*\" or a map {regex: \"...\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPattern, E> {
                Ok(RawPattern::Glob(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPattern, E> {
                Ok(RawPattern::Glob(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPattern, E> {
                Ok(RawPattern::Glob(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPattern, A::Error> {
                let mut regex = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "regex" if regex.is_none() => regex = Some(map.next_value::<String>()?),
                        "regex" => return Err(de::Error::duplicate_field("regex")),
                        other => return Err(de::Error::unknown_field(other, &["regex"])),
                    }
                }
                regex
                    .map(RawPattern::Regex)
                    .ok_or_else(|| de::Error::missing_field("regex"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `S:` is one pattern, or (IMAP) a list: untagged responses, then the completion.
enum RawReply {
    One(RawPattern),
    Many(Vec<RawPattern>),
}

impl<'de> Deserialize<'de> for RawReply {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawReply;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a pattern, {regex: ...}, or a list of patterns")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawReply, E> {
                Ok(RawReply::One(RawPattern::Glob(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawReply, E> {
                Ok(RawReply::One(RawPattern::Glob(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawReply, E> {
                Ok(RawReply::One(RawPattern::Glob(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawReply, A::Error> {
                RawPattern::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawReply::One)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawReply, A::Error> {
                let mut all = Vec::new();
                while let Some(p) = seq.next_element::<RawPattern>()? {
                    all.push(p);
                }
                Ok(RawReply::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number, or a string with `${var}` references.
struct RawScalar(String);

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawScalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a \"${variable}\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

struct Ctx<'a> {
    path: &'a Path,
    source: &'a str,
    /// Known once the top-level keys are read; steps depend on it.
    protocol: Protocol,
    /// Sessions that speak another protocol (`sessions:`).
    sessions: &'a [(String, Protocol)],
}

impl<'a> Ctx<'a> {
    /// The context for a step on session `name` (its protocol may differ).
    fn for_session(&self, name: Option<&str>) -> Ctx<'a> {
        let protocol = name
            .and_then(|n| self.sessions.iter().find(|(s, _)| s == n))
            .map_or(self.protocol, |(_, p)| *p);
        Ctx {
            path: self.path,
            source: self.source,
            protocol,
            sessions: self.sessions,
        }
    }

    fn err(&self, line: u64, column: u64, message: impl Into<String>) -> LoadError {
        let source_line = self
            .source
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .map(|l| l.to_string());
        LoadError {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
            source_line,
            hint: None,
        }
    }
}

/// Load one scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|e| LoadError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read the file: {e}"),
        source_line: None,
        hint: None,
    })?;
    load_str(path, &source)
}

/// Load a scenario from text; `path` is used for messages and to infer the protocol.
pub fn load_str(path: &Path, source: &str) -> Result<Scenario, LoadError> {
    let ctx = Ctx {
        path,
        source,
        protocol: Protocol::Pop3,
        sessions: &[],
    };
    let raw: RawScenario = serde_saphyr::from_str(source).map_err(|e| yaml_error(&ctx, &e))?;
    convert(&ctx, raw)
}

fn yaml_error(ctx: &Ctx, e: &serde_saphyr::Error) -> LoadError {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    // The crate's Display may embed its own snippet; keep the first line as our message.
    let full = e.to_string();
    let message = full.lines().next().unwrap_or("invalid YAML").trim().to_string();
    let mut err = ctx.err(line, column, message);
    let src = err.source_line.clone().unwrap_or_default();
    let lower = full.to_ascii_lowercase();
    let alias_like = src.contains(": *") || src.trim_start().starts_with("- *");
    if alias_like || lower.contains("alias") || lower.contains("anchor") {
        err.hint = Some(
            "in YAML a value starting with `*` is an alias; quote the line, e.g. S: \"* OK ...\"".into(),
        );
    } else if lower.contains("unknown field") {
        err.hint = Some("see the scenario language reference in README.md for the keys a step takes".into());
    }
    err
}

fn convert(ctx: &Ctx, raw: RawScenario) -> Result<Scenario, LoadError> {
    let protocol = match &raw.protocol {
        Some(p) => Protocol::from_name(p).ok_or_else(|| {
            let (l, c) = find_key(ctx.source, "protocol");
            ctx.err(l, c, format!("unknown protocol `{p}` (known: pop3, imap, smtp)"))
        })?,
        None => infer_protocol(ctx.path).ok_or_else(|| {
            ctx.err(
                1,
                1,
                "cannot tell the protocol from the folder name: add `protocol: pop3`",
            )
        })?,
    };
    let mut sessions = Vec::new();
    for (name, p) in &raw.sessions {
        let (l, c) = find_key(ctx.source, "sessions");
        let p = Protocol::from_name(p).ok_or_else(|| {
            ctx.err(
                l,
                c,
                format!("session `{name}`: unknown protocol `{p}` (known: pop3, imap, smtp)"),
            )
        })?;
        if p == protocol || !valid_session_name(name) {
            return Err(ctx.err(
                l,
                c,
                format!("`sessions:` names sessions that speak another protocol than the scenario's ({protocol}), with short names: `{name}: {p}` is not one"),
            ));
        }
        sessions.push((name.clone(), p));
    }
    let ctx = &Ctx {
        path: ctx.path,
        source: ctx.source,
        protocol,
        sessions: &sessions,
    };
    let mut requires = Vec::new();
    for r in &raw.requires {
        requires.push(match r.to_ascii_lowercase().as_str() {
            "credentials" => Requirement::Credentials,
            "apop" => Requirement::ApopTimestamp,
            "tls" => Requirement::Tls,
            "plaintext" => Requirement::Plaintext,
            v if v.starts_with("var:") && valid_var_name(&r[4..]) => Requirement::Var(r[4..].to_string()),
            "preauth" => Requirement::Preauth,
            _ if r.is_empty() || r.contains(char::is_whitespace) || r.split('|').any(str::is_empty) => {
                let (l, c) = find_key(ctx.source, "requires");
                return Err(ctx.err(l, c, format!("`{r}` is not a requirement: use credentials, apop, tls, plaintext, preauth, var:NAME, a capability name like TOP, or alternatives like LITERAL+|LITERAL-")));
            }
            _ if r.contains('|') => {
                Requirement::AnyCapability(r.split('|').map(|c| c.to_ascii_uppercase()).collect())
            }
            _ => Requirement::Capability(r.to_ascii_uppercase()),
        });
    }
    if raw.steps.is_empty() {
        let (l, c) = find_key(ctx.source, "steps");
        return Err(ctx.err(l, c, "a scenario needs at least one step"));
    }
    let steps = convert_steps(ctx, raw.steps)?;
    for (_, p) in &sessions {
        requires.push(Requirement::Target(*p));
    }
    let scenario = Scenario {
        path: ctx.path.to_path_buf(),
        name: raw.name,
        rfc: raw.rfc,
        description: raw.description,
        protocol,
        requires,
        destructive: raw.destructive,
        sends: raw.sends,
        sessions: sessions.clone(),
        steps,
    };
    if !scenario.sends {
        if let Some(pos) = sends_mail(&scenario.steps) {
            return Err(ctx.err(
                pos.line,
                pos.column,
                "this scenario sends mail (an SMTP DATA transaction) but is not marked `sends: true`",
            ));
        }
    }
    if !scenario.destructive {
        if let Some(pos) = deletes_then_quits(&scenario.steps) {
            return Err(ctx.err(
                pos.line,
                pos.column,
                "this scenario deletes mail (DELE followed by QUIT) but is not marked `destructive: true`",
            ));
        }
    }
    Ok(scenario)
}

fn infer_protocol(path: &Path) -> Option<Protocol> {
    path.ancestors()
        .skip(1)
        .filter_map(|p| p.file_name()?.to_str())
        .find_map(Protocol::from_name)
}

/// Best-effort position of a top-level key, for errors about whole-file fields.
fn find_key(source: &str, key: &str) -> (u64, u64) {
    let prefix = format!("{key}:");
    source
        .lines()
        .position(|l| l.starts_with(&prefix))
        .map(|i| (i as u64 + 1, 1))
        .unwrap_or((1, 1))
}

fn convert_steps(ctx: &Ctx, raw: Vec<Spanned<RawStep>>) -> Result<Vec<Step>, LoadError> {
    raw.into_iter().map(|s| convert_step(ctx, s)).collect()
}

fn convert_step(ctx: &Ctx, spanned: Spanned<RawStep>) -> Result<Step, LoadError> {
    let pos = Position {
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
    };
    let raw = spanned.value;
    let ctx = &ctx.for_session(raw.session.as_deref());
    let fail = |msg: String| ctx.err(pos.line, pos.column, msg);
    let template = |text: &str| Template::parse(text).map_err(fail);

    let actions: Vec<&str> = [
        ("C", raw.c.is_some()),
        ("login", raw.login.is_some()),
        ("apop", raw.apop.is_some()),
        ("stls", raw.stls.is_some()),
        ("auth", raw.auth.is_some()),
        ("data", raw.data.is_some()),
        ("send", raw.send.is_some()),
        ("drop", raw.drop.is_some()),
        ("reconnect", raw.reconnect.is_some()),
        ("foreach", raw.foreach.is_some()),
        ("retry", raw.retry.is_some()),
        ("pipeline", raw.pipeline.is_some()),
        ("greeting", raw.greeting.is_some()),
        ("idle", raw.idle.is_some()),
    ]
    .iter()
    .filter(|(_, present)| *present)
    .map(|(k, _)| *k)
    .collect();
    if actions.len() != 1 {
        return Err(fail(if actions.is_empty() {
            "a step needs one action: C, login, apop, stls, auth, data, send, drop, reconnect, foreach, retry, pipeline, greeting or idle".into()
        } else {
            format!("a step takes one action, this one has {}", actions.join(", "))
        }));
    }
    let takes_reply = raw.c.is_some() || raw.auth.is_some() || raw.data.is_some() || raw.send.is_some();
    if raw.s.is_some() && !takes_reply {
        return Err(fail("`S` belongs to a `C`, `auth`, `data` or `send` step".into()));
    }
    if raw.c.is_none() && (raw.body.is_some() || raw.multiline.is_some() || raw.tag.is_some()) {
        return Err(fail("`body`, `multiline` and `tag` belong to a `C` step".into()));
    }
    let smtp_only = [
        ("auth", raw.auth.is_some()),
        ("data", raw.data.is_some()),
        ("send", raw.send.is_some()),
        (
            "stls: {inject}",
            raw.stls.as_ref().is_some_and(|t| t.inject.is_some()),
        ),
    ];
    if ctx.protocol != Protocol::Smtp {
        if let Some((key, _)) = smtp_only.iter().find(|(_, present)| *present) {
            return Err(fail(format!("`{key}` is for SMTP steps")));
        }
    } else if raw.multiline.is_some() {
        return Err(fail(
            "`multiline` is for POP3: SMTP replies say themselves where they end".into(),
        ));
    }
    if raw.literal.is_some() && (raw.c.is_none() || ctx.protocol != Protocol::Imap) {
        return Err(fail("`literal` belongs to an IMAP `C` step".into()));
    }
    let imap_keys = [
        ("absent", raw.absent.is_some()),
        ("may", raw.may.is_some()),
        ("ordered", raw.ordered.is_some()),
        ("only", raw.only.is_some()),
        ("literal_plus", raw.literal_plus.is_some()),
    ];
    if let Some((key, _)) = imap_keys.iter().find(|(_, present)| *present) {
        if raw.c.is_none() || ctx.protocol != Protocol::Imap {
            return Err(fail(format!("`{key}` belongs to an IMAP `C` step")));
        }
    }
    if raw.literal.is_some() && raw.literal_plus.is_some() {
        return Err(fail(
            "a step sends one literal: `literal` (waits for +) or `literal_plus` ({n+}, does not wait)"
                .into(),
        ));
    }
    if raw.ordered == Some(true) && !matches!(raw.s, Some(RawReply::Many(_))) {
        return Err(fail(
            "`ordered` orders the untagged patterns of an `S` list; this step has none".into(),
        ));
    }
    if let Some(t) = &raw.tag {
        if ctx.protocol != Protocol::Imap {
            return Err(fail("`tag` is for IMAP commands".into()));
        }
        let valid = !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"]+".contains(&b));
        if !valid {
            return Err(fail(format!(
                "`tag: {t}` is not an IMAP tag (letters, digits, no `+` or specials)"
            )));
        }
    }
    if raw.foreach.is_none() && raw.limit.is_some() {
        return Err(fail("`limit` belongs to a `foreach` step".into()));
    }
    if raw.foreach.is_none() && raw.retry.is_none() && raw.steps.is_some() {
        return Err(fail("`steps` belong to a `foreach` or `retry` step".into()));
    }
    let severity = match raw.severity.as_deref() {
        None | Some("must") => Severity::Must,
        Some("should") => Severity::Should,
        Some(other) => return Err(fail(format!("severity `{other}`: use `must` or `should`"))),
    };

    let kind = if let Some(c) = raw.c {
        if c.contains(['\r', '\n']) {
            return Err(fail(
                "a `C` line cannot contain a line break: the runner adds CRLF".into(),
            ));
        }
        let (untagged, reply) = match raw.s {
            None => (Vec::new(), None),
            Some(RawReply::One(p)) => (Vec::new(), Some(pattern(p).map_err(fail)?)),
            Some(RawReply::Many(mut list)) => {
                if ctx.protocol != Protocol::Imap {
                    return Err(fail(
                        "a list under `S` is for IMAP (untagged responses, then the completion)".into(),
                    ));
                }
                let last = list
                    .pop()
                    .ok_or_else(|| fail("`S` needs at least the completion".into()))?;
                let untagged = list
                    .into_iter()
                    .map(|p| pattern(p).map_err(fail))
                    .collect::<Result<_, _>>()?;
                (untagged, Some(pattern(last).map_err(fail)?))
            }
        };
        let body = raw.body.map(|b| convert_body(b).map_err(fail)).transpose()?;
        if body.is_some() && raw.multiline == Some(false) {
            return Err(fail("`body` with `multiline: false` can never match".into()));
        }
        let patterns = |v: Option<Vec<RawPattern>>| {
            v.unwrap_or_default()
                .into_iter()
                .map(|p| pattern(p).map_err(fail))
                .collect::<Result<Vec<_>, _>>()
        };
        let imap = ImapExpect {
            absent: patterns(raw.absent)?,
            may: patterns(raw.may)?,
            ordered: raw.ordered.unwrap_or(false),
            only: raw.only.unwrap_or(false),
            literal_plus: raw.literal_plus.is_some(),
        };
        let literal = raw.literal.or(raw.literal_plus);
        StepKind::Exchange(Box::new(Exchange {
            command: template(&c)?,
            reply,
            untagged,
            tag: raw.tag,
            literal: literal.as_deref().map(template).transpose()?,
            multiline: raw.multiline,
            body,
            imap,
        }))
    } else if let Some(g) = raw.greeting {
        StepKind::Greeting(pattern(g).map_err(fail)?)
    } else if let Some(idle) = raw.idle {
        if ctx.protocol != Protocol::Imap {
            return Err(fail("`idle` is for IMAP scenarios".into()));
        }
        if let Some(t) = &idle.tag {
            check_tag(t).map_err(fail)?;
        }
        let (untagged, reply) = convert_reply(ctx, idle.s).map_err(fail)?;
        let own = raw.session.as_deref().unwrap_or("main");
        let during = convert_steps(ctx, idle.during.unwrap_or_default())?;
        for d in &during {
            if d.session.as_deref().is_none_or(|s| s == own) {
                return Err(ctx.err(
                    d.pos.line,
                    d.pos.column,
                    format!(
                        "a step under `during` runs while session `{own}` idles: give it `session:` naming another connection"
                    ),
                ));
            }
        }
        StepKind::Idle(Box::new(Idle {
            during,
            updates: idle
                .updates
                .into_iter()
                .map(|p| pattern(p).map_err(fail))
                .collect::<Result<_, _>>()?,
            untagged,
            reply: match reply {
                Some(p) => p,
                None => Pattern::glob("OK*").map_err(fail)?,
            },
            tag: idle.tag,
        }))
    } else if let Some(l) = raw.login {
        if l.optional && ctx.protocol != Protocol::Smtp {
            return Err(fail(
                "`login: {optional: true}` is for SMTP (AUTH when offered)".into(),
            ));
        }
        StepKind::Login {
            user: l.user.as_deref().map(template).transpose()?,
            password: l.password.as_deref().map(template).transpose()?,
            optional: l.optional,
        }
    } else if raw.apop.is_some() {
        StepKind::Apop
    } else if let Some(t) = raw.stls {
        StepKind::StartTls {
            inject: t.inject.as_deref().map(template).transpose()?,
        }
    } else if let Some(a) = raw.auth {
        let mechanism = a.mechanism.to_ascii_uppercase();
        if !matches!(mechanism.as_str(), "PLAIN" | "LOGIN" | "CRAM-MD5") {
            return Err(fail(format!(
                "`auth: {{mechanism: {}}}`: mailcheck speaks PLAIN, LOGIN and CRAM-MD5",
                a.mechanism
            )));
        }
        StepKind::Auth {
            mechanism,
            user: a.user.as_deref().map(template).transpose()?,
            password: a.password.as_deref().map(template).transpose()?,
            reply: reply_pattern(raw.s).map_err(fail)?,
        }
    } else if let Some(d) = raw.data {
        let message = match (d.text, d.raw, d.file) {
            (Some(t), None, None) => MessageSource::Text(template(&t)?),
            (None, Some(r), None) => MessageSource::Raw(template(&r)?),
            (None, None, Some(f)) => {
                let path = ctx.path.parent().unwrap_or(Path::new(".")).join(&f);
                if !path.is_file() {
                    return Err(fail(format!("`data: {{file: {f}}}`: no such file {}", path.display())));
                }
                MessageSource::File(path)
            }
            _ => {
                return Err(fail(
                    "`data` takes one of `text` (stuffed for you), `file` (the same, from disk) or `raw` (sent exactly)".into(),
                ))
            }
        };
        if let Some(name) = &d.capture {
            if !valid_var_name(name) {
                return Err(fail(format!("`capture: {name}` is not a variable name")));
            }
        }
        StepKind::Data(Box::new(DataStep {
            message,
            reply: reply_pattern(raw.s).map_err(fail)?,
            capture: d.capture,
        }))
    } else if let Some(bytes) = raw.send {
        StepKind::Send {
            bytes: template(&bytes)?,
            reply: reply_pattern(raw.s).map_err(fail)?,
        }
    } else if let Some(r) = raw.retry {
        let secs = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 && v <= 3600.0 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                Err(fail(format!(
                    "`retry: {{{what}: {v}}}`: give seconds above 0, at most 3600"
                )))
            }
        };
        let within = secs(r.within, "for")?;
        let every = secs(r.every.unwrap_or(0.5), "every")?;
        let steps = raw.steps.ok_or_else(|| fail("`retry` needs `steps`".into()))?;
        if steps.is_empty() {
            return Err(fail("`retry` needs at least one step".into()));
        }
        StepKind::Retry {
            within,
            every,
            steps: convert_steps(ctx, steps)?,
        }
    } else if raw.drop.is_some() {
        StepKind::Drop
    } else if raw.reconnect.is_some() {
        StepKind::Reconnect
    } else if let Some(list) = raw.pipeline {
        if ctx.protocol == Protocol::Pop3 {
            return Err(fail("`pipeline` is for IMAP and SMTP scenarios".into()));
        }
        if list.len() < 2 {
            return Err(fail("`pipeline` needs at least two `C` steps".into()));
        }
        let mut exchanges = Vec::new();
        for inner in convert_steps(ctx, list)? {
            match inner.kind {
                StepKind::Exchange(x) if x.body.is_none() && x.literal.is_none() && x.imap.is_default() => {
                    exchanges.push(*x)
                }
                _ => {
                    return Err(ctx.err(
                        inner.pos.line,
                        inner.pos.column,
                        "a `pipeline` holds `C` steps with `S` (and `tag`), no `body`, `literal` or untagged options",
                    ))
                }
            }
        }
        if ctx.protocol == Protocol::Smtp {
            for x in &exchanges {
                let verb = x
                    .command
                    .source
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if matches!(verb.as_str(), "DATA" | "BDAT" | "STARTTLS" | "AUTH") {
                    return Err(fail(format!(
                        "`{verb}` cannot be pipelined here: it changes what the server expects next (use its own step)"
                    )));
                }
            }
        }
        StepKind::Pipeline(exchanges)
    } else {
        let rows = raw.foreach.unwrap_or_default();
        let steps = raw.steps.ok_or_else(|| fail("`foreach` needs `steps`".into()))?;
        if steps.is_empty() {
            return Err(fail("`foreach` needs at least one step".into()));
        }
        StepKind::ForEach {
            rows,
            limit: raw.limit,
            steps: convert_steps(ctx, steps)?,
        }
    };
    if let Some(name) = &raw.session {
        if !valid_session_name(name) {
            return Err(fail(format!("`session: {name}`: use a short name like `other`")));
        }
        if matches!(kind, StepKind::ForEach { .. } | StepKind::Retry { .. }) {
            return Err(fail(
                "`session` goes on the steps inside `foreach` and `retry`".into(),
            ));
        }
    }
    Ok(Step {
        pos,
        kind,
        severity,
        note: raw.note,
        session: raw.session,
    })
}

fn valid_session_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `S:` of a step whose reply is one line or one SMTP reply.
fn reply_pattern(raw: Option<RawReply>) -> Result<Option<Pattern>, String> {
    match raw {
        None => Ok(None),
        Some(RawReply::One(p)) => pattern(p).map(Some),
        Some(RawReply::Many(_)) => {
            Err("a list under `S` is for IMAP (untagged responses, then the completion)".into())
        }
    }
}

/// An IMAP tag as a scenario may write it (for `idle:`; a `C` step checks
/// its `tag:` the same way inline).
fn check_tag(t: &str) -> Result<(), String> {
    let valid = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){%*\"]+".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`tag: {t}` is not an IMAP tag (letters, digits, no `+` or specials)"
        ))
    }
}

/// `S:` of an `idle:` step: one pattern, or untagged patterns and then the
/// completion (as a `C` step reads its `S:` inline).
fn convert_reply(ctx: &Ctx, raw: Option<RawReply>) -> Result<(Vec<Pattern>, Option<Pattern>), String> {
    match raw {
        None => Ok((Vec::new(), None)),
        Some(RawReply::One(p)) => Ok((Vec::new(), Some(pattern(p)?))),
        Some(RawReply::Many(mut list)) => {
            if ctx.protocol != Protocol::Imap {
                return Err("a list under `S` is for IMAP (untagged responses, then the completion)".into());
            }
            let last = list.pop().ok_or("`S` needs at least the completion")?;
            let untagged = list.into_iter().map(pattern).collect::<Result<_, _>>()?;
            Ok((untagged, Some(pattern(last)?)))
        }
    }
}

/// Where a scenario first sends mail: a `data:` step, or a `send:` step
/// whose bytes hold an end-of-data line (after a `C: DATA` of its own).
/// A bare `C: DATA` sends nothing: without data it completes no transaction.
fn sends_mail(steps: &[Step]) -> Option<Position> {
    for s in steps {
        let found = match &s.kind {
            StepKind::Data(_) => true,
            StepKind::Send { bytes, .. } => {
                let b = bytes.source.as_bytes();
                memchr::memmem::find(b, b"\n.\r\n").is_some() || memchr::memmem::find(b, b"\n.\n").is_some()
            }
            StepKind::ForEach { steps, .. } | StepKind::Retry { steps, .. } => {
                if let Some(p) = sends_mail(steps) {
                    return Some(p);
                }
                false
            }
            _ => false,
        };
        if found {
            return Some(s.pos);
        }
    }
    None
}

fn pattern(raw: RawPattern) -> Result<Pattern, String> {
    match raw {
        RawPattern::Glob(g) => Pattern::glob(&g),
        RawPattern::Regex(r) => Pattern::regex(&r),
    }
}

fn convert_body(raw: RawBody) -> Result<BodyExpect, String> {
    let patterns = |v: Vec<RawPattern>| v.into_iter().map(pattern).collect::<Result<Vec<_>, _>>();
    if raw.rows.is_some() && raw.each.is_none() {
        return Err("`rows` keeps the captures of `each`: add `each: \"{name} ...\"`".into());
    }
    Ok(BodyExpect {
        lines: raw.lines.map(patterns).transpose()?,
        each: raw.each.map(pattern).transpose()?,
        rows: raw.rows,
        contains: patterns(raw.contains)?,
        absent: patterns(raw.absent)?,
        count: raw.count.map(|s| Template::parse(&s.0)).transpose()?,
        min: raw.min,
        max: raw.max,
        octets: raw.octets.map(|s| Template::parse(&s.0)).transpose()?,
        capture: raw.capture,
        equals: raw.equals.map(|s| Template::parse(&s)).transpose()?,
        delivered: raw.delivered,
    })
}

/// Find a `DELE` that a later `QUIT` in the same session would commit.
fn deletes_then_quits(steps: &[Step]) -> Option<Position> {
    let mut flat = Vec::new();
    flatten(steps, &mut flat);
    let mut pending: Option<Position> = None;
    for (pos, verb) in flat {
        match verb.as_str() {
            "DELE" => pending = pending.or(Some(pos)),
            "QUIT" if pending.is_some() => return pending,
            "RECONNECT" | "DROP" | "RSET" => pending = None,
            _ => {}
        }
    }
    None
}

fn flatten(steps: &[Step], out: &mut Vec<(Position, String)>) {
    for s in steps {
        match &s.kind {
            StepKind::Exchange(e) => {
                let verb = e.command.source.split_whitespace().next().unwrap_or("");
                out.push((s.pos, verb.to_ascii_uppercase()));
            }
            StepKind::Reconnect => out.push((s.pos, "RECONNECT".into())),
            StepKind::Pipeline(xs) => {
                for x in xs {
                    let verb = x.command.source.split_whitespace().next().unwrap_or("");
                    out.push((s.pos, verb.to_ascii_uppercase()));
                }
            }
            StepKind::Drop => out.push((s.pos, "DROP".into())),
            StepKind::ForEach { steps, .. } | StepKind::Retry { steps, .. } => flatten(steps, out),
            _ => {}
        }
    }
}

/// Expand paths (files or folders, searched recursively) into sorted `.yaml`/`.yml` files.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Scenario, LoadError> {
        load_str(Path::new("scenarios/pop3/t.yaml"), src)
    }

    #[test]
    fn loads_a_scenario() {
        let s = load(
            "name: x\nrfc: RFC 1939 section 5\nrequires: [credentials, UIDL]\nsteps:\n  - login: {}\n  - C: STAT\n    S: \"+OK {count} {size}\"\n  - C: LIST\n    body: {each: \"{msg} {size}\", rows: msgs}\n  - foreach: msgs\n    steps:\n      - C: RETR ${msg}\n        body: {octets: \"${size}\"}\n",
        )
        .unwrap();
        assert_eq!(s.protocol, Protocol::Pop3);
        assert_eq!(
            s.requires,
            vec![Requirement::Credentials, Requirement::Capability("UIDL".into())]
        );
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.steps[1].pos.line, 6);
    }

    #[test]
    fn unknown_key_has_position() {
        let e = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n    Z: oops\n").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.to_string().contains("scenarios/pop3/t.yaml:5:"), "{e}");
    }

    #[test]
    fn yaml_alias_gets_a_hint() {
        let e = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n    S: * OK\n").unwrap_err();
        assert!(e.hint.as_deref().unwrap_or("").contains("quote"), "{e}");
    }

    #[test]
    fn step_errors_point_at_the_step() {
        let e = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n  - S: \"+OK\"\n").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("one action"));
    }

    #[test]
    fn dele_then_quit_must_be_marked() {
        let src = "name: x\nrfc: y\nsteps:\n  - login: {}\n  - C: DELE 1\n  - C: QUIT\n";
        let e = load(src).unwrap_err();
        assert!(e.message.contains("destructive"), "{e}");
        assert_eq!(e.line, 5);
        let ok = src.replace("steps:", "destructive: true\nsteps:");
        assert!(load(&ok).unwrap().destructive);
        // RSET before QUIT undoes the deletion: not destructive.
        assert!(load("name: x\nrfc: y\nsteps:\n  - C: DELE 1\n  - C: RSET\n  - C: QUIT\n").is_ok());
    }

    #[test]
    fn bad_pattern_is_reported() {
        let e = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n    S: \"+OK {a b}\"\n").unwrap_err();
        assert!(e.message.contains("capture"), "{e}");
    }

    #[test]
    fn imap_reply_lists_and_tags() {
        let imap = |src: &str| load_str(Path::new("scenarios/imap/t.yaml"), src);
        let s = imap("name: x\nrfc: y\nsteps:\n  - C: NOOP\n    tag: A1\n    S: [\"* 3 EXISTS\", \"OK*\"]\n")
            .unwrap();
        match &s.steps[0].kind {
            StepKind::Exchange(x) => {
                assert_eq!(x.untagged.len(), 1);
                assert_eq!(x.tag.as_deref(), Some("A1"));
                assert_eq!(x.reply.as_ref().map(|p| p.display()), Some("OK*".to_string()));
            }
            other => panic!("{other:?}"),
        }
        assert!(imap("name: x\nrfc: y\nsteps:\n  - C: NOOP\n    tag: \"a+b\"\n").is_err());
        let e = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n    S: [\"+OK\", \"+OK\"]\n").unwrap_err();
        assert!(e.message.contains("IMAP"), "{e}");
        let e = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n    tag: A1\n").unwrap_err();
        assert!(e.message.contains("IMAP"), "{e}");
    }

    #[test]
    fn pipelines_hold_plain_imap_commands() {
        let imap = |src: &str| load_str(Path::new("scenarios/imap/t.yaml"), src);
        let ok = imap(
            "name: x\nrfc: y\nsteps:\n  - pipeline:\n      - C: NOOP\n        S: \"OK*\"\n      - C: NOOP\n",
        )
        .unwrap();
        assert!(matches!(&ok.steps[0].kind, StepKind::Pipeline(xs) if xs.len() == 2));
        let e = imap("name: x\nrfc: y\nsteps:\n  - pipeline:\n      - C: NOOP\n      - C: LIST \"\" \"*\"\n        body: {min: 1}\n")
            .unwrap_err();
        assert!(e.message.contains("no `body`"), "{e}");
        assert_eq!(e.line, 6, "{e}");
        let e =
            load("name: x\nrfc: y\nsteps:\n  - pipeline:\n      - C: NOOP\n      - C: NOOP\n").unwrap_err();
        assert!(e.message.contains("IMAP"), "{e}");
    }

    #[test]
    fn steps_can_name_their_session() {
        let s = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n  - session: other\n    C: STAT\n").unwrap();
        assert_eq!(s.steps[1].session.as_deref(), Some("other"));
        assert!(load("name: x\nrfc: y\nsteps:\n  - session: \"a b\"\n    C: STAT\n").is_err());
    }

    #[test]
    fn literals_belong_to_imap_commands() {
        let imap = |src: &str| load_str(Path::new("scenarios/imap/t.yaml"), src);
        assert!(imap("name: x\nrfc: y\nsteps:\n  - C: APPEND INBOX\n    literal: \"hi\"\n").is_ok());
        assert!(load("name: x\nrfc: y\nsteps:\n  - C: STAT\n    literal: \"hi\"\n").is_err());
    }

    #[test]
    fn untagged_options_belong_to_imap_commands() {
        let imap = |src: &str| load_str(Path::new("scenarios/imap/t.yaml"), src);
        let s = imap(
            "name: x\nrfc: y\nsteps:\n  - C: SELECT INBOX\n    S: [\"* FLAGS *\", \"* * EXISTS\", \"OK*\"]\n    ordered: true\n    only: true\n    may: [\"* OK *\"]\n    absent: [\"* * EXPUNGE\"]\n",
        )
        .unwrap();
        match &s.steps[0].kind {
            StepKind::Exchange(x) => {
                assert!(x.imap.ordered && x.imap.only);
                assert_eq!(x.imap.may.len(), 1);
                assert_eq!(x.imap.absent.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        // POP3 steps, non-C steps and pipelines cannot have them.
        let e = load("name: x\nrfc: y\nsteps:\n  - C: STAT\n    only: true\n").unwrap_err();
        assert!(e.message.contains("IMAP `C` step"), "{e}");
        let e = imap("name: x\nrfc: y\nsteps:\n  - login: {}\n    absent: [\"x\"]\n").unwrap_err();
        assert!(e.message.contains("`absent`"), "{e}");
        let e = imap(
            "name: x\nrfc: y\nsteps:\n  - pipeline:\n      - C: NOOP\n        only: true\n      - C: NOOP\n",
        )
        .unwrap_err();
        assert!(e.message.contains("untagged options"), "{e}");
        // `ordered` needs untagged patterns to order.
        let e =
            imap("name: x\nrfc: y\nsteps:\n  - C: NOOP\n    S: \"OK*\"\n    ordered: true\n").unwrap_err();
        assert!(e.message.contains("ordered"), "{e}");
        // Unknown keys still point at their place.
        let e = imap("name: x\nrfc: y\nsteps:\n  - C: NOOP\n    orderd: true\n").unwrap_err();
        assert_eq!((e.line, e.column > 0), (5, true), "{e}");
    }

    #[test]
    fn literal_plus_and_requirements() {
        let imap = |src: &str| load_str(Path::new("scenarios/imap/t.yaml"), src);
        let s = imap("name: x\nrfc: y\nrequires: [LITERAL+|literal-, preauth]\nsteps:\n  - C: EXAMINE\n    literal_plus: INBOX\n")
            .unwrap();
        assert_eq!(
            s.requires,
            vec![
                Requirement::AnyCapability(vec!["LITERAL+".into(), "LITERAL-".into()]),
                Requirement::Preauth
            ]
        );
        match &s.steps[0].kind {
            StepKind::Exchange(x) => assert!(x.imap.literal_plus && x.literal.is_some()),
            other => panic!("{other:?}"),
        }
        let e = imap("name: x\nrfc: y\nsteps:\n  - C: X\n    literal: a\n    literal_plus: b\n").unwrap_err();
        assert!(e.message.contains("one literal"), "{e}");
        assert!(imap("name: x\nrfc: y\nrequires: [\"A||B\"]\nsteps:\n  - C: NOOP\n").is_err());
    }

    #[test]
    fn greeting_and_idle_steps() {
        let imap = |src: &str| load_str(Path::new("scenarios/imap/t.yaml"), src);
        let s = imap(
            "name: x\nrfc: y\nsteps:\n  - greeting: \"* OK*\"\n  - idle: {}\n  - idle:\n      during:\n        - session: other\n          C: NOOP\n      updates: [\"* {n} EXISTS\"]\n      S: [\"* * RECENT\", \"OK*\"]\n      tag: I1\n",
        )
        .unwrap();
        assert!(matches!(&s.steps[0].kind, StepKind::Greeting(_)));
        match &s.steps[1].kind {
            StepKind::Idle(i) => {
                assert!(i.during.is_empty() && i.updates.is_empty());
                assert_eq!(i.reply.display(), "OK*");
            }
            other => panic!("{other:?}"),
        }
        match &s.steps[2].kind {
            StepKind::Idle(i) => {
                assert_eq!(i.during.len(), 1);
                assert_eq!((i.updates.len(), i.untagged.len()), (1, 1));
                assert_eq!(i.tag.as_deref(), Some("I1"));
            }
            other => panic!("{other:?}"),
        }
        // Steps during IDLE must run on another connection.
        let e = imap("name: x\nrfc: y\nsteps:\n  - idle:\n      during:\n        - C: NOOP\n").unwrap_err();
        assert!(e.message.contains("another connection"), "{e}");
        assert_eq!(e.line, 6, "{e}");
        let e = imap("name: x\nrfc: y\nsteps:\n  - idle: {wait: 3}\n").unwrap_err();
        assert!(e.message.contains("wait"), "{e}");
        // `greeting` works for POP3 too; `idle` does not.
        assert!(load("name: x\nrfc: y\nsteps:\n  - greeting: \"+OK*\"\n").is_ok());
        assert!(load("name: x\nrfc: y\nsteps:\n  - idle: {}\n").is_err());
    }

    fn smtp(src: &str) -> Result<Scenario, LoadError> {
        load_str(Path::new("scenarios/smtp/t.yaml"), src)
    }

    #[test]
    fn smtp_steps_and_their_rules() {
        let ok = smtp(
            "name: x\nrfc: y\nsends: true\nrequires: [\"var:rcpt\", AUTH=PLAIN]\nsteps:\n  - C: EHLO ${client}\n    S: \"250*\"\n    body: {contains: [\"SIZE {limit}\"]}\n  - auth: {mechanism: plain}\n    S: \"235*\"\n  - data: {text: \"Subject: x\\n\\nhi\\n\", capture: sent}\n  - send: \"NOOP\\r\\n\"\n    S: \"250*\"\n  - stls: {inject: NOOP}\n",
        )
        .unwrap();
        assert!(ok.sends);
        assert_eq!(ok.requires[0], Requirement::Var("rcpt".into()));
        assert!(matches!(&ok.steps[1].kind, StepKind::Auth { mechanism, .. } if mechanism == "PLAIN"));
        assert!(matches!(&ok.steps[2].kind, StepKind::Data(d) if d.capture.as_deref() == Some("sent")));
        assert!(matches!(
            &ok.steps[4].kind,
            StepKind::StartTls { inject: Some(_) }
        ));
        // A data step sends mail: the scenario must say so.
        let e = smtp("name: x\nrfc: y\nsteps:\n  - C: EHLO x\n  - data: {text: hi}\n").unwrap_err();
        assert!(e.message.contains("sends: true"), "{e}");
        assert_eq!(e.line, 5);
        // So does a send: that ends message data; a bare C: DATA does not.
        let e = smtp("name: x\nrfc: y\nsteps:\n  - send: \"hi\\r\\n.\\r\\n\"\n").unwrap_err();
        assert!(e.message.contains("sends: true"), "{e}");
        assert!(smtp("name: x\nrfc: y\nsteps:\n  - C: DATA\n    S: \"503*\"\n").is_ok());
        let e = smtp("name: x\nrfc: y\nsends: true\nsteps:\n  - auth: {mechanism: NTLM}\n").unwrap_err();
        assert!(e.message.contains("PLAIN, LOGIN and CRAM-MD5"), "{e}");
        let e = smtp("name: x\nrfc: y\nsends: true\nsteps:\n  - data: {text: a, raw: b}\n").unwrap_err();
        assert!(e.message.contains("one of"), "{e}");
        let e = smtp("name: x\nrfc: y\nsends: true\nsteps:\n  - data: {file: no-such.eml}\n").unwrap_err();
        assert!(e.message.contains("no such file"), "{e}");
        let e = smtp("name: x\nrfc: y\nsteps:\n  - pipeline:\n      - C: MAIL FROM:<>\n      - C: DATA\n")
            .unwrap_err();
        assert!(e.message.contains("cannot be pipelined"), "{e}");
        let e = smtp("name: x\nrfc: y\nsteps:\n  - C: EHLO x\n    multiline: true\n").unwrap_err();
        assert!(e.message.contains("POP3"), "{e}");
        // SMTP-only steps are refused elsewhere.
        let e = load("name: x\nrfc: y\nsteps:\n  - auth: {mechanism: PLAIN}\n").unwrap_err();
        assert!(e.message.contains("SMTP"), "{e}");
        let e = load("name: x\nrfc: y\nsteps:\n  - login: {optional: true}\n").unwrap_err();
        assert!(e.message.contains("SMTP"), "{e}");
    }

    #[test]
    fn sessions_on_another_protocol() {
        let s = smtp(
            "name: x\nrfc: y\nsessions: {mbox: pop3}\nsteps:\n  - session: mbox\n    C: STAT\n    S: \"+OK {n} *\"\n  - retry: {for: 5}\n    steps:\n      - session: mbox\n        reconnect: {}\n",
        )
        .unwrap();
        assert_eq!(s.session_protocol("mbox"), Protocol::Pop3);
        assert!(s.requires.contains(&Requirement::Target(Protocol::Pop3)));
        assert!(matches!(&s.steps[1].kind, StepKind::Retry { steps, .. } if steps.len() == 1));
        // POP3 rules apply to that session's steps: no SMTP `auth` there.
        let e = smtp("name: x\nrfc: y\nsessions: {mbox: pop3}\nsteps:\n  - session: mbox\n    auth: {mechanism: PLAIN}\n").unwrap_err();
        assert!(e.message.contains("SMTP"), "{e}");
        let e = smtp("name: x\nrfc: y\nsessions: {mbox: gopher}\nsteps:\n  - C: NOOP\n").unwrap_err();
        assert!(e.message.contains("unknown protocol"), "{e}");
        let e = smtp("name: x\nrfc: y\nsessions: {other: smtp}\nsteps:\n  - C: NOOP\n").unwrap_err();
        assert!(e.message.contains("another protocol"), "{e}");
        let e =
            smtp("name: x\nrfc: y\nsteps:\n  - retry: {for: 0}\n    steps:\n      - C: NOOP\n").unwrap_err();
        assert!(e.message.contains("above 0"), "{e}");
    }

    #[test]
    fn protocol_must_be_known() {
        let e = load_str(Path::new("x.yaml"), "name: x\nrfc: y\nsteps:\n  - C: STAT\n").unwrap_err();
        assert!(e.message.contains("protocol"));
    }
}
