//! Known mail failures: how we recognise them and what we tell the user.
//!
//! One table serves both `mailcheck probe`, which hands over what a failed layer saw as an
//! [`Observation`], and `mailcheck explain`, which looks up text pasted from a mail client.
//! When nothing in the table fits we return nothing, so the caller shows the server's own
//! words instead of a guess.
//!
//! Matching works on normalised text (lowercase, `-`/`_` read as spaces, whitespace collapsed).
//! A pattern is one or more fragments joined by `+`; all fragments must occur, each on word
//! boundaries, in any order. Entries are listed most specific first: the first that fits wins.

use super::model::Service;
use serde::Serialize;

/// What to tell the user about one failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// Stable kebab-case key, used in JSON, JUnit and tests.
    pub id: &'static str,
    pub title: &'static str,
    pub cause: &'static str,
    pub fix: &'static str,
    /// The specifics of this case (which port, who issued the certificate...), filled in by
    /// [`advise`]; the table itself holds only the general words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the probe saw. The check chain builds one of these for each failed (or warned) layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// A reply from the server: `stage` tells where in the chain, `text` is the whole reply line(s).
    Reply {
        service: Service,
        stage: Stage,
        text: String,
    },
    Tls(TlsProblem),
    Socket(SocketProblem),
}

/// Where in the check chain a server reply came from; the same words mean different things
/// at different stages (a 530 after MAIL FROM is not a 530 after AUTH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    Capabilities,
    StartTls,
    Login,
    ReadOnly,
    Send,
}

/// Why certificate verification or the TLS handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsProblem {
    Expired {
        not_after: String,
    },
    /// `clock_looks_wrong`: the local clock is before the certificate's notBefore by more than a day
    /// AND before the build date of this tool (pass that decision in; the chain computes it).
    NotYetValid {
        not_before: String,
        clock_looks_wrong: bool,
    },
    WrongHost {
        cert_names: Vec<String>,
    },
    SelfSigned {
        subject: String,
    },
    /// `issuer` = issuer DN; [`advise`] recognises antivirus and proxy CAs that re-sign mail TLS
    /// by the issuer text.
    UnknownIssuer {
        issuer: String,
    },
    MissingIntermediate {
        issuer: String,
    },
    Other(String),
}

/// Why the TCP connection (or the first bytes on it) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketProblem {
    Refused,
    TimedOut,
    Unreachable,
    DnsNotFound,
    ClosedAfterAccept,
    NoGreeting,
}

/// The certificate problems the table tells apart; [`TlsProblem`] carries the data, this only
/// the kind, so the table can be static.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    Expired,
    NotYetValid,
    /// Not yet valid, and the chain decided the local clock is the culprit.
    ClockWrong,
    WrongHost,
    SelfSigned,
    UnknownIssuer,
    /// Unknown issuer whose name is a known antivirus or TLS-inspecting proxy.
    ScannerIssuer,
    MissingIntermediate,
    Other,
}

/// One way an observation selects an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A server reply. Empty `services` / `stages` mean any. The reply must carry one of `codes`
    /// (SMTP reply codes; empty: any) and contain one of `phrases` (empty: any); never both empty.
    Reply {
        services: &'static [Service],
        stages: &'static [Stage],
        codes: &'static [u16],
        phrases: &'static [&'static str],
    },
    Tls(TlsKind),
    Socket(SocketProblem),
}

/// A table row: the advice, the observations that select it, and the phrases `explain` looks
/// for in pasted text (client-side wordings included, since users paste what their client shows).
#[derive(Debug)]
pub struct Entry {
    pub advice: Advice,
    pub when: &'static [Trigger],
    pub phrases: &'static [&'static str],
}

/// The advice for an observation, or None when nothing known matches (then the UI shows the
/// server's words verbatim: never guess).
pub fn advise(service: Service, port: u16, obs: &Observation) -> Option<Advice> {
    match obs {
        Observation::Reply {
            service: said_by,
            stage,
            text,
        } => {
            let hay = normalise(text);
            let codes = smtp_codes(text);
            let entry = TABLE.iter().find(|e| {
                e.when
                    .iter()
                    .any(|t| reply_fits(t, *said_by, *stage, &hay, &codes))
            })?;
            let detail = match entry.advice.id {
                id @ (PLAINTEXT_REFUSED | LOGINDISABLED) => tls_alternative(id, service, port),
                _ => None,
            };
            Some(with_detail(entry, detail))
        }
        Observation::Tls(problem) => {
            let kind = tls_kind(problem);
            let entry = TABLE.iter().find(|e| e.when.contains(&Trigger::Tls(kind)))?;
            Some(with_detail(entry, tls_detail(problem)))
        }
        Observation::Socket(problem) => {
            let entry = TABLE
                .iter()
                .find(|e| e.when.contains(&Trigger::Socket(*problem)))?;
            Some(with_detail(entry, socket_detail(service, port, *problem)))
        }
    }
}

/// Look a text (as a user pastes it from a mail client) up in the same table: every matching
/// entry, best first. A phrase match ranks above a bare reply code; among equals, table order
/// (most specific first) decides.
pub fn explain(text: &str) -> Vec<Advice> {
    let hay = normalise(text);
    if hay.is_empty() {
        return Vec::new();
    }
    let scanner = if mentions_certificate(&hay) {
        scanner_in(&hay)
    } else {
        None
    };
    let mut strong = Vec::new();
    let mut weak = Vec::new();
    for entry in TABLE {
        if entry.when.contains(&Trigger::Tls(TlsKind::ScannerIssuer)) {
            if let Some(s) = scanner {
                let detail = match s.product {
                    Some(p) => format!("the text names {p}, whose mail or web scanner can re-sign TLS"),
                    None => "the text names an antivirus or TLS-inspecting proxy".to_string(),
                };
                strong.push(with_detail(entry, Some(detail)));
                continue;
            }
        }
        if entry.phrases.iter().any(|p| pattern_in(&hay, p)) {
            strong.push(entry.advice.clone());
        } else if bare_codes(entry).any(|c| contains_word(&hay, &c.to_string())) {
            weak.push(entry.advice.clone());
        }
    }
    strong.extend(weak);
    strong
}

/// The whole table, for docs and tests.
pub fn table() -> &'static [Entry] {
    TABLE
}

// Ids that `advise` treats specially.
const PLAINTEXT_REFUSED: &str = "plaintext-login-refused";
const LOGINDISABLED: &str = "logindisabled-without-starttls";

const IMAP: &[Service] = &[Service::Imap];
const POP3: &[Service] = &[Service::Pop3];
const SMTP: &[Service] = &[Service::Smtp];
const ANY_SERVICE: &[Service] = &[];
const ANY_STAGE: &[Stage] = &[];
const LOGIN: &[Stage] = &[Stage::Login];
const SEND: &[Stage] = &[Stage::Send];

/// Said by a server when the account itself, not the password, is the problem.
const BLOCKED: &[&str] = &[
    "account+blocked",
    "account+locked",
    "account+suspended",
    "account is disabled",
    "account has been disabled",
    "account disabled",
    "user+blocked",
    "mailbox+blocked",
];
/// At send time "blocked" may be about the recipient, so only texts about *your* account count.
const BLOCKED_SENDER: &[&str] = &[
    "your account+blocked",
    "your account+locked",
    "your account+suspended",
    "your account is disabled",
    "your account has been disabled",
];
const APP_PASSWORD: &[&str] = &[
    "application specific password",
    "app specific password",
    "application password",
    "app password",
    "please log in via your web browser",
    "web login required",
    "[webalert",
    "this user does not have access rights to this service",
];
const PLAINTEXT: &[&str] = &[
    "plaintext authentication",
    "[privacyrequired]",
    "must issue a starttls command first",
    "starttls command first",
    "encryption required for requested authentication",
];
const AUTH_REQUIRED: &[&str] = &[
    "authentication required",
    "authentication is required",
    "send auth command first",
    "sender address rejected+access denied",
    "sender address rejected+not logged in",
    "relay access denied",
    "relaying denied",
    "relay not permitted",
    "we do not relay",
    "not authenticated",
];
const SPAM: &[&str] = &[
    "suspicion of spam",
    "rejected+spam",
    "looks like spam",
    "detected as spam",
    "identified as spam",
    "unsolicited mail",
];
const IMAP_FAIL: &[&str] = &[
    "[authenticationfailed]",
    "invalid credentials",
    "login failed",
    "authentication failed",
    "imap+disabled",
    "not enabled for imap",
    "invalid user or password",
    "invalid username or password",
    "incorrect username or password",
    "invalid password",
    "incorrect password",
    "wrong password",
    "invalid login",
];
const POP3_FAIL: &[&str] = &[
    "login failure",
    "[auth]",
    "pop3+disabled",
    "authentication failed",
    "username and password not accepted",
    "invalid credentials",
    "invalid user or password",
    "invalid username or password",
    "incorrect username or password",
    "invalid password",
    "incorrect password",
    "wrong password",
    "invalid login",
];
const SMTP_FAIL: &[&str] = &[
    "5.7.8",
    "authentication failed",
    "authentication credentials invalid",
    "username and password not accepted",
    "authentication unsuccessful",
    "incorrect authentication data",
    "invalid user or password",
    "invalid username or password",
    "incorrect username or password",
    "invalid password",
    "incorrect password",
    "wrong password",
    "invalid login",
];

