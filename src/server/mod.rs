//! The embedded reference mail server: a correct POP3 server (RFC 1939,
//! RFC 2449 CAPA, RFC 2595 STLS), IMAP4rev1 server (RFC 3501) and SMTP
//! server (RFC 5321, with STARTTLS, AUTH and submission; it delivers into
//! the mailboxes the other two serve) over one shared [`Store`], whose
//! [`Fault`] switches each break one rule on purpose.
//!
//! `mailcheck serve` and `mailcheck demo` run it, and the integration tests
//! use it to show that every client-side check both passes (correct server)
//! and fails (faulty server).

mod faults;
mod fixture;
mod imap;
mod listen;
mod pop3;
mod smtp;
mod store;
mod tls;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{Fault, Faults};
pub use fixture::FIXTURE_USERS;
pub use store::{Account, FlagChange, Mailbox, MailboxError, Message, Store, ACCOUNT_QUOTA, DELIMITER};
pub use tls::TlsIdentity;

/// Everything that can go wrong setting up or configuring the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("unknown fault {0:?} (known faults: {known})", known = Faults::from_iter(Fault::ALL.iter().copied()))]
    UnknownFault(String),
    #[error("no such account: {0}")]
    NoSuchAccount(String),
    #[error(
        "no listener configured: set pop3_listen, pop3s_listen, imap_listen, imaps_listen, \
         smtp_listen, submission_listen and/or smtps_listen"
    )]
    NoListener,
}

/// How the embedded IMAP server greets a connection (RFC 9051 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImapGreeting {
    /// `* OK`: the session starts not authenticated (the usual case).
    #[default]
    Ok,
    /// `* PREAUTH`: the session starts authenticated as the first account,
    /// like a server that knows its client by other means.
    Preauth,
    /// `* BYE`: the connection is refused and closed.
    Bye,
}

/// How to run the server. Build one with [`ServerConfig::new`] or
/// [`ServerConfig::localhost`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Plain POP3 with STLS (`127.0.0.1:0` picks a free port).
    pub pop3_listen: Option<SocketAddr>,
    /// Implicit-TLS POP3.
    pub pop3s_listen: Option<SocketAddr>,
    /// Plain IMAP with STARTTLS; off unless set (see [`ServerConfig::with_imap`]).
    pub imap_listen: Option<SocketAddr>,
    /// Implicit-TLS IMAP; off unless set.
    pub imaps_listen: Option<SocketAddr>,
    /// SMTP on a relay-style port (like 25): STARTTLS offered, AUTH only
    /// after TLS, mail to local users needs no AUTH. Off unless set (see
    /// [`ServerConfig::with_smtp`]).
    pub smtp_listen: Option<SocketAddr>,
    /// Message submission (RFC 6409, like 587): STARTTLS offered, AUTH only
    /// after TLS and required before MAIL. Off unless set.
    pub submission_listen: Option<SocketAddr>,
    /// Implicit-TLS submission (RFC 8314, like 465): AUTH required before
    /// MAIL. Off unless set.
    pub smtps_listen: Option<SocketAddr>,
    /// The SMTP SIZE limit (RFC 1870) in octets of message text: EHLO
    /// announces it, MAIL FROM with a larger SIZE= and larger messages get
    /// 552. Give a positive value: `SIZE 0` would announce no limit.
    pub smtp_max_message_size: usize,
    /// IMAP on a plaintext connection (before STARTTLS) advertises
    /// LOGINDISABLED and refuses LOGIN and AUTHENTICATE PLAIN, like servers
    /// that only take passwords over TLS.
    pub imap_login_disabled_on_plaintext: bool,
    /// The IMAP greeting: OK (default), PREAUTH or BYE.
    pub imap_greeting: ImapGreeting,
    pub faults: Faults,
    /// Maildrops shared by all sessions (and by whoever started the server).
    pub store: Arc<Store>,
    pub identity: Arc<TlsIdentity>,
    /// Whether the greeting carries an APOP timestamp.
    pub apop: bool,
    /// How long a session may wait for a complete command line (or for a
    /// reply write to drain) before it is dropped.
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take, so a stalled client cannot hold a
    /// session forever.
    pub handshake_timeout: Duration,
    /// Wait this long before sending the greeting, like a tarpitting server,
    /// so clients' greeting timeouts can be exercised.
    pub greeting_delay: Duration,
    /// The text after `-ERR ` when PASS or APOP is refused, to mimic a
    /// particular server's wording; `None` keeps the built-in texts.
    pub auth_failure_text: Option<String>,
}

