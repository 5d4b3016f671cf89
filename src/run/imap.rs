//! The IMAP side of the runner: tags, reading responses through the IMAP
//! reader (framing with literals, grammar, session model) until the tagged
//! completion, matching untagged responses (any order by default, or
//! ordered, strict, with optional and forbidden ones), literals both ways,
//! the greeting forms and IDLE.

use super::body::BodyMatcher;
use super::outcome::{Direction, Mismatch};
use super::runner::{Goodbye, Run, Stop};
use crate::finding::{line_text, Finding};
use crate::proto::imap::{self, ReadEvent, Response};
use crate::scenario::pattern::{Matcher, Pattern};
use crate::scenario::template::{Template, Value};
use crate::scenario::{Exchange, Idle, ImapExpect};
use crate::secret::Secret;
use crate::wire::WireError;
use std::time::Instant;

/// Longest piece read from the socket at once.
const READ_CAP: usize = 64 * 1024;
/// Untagged responses kept per command for matching and the transcript.
const UNTAGGED_KEPT: usize = 10_000;
/// Untagged lines shown in the transcript per command.
const UNTAGGED_SHOWN: usize = 12;

/// One IMAP connection's protocol state.
pub(crate) struct ImapConn {
    reader: imap::Reader,
    tags: imap::TagGen,
    /// The greeting was `* PREAUTH`: `login` steps have nothing to do.
    preauth: bool,
}

impl ImapConn {
    pub(crate) fn new(tls: bool) -> ImapConn {
        ImapConn {
            reader: imap::Reader::new(imap::Limits::default(), tls),
            tags: imap::TagGen::new("a"),
            preauth: false,
        }
    }

    pub(crate) fn capabilities(&self) -> Vec<String> {
        self.reader.session.capabilities().to_vec()
    }
}

/// What came back for one command.
struct Reply {
    untagged: Vec<Vec<u8>>,
    /// The completion (or the greeting) without its line ending.
    last: Vec<u8>,
}

/// Line ends as the wire wants them: CRLF (YAML block text has bare LF).
fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(body) => {
                out.push_str(body.strip_suffix('\r').unwrap_or(body));
                out.push_str("\r\n");
            }
            None => out.push_str(line),
        }
    }
    out
}

fn glob(text: &str) -> Result<Pattern, Stop> {
    Pattern::glob(text).map_err(Stop::Error)
}

/// What a read during IDLE waits for: untagged responses matching each of
/// these, before a deadline that bounds the whole wait (a server sending
/// other responses now and then cannot stretch it).
struct Awaited {
    matchers: Vec<Matcher>,
    seen: Vec<bool>,
    deadline: Instant,
}

impl Awaited {
    fn feed(&mut self, text: &[u8]) {
        for (m, seen) in self.matchers.iter().zip(self.seen.iter_mut()) {
            if !*seen && m.is_match(text) {
                *seen = true;
                return;
            }
        }
    }

    fn complete(&self) -> bool {
        self.seen.iter().all(|s| *s)
    }
}

/// How `S:` and the IMAP options describe one command's untagged responses.
struct UntaggedSpec<'x> {
    patterns: &'x [Pattern],
    reply: Option<&'x Pattern>,
    opts: &'x ImapExpect,
}

impl<'x> UntaggedSpec<'x> {
    fn of(x: &'x Exchange) -> Self {
        UntaggedSpec {
            patterns: &x.untagged,
            reply: x.reply.as_ref(),
            opts: &x.imap,
        }
    }
}