/// A reply trigger on words (any reply code).
const fn said(
    services: &'static [Service],
    stages: &'static [Stage],
    phrases: &'static [&'static str],
) -> Trigger {
    Trigger::Reply {
        services,
        stages,
        codes: &[],
        phrases,
    }
}

/// A reply trigger on SMTP reply codes alone, for codes with a single meaning at that stage.
const fn coded(services: &'static [Service], stages: &'static [Stage], codes: &'static [u16]) -> Trigger {
    Trigger::Reply {
        services,
        stages,
        codes,
        phrases: &[],
    }
}

/// Told with every login failure: a fresh password may not have reached the mail servers yet.
macro_rules! recent_password_hint {
    () => {
        " If the password was changed in the last few hours, the provider may not have passed it on \
         to its mail servers yet: wait a while and retry."
    };
}

static TABLE: &[Entry] = &[
    // ---- Server replies, most specific first ----
    Entry {
        advice: Advice {
            id: "account-blocked",
            title: "Account blocked by the provider",
            cause: "The provider's security system has locked the account, typically after sign-ins it \
                    found suspicious or because the account lacks something it insists on (such as a \
                    linked phone number). The password may well be right.",
            fix: "Sign in to the web mail and do what it asks (confirm a phone number, change the \
                  password). Unblocking can take a few hours; mail clients keep failing until then.",
            detail: None,
        },
        when: &[
            said(
                ANY_SERVICE,
                &[Stage::Greeting, Stage::Login, Stage::ReadOnly],
                BLOCKED,
            ),
            said(ANY_SERVICE, LOGIN, &["suspicious"]),
            said(SMTP, SEND, BLOCKED_SENDER),
        ],
        phrases: &[
            "account+blocked",
            "account+locked",
            "account+suspended",
            "account is disabled",
            "account has been disabled",
            "account disabled",
            "user+blocked",
            "mailbox+blocked",
            "suspicious",
            "security system",
        ],
    },
    Entry {
        advice: Advice {
            id: "app-password-required",
            title: "App password or web sign-in required",
            cause: "The provider will not take the normal account password from a mail program: \
                    two-factor authentication is on and it wants an app password, or it wants a \
                    one-off sign-in through a web browser first.",
            fix: "Create an app password in the account's security settings and put it in the mail \
                  client instead of the normal password. If the server asks for a web sign-in, log \
                  in to the web mail from the same network, then retry.",
            detail: None,
        },
        when: &[said(ANY_SERVICE, ANY_STAGE, APP_PASSWORD)],
        phrases: APP_PASSWORD,
    },
    Entry {
        advice: Advice {
            id: "password-recently-changed",
            title: "Password changed recently",
            cause: "Some providers need up to a few hours to pass a new password on to their IMAP, \
                    POP3 and SMTP servers; until then the new password is refused (and the old one \
                    may still work).",
            fix: "If the password was changed in the last few hours, wait and retry later. If it \
                  still fails after that, check the password itself.",
            detail: None,
        },
        // Only a hint: a server never says this, so the login-failure fixes carry it too.
        when: &[],
        phrases: &["password recently changed", "password+changed"],
    },
    Entry {
        advice: Advice {
            id: PLAINTEXT_REFUSED,
            title: "Login refused on an unencrypted connection",
            cause: "The server accepts no password until the connection is encrypted, and the client \
                    tried to log in without TLS.",
            fix: "Set the client's connection security to SSL/TLS (ports 993, 995, 465) or STARTTLS \
                  (ports 143, 110, 587).",
            detail: None,
        },
        when: &[said(ANY_SERVICE, ANY_STAGE, PLAINTEXT)],
        phrases: PLAINTEXT,
    },
    Entry {
        advice: Advice {
            id: LOGINDISABLED,
            title: "IMAP login disabled and no STARTTLS offered",
            cause: "On this cleartext connection the server announces LOGINDISABLED (no passwords \
                    without TLS) but does not offer STARTTLS, so no login can succeed here. Sometimes \
                    a firewall or antivirus mail filter strips STARTTLS from the server's list.",
            fix: "Connect with SSL/TLS on port 993 instead. If the server should offer STARTTLS, turn \
                  off mail filtering in the antivirus or firewall and try again.",
            detail: None,
        },
        when: &[said(IMAP, &[Stage::Capabilities], &["logindisabled"])],
        phrases: &["logindisabled"],
    },
    Entry {
        advice: Advice {
            id: "smtp-sender-not-owned",
            title: "Sender address does not belong to the login",
            cause: "The From (envelope sender) address is not the account the client logged in as, \
                    and the server only lets you send as yourself.",
            fix: "Send from the address you log in with, or first add the other address as an alias \
                  or allowed sender in the provider's settings.",
            detail: None,
        },
        when: &[said(SMTP, SEND, &["not owned by"])],
        phrases: &["not owned by"],
    },
    Entry {
        advice: Advice {
            id: "smtp-spam-rejected",
            title: "Message rejected as spam",
            cause: "The provider's filter scored this message, or the account's recent sending, as \
                    spam.",
            fix: "Send one message from the web mail to show a person is behind the account (solve \
                  the captcha if one appears), and review the content: links, attachments, number of \
                  recipients.",
            detail: None,
        },
        when: &[said(SMTP, SEND, SPAM)],
        phrases: SPAM,
    },
    Entry {
        advice: Advice {
            id: "smtp-auth-required",
            title: "SMTP authentication required",
            cause: "The client sends mail without logging in to the SMTP server (SMTP AUTH), so the \
                    server refuses to take or relay the message.",
            fix: "Turn on SMTP authentication (\"my outgoing server requires authentication\") in the \
                  client, with the same login and password as for incoming mail.",
            detail: None,
        },
        when: &[coded(SMTP, SEND, &[530]), said(SMTP, SEND, AUTH_REQUIRED)],
        phrases: AUTH_REQUIRED,
    },
    Entry {
        advice: Advice {
            id: "imap-login-failure",
            title: "IMAP login failed or IMAP disabled",
            cause: "The IMAP server refused the login: a wrong login name or password, an app \
                    password needed because two-factor authentication is on, or IMAP access switched \
                    off in the account settings.",
            fix: concat!(
                "Check the login (some providers want the full address, some only the part before \
                 @) and the password; with two-factor authentication use an app password; switch IMAP \
                 access on in the web mail settings for mail clients.",
                recent_password_hint!()
            ),
            detail: None,
        },
        when: &[said(IMAP, LOGIN, IMAP_FAIL)],
        phrases: &[
            "[authenticationfailed]",
            "invalid credentials",
            "login failed",
            "imap+disabled",
            "not enabled for imap",
        ],
    },
    Entry {
        advice: Advice {
            id: "pop3-login-failure",
            title: "POP3 login failed or POP3 disabled",
            cause: "The POP3 server refused the password: a wrong login name or password, an app \
                    password needed because two-factor authentication is on, or POP3 access switched \
                    off in the account settings.",
            fix: concat!(
                "Check the login (some providers want the full address, some only the part before \
                 @) and the password; with two-factor authentication use an app password; switch POP3 \
                 access on in the web mail settings for mail clients.",
                recent_password_hint!()
            ),
            detail: None,
        },
        when: &[said(POP3, LOGIN, POP3_FAIL)],
        phrases: &["login failure", "[auth]", "pop3+disabled"],
    },
    Entry {
        advice: Advice {
            id: "smtp-auth-failed",
            title: "SMTP authentication failed",
            cause: "The SMTP server rejected the login and password: wrong credentials, or an app \
                    password needed because two-factor authentication is on.",
            fix: concat!(
                "Use the same login and password as for incoming mail (an app password with two-factor \
                 authentication), and check the client does not keep an old SMTP password of its own.",
                recent_password_hint!()
            ),
            detail: None,
        },
        when: &[coded(SMTP, LOGIN, &[535]), said(SMTP, LOGIN, SMTP_FAIL)],
        phrases: &[
            "5.7.8",
            "authentication failed",
            "authentication credentials invalid",
            "username and password not accepted",
            "authentication unsuccessful",
            "incorrect authentication data",
        ],
    },
    // ---- TLS ----
    Entry {
        advice: Advice {
            id: "cert-antivirus-proxy",
            title: "TLS intercepted by an antivirus or proxy",
            cause: "Something on this computer or network (an antivirus mail scanner, a company proxy) \
                    decrypts mail traffic and re-signs it with its own certificate authority, which \
                    the mail client does not trust.",
            fix: "Turn off scanning of encrypted (SSL/TLS) connections for mail in that product, or \
                  exclude the mail server from it; on a managed network ask the administrator. \
                  Installing the product's root certificate is the other way out.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::ScannerIssuer)],
        phrases: &[
            "mail shield",
            "scan encrypted connections",
            "ssl scanning",
            "https scanning",
            "tls inspection",
            "ssl inspection",
        ],
    },
    Entry {
        advice: Advice {
            id: "cert-clock-wrong",
            title: "This computer's clock looks wrong",
            cause: "By this computer's clock the certificate is not valid yet, and the clock is even \
                    behind the day this tool was built: the clock is wrong, not the certificate.",
            fix: "Set the date, time and time zone correctly (turn on automatic time sync), then \
                  retry.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::ClockWrong)],
        phrases: &["clock", "system time", "date and time", "err cert date invalid"],
    },
    Entry {
        advice: Advice {
            id: "cert-expired",
            title: "Server certificate expired",
            cause: "The certificate's validity period is over, or this computer's clock is set later \
                    than the real date.",
            fix: "Check this computer's date and time first. If they are right, the provider has to \
                  renew the certificate: tell them, and do not accept the certificate permanently.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::Expired)],
        phrases: &["certificate+expired", "cert+expired", "certificateexpired"],
    },
    Entry {
        advice: Advice {
            id: "cert-not-yet-valid",
            title: "Server certificate not yet valid",
            cause: "The certificate's validity starts later than this computer's clock says it is \
                    now: usually the clock is behind, rarely the certificate is dated in the future.",
            fix: "Compare this computer's date, time and time zone with a reliable source and correct \
                  them; if they are right, tell the provider.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::NotYetValid)],
        phrases: &["not yet valid", "not valid yet", "notvalidyet", "not valid until"],
    },
    Entry {
        advice: Advice {
            id: "cert-wrong-host",
            title: "Certificate is for a different host name",
            cause: "The server's certificate does not name the host the client connected to: a \
                    mistyped or outdated server name, a provider alias without its own certificate, \
                    or something intercepting the connection.",
            fix: "Use the exact server name from the provider's setup instructions (one the \
                  certificate names); do not accept the mismatch permanently.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::WrongHost)],
        phrases: &[
            "hostname mismatch",
            "host name mismatch",
            "name mismatch",
            "notvalidforname",
            "not valid for name",
            "certificate is not valid for",
            "name on the security certificate",
            "does not match+host",
            "doesn't match+host",
            "err cert common name invalid",
            "wrong host",
        ],
    },
    Entry {
        advice: Advice {
            id: "cert-self-signed",
            title: "Self-signed certificate",
            cause: "The server presents a certificate signed by itself, so nothing vouches for it: \
                    common on small or test servers, and also what interception looks like.",
            fix: "For your own server, install a certificate from a public CA (free ACME ones \
                  work). Otherwise trust it only after comparing its fingerprint with one the \
                  administrator gives you.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::SelfSigned)],
        phrases: &["self signed", "selfsigned"],
    },
    Entry {
        advice: Advice {
            id: "cert-missing-intermediate",
            title: "Certificate chain incomplete",
            cause: "The server sends its own certificate but not the intermediate certificate(s) \
                    linking it to a trusted root, so clients that do not fetch them on their own \
                    fail.",
            fix: "The server's administrator has to configure the full chain (certificate plus \
                  intermediates, e.g. fullchain.pem); a client cannot fix this properly.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::MissingIntermediate)],
        phrases: &[
            "missing intermediate",
            "intermediate certificate",
            "incomplete chain",
            "unable to get issuer certificate",
            "unable to get local issuer certificate",
            "unable to verify the first certificate",
        ],
    },
    Entry {
        advice: Advice {
            id: "cert-unknown-issuer",
            title: "Certificate not trusted",
            cause: "The certificate was issued by an authority this client does not trust: an \
                    out-of-date root certificate store, a private company CA, or a program on the way \
                    (antivirus, proxy) re-signing TLS.",
            fix: "Look at who issued the certificate. An antivirus or proxy: turn off its TLS \
                  scanning for mail. A public CA: update the system's root certificates. A private \
                  CA: install its root only if you know whose it is.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::UnknownIssuer)],
        phrases: &[
            "not trusted",
            "untrusted",
            "unknown issuer",
            "unknownissuer",
            "unknown ca",
            "unknown authority",
            "not chosen to trust",
            "verify the identity",
            "certificate verify failed",
            "unable to get local issuer certificate",
        ],
    },
    Entry {
        advice: Advice {
            id: "tls-handshake-failed",
            title: "TLS handshake failed",
            cause: "Client and server could not set up encryption: most often TLS spoken to a port \
                    that starts in plaintext (or the reverse), otherwise no common protocol version \
                    or cipher (a very old server or client) or a filter breaking the connection.",
            fix: "Match the security setting to the port: SSL/TLS on 993, 995 and 465, STARTTLS on \
                  143, 110, 587 and 25. Update a very old client; to rule out the antivirus, turn \
                  its mail scanning off briefly.",
            detail: None,
        },
        when: &[Trigger::Tls(TlsKind::Other)],
        phrases: &[
            "handshake",
            "wrong version number",
            "packet length too long",
            "unsupported protocol",
            "protocol version",
            "no shared cipher",
            "corrupt message",
            "invalidcontenttype",
            "ssl routines",
        ],
    },
    // ---- Sockets; the specific ones before plain timeouts ----
    Entry {
        advice: Advice {
            id: "dns-not-found",
            title: "Server name not found",
            cause: "DNS has no address for the server name: a typo, an outdated name, or a DNS \
                    problem on this network.",
            fix: "Check the server name against the provider's setup instructions; if it is right, \
                  try another network or DNS resolver.",
            detail: None,
        },
        when: &[Trigger::Socket(SocketProblem::DnsNotFound)],
        phrases: &[
            "name or service not known",
            "nodename nor servname",
            "no such host",
            "could not resolve",
            "couldn't resolve",
            "cannot resolve",
            "failed to lookup address",
            "host not found",
            "unknown host",
            "nxdomain",
            "getaddrinfo",
            "name resolution",
        ],
    },
    Entry {
        advice: Advice {
            id: "no-greeting",
            title: "Connected, but the server sent no greeting",
            cause: "The connection opened but the server stayed silent: a TLS port spoken to in \
                    plaintext (it waits for the TLS hello), a deliberately slow server (tarpit), or a \
                    proxy or filter holding the connection.",
            fix: "Check the security setting for the port (SSL/TLS on 993, 995, 465; STARTTLS on \
                  143, 110, 587, 25) and retry; if it persists, try without the antivirus mail \
                  filter or from another network.",
            detail: None,
        },
        when: &[Trigger::Socket(SocketProblem::NoGreeting)],
        phrases: &[
            "no greeting",
            "greeting+timed out",
            "greeting+timeout",
            "no banner",
            "banner+timed out",
            "banner+timeout",
        ],
    },
    Entry {
        advice: Advice {
            id: "closed-after-accept",
            title: "Connection closed right after it opened",
            cause: "The server, or something on the way, accepted the connection and dropped it at \
                    once: it is overloaded or limiting connections, this IP address is blocked, or \
                    the port's security mode does not match (TLS spoken to a plaintext port or the \
                    reverse).",
            fix: "Check the SSL/TLS or STARTTLS setting for the port and retry later. If it only \
                  fails from this network, the address may be blocked: try another network and \
                  contact the provider.",
            detail: None,
        },
        when: &[Trigger::Socket(SocketProblem::ClosedAfterAccept)],
        phrases: &[
            "connection closed",
            "connection reset",
            "connection was closed",
            "closed the connection",
            "closed by remote",
            "closed by foreign host",
            "unexpectedly closed",
            "forcibly closed",
            "econnreset",
            "broken pipe",
            "os error 104",
        ],
    },
    Entry {
        advice: Advice {
            id: "tcp-refused",
            title: "Connection refused",
            cause: "Nothing accepted the connection on that port: a wrong host or port, the service \
                    not running, or a firewall or antivirus rejecting it.",
            fix: "Check the host and port against the provider's instructions, try the TLS port, and \
                  check the local firewall and antivirus.",
            detail: None,
        },
        when: &[Trigger::Socket(SocketProblem::Refused)],
        phrases: &[
            "connection refused",
            "refused to connect",
            "actively refused",
            "econnrefused",
            "os error 111",
            "os error 10061",
        ],
    },
    Entry {
        advice: Advice {
            id: "tcp-timeout",
            title: "Connection timed out",
            cause: "Nothing answered on that port: a firewall, antivirus or the internet provider \
                    silently drops the traffic (outgoing port 25 is often blocked by ISPs), or the \
                    host or port is wrong.",
            fix: "Try the TLS port (993, 995, 465), check the firewall and antivirus, or try from \
                  another network.",
            detail: None,
        },
        when: &[Trigger::Socket(SocketProblem::TimedOut)],
        phrases: &[
            "timed out",
            "timeout",
            "etimedout",
            "did not properly respond",
            "os error 110",
            "os error 10060",
        ],
    },
    Entry {
        advice: Advice {
            id: "tcp-unreachable",
            title: "Network or host unreachable",
            cause: "There is no route to the server: no internet connection, a VPN or routing \
                    problem, or an IPv6 address on a network without working IPv6.",
            fix: "Check the network connection and any VPN; if only IPv6 addresses fail, the network's \
                  IPv6 is broken: use IPv4.",
            detail: None,
        },
        when: &[Trigger::Socket(SocketProblem::Unreachable)],
        phrases: &[
            "unreachable",
            "no route to host",
            "enetunreach",
            "ehostunreach",
            "os error 101",
            "os error 113",
        ],
    },
];

/// Antivirus products and TLS-inspecting proxies, by the words their CA names carry.
struct Scanner {
    marker: &'static str,
    /// None: the marker names no product, only what it is (say "an antivirus or proxy").
    product: Option<&'static str>,
    /// Issuer texts with the marker that are real public CAs, not scanners.
    unless: &'static [&'static str],
}

const fn scanner(marker: &'static str, product: &'static str) -> Scanner {
    Scanner {
        marker,
        product: Some(product),
        unless: &[],
    }
}

const fn generic(marker: &'static str) -> Scanner {
    Scanner {
        marker,
        product: None,
        unless: &[],
    }
}

static SCANNERS: &[Scanner] = &[
    scanner("kaspersky", "Kaspersky"),
    scanner("avast", "Avast"),
    scanner("avg", "AVG"),
    scanner("eset", "ESET"),
    scanner("bitdefender", "Bitdefender"),
    scanner("dr.web", "Dr.Web"),
    scanner("drweb", "Dr.Web"),
    scanner("doctor web", "Dr.Web"),
    scanner("norton", "Norton"),
    // Symantec also ran a public CA (with GeoTrust, Thawte, VeriSign): only the rest is a scanner.
    Scanner {
        marker: "symantec",
        product: Some("Symantec"),
        unless: &[
            "class 3",
            "secure server",
            "public primary",
            "geotrust",
            "thawte",
            "verisign",
        ],
    },
    scanner("mcafee", "McAfee"),
    scanner("sophos", "Sophos"),
    scanner("fortinet", "Fortinet FortiGate"),
    scanner("fortigate", "Fortinet FortiGate"),
    scanner("zscaler", "Zscaler"),
    scanner("netskope", "Netskope"),
    scanner("cisco umbrella", "Cisco Umbrella"),
    scanner("opendns", "Cisco Umbrella"),
    scanner("blue coat", "Blue Coat"),
    scanner("bluecoat", "Blue Coat"),
    scanner("palo alto", "Palo Alto Networks"),
    scanner("trend micro", "Trend Micro"),
    scanner("f secure", "F-Secure"),
    scanner("g data", "G DATA"),
    scanner("avira", "Avira"),
    scanner("adguard", "AdGuard"),
    scanner("check point", "Check Point"),
    scanner("checkpoint", "Check Point"),
    scanner("sonicwall", "SonicWall"),
    scanner("watchguard", "WatchGuard"),
    scanner("barracuda", "Barracuda"),
    scanner("forcepoint", "Forcepoint"),
    generic("mail shield"),
    generic("anti virus"),
    generic("antivirus"),
    generic("ssl inspection"),
    generic("tls inspection"),
];

/// The scanner a (normalised) issuer text names, if any.
fn scanner_in(hay: &str) -> Option<&'static Scanner> {
    SCANNERS
        .iter()
        .find(|s| contains_word(hay, s.marker) && !s.unless.iter().any(|u| contains_word(hay, u)))
}

/// Pasted text naming an antivirus is only about TLS interception if it talks about certificates.
fn mentions_certificate(hay: &str) -> bool {
    [
        "certificate",
        "cert",
        "issuer",
        "issued",
        "ssl",
        "tls",
        "root",
        "ca",
    ]
    .iter()
    .any(|w| contains_word(hay, w))
}

/// Reduce a problem to the kind the table is keyed on; the issuer text decides antivirus or not.
fn tls_kind(problem: &TlsProblem) -> TlsKind {
    match problem {
        TlsProblem::Expired { .. } => TlsKind::Expired,
        TlsProblem::NotYetValid {
            clock_looks_wrong: true,
            ..
        } => TlsKind::ClockWrong,
        TlsProblem::NotYetValid { .. } => TlsKind::NotYetValid,
        TlsProblem::WrongHost { .. } => TlsKind::WrongHost,
        TlsProblem::SelfSigned { .. } => TlsKind::SelfSigned,
        TlsProblem::UnknownIssuer { issuer } if scanner_in(&normalise(issuer)).is_some() => {
            TlsKind::ScannerIssuer
        }
        TlsProblem::UnknownIssuer { .. } => TlsKind::UnknownIssuer,
        TlsProblem::MissingIntermediate { .. } => TlsKind::MissingIntermediate,
        TlsProblem::Other(_) => TlsKind::Other,
    }
}

/// Most names a wrong-host detail lists before it summarises the rest.
const MAX_NAMES: usize = 8;

/// The facts of this certificate that make the general advice concrete.
fn tls_detail(problem: &TlsProblem) -> Option<String> {
    let given = |s: &str| !s.trim().is_empty();
    match problem {
        TlsProblem::Expired { not_after } if given(not_after) => Some(format!(
            "the certificate was valid until {not_after}; if that date is still ahead of you, your \
             computer's clock is wrong"
        )),
        TlsProblem::NotYetValid {
            not_before,
            clock_looks_wrong: true,
        } => {
            let mut d =
                "your computer's clock looks wrong: it is behind the day this tool was built".to_string();
            if given(not_before) {
                d.push_str(&format!(", and the certificate is valid from {not_before}"));
            }
            Some(d)
        }
        TlsProblem::NotYetValid { not_before, .. } if given(not_before) => {
            Some(format!("the certificate is valid only from {not_before}"))
        }
        TlsProblem::WrongHost { cert_names } if cert_names.is_empty() => {
            Some("the certificate names no host at all".to_string())
        }
        TlsProblem::WrongHost { cert_names } => {
            let shown = cert_names
                .iter()
                .take(MAX_NAMES)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let more = cert_names.len().saturating_sub(MAX_NAMES);
            Some(if more > 0 {
                format!("the certificate is for {shown} and {more} more")
            } else {
                format!("the certificate is for {shown}")
            })
        }
        TlsProblem::SelfSigned { subject } if given(subject) => {
            Some(format!("the certificate is signed by itself: `{subject}`"))
        }
        TlsProblem::UnknownIssuer { issuer } if given(issuer) => Some(match scanner_in(&normalise(issuer)) {
            Some(Scanner { product: Some(p), .. }) => format!(
                "the certificate was issued by `{issuer}`, which looks like {p}'s mail scanner \
                     re-signing TLS"
            ),
            Some(_) => format!(
                "the certificate was issued by `{issuer}`, which looks like an antivirus or proxy \
                     re-signing TLS"
            ),
            None => format!("the certificate was issued by `{issuer}`, which this system does not trust"),
        }),
        TlsProblem::MissingIntermediate { issuer } if given(issuer) => Some(format!(
            "the server did not send the certificate of its issuer `{issuer}`"
        )),
        TlsProblem::Other(text) if given(text) => Some(text.trim().to_string()),
        _ => None,
    }
}

/// The standard implicit-TLS port for a service, and the STARTTLS one.
fn standard_ports(service: Service) -> (u16, u16) {
    match service {
        Service::Imap => (993, 143),
        Service::Pop3 => (995, 110),
        Service::Smtp => (465, 587),
    }
}

/// Service names as users see them in client settings.
fn label(service: Service) -> &'static str {
    match service {
        Service::Imap => "IMAP",
        Service::Pop3 => "POP3",
        Service::Smtp => "SMTP",
    }
}

/// Which port to try instead when a connection to `port` failed, and why.
fn socket_detail(service: Service, port: u16, problem: SocketProblem) -> Option<String> {
    let (tls, starttls) = standard_ports(service);
    let what = match problem {
        SocketProblem::Refused => "refused the connection",
        SocketProblem::TimedOut => "did not answer",
        SocketProblem::ClosedAfterAccept | SocketProblem::NoGreeting => return mode_hint(service, port),
        SocketProblem::Unreachable | SocketProblem::DnsNotFound => return None,
    };
    Some(match (service, port) {
        (Service::Smtp, 25) => {
            format!(
                "port 25 {what}: port 25 is often blocked by ISPs; try 465 (implicit TLS) or 587 (STARTTLS)"
            )
        }
        (Service::Smtp, 2525) => format!("port 2525 {what}; try 465 (implicit TLS) or 587 (STARTTLS)"),
        (Service::Imap, 585) => {
            format!("port 585 {what}: it is an obsolete IMAP-over-SSL port; use 993 (implicit TLS)")
        }
        _ if port == tls => format!(
            "port {port} (implicit TLS) {what}: check that a firewall or antivirus is not blocking it, \
             or try {starttls} (STARTTLS)"
        ),
        _ if port == starttls => format!("port {port} {what}; try {tls} (implicit TLS)"),
        _ => format!(
            "port {port} {what}; the usual {} ports are {tls} (implicit TLS) and {starttls} (STARTTLS)",
            label(service)
        ),
    })
}

/// A silent or dropped connection on a standard port often means the client's TLS setting does
/// not fit the port.
fn mode_hint(service: Service, port: u16) -> Option<String> {
    let (tls, starttls) = standard_ports(service);
    if port == tls {
        Some(format!(
            "port {port} expects TLS from the first byte: a client set to plain or STARTTLS here gets \
             nowhere; choose SSL/TLS"
        ))
    } else if port == starttls || (service == Service::Smtp && matches!(port, 25 | 2525)) {
        Some(format!(
            "port {port} starts in plaintext: a client set to SSL/TLS here gets nowhere; choose \
             STARTTLS, or SSL/TLS on port {tls}"
        ))
    } else {
        None
    }
}

/// Where to log in with encryption instead, for login-over-cleartext refusals.
fn tls_alternative(id: &str, service: Service, port: u16) -> Option<String> {
    let (tls, starttls) = standard_ports(service);
    Some(if port == tls {
        format!("port {port} should be used with SSL/TLS from the first byte")
    } else if id == LOGINDISABLED {
        format!("port {port} offers no STARTTLS: use SSL/TLS on port {tls}")
    } else {
        format!(
            "port {port} was used without encryption: use SSL/TLS on port {tls}, or STARTTLS on \
             port {starttls}"
        )
    })
}

/// The table's advice with this case's specifics attached.
fn with_detail(entry: &Entry, detail: Option<String>) -> Advice {
    Advice {
        detail,
        ..entry.advice.clone()
    }
}

/// Does a reply trigger fit this reply?
fn reply_fits(trigger: &Trigger, service: Service, stage: Stage, hay: &str, codes: &[u16]) -> bool {
    let Trigger::Reply {
        services,
        stages,
        codes: want,
        phrases,
    } = trigger
    else {
        return false;
    };
    (services.is_empty() || services.contains(&service))
        && (stages.is_empty() || stages.contains(&stage))
        && (want.is_empty() || codes.iter().any(|c| want.contains(c)))
        && (phrases.is_empty() || phrases.iter().any(|p| pattern_in(hay, p)))
}

/// Reply codes that select an entry on their own; `explain` ranks these below phrase matches.
fn bare_codes(entry: &Entry) -> impl Iterator<Item = u16> + '_ {
    entry
        .when
        .iter()
        .flat_map(|t| match t {
            Trigger::Reply {
                codes, phrases: [], ..
            } => *codes,
            _ => &[],
        })
        .copied()
}

/// SMTP reply codes at the start of the reply's lines (`535 ...`, `534-...`).
fn smtp_codes(text: &str) -> Vec<u16> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let digits = line.get(..3)?;
            let ends = line.as_bytes().get(3).is_none_or(|b| *b == b' ' || *b == b'-');
            if digits.bytes().all(|b| b.is_ascii_digit()) && ends {
                digits.parse().ok()
            } else {
                None
            }
        })
        .collect()
}

/// Lowercase, `-` and `_` as spaces, typographic quotes plain, whitespace collapsed: so that
/// "Application-specific", "application specific" and "APPLICATION_SPECIFIC" all compare equal.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        let c = match c {
            '-' | '_' | '\u{2010}'..='\u{2015}' => ' ',
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            c => c,
        };
        if c.is_whitespace() {
            gap = !out.is_empty();
        } else {
            if gap {
                out.push(' ');
                gap = false;
            }
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// All `+`-separated fragments of `pattern` occur in `hay`.
fn pattern_in(hay: &str, pattern: &str) -> bool {
    pattern.split('+').all(|frag| contains_word(hay, frag))
}

/// `needle` occurs in `hay` without being part of a longer word: "eset" is not found in "reset",
/// "535" not in "15350". Edges of the needle that are punctuation need no boundary.
fn contains_word(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let word_char = |c: char| c.is_alphanumeric();
    let check_start = needle.starts_with(word_char);
    let check_end = needle.ends_with(word_char);
    let mut from = 0;
    while let Some(found) = hay.get(from..).and_then(|h| h.find(needle)) {
        let start = from + found;
        let end = start + needle.len();
        let before_ok = !check_start || !hay[..start].ends_with(word_char);
        let after_ok = !check_end || !hay[end..].starts_with(word_char);
        if before_ok && after_ok {
            return true;
        }
        // Step one character on, so overlapping occurrences are still seen.
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn reply(service: Service, stage: Stage, text: &str) -> Observation {
        Observation::Reply {
            service,
            stage,
            text: text.to_string(),
        }
    }

    fn id_of(service: Service, port: u16, obs: Observation) -> Option<&'static str> {
        advise(service, port, &obs).map(|a| a.id)
    }

    fn first_explained(text: &str) -> Option<&'static str> {
        explain(text).first().map(|a| a.id)
    }

    fn detail(service: Service, port: u16, obs: Observation) -> String {
        advise(service, port, &obs)
            .and_then(|a| a.detail)
            .unwrap_or_default()
    }

    fn unknown_issuer(issuer: &str) -> Observation {
        Observation::Tls(TlsProblem::UnknownIssuer {
            issuer: issuer.to_string(),
        })
    }

    /// Server replies the probe can see, with the entry each must select.
    const REPLIES: &[(Service, Stage, &str, &str)] = {
        use Service::*;
        use Stage::*;
        &[
            (
                Pop3,
                Login,
                "-ERR [AUTH] Login failure or POP3 disabled",
                "pop3-login-failure",
            ),
            (
                Imap,
                Login,
                "a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
                "imap-login-failure",
            ),
            (Imap, Login, "a1 NO LOGIN failed.", "imap-login-failure"),
            (
                Imap,
                Login,
                "a1 NO LOGIN Invalid credentials or IMAP is disabled",
                "imap-login-failure",
            ),
            (
                Smtp,
                Login,
                "535 5.7.8 Error: authentication failed: Invalid user",
                "smtp-auth-failed",
            ),
            (
                Smtp,
                Login,
                "535 Incorrect authentication data",
                "smtp-auth-failed",
            ),
            (
                Smtp,
                Send,
                "530 5.7.0 Authentication required",
                "smtp-auth-required",
            ),
            (
                Smtp,
                Send,
                "503 5.5.1 Error: send AUTH command first.",
                "smtp-auth-required",
            ),
            (
                Smtp,
                Send,
                "553 5.7.1 <a@b.ru>: Sender address rejected: Access denied",
                "smtp-auth-required",
            ),
            (
                Smtp,
                Send,
                "550 5.7.1 Authentication required",
                "smtp-auth-required",
            ),
            (
                Smtp,
                Send,
                "553 5.7.1 Sender address rejected: not owned by auth user.",
                "smtp-sender-not-owned",
            ),
            (
                Smtp,
                Send,
                "554 5.7.1 [2] Message rejected under suspicion of SPAM",
                "smtp-spam-rejected",
            ),
            (
                Imap,
                Login,
                "a1 NO [ALERT] Your account is blocked by the security system",
                "account-blocked",
            ),
            (
                Pop3,
                Login,
                "-ERR [AUTH] Suspicious activity, log in via web",
                "account-blocked",
            ),
            (
                Smtp,
                Login,
                "535 5.7.8 Authentication failed: account is locked",
                "account-blocked",
            ),
            (
                Imap,
                Login,
                "a1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed",
                "plaintext-login-refused",
            ),
            (
                Pop3,
                Login,
                "-ERR [AUTH] Plaintext authentication disallowed",
                "plaintext-login-refused",
            ),
            (
                Smtp,
                Send,
                "530 5.7.0 Must issue a STARTTLS command first.",
                "plaintext-login-refused",
            ),
            (
                Imap,
                Capabilities,
                "LOGINDISABLED",
                "logindisabled-without-starttls",
            ),
            (
                Smtp,
                Login,
                "534-5.7.9 Application-specific password\r\n534 5.7.9 required",
                "app-password-required",
            ),
            (
                Imap,
                Login,
                "a1 NO [ALERT] Please log in via your web browser (Failure)",
                "app-password-required",
            ),
            (
                Smtp,
                Login,
                "535 5.7.8 This user does not have access rights to this service",
                "app-password-required",
            ),
        ]
    };

    fn tls(problem: TlsProblem) -> Observation {
        Observation::Tls(problem)
    }

    /// One observation per entry that the probe can produce, and what it must select.
    fn observed_cases() -> Vec<(Service, u16, Observation, &'static str)> {
        use Service::*;
        let default_port = |s: Service| standard_ports(s).0;
        let mut cases: Vec<_> = REPLIES
            .iter()
            .map(|&(s, stage, text, id)| (s, default_port(s), reply(s, stage, text), id))
            .collect();
        let expired = TlsProblem::Expired {
            not_after: "2020-01-01".into(),
        };
        let future = TlsProblem::NotYetValid {
            not_before: "2031-01-01".into(),
            clock_looks_wrong: false,
        };
        let clock = TlsProblem::NotYetValid {
            not_before: "2025-01-01".into(),
            clock_looks_wrong: true,
        };
        let host = TlsProblem::WrongHost {
            cert_names: vec!["mx.example.org".into()],
        };
        let own = TlsProblem::SelfSigned {
            subject: "CN=localhost".into(),
        };
        let chain = TlsProblem::MissingIntermediate {
            issuer: "CN=R11, O=Let's Encrypt".into(),
        };
        let alert = TlsProblem::Other("received fatal alert: HandshakeFailure".into());
        let kaspersky = "CN=Kaspersky Anti-Virus Personal Root Certificate";
        cases.extend([
            (Imap, 993, tls(expired), "cert-expired"),
            (Imap, 993, tls(future), "cert-not-yet-valid"),
            (Imap, 993, tls(clock), "cert-clock-wrong"),
            (Imap, 993, tls(host), "cert-wrong-host"),
            (Imap, 993, tls(own), "cert-self-signed"),
            (
                Imap,
                993,
                unknown_issuer("CN=Some Corp CA"),
                "cert-unknown-issuer",
            ),
            (Imap, 993, unknown_issuer(kaspersky), "cert-antivirus-proxy"),
            (Imap, 993, tls(chain), "cert-missing-intermediate"),
            (Imap, 993, tls(alert), "tls-handshake-failed"),
            (
                Smtp,
                25,
                Observation::Socket(SocketProblem::Refused),
                "tcp-refused",
            ),
            (
                Smtp,
                25,
                Observation::Socket(SocketProblem::TimedOut),
                "tcp-timeout",
            ),
            (
                Imap,
                993,
                Observation::Socket(SocketProblem::Unreachable),
                "tcp-unreachable",
            ),
            (
                Imap,
                993,
                Observation::Socket(SocketProblem::DnsNotFound),
                "dns-not-found",
            ),
            (
                Imap,
                993,
                Observation::Socket(SocketProblem::ClosedAfterAccept),
                "closed-after-accept",
            ),
            (
                Imap,
                993,
                Observation::Socket(SocketProblem::NoGreeting),
                "no-greeting",
            ),
        ]);
        cases
    }

    #[test]
    fn observations_select_their_entries() {
        for (service, port, obs, want) in observed_cases() {
            let got = id_of(service, port, obs.clone());
            assert_eq!(got, Some(want), "{obs:?}");
        }
    }

    #[test]
    fn every_entry_is_reachable() {
        let mut reached: BTreeSet<&str> = observed_cases().into_iter().map(|(_, _, _, id)| id).collect();
        for entry in table() {
            // Every entry can also be found by explain through one of its own phrases.
            for phrase in entry.phrases {
                let text = phrase.replace('+', " ");
                let ids: Vec<_> = explain(&text).into_iter().map(|a| a.id).collect();
                assert!(ids.contains(&entry.advice.id), "{phrase:?} -> {ids:?}");
            }
            if first_explained("password recently changed") == Some(entry.advice.id) {
                reached.insert(entry.advice.id);
            }
        }
        let all: BTreeSet<&str> = table().iter().map(|e| e.advice.id).collect();
        assert_eq!(reached, all);
    }

    #[test]
    fn domain_table_rows_resolve_through_explain() {
        let rows = [
            ("Login failure or POP3 disabled", "pop3-login-failure"),
            ("Authentication required", "smtp-auth-required"),
            ("Send auth command first", "smtp-auth-required"),
            ("Sender address rejected: Access denied", "smtp-auth-required"),
            (
                "Sender address rejected: not owned by auth user",
                "smtp-sender-not-owned",
            ),
            ("Message rejected under suspicion of SPAM", "smtp-spam-rejected"),
            ("certificate not yet valid", "cert-not-yet-valid"),
            ("certificate expired", "cert-expired"),
            ("certificate not trusted", "cert-unknown-issuer"),
            ("The certificate is not trusted", "cert-unknown-issuer"),
            ("connection refused", "tcp-refused"),
            ("Connection timed out", "tcp-timeout"),
            (
                "password recently changed, still failing",
                "password-recently-changed",
            ),
            ("account blocked by the security system", "account-blocked"),
        ];
        for (text, want) in rows {
            assert_eq!(first_explained(text), Some(want), "{text}");
        }
        let both: Vec<_> = explain("connection refused / timed out")
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(both, ["tcp-refused", "tcp-timeout"]);
    }

    #[test]
    fn explain_finds_pasted_lines_first() {
        let cases = [
            ("-ERR [AUTH] Login failure or POP3 disabled", "pop3-login-failure"),
            (
                "-ERR [AUTH] login failure or POP3 disabled, try later.",
                "pop3-login-failure",
            ),
            (
                "553 5.7.1 Sender address rejected: not owned by auth user.",
                "smtp-sender-not-owned",
            ),
            (
                "  530   5.7.0\n Must issue a   STARTTLS command first.",
                "plaintext-login-refused",
            ),
            (
                "a1 NO [AUTHENTICATIONFAILED] Authentication failed.",
                "imap-login-failure",
            ),
            (
                "535 5.7.8 Error: authentication failed: Invalid user or password!",
                "smtp-auth-failed",
            ),
            (
                "534-5.7.9 Application-specific password required.",
                "app-password-required",
            ),
            ("APPLICATION_SPECIFIC PASSWORD REQUIRED", "app-password-required"),
            ("Your account is not enabled for IMAP use.", "imap-login-failure"),
            (
                "x509: certificate has expired or is not yet valid",
                "cert-expired",
            ),
            ("invalid peer certificate: UnknownIssuer", "cert-unknown-issuer"),
            (
                "The certificate is not trusted because it is self-signed.",
                "cert-self-signed",
            ),
            ("SSL routines::wrong version number", "tls-handshake-failed"),
            (
                "failed to lookup address information: Name or service not known",
                "dns-not-found",
            ),
            ("timed out waiting for the greeting", "no-greeting"),
            ("Connection reset by peer (os error 104)", "closed-after-accept"),
            ("connect: Network is unreachable", "tcp-unreachable"),
            (
                "The certificate was issued by Avast Web/Mail Shield Root",
                "cert-antivirus-proxy",
            ),
            ("certificate issuer: O=ESET, spol. s r.o.", "cert-antivirus-proxy"),
            (
                "the LOGINDISABLED capability is advertised",
                "logindisabled-without-starttls",
            ),
            ("535", "smtp-auth-failed"),
        ];
        for (text, want) in cases {
            assert_eq!(first_explained(text), Some(want), "{text}");
        }
        // A bare code ranks below phrases.
        let ids: Vec<_> = explain("530 5.7.0 Must issue a STARTTLS command first")
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["plaintext-login-refused", "smtp-auth-required"]);
    }

    #[test]
    fn unknown_text_explains_nothing() {
        assert!(explain("").is_empty());
        assert!(explain("   \n ").is_empty());
        assert!(explain("the weather is nice today").is_empty());
        assert!(explain("451 4.3.0 Temporary local problem").is_empty());
        // An antivirus named without any certificate context is not a TLS diagnosis.
        assert!(explain("Kaspersky").is_empty());
        assert!(explain("reset the mailbox").is_empty());
    }

    #[test]
    fn unknown_server_errors_give_none() {
        use Service::*;
        use Stage::*;
        let unknown = [
            (
                Smtp,
                587,
                reply(Smtp, Send, "451 4.3.0 Temporary local problem, try again later"),
            ),
            (
                Smtp,
                587,
                reply(
                    Smtp,
                    Send,
                    "550 5.1.1 <x@example.org>: Recipient address rejected: User unknown",
                ),
            ),
            (
                Imap,
                993,
                reply(
                    Imap,
                    Login,
                    "a1 NO [UNAVAILABLE] Temporary authentication failure",
                ),
            ),
            (
                Pop3,
                995,
                reply(Pop3, Login, "-ERR [IN-USE] Mailbox is locked by another session"),
            ),
            (Pop3, 995, reply(Pop3, Greeting, "-ERR Server busy")),
            (Imap, 993, reply(Imap, Greeting, "* BYE Too many connections")),
            (
                Smtp,
                25,
                reply(Smtp, StartTls, "454 4.7.0 TLS not available due to local problem"),
            ),
            (
                Smtp,
                25,
                reply(
                    Smtp,
                    Greeting,
                    "554 5.7.1 Client host blocked using zen.spamhaus.org",
                ),
            ),
            // Codes only count at the stage they are about.
            (Smtp, 25, reply(Smtp, Login, "530 5.7.0 Nope")),
            (Smtp, 25, reply(Smtp, Send, "535 5.7.0 Nope")),
            // Words that only mean something for another protocol.
            (Imap, 993, reply(Imap, Login, "a1 NO [AUTH] something")),
            (
                Imap,
                993,
                reply(Imap, Capabilities, "IMAP4rev1 STARTTLS AUTH=PLAIN"),
            ),
        ];
        for (service, port, obs) in unknown {
            assert_eq!(advise(service, port, &obs), None, "{obs:?}");
        }
    }

    #[test]
    fn blocked_at_send_only_counts_for_your_account() {
        use Service::*;
        let theirs = reply(
            Smtp,
            Stage::Send,
            "550 5.2.1 Mailbox blocked: user account is disabled",
        );
        assert_eq!(id_of(Smtp, 465, theirs), None);
        let mine = reply(
            Smtp,
            Stage::Send,
            "554 5.7.1 Your account has been disabled for sending",
        );
        assert_eq!(id_of(Smtp, 465, mine), Some("account-blocked"));
    }

    #[test]
    fn antivirus_issuers_are_named() {
        let scanners = [
            (
                "CN=Kaspersky Anti-Virus Personal Root Certificate",
                Some("Kaspersky"),
            ),
            ("CN=Avast Web/Mail Shield Root", Some("Avast")),
            ("CN=AVG Web/Mail Shield Root, O=AVG Technologies", Some("AVG")),
            ("CN=ESET SSL Filter CA, O=ESET, spol. s r.o., C=SK", Some("ESET")),
            ("O=ESET, spol. s r.o.", Some("ESET")),
            ("CN=Bitdefender Personal CA.Net-Defender", Some("Bitdefender")),
            ("CN=Dr.Web Root CA", Some("Dr.Web")),
            ("CN=Norton Web/Mail Shield Root", Some("Norton")),
            ("CN=McAfee Web Gateway", Some("McAfee")),
            ("CN=Sophos SSL CA_C123", Some("Sophos")),
            ("CN=FortiGate CA, O=Fortinet", Some("Fortinet FortiGate")),
            ("CN=Fortinet_CA_SSLProxy", Some("Fortinet FortiGate")),
            ("CN=Zscaler Intermediate Root CA (zscaler.net)", Some("Zscaler")),
            ("CN=caadmin.netskope.com, O=Netskope Inc", Some("Netskope")),
            ("CN=Cisco Umbrella Secondary SubCA", Some("Cisco Umbrella")),
            ("CN=Blue Coat SSL Proxy", Some("Blue Coat")),
            (
                "O=Palo Alto Networks, CN=Forward Trust",
                Some("Palo Alto Networks"),
            ),
            ("CN=Symantec Endpoint Protection Mail Scan", Some("Symantec")),
            ("CN=Generic Mail Shield Root", None),
            ("CN=Web/Mail Anti-Virus Root", None),
        ];
        for (issuer, product) in scanners {
            let a = advise(Service::Imap, 993, &unknown_issuer(issuer)).expect(issuer);
            assert_eq!(a.id, "cert-antivirus-proxy", "{issuer}");
            let d = a.detail.unwrap_or_default();
            assert!(d.contains(issuer), "{d}");
            match product {
                Some(p) => assert!(d.contains(&format!("{p}'s mail scanner")), "{d}"),
                None => assert!(d.contains("antivirus or proxy"), "{d}"),
            }
        }
        for issuer in [
            "CN=Some Corp CA",
            "CN=Symantec Class 3 Secure Server CA - G4, O=Symantec Corporation",
            "CN=Reset Services CA",
        ] {
            let a = advise(Service::Imap, 993, &unknown_issuer(issuer)).expect(issuer);
            assert_eq!(a.id, "cert-unknown-issuer", "{issuer}");
            assert!(a.detail.unwrap_or_default().contains(issuer));
        }
    }

    #[test]
    fn tls_details_carry_the_specifics() {
        let names = Observation::Tls(TlsProblem::WrongHost {
            cert_names: vec!["a".into(), "b".into(), "c".into()],
        });
        assert_eq!(
            detail(Service::Imap, 993, names),
            "the certificate is for a, b, c"
        );
        let many = (0..10).map(|i| format!("h{i}")).collect();
        let d = detail(
            Service::Imap,
            993,
            Observation::Tls(TlsProblem::WrongHost { cert_names: many }),
        );
        assert!(d.ends_with("h7 and 2 more"), "{d}");
        let clock = Observation::Tls(TlsProblem::NotYetValid {
            not_before: "2025-06-01".into(),
            clock_looks_wrong: true,
        });
        assert!(detail(Service::Imap, 993, clock).contains("your computer's clock looks wrong"));
        let expired = Observation::Tls(TlsProblem::Expired {
            not_after: "2024-02-03".into(),
        });
        assert!(detail(Service::Imap, 993, expired).contains("2024-02-03"));
        let chain = Observation::Tls(TlsProblem::MissingIntermediate {
            issuer: "CN=R11".into(),
        });
        assert!(detail(Service::Imap, 993, chain).contains("CN=R11"));
        let bare = advise(
            Service::Imap,
            993,
            &Observation::Tls(TlsProblem::Other(String::new())),
        );
        assert_eq!(
            bare.map(|a| (a.id, a.detail)),
            Some(("tls-handshake-failed", None))
        );
    }

    #[test]
    fn port_details_suggest_the_tls_port() {
        use SocketProblem::*;
        let sock = Observation::Socket;
        let d = detail(Service::Smtp, 25, sock(TimedOut));
        assert!(
            d.contains("port 25 is often blocked by ISPs") && d.contains("465") && d.contains("587"),
            "{d}"
        );
        let d = detail(Service::Smtp, 25, sock(Refused));
        assert!(d.contains("465 (implicit TLS) or 587 (STARTTLS)"), "{d}");
        let d = detail(Service::Imap, 143, sock(Refused));
        assert!(d.contains("port 143") && d.contains("993"), "{d}");
        let d = detail(Service::Pop3, 110, sock(TimedOut));
        assert!(d.contains("port 110") && d.contains("995"), "{d}");
        for (service, port) in [(Service::Imap, 993), (Service::Pop3, 995), (Service::Smtp, 465)] {
            for problem in [Refused, TimedOut] {
                let d = detail(service, port, sock(problem));
                assert!(d.contains(&format!("port {port}")), "{d}");
                assert!(d.contains("firewall or antivirus"), "{d}");
            }
        }
        let d = detail(Service::Smtp, 587, sock(TimedOut));
        assert!(d.contains("465"), "{d}");
        let d = detail(Service::Imap, 10143, sock(Refused));
        assert!(
            d.contains("port 10143") && d.contains("993") && d.contains("143"),
            "{d}"
        );
        assert!(detail(Service::Imap, 993, sock(NoGreeting)).contains("SSL/TLS"));
        assert!(detail(Service::Imap, 143, sock(ClosedAfterAccept)).contains("STARTTLS"));
        assert_eq!(
            advise(Service::Imap, 993, &sock(DnsNotFound)).and_then(|a| a.detail),
            None
        );
    }

    #[test]
    fn cleartext_refusals_point_to_tls() {
        let d = detail(
            Service::Imap,
            143,
            reply(Service::Imap, Stage::Capabilities, "LOGINDISABLED"),
        );
        assert!(d.contains("993"), "{d}");
        let text = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";
        let d = detail(Service::Pop3, 110, reply(Service::Pop3, Stage::Login, text));
        assert!(d.contains("995"), "{d}");
    }

    #[test]
    fn login_failures_mention_a_recent_password_change() {
        for id in ["imap-login-failure", "pop3-login-failure", "smtp-auth-failed"] {
            let entry = table().iter().find(|e| e.advice.id == id).expect(id);
            assert!(entry.advice.fix.contains("changed in the last few hours"), "{id}");
        }
    }

    #[test]
    fn table_is_well_formed() {
        let mut seen = BTreeSet::new();
        for entry in table() {
            let a = &entry.advice;
            assert!(seen.insert(a.id), "duplicate id {}", a.id);
            assert!(
                !a.id.is_empty()
                    && a.id
                        .split('-')
                        .all(|w| !w.is_empty()
                            && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
                "{} is not kebab-case",
                a.id
            );
            assert!(
                !a.title.is_empty() && !a.cause.is_empty() && !a.fix.is_empty(),
                "{}",
                a.id
            );
            assert!(a.detail.is_none(), "{}", a.id);
            assert!(
                !a.cause.contains("  ") && !a.fix.contains("  "),
                "{}: doubled space",
                a.id
            );
            assert!(
                !entry.phrases.is_empty() || !entry.when.is_empty(),
                "{} can never be selected",
                a.id
            );
            let reply_phrases = entry.when.iter().flat_map(|t| match t {
                Trigger::Reply { phrases, codes, .. } => {
                    assert!(
                        !phrases.is_empty() || !codes.is_empty(),
                        "{}: a reply trigger matching anything",
                        a.id
                    );
                    *phrases
                }
                _ => &[],
            });
            for p in entry.phrases.iter().chain(reply_phrases) {
                for frag in p.split('+') {
                    assert_eq!(
                        normalise(frag),
                        *frag,
                        "{}: pattern {p:?} is not normalised",
                        a.id
                    );
                    assert!(!frag.is_empty(), "{}: empty fragment in {p:?}", a.id);
                }
            }
        }
    }

    #[test]
    fn every_observation_kind_has_an_entry() {
        let kinds = [
            TlsKind::Expired,
            TlsKind::NotYetValid,
            TlsKind::ClockWrong,
            TlsKind::WrongHost,
            TlsKind::SelfSigned,
            TlsKind::UnknownIssuer,
            TlsKind::ScannerIssuer,
            TlsKind::MissingIntermediate,
            TlsKind::Other,
        ];
        for kind in kinds {
            assert_eq!(
                table()
                    .iter()
                    .filter(|e| e.when.contains(&Trigger::Tls(kind)))
                    .count(),
                1,
                "{kind:?}"
            );
        }
        use SocketProblem::*;
        for p in [
            Refused,
            TimedOut,
            Unreachable,
            DnsNotFound,
            ClosedAfterAccept,
            NoGreeting,
        ] {
            assert_eq!(
                table()
                    .iter()
                    .filter(|e| e.when.contains(&Trigger::Socket(p)))
                    .count(),
                1,
                "{p:?}"
            );
        }
    }

    #[test]
    fn matching_respects_word_boundaries() {
        assert!(contains_word("o=eset, spol.", "eset"));
        assert!(!contains_word("please reset", "eset"));
        assert!(!contains_word("error 15350", "535"));
        assert!(contains_word("535 5.7.8 x", "5.7.8"));
        assert!(!contains_word("5.7.80", "5.7.8"));
        assert!(contains_word("x [auth] y", "[auth]"));
        assert!(!contains_word("[authenticationfailed]", "[auth]"));
        assert!(!contains_word("aab", "ab"));
        assert!(contains_word("xab ab", "ab"));
        assert_eq!(
            normalise("  Self-Signed\r\n  CERT_HAS_EXPIRED  "),
            "self signed cert has expired"
        );
        assert_eq!(smtp_codes("534-5.7.9 a\r\n534 5.7.9 b"), [534, 534]);
        assert_eq!(smtp_codes("a1 NO x\n5350 y\n53"), Vec::<u16>::new());
    }

    #[test]
    fn advice_serialises_without_empty_detail() {
        let a = advise(
            Service::Imap,
            993,
            &Observation::Socket(SocketProblem::DnsNotFound),
        )
        .expect("entry");
        let json = serde_json::to_value(&a).expect("json");
        assert_eq!(json["id"], "dns-not-found");
        assert!(json.get("detail").is_none());
        let a = advise(Service::Smtp, 25, &Observation::Socket(SocketProblem::TimedOut)).expect("entry");
        let json = serde_json::to_value(&a).expect("json");
        assert!(json["detail"].as_str().unwrap_or_default().contains("587"));
    }
}