impl ServerConfig {
    /// Both POP3 listeners on `127.0.0.1:0` and no IMAP or SMTP listener (a
    /// config with the POP3 listeners cleared must still be refused as
    /// having none), no faults, APOP on, 10 min idle and 30 s handshake
    /// timeouts, no greeting delay, built-in refusal texts, a 10 MiB SMTP
    /// size limit.
    pub fn new(store: Arc<Store>, identity: Arc<TlsIdentity>) -> Self {
        let any_local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        ServerConfig {
            pop3_listen: Some(any_local),
            pop3s_listen: Some(any_local),
            imap_listen: None,
            imaps_listen: None,
            smtp_listen: None,
            submission_listen: None,
            smtps_listen: None,
            smtp_max_message_size: 10 * 1024 * 1024,
            imap_login_disabled_on_plaintext: false,
            imap_greeting: ImapGreeting::Ok,
            faults: Faults::none(),
            store,
            identity,
            apop: true,
            idle_timeout: Duration::from_secs(600),
            handshake_timeout: Duration::from_secs(30),
            greeting_delay: Duration::ZERO,
            auth_failure_text: None,
        }
    }

    /// Turns on both IMAP listeners on `127.0.0.1:0`.
    pub fn with_imap(mut self) -> Self {
        let any_local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        self.imap_listen = Some(any_local);
        self.imaps_listen = Some(any_local);
        self
    }

    /// Turns on the three SMTP listeners (relay, submission, implicit TLS)
    /// on `127.0.0.1:0`.
    pub fn with_smtp(mut self) -> Self {
        let any_local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        self.smtp_listen = Some(any_local);
        self.submission_listen = Some(any_local);
        self.smtps_listen = Some(any_local);
        self
    }

    /// [`ServerConfig::new`] with the fixture store and a fresh identity for
    /// `localhost` and `127.0.0.1`.
    pub fn localhost() -> Result<Self, ServerError> {
        let identity = TlsIdentity::generate(&["localhost", "127.0.0.1"])?;
        Ok(Self::new(Arc::new(Store::fixture()), Arc::new(identity)))
    }
}

/// Handle on a started server; dropping it also stops the server (in the
/// background), [`RunningServer::shutdown`] waits for it.
#[derive(Debug)]
pub struct RunningServer {
    /// Bound address of the plain listener (the real port when `:0` was asked).
    pub pop3_addr: Option<SocketAddr>,
    /// Bound address of the implicit-TLS listener.
    pub pop3s_addr: Option<SocketAddr>,
    /// Bound address of the plain IMAP listener (STARTTLS available).
    pub imap_addr: Option<SocketAddr>,
    /// Bound address of the implicit-TLS IMAP listener.
    pub imaps_addr: Option<SocketAddr>,
    /// Bound address of the relay-style SMTP listener (STARTTLS available).
    pub smtp_addr: Option<SocketAddr>,
    /// Bound address of the submission listener (STARTTLS, then AUTH).
    pub submission_addr: Option<SocketAddr>,
    /// Bound address of the implicit-TLS submission listener.
    pub smtps_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Stops the listeners, ends every open session and waits until all of
    /// them are gone.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            // A listener task never panics; a join error would only mean it
            // was cancelled, which is what we want anyway.
            let _ = task.await;
        }
    }
}

/// Binds a listener; `Ok(None)` when it is not configured.
async fn bind(addr: Option<SocketAddr>) -> Result<Option<(TcpListener, SocketAddr)>, ServerError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok(Some((listener, local)))
}