impl Run<'_> {
    fn imap_conn(&mut self) -> Result<&mut ImapConn, Stop> {
        self.imap
            .as_mut()
            .ok_or_else(|| Stop::Error("no IMAP session".into()))
    }

    /// Read responses until the completion tagged `tag` (or, without a tag,
    /// the first response: the greeting). Every byte goes through the reader.
    async fn imap_read(
        &mut self,
        tag: Option<&str>,
        matcher: Option<&mut BodyMatcher<'_>>,
    ) -> Result<Reply, Stop> {
        let want: Vec<String> = tag.map(str::to_string).into_iter().collect();
        let (untagged, mut done) = self.imap_read_tags(&want, matcher, false, None).await?;
        Ok(Reply {
            untagged,
            last: done.pop().unwrap_or_default(),
        })
    }

    /// Read until every tag in `want` has its completion (several when
    /// pipelining), or without tags the first response (the greeting).
    /// Completions come back in the order of `want`. With `continue_ends`
    /// a `+` continuation ends the read too (its absence is a finding);
    /// with `awaited` the read also ends once those untagged responses have
    /// come, or at its deadline (the caller checks which).
    async fn imap_read_tags(
        &mut self,
        want: &[String],
        mut matcher: Option<&mut BodyMatcher<'_>>,
        continue_ends: bool,
        mut awaited: Option<&mut Awaited>,
    ) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), Stop> {
        let mut untagged = Vec::new();
        let mut shown = 0usize;
        let mut found = Vec::new();
        let mut records: Vec<(Direction, String)> = Vec::new();
        let mut done: Vec<Option<Vec<u8>>> = vec![None; want.len().max(1)];
        let limit = self.conn.as_ref().map(|c| c.timeout());
        let result: Result<(), Stop> = async {
            loop {
                let Run { conn, imap, .. } = &mut *self;
                let conn = conn
                    .as_mut()
                    .ok_or_else(|| Stop::Error("the connection is closed".into()))?;
                let imap = imap
                    .as_mut()
                    .ok_or_else(|| Stop::Error("no IMAP session".into()))?;
                if let (Some(a), Some(limit)) = (awaited.as_deref(), limit) {
                    let left = a.deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(());
                    }
                    conn.set_timeout(left.min(limit));
                }
                let line = match conn.read_line(READ_CAP).await {
                    Ok(line) => line,
                    // The deadline of an IDLE wait: the caller reports what did not come.
                    Err(WireError::Timeout { .. }) if awaited.is_some() => return Ok(()),
                    Err(WireError::Timeout { waiting_for, secs }) if continue_ends => {
                        found.push(Finding::must(
                            "imap.no-continuation",
                            "RFC 9051 sections 4.3 (literal), 6.3.13 (IDLE) and 7.6 (command continuation request)",
                            format!("no `+` continuation request within {secs} s: waited for {waiting_for}"),
                        ));
                        return Err(WireError::Timeout { waiting_for, secs }.into());
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut input = line.bytes;
                let mut enough = false;
                loop {
                    let (used, ev) = imap.reader.feed(input, &mut found);
                    let Some(ev) = ev else { break };
                    // `delivered:` compares literal data (a FETCH BODY[]), kept or streamed.
                    if let (ReadEvent::LiteralData(d), Some(m)) = (&ev, matcher.as_deref_mut()) {
                        m.feed_literal(d);
                    }
                    if let ReadEvent::Response { frame, response } = ev {
                        let first = frame.text();
                        let untagged_data = !matches!(response, Response::Tagged { .. } | Response::Continue { .. });
                        if let (true, Some(m)) = (untagged_data, matcher.as_deref_mut()) {
                            for l in frame.literals.iter().filter(|l| l.inline) {
                                let end = (l.data as u64 + l.len).min(frame.bytes.len() as u64) as usize;
                                m.feed_literal(&frame.bytes[l.data.min(end)..end]);
                            }
                        }
                        let slot = match &response {
                            _ if want.is_empty() => Some(0),
                            // A continuation request answers our synchronizing literal.
                            Response::Continue { .. } if continue_ends => Some(0),
                            Response::Tagged { tag: t, .. } => want.iter().position(|w| w.as_bytes() == *t),
                            _ => None,
                        };
                        if let Some(i) = slot.filter(|i| done[*i].is_none()) {
                            records.push((Direction::Server, line_text(&first)));
                            done[i] = Some(first);
                        } else {
                            if shown < UNTAGGED_SHOWN {
                                records.push((Direction::Server, line_text(&first)));
                            }
                            shown += 1;
                            if let Some(m) = matcher.as_deref_mut() {
                                m.feed(&first, true);
                            }
                            if let Some(a) = awaited.as_deref_mut() {
                                a.feed(&first);
                                enough = a.complete();
                            }
                            if untagged.len() < UNTAGGED_KEPT {
                                untagged.push(first);
                            }
                        }
                    }
                    input = &input[used..];
                }
                if enough || done.iter().all(Option::is_some) {
                    return Ok(());
                }
            }
        }
        .await;
        if let (Some(c), Some(limit)) = (self.conn.as_mut(), limit) {
            c.set_timeout(limit);
        }
        for (d, t) in records {
            self.record(d, &t);
        }
        if shown > UNTAGGED_SHOWN {
            self.record(
                Direction::Note,
                &format!("... {} more untagged responses", shown - UNTAGGED_SHOWN),
            );
        }
        self.add_findings(found);
        result?;
        Ok((untagged, done.into_iter().flatten().collect()))
    }

    /// The greeting (RFC 9051 section 7.1): `* OK` goes on unauthenticated,
    /// `* PREAUTH` goes on authenticated (login steps then send nothing),
    /// `* BYE` means the server rejected the connection: that stops the
    /// scenario with a reason that says so, after checking the server closes.
    pub(crate) async fn imap_greeting(&mut self, tls: bool) -> Result<(), Stop> {
        self.imap = Some(ImapConn::new(tls));
        let reply = self.imap_read(None, None).await?;
        self.greeting = reply.last.clone();
        let cond = imap::parse_status(&String::from_utf8_lossy(&reply.last))
            .filter(|s| s.tag == "*")
            .map(|s| s.cond);
        match cond {
            Some(imap::Cond::Ok) => Ok(()),
            Some(imap::Cond::Preauth) => {
                self.imap_conn()?.preauth = true;
                self.record(
                    Direction::Note,
                    "PREAUTH greeting: the session starts authenticated, login steps send nothing",
                );
                Ok(())
            }
            Some(imap::Cond::Bye) => {
                const BYE: Goodbye = Goodbye {
                    verb: "its BYE greeting",
                    rfc: "RFC 9051 section 7.1.5 (BYE)",
                    data_rule: "imap.after-bye",
                    close_rule: "imap.bye-close",
                    close_must: false,
                };
                self.await_close(&BYE).await;
                Err(Stop::Error(format!(
                    "the server rejected the connection: its greeting is BYE, not OK or PREAUTH ({}); \
                     nothing can run on this connection",
                    line_text(&reply.last)
                )))
            }
            _ => Err(Stop::Error(format!(
                "the server's greeting is not * OK, * PREAUTH or * BYE: {}",
                line_text(&reply.last)
            ))),
        }
    }

    /// Send one command (tagged by us unless the step gave a tag), read until
    /// its completion, and match the scenario's expectations.
    pub(crate) async fn imap_exchange(&mut self, x: &Exchange) -> Result<(), Stop> {
        let text = x.command.expand(&self.vars).map_err(Stop::Error)?;
        let masked = x.command.expand_masked(&self.vars).map_err(Stop::Error)?;
        let tag = match &x.tag {
            Some(t) => t.clone(),
            None => self.imap_conn()?.tags.next_tag(),
        };
        // `literal:` data goes after the line as a synchronizing literal, with
        // CRLF line ends; `literal_plus:` as `{n+}` in the same write.
        let literal = match &x.literal {
            Some(t) => Some(crlf(&t.expand(&self.vars).map_err(Stop::Error)?)),
            None => None,
        };
        let plus = if x.imap.literal_plus { "+" } else { "" };
        let (text, masked) = match &literal {
            Some(data) => (
                format!("{text} {{{}{plus}}}", data.len()),
                format!("{masked} {{{}{plus}}}", data.len()),
            ),
            None => (text, masked),
        };
        let line = format!("{tag} {text}");
        let cmd = imap::Command::parse(line.as_bytes())
            .map_err(|e| Stop::Error(format!("`{masked}` is not a command: {e}")))?;
        if cmd.sync_literals() > usize::from(literal.is_some() && !x.imap.literal_plus) {
            return Err(Stop::Error(
                "write literals with `literal:` (the runner adds {n} and waits for +) or `literal_plus:` ({n+})"
                    .into(),
            ));
        }
        let shown = self.redactor.redact(&format!("{tag} {masked}"));
        self.record(Direction::Client, &shown);
        let mut found = Vec::new();
        self.imap_conn()?.reader.command(&cmd, &mut found);
        self.add_findings(found);
        let label = self.redactor.redact(&cmd.label());
        let step_id = self.step_id.clone();
        let mut wire = format!("{line}\r\n").into_bytes();
        if let (Some(data), true) = (&literal, x.imap.literal_plus) {
            // A non-synchronizing literal goes in the same write, unasked.
            self.record(Direction::Client, &format!("<literal: {} octets>", data.len()));
            wire.extend_from_slice(data.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        {
            let conn = self.conn()?;
            conn.send(&wire).await?;
            let what = if literal.is_some() && !x.imap.literal_plus {
                format!("the + continuation for the literal of `{label}` (tag {tag}, step {step_id})")
            } else {
                format!("the completion of `{label}` (tag {tag}, step {step_id})")
            };
            conn.waiting_for(what);
        }
        let mut matcher = match &x.body {
            Some(b) => Some(
                BodyMatcher::new(b, &self.vars)
                    .map_err(Stop::Error)?
                    .delivered_from_literals(),
            ),
            None => None,
        };
        let mut refused = None;
        if let (Some(data), false) = (&literal, x.imap.literal_plus) {
            let (_, got) = self
                .imap_read_tags(std::slice::from_ref(&tag), None, true, None)
                .await?;
            let first = got.into_iter().next().unwrap_or_default();
            if first.starts_with(b"+") {
                self.record(Direction::Client, &format!("<literal: {} octets>", data.len()));
                let mut bytes = data.clone().into_bytes();
                bytes.extend_from_slice(b"\r\n");
                let conn = self.conn()?;
                conn.send(&bytes).await?;
                conn.waiting_for(format!("the completion of `{label}` (tag {tag}, step {step_id})"));
            } else {
                // The server refused the literal: its completion is the reply.
                refused = Some(first);
            }
        }
        let reply = match refused {
            Some(last) => Reply {
                untagged: Vec::new(),
                last,
            },
            None => self.imap_read(Some(&tag), matcher.as_mut()).await?,
        };
        let completion = reply
            .last
            .strip_prefix(format!("{tag} ").as_bytes())
            .unwrap_or(&reply.last)
            .to_vec();

        let mut mismatch =
            self.match_completion(&UntaggedSpec::of(x), &reply.untagged, &completion, &label)?;
        if mismatch.is_none() {
            if let Some(m) = matcher {
                let n = reply.untagged.len() as u64;
                let octets = reply.untagged.iter().map(|u| u.len() as u64 + 2).sum();
                if let Err(mut e) = m.finish(n, octets, &mut self.vars) {
                    e.actual = e.actual.map(|a| self.redactor.redact(&a));
                    e.message = format!("untagged responses to `{label}`: {}", e.message);
                    mismatch = Some(e);
                }
            }
        }

        let ok = imap::parse_status(&String::from_utf8_lossy(&reply.last))
            .is_some_and(|s| s.cond == imap::Cond::Ok);
        if ok {
            match cmd.verb.as_str() {
                "STARTTLS" => self.upgrade_after_stls().await?,
                "LOGOUT" => self.imap_after_logout().await,
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

    /// Match one command's `S:` and untagged options: each untagged pattern
    /// against some untagged response (in any order, or with `ordered` in
    /// the order written), `may` patterns where they match, no response
    /// matching an `absent` pattern, with `only` no response outside the
    /// listed patterns; then the completion without its tag.
    fn match_completion(
        &mut self,
        spec: &UntaggedSpec<'_>,
        untagged: &[Vec<u8>],
        completion: &[u8],
        label: &str,
    ) -> Result<Option<Mismatch>, Stop> {
        let lines: Vec<&[u8]> = untagged.iter().map(Vec::as_slice).collect();
        let opts = spec.opts;
        let shown = |run: &Run<'_>| {
            let got: Vec<String> = lines.iter().take(40).map(|u| line_text(u)).collect();
            Some(run.redactor.redact(&got.join("\n")))
        };
        // Where an ordered match may continue from.
        let mut from = 0usize;
        for p in spec.patterns {
            let hit = if opts.ordered {
                let m = p.compile(&self.vars).map_err(Stop::Error)?;
                let found = (from..lines.len()).find_map(|i| m.matches(lines[i]).map(|caps| (i, caps)));
                found.map(|(i, caps)| {
                    from = i + 1;
                    for (k, v) in caps {
                        self.vars.set_text(&k, v);
                    }
                })
            } else {
                self.capture(p, &lines)?.then_some(())
            };
            if hit.is_none() {
                let message = if opts.ordered && from > 0 {
                    format!(
                        "no untagged response to `{label}` after the ones matched so far matches `{}` (ordered: true)",
                        p.display()
                    )
                } else {
                    format!("no untagged response to `{label}` matches `{}`", p.display())
                };
                return Ok(Some(Mismatch {
                    message,
                    expected: Some(p.display()),
                    actual: shown(self),
                }));
            }
        }
        for p in &opts.may {
            self.capture(p, &lines)?;
        }
        for p in &opts.absent {
            let m = p.compile(&self.vars).map_err(Stop::Error)?;
            if let Some(bad) = lines.iter().find(|l| m.is_match(l)) {
                return Ok(Some(Mismatch {
                    message: format!(
                        "an untagged response to `{label}` matches `{}`, which must not appear",
                        p.display()
                    ),
                    expected: Some(format!("no response matching {}", p.display())),
                    actual: Some(self.redactor.redact(&line_text(bad))),
                }));
            }
        }
        if opts.only {
            let allowed = spec
                .patterns
                .iter()
                .chain(&opts.may)
                .map(|p| p.compile(&self.vars))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Stop::Error)?;
            if let Some(extra) = lines.iter().find(|l| !allowed.iter().any(|m| m.is_match(l))) {
                let listed: Vec<String> = spec
                    .patterns
                    .iter()
                    .chain(&opts.may)
                    .map(|p| p.display())
                    .collect();
                return Ok(Some(Mismatch {
                    message: format!(
                        "an untagged response to `{label}` matches none of the listed patterns (only: true)"
                    ),
                    expected: Some(if listed.is_empty() {
                        "no untagged responses".into()
                    } else {
                        listed.join("\n")
                    }),
                    actual: Some(self.redactor.redact(&line_text(extra))),
                }));
            }
        }
        if let Some(p) = spec.reply {
            if !self.capture(p, &[completion])? {
                return Ok(Some(Mismatch {
                    message: format!("completion of `{label}` does not match"),
                    expected: Some(p.display()),
                    actual: Some(self.redactor.redact(&line_text(completion))),
                }));
            }
        }
        Ok(None)
    }

    /// Send several commands in one write and match each completion by tag
    /// (RFC 9051 section 5.5); untagged patterns match any untagged response.
    pub(crate) async fn imap_pipeline(&mut self, xs: &[Exchange]) -> Result<(), Stop> {
        let mut tags = Vec::new();
        let mut labels = Vec::new();
        let mut wire = String::new();
        let mut verbs = Vec::new();
        for x in xs {
            let text = x.command.expand(&self.vars).map_err(Stop::Error)?;
            let masked = x.command.expand_masked(&self.vars).map_err(Stop::Error)?;
            let tag = match &x.tag {
                Some(t) => t.clone(),
                None => self.imap_conn()?.tags.next_tag(),
            };
            let line = format!("{tag} {text}");
            let cmd = imap::Command::parse(line.as_bytes())
                .map_err(|e| Stop::Error(format!("`{masked}` is not a command: {e}")))?;
            if cmd.sync_literals() > 0 || matches!(cmd.verb.as_str(), "STARTTLS" | "AUTHENTICATE" | "IDLE") {
                return Err(Stop::Error(format!("`{}` cannot be pipelined", cmd.verb)));
            }
            let shown = self.redactor.redact(&format!("{tag} {masked}"));
            self.record(Direction::Client, &shown);
            let mut found = Vec::new();
            self.imap_conn()?.reader.command(&cmd, &mut found);
            self.add_findings(found);
            labels.push(self.redactor.redact(&cmd.label()));
            verbs.push(cmd.verb.clone());
            wire.push_str(&line);
            wire.push_str("\r\n");
            tags.push(tag);
        }
        let step_id = self.step_id.clone();
        {
            let conn = self.conn()?;
            conn.send(wire.as_bytes()).await?;
            conn.waiting_for(format!(
                "the completions of {} pipelined commands (step {step_id})",
                tags.len()
            ));
        }
        let (untagged, completions) = self.imap_read_tags(&tags, None, false, None).await?;
        let mut mismatch = None;
        for (i, x) in xs.iter().enumerate() {
            let completion = completions[i]
                .strip_prefix(format!("{} ", tags[i]).as_bytes())
                .unwrap_or(&completions[i]);
            let label = format!("pipelined {}", labels[i]);
            let m = self.match_completion(&UntaggedSpec::of(x), &untagged, completion, &label)?;
            mismatch = mismatch.or(m);
        }
        let logout_ok = verbs.iter().zip(&completions).any(|(v, c)| {
            v == "LOGOUT"
                && imap::parse_status(&String::from_utf8_lossy(c)).is_some_and(|s| s.cond == imap::Cond::Ok)
        });
        if logout_ok {
            self.imap_after_logout().await;
        }
        match mismatch {
            Some(m) => {
                self.pending_mismatch = Some(m);
                Err(Stop::Mismatch)
            }
            None => Ok(()),
        }
    }

    /// LOGIN with the run's credentials (quoted strings; the password masked everywhere).
    pub(crate) async fn imap_login(
        &mut self,
        user: Option<&Template>,
        password: Option<&Template>,
    ) -> Result<(), Stop> {
        if self.imap_conn()?.preauth {
            // RFC 9051 section 7.1.4: already authenticated; LOGIN would be a BAD.
            self.record(
                Direction::Note,
                "login: already authenticated by PREAUTH, nothing sent",
            );
            return Ok(());
        }
        // RFC 9051 section 6.2.3: a client must not send LOGIN where the server
        // said LOGINDISABLED; a scenario that means to test it writes `C: LOGIN`.
        let session = &self.imap_conn()?.reader.session;
        if session.has_capability("LOGINDISABLED") && !session.tls {
            return Err(Stop::Error(
                "the server advertises LOGINDISABLED on this connection without TLS, so login sends nothing: \
                 use --starttls or an imaps:// target"
                    .into(),
            ));
        }
        let (user, password) = self.credentials(user, password, "login")?;
        let (Some(u), Some(p)) = (imap::quote(&user), imap::quote(password.expose())) else {
            return Err(Stop::Error(
                "the user name or password contains a line break".into(),
            ));
        };
        let quoted = Secret::new(p);
        self.redactor.add(&quoted);
        self.vars.set_text("imap_login_user", u);
        self.vars.set("imap_login_password", Value::Secret(quoted));
        let cmd = Template::parse("LOGIN ${imap_login_user} ${imap_login_password}").map_err(Stop::Error)?;
        let x = Exchange {
            command: cmd,
            reply: Some(glob("OK*")?),
            untagged: Vec::new(),
            tag: None,
            literal: None,
            multiline: None,
            body: None,
            imap: ImapExpect::default(),
        };
        self.imap_exchange(&x).await
    }

    /// STARTTLS, then the handshake on the same socket (RFC 9051 section 6.2.1).
    pub(crate) async fn imap_starttls(&mut self) -> Result<(), Stop> {
        let x = Exchange {
            command: Template::parse("STARTTLS").map_err(Stop::Error)?,
            reply: Some(glob("OK*")?),
            untagged: Vec::new(),
            tag: None,
            literal: None,
            multiline: None,
            body: None,
            imap: ImapExpect::default(),
        };
        self.imap_exchange(&x).await
    }

    /// After LOGOUT's OK the server closes the connection (RFC 9051 section 6.1.3).
    async fn imap_after_logout(&mut self) {
        const LOGOUT: Goodbye = Goodbye {
            verb: "LOGOUT",
            rfc: "RFC 9051 section 6.1.3",
            data_rule: "imap.after-logout",
            close_rule: "imap.logout-close",
            close_must: false,
        };
        self.await_close(&LOGOUT).await;
    }

    /// IDLE (RFC 9051 section 6.3.13, RFC 2177): send IDLE, wait for `+`
    /// (its absence is a finding and fails the step, within the timeout),
    /// run the `during` steps on their sessions, wait until each `updates`
    /// pattern has matched an untagged response (bounded by one timeout for
    /// the whole wait), then DONE and the completion. DONE is sent even when
    /// updates are missing, so the connection ends the step in a known state.
    pub(crate) async fn imap_idle(&mut self, idle: &Idle, id: &str) -> Result<(), Stop> {
        let own = self.current_session().to_string();
        let tag = match &idle.tag {
            Some(t) => t.clone(),
            None => self.imap_conn()?.tags.next_tag(),
        };
        let line = format!("{tag} IDLE");
        let cmd = imap::Command::parse(line.as_bytes())
            .map_err(|e| Stop::Error(format!("`IDLE` is not a command: {e}")))?;
        self.record(Direction::Client, &line);
        let mut found = Vec::new();
        self.imap_conn()?.reader.command(&cmd, &mut found);
        self.add_findings(found);
        let step_id = self.step_id.clone();
        {
            let conn = self.conn()?;
            conn.send(format!("{line}\r\n").as_bytes()).await?;
            conn.waiting_for(format!("the + continuation for IDLE (tag {tag}, step {step_id})"));
        }
        let (mut untagged, got) = self
            .imap_read_tags(std::slice::from_ref(&tag), None, true, None)
            .await?;
        let first = got.into_iter().next().unwrap_or_default();
        if !first.starts_with(b"+") {
            // A completion instead of `+`: IDLE was refused (or is unknown).
            let completion = first.strip_prefix(format!("{tag} ").as_bytes()).unwrap_or(&first);
            self.pending_mismatch = Some(Mismatch {
                message: "IDLE was answered with a completion instead of a `+` continuation".into(),
                expected: Some("+ ...".into()),
                actual: Some(self.redactor.redact(&line_text(completion))),
            });
            return Err(Stop::Mismatch);
        }
        if !idle.during.is_empty() {
            self.steps(&idle.during, &format!("{id}.")).await?;
            self.switch_to(&own).await?;
            self.step_id = id.to_string();
        }
        let mut missing = None;
        let mut early = None;
        if !idle.updates.is_empty() {
            let matchers = idle
                .updates
                .iter()
                .map(|p| p.compile(&self.vars))
                .collect::<Result<Vec<_>, _>>()
                .map_err(Stop::Error)?;
            let mut awaited = Awaited {
                seen: vec![false; matchers.len()],
                matchers,
                deadline: Instant::now() + self.config.timeout,
            };
            self.conn()?.waiting_for(format!(
                "untagged updates during IDLE (tag {tag}, step {step_id})"
            ));
            let (more, done) = self
                .imap_read_tags(std::slice::from_ref(&tag), None, false, Some(&mut awaited))
                .await?;
            untagged.extend(more);
            early = done.into_iter().next();
            if let Some(i) = awaited.seen.iter().position(|s| !s) {
                let p = &idle.updates[i];
                missing = Some(Mismatch {
                    message: format!(
                        "no untagged response matching `{}` arrived during IDLE within {} s",
                        p.display(),
                        self.config.timeout.as_secs()
                    ),
                    expected: Some(p.display()),
                    actual: Some(
                        self.redactor.redact(
                            &untagged
                                .iter()
                                .take(40)
                                .map(|u| line_text(u))
                                .collect::<Vec<_>>()
                                .join("\n"),
                        ),
                    ),
                });
            }
            let lines: Vec<&[u8]> = untagged.iter().map(Vec::as_slice).collect();
            for p in &idle.updates {
                self.capture(p, &lines)?;
            }
        }
        let last = match early {
            Some(last) => {
                // The server ended IDLE on its own; DONE would now be a stray command.
                missing = missing.or(Some(Mismatch {
                    message: "the server completed IDLE before the client sent DONE".into(),
                    expected: Some("updates, then the completion after DONE".into()),
                    actual: Some(self.redactor.redact(&line_text(&last))),
                }));
                last
            }
            None => {
                self.record(Direction::Client, "DONE");
                let conn = self.conn()?;
                conn.send(b"DONE\r\n").await?;
                conn.waiting_for(format!(
                    "the completion of IDLE after DONE (tag {tag}, step {step_id})"
                ));
                let reply = self.imap_read(Some(&tag), None).await?;
                untagged.extend(reply.untagged);
                reply.last
            }
        };
        let completion = last
            .strip_prefix(format!("{tag} ").as_bytes())
            .unwrap_or(&last)
            .to_vec();
        let opts = ImapExpect::default();
        let spec = UntaggedSpec {
            patterns: &idle.untagged,
            reply: Some(&idle.reply),
            opts: &opts,
        };
        let mismatch = match missing {
            Some(m) => Some(m),
            None => self.match_completion(&spec, &untagged, &completion, "IDLE")?,
        };
        match mismatch {
            Some(m) => {
                self.pending_mismatch = Some(m);
                Err(Stop::Mismatch)
            }
            None => Ok(()),
        }
    }
}
