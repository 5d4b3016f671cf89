//! Endpoints and the vocabulary the probe modules share.

use serde::Serialize;
use std::fmt;

/// A mail service an endpoint offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Imap,
    Pop3,
    Smtp,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Imap, Service::Pop3, Service::Smtp];

    pub fn name(self) -> &'static str {
        match self {
            Service::Imap => "imap",
            Service::Pop3 => "pop3",
            Service::Smtp => "smtp",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        match name.to_ascii_lowercase().as_str() {
            "imap" => Some(Service::Imap),
            "pop3" | "pop" => Some(Service::Pop3),
            "smtp" => Some(Service::Smtp),
            _ => None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an endpoint uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (993, 995, 465).
    Implicit,
    /// Plaintext greeting, then STARTTLS / STLS (143, 110, 587, 25).
    Starttls,
    /// No TLS at all (the probe still reports whether STARTTLS is offered).
    Plain,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Implicit => "TLS",
            TlsMode::Starttls => "STARTTLS",
            TlsMode::Plain => "plain",
        })
    }
}

/// One thing to probe: a service at host:port with a TLS mode, and where we learned of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub service: Service,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Where the endpoint came from: `preset yandex`, `SRV _imaps._tcp.example.org`,
    /// `MX mx.example.org`, `conventional name`, `command line`.
    pub source: String,
}

impl Endpoint {
    /// `imaps://imap.yandex.ru:993` style, for display.
    pub fn url(&self) -> String {
        let scheme = match (self.service, self.tls) {
            (Service::Imap, TlsMode::Implicit) => "imaps",
            (Service::Imap, _) => "imap",
            (Service::Pop3, TlsMode::Implicit) => "pop3s",
            (Service::Pop3, _) => "pop3",
            (Service::Smtp, TlsMode::Implicit) => "smtps",
            (Service::Smtp, TlsMode::Starttls) if self.port == 587 => "submission",
            (Service::Smtp, _) => "smtp",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}