/// Binds the configured listeners and spawns their accept loops on the
/// current tokio runtime; returns as soon as the sockets are bound.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if config.pop3_listen.is_none()
        && config.pop3s_listen.is_none()
        && config.imap_listen.is_none()
        && config.imaps_listen.is_none()
        && config.smtp_listen.is_none()
        && config.submission_listen.is_none()
        && config.smtps_listen.is_none()
    {
        return Err(ServerError::NoListener);
    }
    let tls = tokio_rustls::TlsAcceptor::from(config.identity.server_config());
    let pop3 = Arc::new(pop3::Shared {
        store: Arc::clone(&config.store),
        faults: config.faults,
        tls: tls.clone(),
        apop: config.apop,
        idle_timeout: config.idle_timeout,
        handshake_timeout: config.handshake_timeout,
        greeting_delay: config.greeting_delay,
        auth_failure_text: config.auth_failure_text,
    });
    let smtp = Arc::new(smtp::Shared {
        store: Arc::clone(&config.store),
        faults: config.faults,
        tls: tls.clone(),
        idle_timeout: config.idle_timeout,
        handshake_timeout: config.handshake_timeout,
        greeting_delay: config.greeting_delay,
        max_message_size: config.smtp_max_message_size,
    });
    let imap = Arc::new(imap::Shared {
        store: config.store,
        faults: config.faults,
        tls,
        idle_timeout: config.idle_timeout,
        handshake_timeout: config.handshake_timeout,
        greeting_delay: config.greeting_delay,
        login_disabled_on_plaintext: config.imap_login_disabled_on_plaintext,
        greeting: config.imap_greeting,
    });
    // Everything is bound before any accept loop starts, so a failed bind
    // leaves nothing running.
    let pop3_plain = bind(config.pop3_listen).await?;
    let pop3_tls = bind(config.pop3s_listen).await?;
    let imap_plain = bind(config.imap_listen).await?;
    let imap_tls = bind(config.imaps_listen).await?;
    let smtp_relay = bind(config.smtp_listen).await?;
    let smtp_submission = bind(config.submission_listen).await?;
    let smtp_tls = bind(config.smtps_listen).await?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut spawn_pop3 = |bound: Option<(TcpListener, SocketAddr)>, implicit_tls: bool| {
        bound.map(|(listener, addr)| {
            let shared = Arc::clone(&pop3);
            let loop_ = listen::accept_loop(listener, stopped.clone(), move |tcp| {
                pop3::serve_connection(tcp, Arc::clone(&shared), implicit_tls)
            });
            tasks.push(tokio::spawn(loop_));
            addr
        })
    };
    let pop3_addr = spawn_pop3(pop3_plain, false);
    let pop3s_addr = spawn_pop3(pop3_tls, true);
    let mut spawn_imap = |bound: Option<(TcpListener, SocketAddr)>, implicit_tls: bool| {
        bound.map(|(listener, addr)| {
            let shared = Arc::clone(&imap);
            let loop_ = listen::accept_loop(listener, stopped.clone(), move |tcp| {
                imap::serve_connection(tcp, Arc::clone(&shared), implicit_tls)
            });
            tasks.push(tokio::spawn(loop_));
            addr
        })
    };
    let imap_addr = spawn_imap(imap_plain, false);
    let imaps_addr = spawn_imap(imap_tls, true);
    let mut spawn_smtp = |bound: Option<(TcpListener, SocketAddr)>, port: smtp::Port| {
        bound.map(|(listener, addr)| {
            let shared = Arc::clone(&smtp);
            let loop_ = listen::accept_loop(listener, stopped.clone(), move |tcp| {
                smtp::serve_connection(tcp, Arc::clone(&shared), port)
            });
            tasks.push(tokio::spawn(loop_));
            addr
        })
    };
    let smtp_addr = spawn_smtp(smtp_relay, smtp::Port::Relay);
    let submission_addr = spawn_smtp(smtp_submission, smtp::Port::Submission);
    let smtps_addr = spawn_smtp(smtp_tls, smtp::Port::Smtps);
    Ok(RunningServer {
        pop3_addr,
        pop3s_addr,
        imap_addr,
        imaps_addr,
        smtp_addr,
        submission_addr,
        smtps_addr,
        stop,
        tasks,
    })
}
