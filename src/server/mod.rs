//! The embedded reference mail server: a correct POP3 server (RFC 1939,
//! RFC 2449 CAPA, RFC 2595 STLS) whose [`Fault`] switches each break one
//! rule on purpose.
//!
//! `mailcheck serve` and `mailcheck demo` run it, and the integration tests
//! use it to show that every client-side check both passes (correct server)
//! and fails (faulty server).

mod faults;
mod fixture;
mod pop3;
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
pub use store::{Account, Message, Store};
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
    #[error("no listener configured: set pop3_listen and/or pop3s_listen")]
    NoListener,
}

/// How to run the server. Build one with [`ServerConfig::new`] or
/// [`ServerConfig::localhost`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Plain POP3 with STLS (`127.0.0.1:0` picks a free port).
    pub pop3_listen: Option<SocketAddr>,
    /// Implicit-TLS POP3.
    pub pop3s_listen: Option<SocketAddr>,
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
    /// Both listeners on `127.0.0.1:0`, no faults, APOP on, 10 min idle and
    /// 30 s handshake timeouts, no greeting delay, built-in refusal texts.
    pub fn new(store: Arc<Store>, identity: Arc<TlsIdentity>) -> Self {
        let any_local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        ServerConfig {
            pop3_listen: Some(any_local),
            pop3s_listen: Some(any_local),
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

/// Binds the configured listeners and spawns their accept loops on the
/// current tokio runtime; returns as soon as the sockets are bound.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if config.pop3_listen.is_none() && config.pop3s_listen.is_none() {
        return Err(ServerError::NoListener);
    }
    let shared = Arc::new(pop3::Shared {
        store: config.store,
        faults: config.faults,
        tls: tokio_rustls::TlsAcceptor::from(config.identity.server_config()),
        apop: config.apop,
        idle_timeout: config.idle_timeout,
        handshake_timeout: config.handshake_timeout,
        greeting_delay: config.greeting_delay,
        auth_failure_text: config.auth_failure_text,
    });
    // If a later bind fails, `stop` is dropped on return, which ends any
    // accept loop already spawned.
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let bind = |addr: Option<SocketAddr>, implicit_tls: bool| {
        let shared = Arc::clone(&shared);
        let stopped = stopped.clone();
        async move {
            let Some(addr) = addr else {
                return Ok::<_, ServerError>(None);
            };
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            let task = tokio::spawn(pop3::accept_loop(listener, shared, implicit_tls, stopped));
            Ok(Some((local, task)))
        }
    };
    let mut bound = |res: Option<(SocketAddr, JoinHandle<()>)>| {
        res.map(|(addr, task)| {
            tasks.push(task);
            addr
        })
    };
    let pop3_addr = bound(bind(config.pop3_listen, false).await?);
    let pop3s_addr = bound(bind(config.pop3s_listen, true).await?);
    Ok(RunningServer {
        pop3_addr,
        pop3s_addr,
        stop,
        tasks,
    })
}
