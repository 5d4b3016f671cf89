//! The SMTP side of the runner: every reply read through the SMTP grammar
//! and state model, commands matched with their replies in order (also when
//! pipelined), AUTH with redacted blobs, DATA with dot-stuffing (or raw bytes
//! on purpose), STARTTLS with the injection check.

use super::body::BodyMatcher;
use super::outcome::{Direction, Mismatch};
use super::runner::{Goodbye, Run, Stop};
use crate::finding::{line_text, Finding};
use crate::proto::smtp::{self, Command, DotStuffer, Reply, ReplyReader, Verb};
use crate::scenario::pattern::Pattern;
use crate::scenario::template::Template;
use crate::scenario::{DataStep, Exchange, MessageSource};
use crate::secret::{Secret, MASK};
use crate::wire::WireError;
use std::time::Duration;

/// Longest piece read from the socket at once.
const READ_CAP: usize = 64 * 1024;
/// Reply lines shown in the transcript per reply.
const LINES_SHOWN: usize = 40;
/// Lines of a message shown in the transcript.
const MESSAGE_LINES_SHOWN: usize = 8;
/// How much message text is stuffed and written at once.
const SEND_CHUNK: usize = 256 * 1024;
/// Largest message file `capture:` keeps in memory.
const KEEP_CAP: usize = 64 * 1024 * 1024;
/// How long to listen for replies nobody asked for (after raw data, or
/// after a STARTTLS with a command injected behind it).
const QUIET_GRACE: Duration = Duration::from_secs(1);

/// One SMTP connection's protocol state.
pub(crate) struct SmtpConn {
    reader: ReplyReader,
    pub(crate) session: smtp::Session,
}

impl SmtpConn {
    pub(crate) fn new(tls: bool) -> SmtpConn {
        SmtpConn {
            reader: ReplyReader::new(),
            session: smtp::Session::new(tls),
        }
    }
}

const GOODBYE_SMTP: Goodbye = Goodbye {
    verb: "QUIT",
    rfc: "RFC 5321 section 4.1.1.10",
    data_rule: "smtp.data-after-quit",
    close_rule: "smtp.quit-close",
    close_must: true,
};

/// The default final reply of an AUTH step and of a DATA step.
fn default_reply(code: &str) -> Result<Pattern, Stop> {
    Pattern::glob(code).map_err(Stop::Error)
}

/// Whether raw message bytes hold a line end other than CRLF followed by a
/// `.` line: what a server that splits data at bare LF would take as the end.
fn has_smuggling_dot(raw: &[u8]) -> bool {
    raw.windows(3).enumerate().any(|(i, w)| {
        let lf_dot = w[0] == b'\n' && w[1] == b'.' && (w[2] == b'\n' || w[2] == b'\r');
        let bare = i == 0 || raw[i - 1] != b'\r';
        (lf_dot && bare) || (w[0] == b'\r' && w[1] == b'.' && w[2] == b'\r' && raw.get(i + 3) != Some(&b'\n'))
    })
}

