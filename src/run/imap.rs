//! The IMAP side of the runner: tags, reading responses through the IMAP
//! reader (framing with literals, grammar, session model) until the tagged
//! completion, and matching untagged responses in any order.

use super::body::BodyMatcher;
use super::outcome::{Direction, Mismatch};
use super::runner::{Goodbye, Run, Stop};
use crate::finding::line_text;
use crate::proto::imap::{self, ReadEvent, Response};
use crate::scenario::pattern::Pattern;
use crate::scenario::template::{Template, Value};
use crate::scenario::Exchange;
use crate::secret::Secret;

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
}

impl ImapConn {
    pub(crate) fn new(tls: bool) -> ImapConn {
        ImapConn {
            reader: imap::Reader::new(imap::Limits::default(), tls),
            tags: imap::TagGen::new("a"),
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
        let (untagged, mut done) = self.imap_read_tags(&want, matcher, false).await?;
        Ok(Reply {
            untagged,
            last: done.pop().unwrap_or_default(),
        })
    }

    /// Read until every tag in `want` has its completion (several when
    /// pipelining), or without tags the first response (the greeting).
    /// Completions come back in the order of `want`.
    async fn imap_read_tags(
        &mut self,
        want: &[String],
        mut matcher: Option<&mut BodyMatcher<'_>>,
        continue_ends: bool,
    ) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), Stop> {
        let mut untagged = Vec::new();
        let mut shown = 0usize;
        let mut found = Vec::new();
        let mut records: Vec<(Direction, String)> = Vec::new();
        let mut done: Vec<Option<Vec<u8>>> = vec![None; want.len().max(1)];
        let result: Result<(), Stop> = async {
            loop {
                let Run { conn, imap, .. } = &mut *self;
                let conn = conn
                    .as_mut()
                    .ok_or_else(|| Stop::Error("the connection is closed".into()))?;
                let imap = imap
                    .as_mut()
                    .ok_or_else(|| Stop::Error("no IMAP session".into()))?;
                let line = conn.read_line(READ_CAP).await?;
                let mut input = line.bytes;
                loop {
                    let (used, ev) = imap.reader.feed(input, &mut found);
                    let Some(ev) = ev else { break };
                    if let ReadEvent::Response { frame, response } = ev {
                        let first = frame.first_line().to_vec();
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
                            if untagged.len() < UNTAGGED_KEPT {
                                untagged.push(first);
                            }
                        }
                    }
                    input = &input[used..];
                }
                if done.iter().all(Option::is_some) {
                    return Ok(());
                }
            }
        }
        .await;
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

    /// The greeting: `* OK` or `* PREAUTH` lets the session go on.
    pub(crate) async fn imap_greeting(&mut self, tls: bool) -> Result<(), Stop> {
        self.imap = Some(ImapConn::new(tls));
        let reply = self.imap_read(None, None).await?;
        let ok = imap::parse_status(&String::from_utf8_lossy(&reply.last))
            .is_some_and(|s| s.tag == "*" && matches!(s.cond, imap::Cond::Ok | imap::Cond::Preauth));
        if !ok {
            return Err(Stop::Error(format!(
                "the server's greeting is not * OK: {}",
                line_text(&reply.last)
            )));
        }
        Ok(())
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
        // `literal:` data goes after the line as a synchronizing literal, with CRLF line ends.
        let literal = match &x.literal {
            Some(t) => Some(crlf(&t.expand(&self.vars).map_err(Stop::Error)?)),
            None => None,
        };
        let (text, masked) = match &literal {
            Some(data) => (
                format!("{text} {{{}}}", data.len()),
                format!("{masked} {{{}}}", data.len()),
            ),
            None => (text, masked),
        };
        let line = format!("{tag} {text}");
        let cmd = imap::Command::parse(line.as_bytes())
            .map_err(|e| Stop::Error(format!("`{masked}` is not a command: {e}")))?;
        if cmd.sync_literals() > usize::from(literal.is_some()) {
            return Err(Stop::Error(
                "write synchronizing literals with `literal:` (the runner adds {n} and waits for +); {n+} works inline"
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
        {
            let conn = self.conn()?;
            conn.send(format!("{line}\r\n").as_bytes()).await?;
            conn.waiting_for(format!("the completion of `{label}` (tag {tag}, step {step_id})"));
        }
        let mut matcher = match &x.body {
            Some(b) => Some(BodyMatcher::new(b, &self.vars).map_err(Stop::Error)?),
            None => None,
        };
        let mut refused = None;
        if let Some(data) = &literal {
            let (_, got) = self
                .imap_read_tags(std::slice::from_ref(&tag), None, true)
                .await?;
            let first = got.into_iter().next().unwrap_or_default();
            if first.starts_with(b"+") {
                self.record(Direction::Client, &format!("<literal: {} octets>", data.len()));
                let mut bytes = data.clone().into_bytes();
                bytes.extend_from_slice(b"\r\n");
                self.conn()?.send(&bytes).await?;
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

        let mut mismatch = self.match_completion(x, &reply.untagged, &completion, &label)?;
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

    /// Match one command's `S:`: each untagged pattern against any untagged
    /// response (in any order), then the completion without its tag.
    fn match_completion(
        &mut self,
        x: &Exchange,
        untagged: &[Vec<u8>],
        completion: &[u8],
        label: &str,
    ) -> Result<Option<Mismatch>, Stop> {
        let lines: Vec<&[u8]> = untagged.iter().map(Vec::as_slice).collect();
        for p in &x.untagged {
            if !self.capture(p, &lines)? {
                let got: Vec<String> = lines.iter().take(40).map(|u| line_text(u)).collect();
                return Ok(Some(Mismatch {
                    message: format!("no untagged response to `{label}` matches `{}`", p.display()),
                    expected: Some(p.display()),
                    actual: Some(self.redactor.redact(&got.join("\n"))),
                }));
            }
        }
        if let Some(p) = &x.reply {
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
        let (untagged, completions) = self.imap_read_tags(&tags, None, false).await?;
        let mut mismatch = None;
        for (i, x) in xs.iter().enumerate() {
            let completion = completions[i]
                .strip_prefix(format!("{} ", tags[i]).as_bytes())
                .unwrap_or(&completions[i]);
            let m = self.match_completion(x, &untagged, completion, &format!("pipelined {}", labels[i]))?;
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
        let user = match user {
            Some(t) => t.expand(&self.vars).map_err(Stop::Error)?,
            None => self
                .config
                .user
                .clone()
                .ok_or_else(|| Stop::Error("login needs --user".into()))?,
        };
        let password = match password {
            Some(t) => Secret::new(t.expand(&self.vars).map_err(Stop::Error)?),
            None => self
                .config
                .password
                .clone()
                .ok_or_else(|| Stop::Error("login needs MAILCHECK_PASSWORD or --password-file".into()))?,
        };
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
}
