//! One client connection: plain or TLS, a bounded line reader, deadlines.
//!
//! Reads go through one buffer; [`Conn::read_line`] hands out slices of it
//! without copying, so a 1 GB body streams through in 64 KiB pieces. Every
//! read and write has the run's timeout; the error says what we waited for.

use super::target::{Security, Target};
use super::tls::{CertReport, TlsSettings};
use rustls::pki_types::ServerName;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

const INITIAL_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("timed out after {secs} s connecting to {addr}")]
    ConnectTimeout { addr: String, secs: u64 },
    #[error("TLS handshake with {addr} failed: {detail}")]
    Tls {
        addr: String,
        detail: String,
        cert: Option<Box<CertReport>>,
    },
    #[error("timed out after {secs} s waiting for {waiting_for}")]
    Timeout { waiting_for: String, secs: u64 },
    #[error("the server closed the connection while we waited for {waiting_for}")]
    Closed { waiting_for: String },
    #[error("network error while waiting for {waiting_for}: {source}")]
    Io { waiting_for: String, source: io::Error },
    #[error("{0}")]
    Usage(String),
}

/// What the TLS handshake settled on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// A line as read: its bytes (with the line ending when `complete`).
#[derive(Debug)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// False when the line was cut at the length cap or by the end of the stream.
    pub complete: bool,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed upgrade or a shutdown.
    Gone,
}