impl Run<'_> {
    fn smtp_conn(&mut self) -> Result<&mut SmtpConn, Stop> {
        self.smtp
            .as_mut()
            .ok_or_else(|| Stop::Error("no SMTP session".into()))
    }

    /// Read one reply, line by line, through the grammar.
    async fn smtp_read(&mut self) -> Result<Reply, Stop> {
        let mut found = Vec::new();
        let mut shown: Vec<String> = Vec::new();
        let mut lines = 0usize;
        let result: Result<Reply, WireError> = async {
            loop {
                let Run { conn, smtp, .. } = &mut *self;
                let conn = conn
                    .as_mut()
                    .ok_or(WireError::Usage("the connection is closed".into()))?;
                let sc = smtp.as_mut().ok_or(WireError::Usage("no SMTP session".into()))?;
                let line = conn.read_line(READ_CAP).await?;
                let (bytes, complete) = (line.bytes.to_vec(), line.complete);
                let more_waiting = !conn.buffered().is_empty();
                if complete {
                    lines += 1;
                    if shown.len() < LINES_SHOWN {
                        shown.push(line_text(&bytes));
                    }
                }
                if let Some(reply) = sc.reader.feed(&bytes, complete, more_waiting, &mut found) {
                    return Ok(reply);
                }
            }
        }
        .await;
        for s in shown {
            self.record(Direction::Server, &s);
        }
        if lines > LINES_SHOWN {
            self.record(
                Direction::Note,
                &format!("... {} more lines of this reply", lines - LINES_SHOWN),
            );
        }
        self.add_findings(found);
        result.map_err(Stop::from)
    }

    /// Hand a reply to the state model (matched with the oldest command sent).
    fn smtp_judge(&mut self, reply: &Reply) -> Result<Option<Command>, Stop> {
        let mut found = Vec::new();
        let cmd = self.smtp_conn()?.session.reply(reply, &mut found);
        self.add_findings(found);
        Ok(cmd)
    }

    /// The greeting: 220 lets the session go on.
    pub(crate) async fn smtp_greeting(&mut self, tls: bool) -> Result<(), Stop> {
        self.smtp = Some(SmtpConn::new(tls));
        let reply = self.smtp_read().await?;
        self.greeting = reply.first_line().into_bytes();
        let mut found = Vec::new();
        self.smtp_conn()?.session.greet(&reply, &mut found);
        self.add_findings(found);
        if reply.code != 220 {
            let shown = match reply.code {
                0 => format!("`{}` has no reply code", reply.lines.join(" ")),
                _ => reply.text(),
            };
            return Err(Stop::Error(format!(
                "the server's greeting is not 220: {}",
                self.redactor.redact(&shown)
            )));
        }
        Ok(())
    }

    /// Send one command line (CRLF added), showing `shown` in the transcript.
    async fn smtp_send_command(&mut self, line: &str, shown: &str) -> Result<Command, Stop> {
        let cmd = Command::parse(line);
        let shown = self.redactor.redact(shown);
        self.record(Direction::Client, &shown);
        let label = self.redactor.redact(&cmd.label());
        let step_id = self.step_id.clone();
        let conn = self.conn()?;
        conn.send(format!("{line}\r\n").as_bytes()).await?;
        conn.waiting_for(format!("the reply to `{label}` (step {step_id})"));
        self.smtp_conn()?.session.sent(cmd.clone());
        Ok(cmd)
    }

    /// Match a reply against an `S:` pattern: the code alone (`S: 250`,
    /// `S: "5*"`) or the first line as `CODE TEXT` (`S: "250 2.1.0*"`).
    fn smtp_match(&mut self, p: &Pattern, reply: &Reply, label: &str) -> Result<Option<Mismatch>, Stop> {
        let code = reply.code.to_string();
        let first = reply.first_line();
        if self.capture(p, &[code.as_bytes(), first.as_bytes()])? {
            return Ok(None);
        }
        Ok(Some(Mismatch {
            message: format!("reply to `{label}` does not match"),
            expected: Some(p.display()),
            actual: Some(self.redactor.redact(&full_text(reply))),
        }))
    }

    /// What a reply means for the connection: QUIT closes it, STARTTLS
    /// upgrades it, 421 ends it.
    async fn smtp_after(&mut self, cmd: &Command, reply: &Reply) -> Result<(), Stop> {
        match (&cmd.verb, reply.code) {
            (Verb::Quit, 221) => self.await_close(&GOODBYE_SMTP).await,
            (Verb::StartTls, 220) => {
                self.upgrade_after_stls().await?;
                self.smtp_conn()?.session.tls_started();
            }
            (_, 421) => {
                self.record(Direction::Note, "the server is closing the connection (421)");
                self.await_close(&GOODBYE_SMTP_421).await;
            }
            _ => {}
        }
        Ok(())
    }

    /// `C:` with `S:` and `body:` (the reply's lines, without their codes).
    pub(crate) async fn smtp_exchange(&mut self, x: &Exchange) -> Result<(), Stop> {
        let text = x.command.expand(&self.vars).map_err(Stop::Error)?;
        let masked = x.command.expand_masked(&self.vars).map_err(Stop::Error)?;
        if text.len() + 2 > smtp::COMMAND_LINE_MAX {
            self.record(
                Direction::Note,
                &format!(
                    "this command line is {} octets with CRLF, over the {} of RFC 5321 section 4.5.3.1.4",
                    text.len() + 2,
                    smtp::COMMAND_LINE_MAX
                ),
            );
        }
        let cmd = self.smtp_send_command(&text, &masked).await?;
        let label = self.redactor.redact(&cmd.label());
        let reply = self.smtp_read().await?;
        self.smtp_judge(&reply)?;
        let mut mismatch = match &x.reply {
            Some(p) => self.smtp_match(p, &reply, &label)?,
            None => None,
        };
        if mismatch.is_none() {
            if let Some(b) = &x.body {
                let mut m = BodyMatcher::new(b, &self.vars).map_err(Stop::Error)?;
                let mut octets = 0u64;
                for l in &reply.lines {
                    let line = format!("{l}\r\n");
                    octets += line.len() as u64;
                    m.feed(line.as_bytes(), true);
                }
                if let Err(mut e) = m.finish(reply.lines.len() as u64, octets, &mut self.vars) {
                    e.actual = e.actual.map(|a| self.redactor.redact(&a));
                    e.message = format!("lines of the reply to `{label}`: {}", e.message);
                    mismatch = Some(e);
                }
            }
        }
        self.smtp_after(&cmd, &reply).await?;
        self.finish_step(mismatch)
    }

    fn finish_step(&mut self, mismatch: Option<Mismatch>) -> Result<(), Stop> {
        match mismatch {
            Some(m) => {
                self.pending_mismatch = Some(m);
                Err(Stop::Mismatch)
            }
            None => Ok(()),
        }
    }

    /// Several commands in one write (RFC 2920); the replies must come back
    /// in the order of the commands, each matched with its own `S:`.
    pub(crate) async fn smtp_pipeline(&mut self, xs: &[Exchange]) -> Result<(), Stop> {
        let mut wire = String::new();
        let mut cmds = Vec::new();
        for x in xs {
            let text = x.command.expand(&self.vars).map_err(Stop::Error)?;
            let masked = x.command.expand_masked(&self.vars).map_err(Stop::Error)?;
            let shown = self.redactor.redact(&masked);
            self.record(Direction::Client, &shown);
            wire.push_str(&text);
            wire.push_str("\r\n");
            cmds.push(Command::parse(&text));
        }
        let step_id = self.step_id.clone();
        {
            let conn = self.conn()?;
            conn.send(wire.as_bytes()).await?;
        }
        for c in &cmds {
            self.smtp_conn()?.session.sent(c.clone());
        }
        let mut mismatch = None;
        for (i, (x, cmd)) in xs.iter().zip(&cmds).enumerate() {
            let label = self.redactor.redact(&cmd.label());
            self.conn()?.waiting_for(format!(
                "reply {} of {} to the pipelined commands, for `{label}` (step {step_id})",
                i + 1,
                cmds.len()
            ));
            let reply = self.smtp_read().await?;
            self.smtp_judge(&reply)?;
            if mismatch.is_none() {
                if let Some(p) = &x.reply {
                    mismatch = self.smtp_match(p, &reply, &format!("pipelined {label}"))?;
                }
            }
            self.smtp_after(cmd, &reply).await?;
        }
        self.finish_step(mismatch)
    }

    /// EHLO with the run's client name, as the runner's own step (discovery, `--starttls`).
    pub(crate) async fn smtp_ehlo(&mut self) -> Result<Reply, Stop> {
        let name = self.vars.text("client").unwrap_or("localhost").to_string();
        let line = format!("EHLO {name}");
        self.smtp_send_command(&line, &line).await?;
        let reply = self.smtp_read().await?;
        self.smtp_judge(&reply)?;
        if reply.code != 250 {
            return Err(Stop::Error(format!(
                "EHLO was refused: {}",
                self.redactor.redact(&reply.text())
            )));
        }
        Ok(reply)
    }

    /// STARTTLS and the handshake. With `inject`, that command goes in the
    /// same write as STARTTLS: a server that answers it after the handshake
    /// took plaintext bytes as if they came through TLS (CVE-2011-0411).
    pub(crate) async fn smtp_starttls(&mut self, inject: Option<&Template>) -> Result<(), Stop> {
        let injected = match inject {
            Some(t) => Some(t.expand(&self.vars).map_err(Stop::Error)?),
            None => None,
        };
        let step_id = self.step_id.clone();
        self.record(Direction::Client, "STARTTLS");
        let mut wire = b"STARTTLS\r\n".to_vec();
        if let Some(i) = &injected {
            self.record(
                Direction::Client,
                &format!(
                    "{} (in the same write, before the handshake)",
                    self.redactor.redact(i)
                ),
            );
            wire.extend_from_slice(i.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        {
            let conn = self.conn()?;
            conn.send(&wire).await?;
            conn.waiting_for(format!("the reply to `STARTTLS` (step {step_id})"));
        }
        let cmd = Command::parse("STARTTLS");
        self.smtp_conn()?.session.sent(cmd.clone());
        let reply = self.smtp_read().await?;
        self.smtp_judge(&reply)?;
        if reply.code != 220 {
            // Still plaintext: the injected command gets its reply here.
            if injected.is_some() {
                self.smtp_conn()?
                    .session
                    .sent(Command::parse(injected.as_deref().unwrap_or("")));
                let r = self.smtp_read().await?;
                self.smtp_judge(&r)?;
            }
            self.pending_mismatch = Some(Mismatch {
                message: "STARTTLS was refused".into(),
                expected: Some("220*".into()),
                actual: Some(self.redactor.redact(&full_text(&reply))),
            });
            return Err(Stop::Mismatch);
        }
        self.smtp_after(&cmd, &reply).await?;
        if injected.is_some() {
            let extra = self.smtp_quiet().await?;
            if !extra.is_empty() {
                self.add_findings(vec![Finding::must(
                    "smtp.starttls-injection",
                    "RFC 3207 section 4.2",
                    format!(
                        "after the TLS handshake the server answered {} command(s) that were sent in plaintext with STARTTLS ({}): it must discard them",
                        extra.len(),
                        extra.iter().map(Reply::first_line).collect::<Vec<_>>().join(" / ")
                    ),
                )]);
            }
        }
        Ok(())
    }

    /// Replies that arrive unasked within a short grace period.
    async fn smtp_quiet(&mut self) -> Result<Vec<Reply>, Stop> {
        let grace = self.config.timeout.min(QUIET_GRACE);
        let mut extra = Vec::new();
        loop {
            let old = {
                let conn = self.conn()?;
                conn.waiting_for("replies nobody asked for");
                conn.set_timeout(grace)
            };
            let result = self.smtp_read().await;
            if let Some(c) = self.conn.as_mut() {
                c.set_timeout(old);
            }
            match result {
                Ok(r) => {
                    self.record(Direction::Note, "the reply above answered no command of ours");
                    extra.push(r);
                    if extra.len() >= 20 {
                        return Ok(extra);
                    }
                }
                // Quiet, or gone: either way nothing more was said.
                Err(_) => return Ok(extra),
            }
        }
    }

    /// AUTH with one mechanism; the blobs are secrets in every output.
    pub(crate) async fn smtp_auth(
        &mut self,
        mechanism: &str,
        user: Option<&Template>,
        password: Option<&Template>,
        expect: Option<&Pattern>,
    ) -> Result<(), Stop> {
        let (user, password) = self.credentials(user, password, "AUTH")?;
        self.redactor.add(&password);
        let label = format!("AUTH {mechanism}");
        let reply = match mechanism {
            "PLAIN" => {
                let blob = Secret::new(smtp::auth_plain(&user, password.expose()));
                self.redactor.add(&blob);
                let line = format!("AUTH PLAIN {}", blob.expose());
                self.smtp_send_command(&line, &format!("AUTH PLAIN {MASK}"))
                    .await?;
                let mut reply = self.smtp_read().await?;
                self.smtp_judge(&reply)?;
                if reply.code == 334 {
                    // Some servers ignore an initial response and ask again.
                    reply = self.smtp_auth_line(blob.expose(), true).await?;
                }
                reply
            }
            "LOGIN" => {
                self.smtp_send_command("AUTH LOGIN", "AUTH LOGIN").await?;
                let mut reply = self.smtp_read().await?;
                self.smtp_judge(&reply)?;
                if reply.code == 334 {
                    reply = self.smtp_auth_line(&smtp::auth_login_line(&user), false).await?;
                }
                if reply.code == 334 {
                    let blob = Secret::new(smtp::auth_login_line(password.expose()));
                    self.redactor.add(&blob);
                    reply = self.smtp_auth_line(blob.expose(), true).await?;
                }
                reply
            }
            _ => {
                self.smtp_send_command("AUTH CRAM-MD5", "AUTH CRAM-MD5").await?;
                let mut reply = self.smtp_read().await?;
                self.smtp_judge(&reply)?;
                if reply.code == 334 {
                    let challenge = reply.lines.first().cloned().unwrap_or_default();
                    let Some(answer) = smtp::auth_cram_md5(&user, password.expose(), &challenge) else {
                        // Cancel the exchange (RFC 4954 section 4) before giving up.
                        let _ = self.smtp_auth_line("*", false).await;
                        return Err(Stop::Error(format!(
                            "the CRAM-MD5 challenge `{}` is not base64",
                            self.redactor.redact(&challenge)
                        )));
                    };
                    let answer = Secret::new(answer);
                    self.redactor.add(&answer);
                    reply = self.smtp_auth_line(answer.expose(), true).await?;
                }
                reply
            }
        };
        let want = match expect {
            Some(p) => p.clone(),
            None => default_reply("235*")?,
        };
        let mismatch = self.smtp_match(&want, &reply, &label)?;
        self.finish_step(mismatch)
    }

    /// One line of an AUTH exchange after a 334.
    async fn smtp_auth_line(&mut self, line: &str, secret: bool) -> Result<Reply, Stop> {
        let shown = if secret {
            MASK.to_string()
        } else {
            line.to_string()
        };
        self.record(Direction::Client, &shown);
        let step_id = self.step_id.clone();
        {
            let conn = self.conn()?;
            conn.send(format!("{line}\r\n").as_bytes()).await?;
            conn.waiting_for(format!("the reply to an AUTH response (step {step_id})"));
        }
        self.smtp_conn()?.session.sent(Command::auth_response());
        let reply = self.smtp_read().await?;
        self.smtp_judge(&reply)?;
        Ok(reply)
    }

    /// The `login` step on SMTP: AUTH with the best mechanism offered.
    pub(crate) async fn smtp_login(
        &mut self,
        user: Option<&Template>,
        password: Option<&Template>,
    ) -> Result<(), Stop> {
        let offered = self.smtp_conn()?.session.auth_mechanisms();
        let mech = ["PLAIN", "LOGIN", "CRAM-MD5"]
            .into_iter()
            .find(|m| offered.iter().any(|o| o == m))
            .unwrap_or("PLAIN");
        self.smtp_auth(mech, user, password, None).await
    }

    /// `login: {optional: true}`: AUTH when the server offers it and the
    /// run has credentials, else a note and on.
    pub(crate) async fn smtp_login_if_offered(
        &mut self,
        user: Option<&Template>,
        password: Option<&Template>,
    ) -> Result<(), Stop> {
        let offered = !self.smtp_conn()?.session.auth_mechanisms().is_empty();
        let creds = self.config.user.is_some() && self.config.password.is_some();
        match (offered, creds) {
            (true, true) => self.smtp_login(user, password).await,
            (false, _) => {
                self.record(
                    Direction::Note,
                    "the server offers no AUTH here: going on without it",
                );
                Ok(())
            }
            (true, false) => {
                self.record(
                    Direction::Note,
                    "AUTH is offered but the run has no credentials: going on without it",
                );
                Ok(())
            }
        }
    }

    /// DATA, then the message (dot-stuffed, or raw bytes exactly), then the
    /// reply to its end; after raw bytes, listen for replies nobody asked for.
    pub(crate) async fn smtp_data(&mut self, d: &DataStep) -> Result<(), Stop> {
        let want = match &d.reply {
            Some(p) => p.clone(),
            None => default_reply("250*")?,
        };
        let data = self.smtp_send_command("DATA", "DATA").await?;
        let reply = self.smtp_read().await?;
        self.smtp_judge(&reply)?;
        if reply.code != 354 {
            // The server refused DATA: that reply is what the step gets.
            let m = self.smtp_match(&want, &reply, "DATA")?;
            self.smtp_after(&data, &reply).await?;
            return self.finish_step(m);
        }
        let step_id = self.step_id.clone();
        let (octets, raw) = match &d.message {
            MessageSource::Text(t) => {
                let text = t.expand(&self.vars).map_err(Stop::Error)?;
                self.show_message(text.as_bytes());
                let mut stuffer = DotStuffer::new();
                let mut out = Vec::with_capacity(SEND_CHUNK + 1024);
                for chunk in text.as_bytes().chunks(SEND_CHUNK) {
                    stuffer.feed(chunk, &mut out);
                    self.conn()?.send(&out).await?;
                    out.clear();
                }
                let (octets, longest) = stuffer.finish(&mut out);
                self.conn()?.send(&out).await?;
                if longest > smtp::TEXT_LINE_MAX {
                    self.record(
                        Direction::Note,
                        &format!("the message has a {longest}-octet line, over the {} of RFC 5321 section 4.5.3.1.6 (on purpose?)", smtp::TEXT_LINE_MAX),
                    );
                }
                if let Some(name) = &d.capture {
                    self.vars.set_message(name, smtp::normalise_crlf(text.as_bytes()));
                }
                (octets, None)
            }
            MessageSource::File(path) => {
                let (octets, longest, kept) = self.send_file(path, d.capture.is_some()).await?;
                if longest > smtp::TEXT_LINE_MAX {
                    self.record(
                        Direction::Note,
                        &format!("the message has a {longest}-octet line, over the {} of RFC 5321 section 4.5.3.1.6 (on purpose?)", smtp::TEXT_LINE_MAX),
                    );
                }
                if let (Some(name), Some(bytes)) = (&d.capture, kept) {
                    self.vars.set_message(name, bytes);
                }
                (octets, None)
            }
            MessageSource::Raw(t) => {
                let bytes = t.expand(&self.vars).map_err(Stop::Error)?.into_bytes();
                self.show_message(&bytes);
                self.record(
                    Direction::Note,
                    "(sent exactly as written: no stuffing, no terminator added)",
                );
                self.conn()?.send(&bytes).await?;
                if let Some(name) = &d.capture {
                    self.vars.set_message(name, bytes.clone());
                }
                (bytes.len() as u64, Some(bytes))
            }
        };
        self.conn()?.waiting_for(format!(
            "the reply to the end of the message data (step {step_id})"
        ));
        self.smtp_conn()?.session.sent(Command::message(octets));
        let reply = self.smtp_read().await?;
        self.smtp_judge(&reply)?;
        let mismatch = self.smtp_match(&want, &reply, "the message data")?;
        if let Some(bytes) = raw {
            let extra = self.smtp_quiet().await?;
            if !extra.is_empty() {
                let shown = extra
                    .iter()
                    .map(Reply::first_line)
                    .collect::<Vec<_>>()
                    .join(" / ");
                let finding = if has_smuggling_dot(&bytes) {
                    Finding::must(
                        "smtp.smuggling",
                        "RFC 5321 sections 2.3.8 and 4.1.1.4",
                        format!("one message got {} replies: the server ended the data at a `.` line without CRLF on both sides, and read what followed as commands (SMTP smuggling): {shown}", extra.len() + 1),
                    )
                } else {
                    Finding::must(
                        "smtp.extra-reply",
                        "RFC 5321 section 4.2",
                        format!("one message got {} replies: {shown}", extra.len() + 1),
                    )
                };
                self.add_findings(vec![finding]);
            }
        }
        self.finish_step(mismatch)
    }

    /// Stream a message file from disk, stuffed; with `keep`, also return
    /// it normalised (for `delivered:`), up to [`KEEP_CAP`] octets.
    async fn send_file(
        &mut self,
        path: &std::path::Path,
        keep: bool,
    ) -> Result<(u64, usize, Option<Vec<u8>>), Stop> {
        use tokio::io::AsyncReadExt;
        let shown = path.display().to_string();
        let fail = |e: std::io::Error| Stop::Error(format!("cannot read the message file {shown}: {e}"));
        let mut file = tokio::fs::File::open(path).await.map_err(fail)?;
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        self.record(
            Direction::Client,
            &format!("<message from {shown}: {size} octets>"),
        );
        let mut stuffer = DotStuffer::new();
        let mut buf = vec![0u8; SEND_CHUNK];
        let mut out = Vec::with_capacity(SEND_CHUNK + SEND_CHUNK / 16);
        let mut kept = keep.then(Vec::new);
        loop {
            let n = file.read(&mut buf).await.map_err(fail)?;
            if n == 0 {
                break;
            }
            stuffer.feed(&buf[..n], &mut out);
            if let Some(k) = &mut kept {
                if k.len() + n <= KEEP_CAP {
                    k.extend_from_slice(&buf[..n]);
                } else {
                    return Err(Stop::Error(format!(
                        "`capture:` keeps messages up to {} MiB; {shown} is larger",
                        KEEP_CAP / (1024 * 1024)
                    )));
                }
            }
            self.conn()?.send(&out).await?;
            out.clear();
        }
        let (octets, longest) = stuffer.finish(&mut out);
        self.conn()?.send(&out).await?;
        Ok((octets, longest, kept.map(|k| smtp::normalise_crlf(&k))))
    }

    /// Show the start of a message in the transcript and its size.
    fn show_message(&mut self, bytes: &[u8]) {
        let mut lines = bytes.split_inclusive(|&b| b == b'\n');
        for line in lines.by_ref().take(MESSAGE_LINES_SHOWN) {
            let t = line_text(line);
            self.record(Direction::Client, &t);
        }
        let rest = lines.count();
        if rest > 0 {
            self.record(
                Direction::Note,
                &format!("... {rest} more lines, {} octets in all", bytes.len()),
            );
        }
    }

    /// `send:` bytes exactly as written, then one reply (and no more).
    pub(crate) async fn smtp_send_raw(
        &mut self,
        bytes: &Template,
        expect: Option<&Pattern>,
    ) -> Result<(), Stop> {
        let text = bytes.expand(&self.vars).map_err(Stop::Error)?;
        let masked = bytes.expand_masked(&self.vars).map_err(Stop::Error)?;
        let shown = self
            .redactor
            .redact(&crate::finding::escape_bytes(masked.as_bytes(), 300));
        self.record(Direction::Client, &shown);
        let first_line = text.split(['\r', '\n']).next().unwrap_or("");
        let cmd = Command::parse(first_line);
        let step_id = self.step_id.clone();
        {
            let conn = self.conn()?;
            conn.send(text.as_bytes()).await?;
            conn.waiting_for(format!("the reply to the bytes sent (step {step_id})"));
        }
        self.smtp_conn()?.session.sent(cmd.clone());
        let reply = self.smtp_read().await?;
        self.smtp_judge(&reply)?;
        let mismatch = match expect {
            Some(p) => self.smtp_match(p, &reply, "the bytes sent")?,
            None => None,
        };
        self.smtp_after(&cmd, &reply).await?;
        self.finish_step(mismatch)
    }
}

const GOODBYE_SMTP_421: Goodbye = Goodbye {
    verb: "a 421 reply",
    rfc: "RFC 5321 section 3.8",
    data_rule: "smtp.data-after-421",
    close_rule: "smtp.421-close",
    close_must: false,
};

/// Every line of a reply as the server sent it (separators normalised).
fn full_text(reply: &Reply) -> String {
    let n = reply.lines.len();
    reply
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let sep = if i + 1 < n { '-' } else { ' ' };
            format!("{}{sep}{l}", reply.code)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_dots_are_recognised() {
        assert!(has_smuggling_dot(b"a\n.\nMAIL FROM:<x>\r\n"));
        assert!(has_smuggling_dot(b"a\n.\r\nRSET\r\n"));
        assert!(has_smuggling_dot(b"a\r.\rRSET"));
        assert!(!has_smuggling_dot(b"a\r\n.\r\n"));
        assert!(!has_smuggling_dot(b"a\r\n..b\r\n.\r\n"));
    }
}
