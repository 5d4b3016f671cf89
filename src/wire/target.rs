//! Targets are URLs: `pop3://host:port` (plain, 110), `pop3s://host` (implicit
//! TLS, 995), `imap://` (143), `imaps://` (993), `smtp://` (25),
//! `submission://` (587, STARTTLS expected) and `smtps://` (465).

use crate::scenario::Protocol;
use std::fmt;

/// How the connection is secured from the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plaintext; may be upgraded with STLS/STARTTLS.
    Plain,
    /// TLS from the first byte (POP3S, ...).
    Implicit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub protocol: Protocol,
    pub security: Security,
    pub host: String,
    pub port: u16,
    /// User name given in the URL (`pop3://alice@host`), if any.
    pub user: Option<String>,
    /// The scheme promises STARTTLS (`submission://`): the run upgrades
    /// right after the greeting, as with `--starttls`.
    pub starttls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "`{0}` is not a target URL; write it like pop3://mail.example.com:110 or pop3s://mail.example.com"
    )]
    NotAUrl(String),
    #[error("unknown target scheme `{0}://` (known: pop3://, pop3s://, imap://, imaps://, smtp://, submission://, smtps://)")]
    UnknownScheme(String),
    #[error("target `{0}` has no host")]
    NoHost(String),
    #[error("target `{0}`: a password in the URL would be visible to other users; use MAILCHECK_PASSWORD or --password-file")]
    PasswordInUrl(String),
    #[error("target `{0}`: a path, query or fragment means nothing here")]
    ExtraParts(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let url = url::Url::parse(text).map_err(|_| TargetError::NotAUrl(text.to_string()))?;
        let (protocol, security, default_port) = match url.scheme() {
            "pop3" => (Protocol::Pop3, Security::Plain, 110),
            "pop3s" => (Protocol::Pop3, Security::Implicit, 995),
            "imap" => (Protocol::Imap, Security::Plain, 143),
            "imaps" => (Protocol::Imap, Security::Implicit, 993),
            "smtp" | "submission" => (
                Protocol::Smtp,
                Security::Plain,
                if url.scheme() == "smtp" { 25 } else { 587 },
            ),
            "smtps" => (Protocol::Smtp, Security::Implicit, 465),
            other => return Err(TargetError::UnknownScheme(other.to_string())),
        };
        if url.password().is_some() {
            return Err(TargetError::PasswordInUrl(redact_url(text)));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(TargetError::ExtraParts(text.to_string()));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(TargetError::NoHost(text.to_string())),
        };
        let user = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        Ok(Target {
            protocol,
            security,
            host,
            port: url.port().unwrap_or(default_port),
            user,
            starttls: url.scheme() == "submission",
        })
    }

    /// `host:port`, bracketing IPv6 addresses, for connecting and for messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.protocol, self.security) {
            (Protocol::Pop3, Security::Plain) => "pop3",
            (Protocol::Pop3, Security::Implicit) => "pop3s",
            (Protocol::Imap, Security::Plain) => "imap",
            (Protocol::Imap, Security::Implicit) => "imaps",
            (Protocol::Smtp, Security::Plain) if self.starttls => "submission",
            (Protocol::Smtp, Security::Plain) => "smtp",
            (Protocol::Smtp, Security::Implicit) => "smtps",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) => {
            let _ = u.set_password(Some("********"));
            u.to_string()
        }
        Err(_) => "<url>".into(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_and_default_ports() {
        let t = Target::parse("pop3://127.0.0.1:10110").unwrap();
        assert_eq!(
            (t.security, t.port, t.host.as_str()),
            (Security::Plain, 10110, "127.0.0.1")
        );
        let t = Target::parse("pop3s://mail.example.com").unwrap();
        assert_eq!((t.security, t.port), (Security::Implicit, 995));
        assert_eq!(Target::parse("pop3://[::1]").unwrap().authority(), "[::1]:110");
        let t = Target::parse("submission://mx.example").unwrap();
        assert_eq!(
            (t.protocol, t.security, t.port, t.starttls),
            (Protocol::Smtp, Security::Plain, 587, true)
        );
        assert_eq!(t.to_string(), "submission://mx.example:587");
        let t = Target::parse("smtps://mx.example").unwrap();
        assert_eq!((t.security, t.port, t.starttls), (Security::Implicit, 465, false));
        assert_eq!(Target::parse("smtp://mx.example").unwrap().port, 25);
        assert_eq!(
            Target::parse("pop3://a%40b.c@h").unwrap().user.as_deref(),
            Some("a@b.c")
        );
    }

    #[test]
    fn rejects_bad_targets() {
        assert!(matches!(
            Target::parse("gopher://x"),
            Err(TargetError::UnknownScheme(_))
        ));
        assert!(matches!(
            Target::parse("localhost:110"),
            Err(TargetError::UnknownScheme(_) | TargetError::NotAUrl(_))
        ));
        let e = Target::parse("pop3://u:secretpw@h").unwrap_err();
        assert!(!e.to_string().contains("secretpw"));
        assert!(matches!(
            Target::parse("pop3://h/x"),
            Err(TargetError::ExtraParts(_))
        ));
    }
}