/// A connection to the target, with its read buffer and deadlines.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    timeout: Duration,
    addr: String,
    host: String,
    tls: TlsSettings,
    waiting_for: String,
    /// The server certificate, once TLS is up (or failed).
    pub cert: Option<CertReport>,
    /// Protocol version and cipher suite, once TLS is up.
    pub tls_info: Option<TlsInfo>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Conn {
    /// Connect (and for implicit TLS, handshake) within `timeout` each.
    pub async fn connect(target: &Target, tls: &TlsSettings, limit: Duration) -> Result<Conn, WireError> {
        let addr = target.authority();
        let stream = match timeout(limit, TcpStream::connect((target.host.as_str(), target.port))).await {
            Err(_) => {
                return Err(WireError::ConnectTimeout {
                    addr,
                    secs: limit.as_secs(),
                })
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound || e.to_string().contains("lookup") => {
                return Err(WireError::Resolve { addr, source: e })
            }
            Ok(Err(e)) => return Err(WireError::Connect { addr, source: e }),
            Ok(Ok(s)) => s,
        };
        Self::start(
            stream,
            addr,
            &target.host,
            target.security == Security::Implicit,
            tls,
            limit,
        )
        .await
    }

    /// Connect to one resolved address; `host` is still used for SNI and the
    /// certificate check (what `--resolve` needs).
    pub async fn connect_addr(
        ip: std::net::SocketAddr,
        host: &str,
        implicit_tls: bool,
        tls: &TlsSettings,
        limit: Duration,
    ) -> Result<Conn, WireError> {
        let addr = ip.to_string();
        let stream = match timeout(limit, TcpStream::connect(ip)).await {
            Err(_) => {
                return Err(WireError::ConnectTimeout {
                    addr,
                    secs: limit.as_secs(),
                })
            }
            Ok(Err(e)) => return Err(WireError::Connect { addr, source: e }),
            Ok(Ok(s)) => s,
        };
        Self::start(stream, addr, host, implicit_tls, tls, limit).await
    }

    async fn start(
        stream: TcpStream,
        addr: String,
        host: &str,
        implicit_tls: bool,
        tls: &TlsSettings,
        limit: Duration,
    ) -> Result<Conn, WireError> {
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream: Stream::Plain(stream),
            buf: vec![0; INITIAL_BUFFER],
            pos: 0,
            len: 0,
            timeout: limit,
            addr,
            host: host.to_string(),
            tls: tls.clone(),
            waiting_for: "the greeting".into(),
            cert: None,
            tls_info: None,
            bytes_in: 0,
            bytes_out: 0,
        };
        if implicit_tls {
            conn.start_tls().await?;
        }
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Change the bound on each following wait (e.g. to what is left of a
    /// longer deadline); the caller restores it.
    pub fn set_timeout(&mut self, limit: Duration) {
        self.timeout = limit;
    }

    /// Name what the next reads wait for; it appears in timeout and close errors.
    pub fn waiting_for(&mut self, what: impl Into<String>) {
        self.waiting_for = what.into();
    }

    /// Bytes received but not yet read as lines.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    /// Upgrade a plaintext connection to TLS (after STLS/STARTTLS was accepted).
    /// Bytes the server sent before the handshake are discarded; the caller
    /// checks [`Conn::buffered`] first, because such bytes are a finding.
    pub async fn start_tls(&mut self) -> Result<(), WireError> {
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(tcp) => tcp,
            other => {
                self.stream = other;
                return Err(WireError::Usage("the connection is already TLS".into()));
            }
        };
        self.pos = 0;
        self.len = 0;
        let report = Arc::new(Mutex::new(None));
        let config = self
            .tls
            .client_config(report.clone())
            .map_err(|detail| WireError::Tls {
                addr: self.addr.clone(),
                detail,
                cert: None,
            })?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| WireError::Tls {
            addr: self.addr.clone(),
            detail: format!("`{}` is not a valid TLS server name: {e}", self.host),
            cert: None,
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let result = timeout(self.timeout, connector.connect(name, tcp)).await;
        let cert = report.lock().ok().and_then(|r| r.clone());
        self.cert = cert.clone();
        match result {
            Err(_) => Err(WireError::Timeout {
                waiting_for: format!("the TLS handshake with {}", self.addr),
                secs: self.timeout.as_secs(),
            }),
            Ok(Err(e)) => {
                let mut detail = e.to_string();
                if let Some(c) = &cert {
                    detail.push_str(&format!(
                        "; the certificate is for {} (names: {}), issued by {}, valid {} to {}",
                        c.subject,
                        if c.names.is_empty() {
                            "none".to_string()
                        } else {
                            c.names.join(", ")
                        },
                        c.issuer,
                        c.not_before,
                        c.not_after
                    ));
                }
                Err(WireError::Tls {
                    addr: self.addr.clone(),
                    detail,
                    cert: cert.map(Box::new),
                })
            }
            Ok(Ok(tls)) => {
                let (_, session) = tls.get_ref();
                self.tls_info = Some(TlsInfo {
                    version: session
                        .protocol_version()
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default(),
                    cipher: session
                        .negotiated_cipher_suite()
                        .map(|c| format!("{:?}", c.suite()))
                        .unwrap_or_default(),
                });
                self.stream = Stream::Tls(Box::new(tls));
                Ok(())
            }
        }
    }

    /// Send bytes (a command with its CRLF, or a body) within the deadline.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let limit = self.timeout;
        let what = || format!("the server to accept {} bytes we sent", bytes.len());
        let result = match &mut self.stream {
            Stream::Plain(s) => timeout(limit, write_all_flush(s, bytes)).await,
            Stream::Tls(s) => timeout(limit, write_all_flush(s.as_mut(), bytes)).await,
            Stream::Gone => return Err(WireError::Closed { waiting_for: what() }),
        };
        match result {
            Err(_) => Err(WireError::Timeout {
                waiting_for: what(),
                secs: limit.as_secs(),
            }),
            Ok(Err(e)) => Err(WireError::Io {
                waiting_for: what(),
                source: e,
            }),
            Ok(Ok(())) => {
                self.bytes_out += bytes.len() as u64;
                Ok(())
            }
        }
    }

    /// Read one line of at most `max` bytes. A longer line comes back in pieces
    /// with `complete: false`, so no line can make us buffer without bound.
    pub async fn read_line(&mut self, max: usize) -> Result<Line<'_>, WireError> {
        let max = max.max(2);
        let (end, complete) = loop {
            let avail = &self.buf[self.pos..self.len];
            if let Some(i) = memchr::memchr(b'\n', avail) {
                if i < max {
                    break (self.pos + i + 1, true);
                }
            }
            if avail.len() >= max {
                break (self.pos + max, false);
            }
            if self.pos > 0 && self.buf.len() - self.len < INITIAL_BUFFER / 4 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            }
            if self.len == self.buf.len() {
                let grown = (self.buf.len() * 2).max(max + 1);
                self.buf.resize(grown, 0);
            }
            let n = self.fill().await?;
            if n == 0 {
                if self.len > self.pos {
                    break (self.len, false);
                }
                return Err(WireError::Closed {
                    waiting_for: self.waiting_for.clone(),
                });
            }
        };
        let start = self.pos;
        self.pos = end;
        Ok(Line {
            bytes: &self.buf[start..end],
            complete,
        })
    }

    async fn fill(&mut self) -> Result<usize, WireError> {
        let limit = self.timeout;
        let dst = &mut self.buf[self.len..];
        let result = match &mut self.stream {
            Stream::Plain(s) => timeout(limit, s.read(dst)).await,
            Stream::Tls(s) => timeout(limit, s.read(dst)).await,
            Stream::Gone => return Ok(0),
        };
        match result {
            Err(_) => Err(WireError::Timeout {
                waiting_for: self.waiting_for.clone(),
                secs: limit.as_secs(),
            }),
            // A peer that resets after its last reply reads as a close.
            Ok(Err(e))
                if e.kind() == io::ErrorKind::ConnectionReset || e.kind() == io::ErrorKind::UnexpectedEof =>
            {
                Ok(0)
            }
            Ok(Err(e)) => Err(WireError::Io {
                waiting_for: self.waiting_for.clone(),
                source: e,
            }),
            Ok(Ok(n)) => {
                self.len += n;
                self.bytes_in += n as u64;
                Ok(n)
            }
        }
    }

    /// Wait up to `limit` for the server to close. `Ok(true)` when it did,
    /// `Ok(false)` when it stayed open; bytes that arrive meanwhile are returned.
    pub async fn wait_closed(&mut self, limit: Duration) -> (bool, Vec<u8>) {
        let saved = self.timeout;
        self.timeout = limit;
        let mut extra = self.buffered().to_vec();
        self.pos = self.len;
        let closed = loop {
            match self.fill().await {
                Ok(0) => break true,
                Ok(_) => {
                    if extra.len() < 4096 {
                        extra.extend_from_slice(&self.buf[self.pos..self.len]);
                    }
                    self.pos = self.len;
                    if self.pos == self.buf.len() {
                        self.pos = 0;
                        self.len = 0;
                    }
                }
                Err(WireError::Timeout { .. }) => break false,
                Err(_) => break true,
            }
        };
        self.timeout = saved;
        (closed, extra)
    }

    /// Close our sending side without a protocol goodbye (a dropped client),
    /// then wait for the server to finish and close its side.
    pub async fn drop_connection(&mut self, limit: Duration) -> bool {
        let _ = match &mut self.stream {
            Stream::Plain(s) => timeout(limit, s.shutdown()).await,
            Stream::Tls(s) => timeout(limit, s.shutdown()).await,
            Stream::Gone => return true,
        };
        let (closed, _) = self.wait_closed(limit).await;
        self.stream = Stream::Gone;
        closed
    }
}

async fn write_all_flush<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}
