//! End-to-end tests of the embedded POP3 server over real sockets: the
//! correct behaviour, every fault's effect on the wire, and robustness
//! against silent or abusive clients.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::certs::{self, Pki, DAY};

use mailcheck::server::{
    start, Fault, Faults, RunningServer, ServerConfig, Store, TlsIdentity, FIXTURE_USERS,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(300);

fn identity() -> Arc<TlsIdentity> {
    static ID: OnceLock<Arc<TlsIdentity>> = OnceLock::new();
    ID.get_or_init(|| Arc::new(TlsIdentity::generate(&["localhost", "127.0.0.1"]).expect("identity")))
        .clone()
}

async fn server_with(faults: Faults) -> (RunningServer, Arc<Store>) {
    let store = Arc::new(Store::fixture());
    let mut config = ServerConfig::new(Arc::clone(&store), identity());
    config.faults = faults;
    config.handshake_timeout = Duration::from_millis(500);
    (start(config).await.expect("start"), store)
}

async fn server() -> (RunningServer, Arc<Store>) {
    server_with(Faults::none()).await
}

fn tls_connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let cert = CertificateDer::from_pem_slice(identity().cert_pem.as_bytes()).expect("pem");
    roots.add(cert).expect("root");
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A minimal test client that keeps raw bytes so tests can assert on them.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            io: BufReader::new(stream),
        }
    }

    async fn try_line(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        match timeout(wait, self.io.read_until(b'\n', &mut line)).await {
            Ok(Ok(n)) if n > 0 => Some(line),
            _ => None,
        }
    }

    async fn line(&mut self) -> Vec<u8> {
        self.try_line(WAIT).await.expect("a reply line")
    }

    async fn line_str(&mut self) -> String {
        String::from_utf8(self.line().await).expect("ascii")
    }

    async fn send(&mut self, cmd: &str) {
        let stream = self.io.get_mut();
        stream.write_all(cmd.as_bytes()).await.expect("write");
        stream.write_all(b"\r\n").await.expect("write");
        stream.flush().await.expect("flush");
    }

    async fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd).await;
        self.line_str().await
    }

    /// Raw content lines of a multi-line reply, up to (excluding) ".\r\n".
    async fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = self.line().await;
            if line == b".\r\n" {
                return out;
            }
            out.extend_from_slice(&line);
        }
    }

    async fn login(&mut self, user: &str, pass: &str) {
        assert!(self.cmd(&format!("USER {user}")).await.starts_with("+OK"));
        let reply = self.cmd(&format!("PASS {pass}")).await;
        assert!(reply.starts_with("+OK"), "{reply}");
    }

    /// Half-closes and waits until the server closes its side.
    async fn hang_up(mut self) {
        self.io.get_mut().shutdown().await.ok();
        let mut rest = Vec::new();
        timeout(WAIT, self.io.read_to_end(&mut rest))
            .await
            .expect("server closes after EOF")
            .ok();
    }
}

async fn connect(addr: Option<SocketAddr>) -> Client<TcpStream> {
    let addr = addr.expect("listener address");
    Client::new(TcpStream::connect(addr).await.expect("connect"))
}

/// Connects and consumes the greeting.
async fn greeted(addr: Option<SocketAddr>) -> Client<TcpStream> {
    let mut c = connect(addr).await;
    let greeting = c.line_str().await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    c
}

async fn alice(srv: &RunningServer) -> Client<TcpStream> {
    let mut c = greeted(srv.pop3_addr).await;
    c.login(FIXTURE_USERS[0].0, FIXTURE_USERS[0].1).await;
    c
}

fn unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in wire.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn correct_session() {
    let (srv, store) = server().await;
    let stored = store.messages("alice").expect("alice");
    assert_eq!(stored.len(), 4);

    let mut c = connect(srv.pop3_addr).await;
    let greeting = c.line_str().await;
    assert!(greeting.starts_with("+OK mailcheck POP3 ready <"));
    assert!(greeting.ends_with("@mailcheck.local>\r\n"));
    assert!(greeting.len() <= 512);

    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    let caps = String::from_utf8(c.body().await).expect("ascii");
    for cap in [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "STLS",
    ] {
        assert!(caps.lines().any(|l| l == cap), "{cap} in {caps}");
    }
    assert!(caps.contains("IMPLEMENTATION mailcheck-embedded\r\n"));

    assert!(c.cmd("STAT").await.starts_with("-ERR"));
    assert!(c.cmd("PASS alice-demo-pw").await.starts_with("-ERR"));
    assert!(c.cmd("user alice").await.starts_with("+OK"));
    assert!(c.cmd("pass alice-demo-pw").await.starts_with("+OK"));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    assert!(c.cmd("USER bob").await.starts_with("-ERR"));

    let total: usize = stored.iter().map(|m| m.size()).sum();
    assert_eq!(c.cmd("STAT").await, format!("+OK 4 {total}\r\n"));
    assert!(c.cmd("LIST").await.starts_with("+OK"));
    let expected: String = stored
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.size()))
        .collect();
    assert_eq!(String::from_utf8(c.body().await).expect("ascii"), expected);
    assert_eq!(c.cmd("LIST 3").await, format!("+OK 3 {}\r\n", stored[2].size()));
    assert!(c.cmd("LIST 5").await.starts_with("-ERR"));
    assert!(c.cmd("LIST 0").await.starts_with("-ERR"));
    assert!(c.cmd("LIST x").await.starts_with("-ERR"));

    assert!(c.cmd("UIDL").await.starts_with("+OK"));
    let expected: String = stored
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}\r\n", i + 1, m.uid))
        .collect();
    assert_eq!(String::from_utf8(c.body().await).expect("ascii"), expected);
    assert_eq!(c.cmd("UIDL 2").await, format!("+OK 2 {}\r\n", stored[1].uid));

    for n in 1..=4 {
        assert!(c.cmd(&format!("RETR {n}")).await.starts_with("+OK"));
        let wire = c.body().await;
        assert_eq!(unstuff(&wire), &stored[n - 1].data[..], "message {n}");
        if n == 2 {
            assert!(contains(&wire, b"\r\n..hidden\r\n"));
            assert!(contains(&wire, b"\r\n...double\r\n"));
            assert!(contains(&wire, b"\r\n..\r\n"));
            assert!(contains(&wire, b"\r\n.. space\r\n"));
        }
    }

    assert!(c.cmd("TOP 2 0").await.starts_with("+OK"));
    let top = c.body().await;
    assert!(top.ends_with(b"\r\n\r\n") && !contains(&top, b"hidden"));
    assert!(c.cmd("TOP 2 2").await.starts_with("+OK"));
    let top = unstuff(&c.body().await);
    assert!(top.ends_with(b"\r\n\r\nThe next lines start with a dot:\r\n.hidden\r\n"));
    assert!(c.cmd("TOP 4 5").await.starts_with("+OK"));
    assert_eq!(c.body().await, &stored[3].data[..]);
    assert!(c.cmd("TOP 1").await.starts_with("-ERR"));
    assert!(c.cmd("TOP 1 -1").await.starts_with("-ERR"));

    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 1").await.starts_with("-ERR"));
    assert!(c.cmd("RETR 1").await.starts_with("-ERR"));
    assert!(c.cmd("LIST 1").await.starts_with("-ERR"));
    assert!(c.cmd("UIDL 1").await.starts_with("-ERR"));
    assert_eq!(
        c.cmd("STAT").await,
        format!("+OK 3 {}\r\n", total - stored[0].size())
    );
    assert!(c.cmd("RSET").await.starts_with("+OK"));
    assert_eq!(c.cmd("STAT").await, format!("+OK 4 {total}\r\n"));
    assert!(c.cmd("NOOP").await.starts_with("+OK"));
    assert!(c.cmd("XYZZY").await.starts_with("-ERR"));
    assert!(c.cmd("").await.starts_with("-ERR"));

    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    c.hang_up().await;
    let left: Vec<String> = store
        .messages("alice")
        .expect("alice")
        .into_iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(
        left,
        vec![
            stored[0].uid.clone(),
            stored[2].uid.clone(),
            stored[3].uid.clone()
        ]
    );
    assert_eq!(store.messages("bob").map(|m| m.len()), Some(4));
    srv.shutdown().await;
}

#[tokio::test]
async fn disconnect_without_quit_keeps_mail() {
    let (srv, store) = server().await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("DELE 2").await.starts_with("+OK"));
    c.hang_up().await;
    assert_eq!(store.messages("alice").map(|m| m.len()), Some(4));
    srv.shutdown().await;
}

#[tokio::test]
async fn authentication_rules() {
    let (srv, store) = server().await;
    let mut c = connect(srv.pop3_addr).await;
    let greeting = c.line_str().await;
    let ts = &greeting[greeting.find('<').expect("<")..=greeting.find('>').expect(">")];

    assert_eq!(
        c.cmd("USER alice").await,
        "+OK send PASS\r\n",
        "USER does not reveal whether the user exists"
    );
    assert_eq!(
        c.cmd("PASS wrong").await,
        "-ERR [AUTH] invalid user name or password\r\n"
    );
    assert!(
        c.cmd("PASS alice-demo-pw").await.starts_with("-ERR"),
        "PASS needs a fresh USER"
    );
    assert!(c.cmd("USER nobody").await.starts_with("+OK"));
    assert!(c.cmd("PASS x").await.starts_with("-ERR [AUTH]"));
    assert!(c
        .cmd("APOP alice 00000000000000000000000000000000")
        .await
        .starts_with("-ERR [AUTH]"));
    assert!(c.cmd("APOP alice").await.starts_with("-ERR"));

    // A line over 255 octets is refused, and the session goes on.
    assert!(c
        .cmd(&format!("NOOP {}", "x".repeat(300)))
        .await
        .starts_with("-ERR"));
    assert!(c
        .cmd(&format!("NOOP {}", "x".repeat(5000)))
        .await
        .starts_with("-ERR"));

    let digest = {
        use md5::{Digest, Md5};
        let d = Md5::new()
            .chain_update(ts.as_bytes())
            .chain_update(b"bob-demo-pw")
            .finalize();
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(store.account_password("bob").as_deref(), Some("bob-demo-pw"));
    assert!(c.cmd(&format!("APOP bob {digest}")).await.starts_with("+OK"));
    assert!(c.cmd("STAT").await.starts_with("+OK 4 "));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    c.hang_up().await;

    // Without APOP the greeting has no timestamp and APOP is refused.
    let mut config = ServerConfig::new(Arc::new(Store::fixture()), identity());
    config.apop = false;
    config.pop3s_listen = None;
    let plain = start(config).await.expect("start");
    assert!(plain.pop3s_addr.is_none());
    let mut c = connect(plain.pop3_addr).await;
    assert_eq!(c.line_str().await, "+OK mailcheck POP3 ready\r\n");
    assert!(c.cmd(&format!("APOP bob {digest}")).await.starts_with("-ERR"));
    plain.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn stls_upgrade() {
    let (srv, _store) = server().await;
    let mut c = greeted(srv.pop3_addr).await;
    assert!(c.cmd("STLS").await.starts_with("+OK"));
    let tcp = c.io.into_inner();
    let name = ServerName::try_from("localhost").expect("name");
    let tls = timeout(WAIT, tls_connector().connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut c = Client::new(tls);
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    let caps = String::from_utf8(c.body().await).expect("ascii");
    assert!(caps.contains("USER\r\n") && !caps.contains("STLS"));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    c.login("bob", "bob-demo-pw").await;
    assert!(c.cmd("RETR 2").await.starts_with("+OK"));
    assert!(contains(&c.body().await, b"\r\n..hidden\r\n"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    srv.shutdown().await;
}

#[tokio::test]
async fn implicit_tls() {
    let (srv, store) = server().await;
    let tcp = TcpStream::connect(srv.pop3s_addr.expect("pop3s"))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = tls_connector().connect(name, tcp).await.expect("handshake");
    let mut c = Client::new(tls);
    assert!(c.line_str().await.starts_with("+OK mailcheck POP3 ready <"));
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    assert!(!String::from_utf8(c.body().await).expect("ascii").contains("STLS"));
    assert!(c.cmd("STLS").await.starts_with("-ERR"));
    c.login("alice", "alice-demo-pw").await;
    assert!(c.cmd("RETR 3").await.starts_with("+OK"));
    let stored = store.messages("alice").expect("alice");
    assert_eq!(unstuff(&c.body().await), &stored[2].data[..]);
    assert!(c.cmd("DELE 4").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    c.hang_up().await;
    assert_eq!(store.messages("alice").map(|m| m.len()), Some(3));
    srv.shutdown().await;
}

#[tokio::test]
async fn concurrent_sessions_commit_by_identity() {
    let (srv, store) = server().await;
    let stored = store.messages("alice").expect("alice");
    let mut a = alice(&srv).await;
    let mut b = alice(&srv).await;
    assert!(a.cmd("DELE 1").await.starts_with("+OK"));
    assert!(a.cmd("QUIT").await.starts_with("+OK"));
    a.hang_up().await;
    // b still sees its login snapshot, where message 2 is the dotted one.
    assert!(b.cmd("DELE 2").await.starts_with("+OK"));
    assert!(b.cmd("DELE 1").await.starts_with("+OK"));
    assert!(b.cmd("QUIT").await.starts_with("+OK"));
    b.hang_up().await;
    let left: Vec<String> = store
        .messages("alice")
        .expect("alice")
        .into_iter()
        .map(|m| m.uid)
        .collect();
    assert_eq!(left, vec![stored[2].uid.clone(), stored[3].uid.clone()]);
    srv.shutdown().await;
}

#[tokio::test]
async fn silent_and_abusive_clients_do_not_wedge_the_server() {
    let (srv, _store) = server().await;

    // Says nothing at all.
    let mut silent = greeted(srv.pop3_addr).await;
    // Sends 100 KB without a newline.
    let mut flood = greeted(srv.pop3_addr).await;
    flood
        .io
        .get_mut()
        .write_all(&vec![b'A'; 100 * 1024])
        .await
        .expect("write flood");
    // Sends nothing on the TLS port: its handshake times out.
    let mut stalled_tls = TcpStream::connect(srv.pop3s_addr.expect("pop3s"))
        .await
        .expect("connect");
    // Sends garbage bytes on the TLS port.
    let mut garbage_tls = TcpStream::connect(srv.pop3s_addr.expect("pop3s"))
        .await
        .expect("connect");
    garbage_tls
        .write_all(b"USER alice\r\n\x00\xff\r\n")
        .await
        .expect("write");

    // Meanwhile a normal session works, over both listeners.
    let mut c = alice(&srv).await;
    assert!(c.cmd("STAT").await.starts_with("+OK 4 "));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    let tcp = TcpStream::connect(srv.pop3s_addr.expect("pop3s"))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut t = Client::new(tls_connector().connect(name, tcp).await.expect("handshake"));
    assert!(t.line_str().await.starts_with("+OK"));

    // The flooding client's line is rejected once it ends; it can go on.
    flood.send("").await;
    assert!(flood.line_str().await.starts_with("-ERR"));
    assert!(flood.cmd("CAPA").await.starts_with("+OK"));
    assert!(!flood.body().await.is_empty());

    // The stalled handshakes are dropped by the server (500 ms timeout).
    let mut buf = [0u8; 64];
    let n = timeout(WAIT, stalled_tls.read(&mut buf))
        .await
        .expect("server closes");
    assert!(matches!(n, Ok(0) | Err(_)));
    let mut rest = Vec::new();
    timeout(WAIT, garbage_tls.read_to_end(&mut rest))
        .await
        .expect("server closes")
        .ok();

    assert!(silent.cmd("NOOP").await.starts_with("-ERR"));
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_sessions_and_listeners() {
    let (srv, _store) = server().await;
    let addr = srv.pop3_addr;
    let mut c = alice(&srv).await;
    timeout(WAIT, srv.shutdown()).await.expect("shutdown in time");
    assert!(c.try_line(WAIT).await.is_none(), "session closed");
    assert!(TcpStream::connect(addr.expect("addr")).await.is_err());
}

#[tokio::test]
async fn start_reports_errors() {
    let mut config = ServerConfig::new(Arc::new(Store::new()), identity());
    config.pop3_listen = None;
    config.pop3s_listen = None;
    assert!(start(config).await.is_err());
    let (srv, _store) = server().await;
    let mut config = ServerConfig::new(Arc::new(Store::new()), identity());
    config.pop3_listen = srv.pop3_addr;
    let err = start(config).await.expect_err("port in use");
    assert!(err.to_string().contains("cannot listen"));
    srv.shutdown().await;
}

// ---- Faults: each one changes the bytes on the wire as described. ----

async fn faulty(fault: Fault) -> (RunningServer, Arc<Store>) {
    server_with(Faults::from(fault)).await
}

#[tokio::test]
async fn fault_bare_lf() {
    let (srv, _) = faulty(Fault::BareLf).await;
    let mut c = connect(srv.pop3_addr).await;
    let greeting = c.line().await;
    assert!(greeting.ends_with(b">\n"));
    c.send("USER alice").await;
    assert_eq!(c.line().await, b"+OK send PASS\n");
    c.send("PASS alice-demo-pw").await;
    c.line().await;
    c.send("RETR 1").await;
    c.line().await;
    let mut body = Vec::new();
    loop {
        let line = c.line().await;
        if line == b".\n" {
            break;
        }
        body.extend_from_slice(&line);
    }
    assert!(!body.contains(&b'\r'));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_lowercase_status_and_long_reply() {
    let (srv, _) = server_with(Faults::none().with(Fault::LowercaseStatus).with(Fault::LongReply)).await;
    let mut c = connect(srv.pop3_addr).await;
    let greeting = c.line().await;
    assert_eq!(greeting.len(), 600);
    assert!(greeting.starts_with(b"+ok mailcheck POP3 ready <") && greeting.ends_with(b"\r\n"));
    assert!(c.cmd("STAT").await.starts_with("-err "));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_no_byte_stuffing() {
    let (srv, _) = faulty(Fault::NoByteStuffing).await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("RETR 2").await.starts_with("+OK"));
    // The unstuffed "." line ends the reply early.
    let body = c.body().await;
    assert!(contains(&body, b"\r\n.hidden\r\n") && contains(&body, b"\r\n..double\r\n"));
    assert!(!contains(&body, b"space"));
    assert_eq!(c.line_str().await, ". space\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_missing_terminator() {
    let (srv, _) = faulty(Fault::MissingTerminator).await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("LIST").await.starts_with("+OK"));
    for _ in 0..4 {
        c.line().await;
    }
    assert!(
        c.try_line(SHORT).await.is_none(),
        "no terminator, connection open"
    );
    assert!(c.cmd("NOOP").await.starts_with("+OK"));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_commands_before_login() {
    let (srv, store) = faulty(Fault::CommandsBeforeLogin).await;
    let mut c = greeted(srv.pop3_addr).await;
    let total: usize = store
        .messages("alice")
        .expect("alice")
        .iter()
        .map(|m| m.size())
        .sum();
    assert_eq!(c.cmd("STAT").await, format!("+OK 4 {total}\r\n"));
    assert!(c.cmd("RETR 1").await.starts_with("+OK"));
    c.body().await;
    assert!(c.cmd("NOOP").await.starts_with("+OK"));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_delete_without_quit() {
    let (srv, store) = faulty(Fault::DeleteWithoutQuit).await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    c.hang_up().await;
    assert_eq!(store.messages("alice").map(|m| m.len()), Some(3));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_wrong_list_size_and_list_n_mismatch() {
    let (srv, store) = server_with(
        Faults::none()
            .with(Fault::WrongListSize)
            .with(Fault::ListNMismatch),
    )
    .await;
    let size = store.messages("alice").expect("alice")[0].size();
    let mut c = alice(&srv).await;
    assert_eq!(c.cmd("LIST 1").await, format!("+OK 2 {}\r\n", size + 1));
    assert!(c.cmd("LIST").await.starts_with("+OK"));
    assert!(c
        .body()
        .await
        .starts_with(format!("1 {}\r\n", size + 1).as_bytes()));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_uidl_variants() {
    let (srv, store) = faulty(Fault::UnstableUidl).await;
    let uid = store.messages("alice").expect("alice")[0].uid.clone();
    let mut a = alice(&srv).await;
    let mut b = alice(&srv).await;
    let ua = a.cmd("UIDL 1").await;
    let ub = b.cmd("UIDL 1").await;
    assert_ne!(ua, ub);
    assert_ne!(ua, format!("+OK 1 {uid}\r\n"));
    assert!(ua.len() - "+OK 1 \r\n".len() <= 70 && !ua[6..ua.len() - 2].contains(' '));
    srv.shutdown().await;

    let (srv, _) = faulty(Fault::BadUidlFormat).await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("UIDL").await.starts_with("+OK"));
    let listing = String::from_utf8(c.body().await).expect("ascii");
    let first = listing.lines().next().expect("line");
    let id = first.split_once(' ').expect("n uid").1;
    assert!(id.len() > 70 && id.contains(' '));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_deleted_visible_and_rset_ignored() {
    let (srv, _) = faulty(Fault::DeletedVisible).await;
    let mut c = alice(&srv).await;
    let before = c.cmd("STAT").await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert_eq!(c.cmd("STAT").await, before);
    assert!(c.cmd("RETR 1").await.starts_with("+OK"));
    c.body().await;
    srv.shutdown().await;

    let (srv, _) = faulty(Fault::RsetIgnored).await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("RSET").await.starts_with("+OK maildrop has 3 messages"));
    assert!(c.cmd("RETR 1").await.starts_with("-ERR"));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_quit_no_commit() {
    let (srv, store) = faulty(Fault::QuitNoCommit).await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("DELE 1").await.starts_with("+OK"));
    assert!(c.cmd("QUIT").await.starts_with("+OK"));
    c.hang_up().await;
    assert_eq!(store.messages("alice").map(|m| m.len()), Some(4));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_stall_retr_and_no_greeting() {
    let (srv, _) = faulty(Fault::StallRetr).await;
    let mut c = alice(&srv).await;
    c.send("RETR 1").await;
    assert!(c.try_line(SHORT).await.is_none(), "RETR not answered");
    c.hang_up().await;
    srv.shutdown().await;

    let (srv, _) = faulty(Fault::NoGreeting).await;
    let mut c = connect(srv.pop3_addr).await;
    assert!(c.try_line(SHORT).await.is_none(), "no greeting");
    c.send("CAPA").await;
    assert!(c.try_line(SHORT).await.is_none(), "still silent");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_unknown_ok_and_top_ignores_lines() {
    let (srv, store) = server_with(Faults::none().with(Fault::UnknownOk).with(Fault::TopIgnoresLines)).await;
    let mut c = alice(&srv).await;
    assert!(c.cmd("XYZZY").await.starts_with("+OK"));
    assert!(c.cmd("TOP 1 0").await.starts_with("+OK"));
    let first = store.messages("alice").expect("alice")[0].data.clone();
    assert_eq!(unstuff(&c.body().await), &first[..]);
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_bad_pass_ok() {
    let (srv, _) = faulty(Fault::BadPassOk).await;
    let mut c = greeted(srv.pop3_addr).await;
    c.login("alice", "definitely-wrong").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 4 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_no_multiline_capa() {
    let (srv, _) = faulty(Fault::NoMultilineCapa).await;
    let mut c = greeted(srv.pop3_addr).await;
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    assert!(c.try_line(SHORT).await.is_none(), "no capability lines");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_stls_ignored_tls() {
    let (srv, _) = faulty(Fault::StlsIgnoredTls).await;
    let mut c = greeted(srv.pop3_addr).await;
    assert!(c.cmd("STLS").await.starts_with("+OK"));
    // Still plaintext: a plain command gets a plain answer.
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    assert!(!String::from_utf8(c.body().await).expect("ascii").contains("STLS"));
    // And a real client's handshake fails.
    let (srv2, _) = faulty(Fault::StlsIgnoredTls).await;
    let mut c = greeted(srv2.pop3_addr).await;
    assert!(c.cmd("STLS").await.starts_with("+OK"));
    let name = ServerName::try_from("localhost").expect("name");
    let res = timeout(
        Duration::from_secs(2),
        tls_connector().connect(name, c.io.into_inner()),
    )
    .await;
    assert!(!matches!(res, Ok(Ok(_))));
    srv.shutdown().await;
    srv2.shutdown().await;
}

#[tokio::test]
async fn greeting_delay_tarpits_the_greeting() {
    let delay = Duration::from_millis(400);
    let mut config = ServerConfig::new(Arc::new(Store::fixture()), identity());
    config.greeting_delay = delay;
    let srv = start(config).await.expect("start");
    let started = Instant::now();
    let mut c = connect(srv.pop3_addr).await;
    assert!(c.line_str().await.starts_with("+OK mailcheck POP3 ready"));
    assert!(
        started.elapsed() >= delay,
        "greeting after {:?}",
        started.elapsed()
    );

    // Implicit TLS: the handshake is immediate, the greeting is not.
    let tcp = TcpStream::connect(srv.pop3s_addr.expect("pop3s"))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let started = Instant::now();
    let mut t = Client::new(tls_connector().connect(name, tcp).await.expect("handshake"));
    assert!(t.line_str().await.starts_with("+OK"));
    assert!(
        started.elapsed() >= delay,
        "greeting after {:?}",
        started.elapsed()
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_close_on_accept() {
    let (srv, _) = faulty(Fault::CloseOnAccept).await;
    for addr in [srv.pop3_addr, srv.pop3s_addr] {
        let mut tcp = TcpStream::connect(addr.expect("addr")).await.expect("connect");
        let mut rest = Vec::new();
        let read = timeout(WAIT, tcp.read_to_end(&mut rest))
            .await
            .expect("server closes at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?} {rest:?}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_plaintext_login_refused() {
    const REFUSED: &str =
        "-ERR [SYS/PERM] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
    let (srv, _) = faulty(Fault::PlaintextLoginRefused).await;
    let mut c = greeted(srv.pop3_addr).await;
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    let caps = String::from_utf8(c.body().await).expect("ascii");
    assert!(
        !caps.lines().any(|l| l == "USER") && caps.contains("STLS\r\n"),
        "{caps}"
    );
    assert_eq!(c.cmd("USER alice").await, REFUSED);
    assert!(c.cmd("PASS alice-demo-pw").await.starts_with("-ERR"));
    assert_eq!(
        c.cmd("APOP alice 0123456789abcdef0123456789abcdef").await,
        REFUSED
    );

    assert!(c.cmd("STLS").await.starts_with("+OK"));
    let name = ServerName::try_from("localhost").expect("name");
    let tls = timeout(WAIT, tls_connector().connect(name, c.io.into_inner()))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut c = Client::new(tls);
    assert!(c.cmd("CAPA").await.starts_with("+OK"));
    assert!(String::from_utf8(c.body().await)
        .expect("ascii")
        .contains("\r\nUSER\r\n"));
    c.login("alice", "alice-demo-pw").await;
    assert!(c.cmd("STAT").await.starts_with("+OK 4 "));

    // Implicit TLS is secure from the start.
    let tcp = TcpStream::connect(srv.pop3s_addr.expect("pop3s"))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut t = Client::new(tls_connector().connect(name, tcp).await.expect("handshake"));
    assert!(t.line_str().await.starts_with("+OK"));
    t.login("bob", "bob-demo-pw").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_login_disabled() {
    let (srv, _) = faulty(Fault::LoginDisabled).await;
    let mut c = greeted(srv.pop3_addr).await;
    assert!(c.cmd("USER alice").await.starts_with("+OK"));
    assert_eq!(
        c.cmd("PASS alice-demo-pw").await,
        "-ERR [AUTH] Login failure or POP3 disabled\r\n"
    );
    srv.shutdown().await;

    let mut config = ServerConfig::new(Arc::new(Store::fixture()), identity());
    config.faults = Fault::LoginDisabled.into();
    config.auth_failure_text = Some("[AUTH] Web login required: https://example.test/verify".into());
    let srv = start(config).await.expect("start");
    let mut c = connect(srv.pop3_addr).await;
    let greeting = c.line_str().await;
    let ts = &greeting[greeting.find('<').expect("<")..=greeting.find('>').expect(">")];
    assert!(c.cmd("USER alice").await.starts_with("+OK"));
    assert_eq!(
        c.cmd("PASS alice-demo-pw").await,
        "-ERR [AUTH] Web login required: https://example.test/verify\r\n"
    );
    let digest = {
        use md5::{Digest, Md5};
        let d = Md5::new()
            .chain_update(ts.as_bytes())
            .chain_update(b"alice-demo-pw")
            .finalize();
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert!(c
        .cmd(&format!("APOP alice {digest}"))
        .await
        .starts_with("-ERR [AUTH] Web login required"));
    assert!(c.cmd("STAT").await.starts_with("-ERR"));
    srv.shutdown().await;
}

#[tokio::test]
async fn auth_failure_text_applies_to_wrong_passwords() {
    let mut config = ServerConfig::new(Arc::new(Store::fixture()), identity());
    config.auth_failure_text = Some("[AUTH] Authentication failed.".into());
    let srv = start(config).await.expect("start");
    let mut c = greeted(srv.pop3_addr).await;
    assert!(c.cmd("USER alice").await.starts_with("+OK"));
    assert_eq!(
        c.cmd("PASS wrong").await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    c.login("alice", "alice-demo-pw").await;
    srv.shutdown().await;
}

// ---- Certificates: the server serves chains from PEM; a client that
// trusts only the test root accepts a good chain and rejects bad ones. ----

/// Serves `chain_pem` on implicit TLS and connects with a client that trusts
/// only `root_pem`, verifying `name`. Ok: the certificates the server sent
/// and its greeting; Err: the client's rustls error.
async fn handshake_with(
    chain_pem: &str,
    key_pem: &str,
    root_pem: &str,
    name: &str,
) -> Result<(Vec<CertificateDer<'static>>, String), rustls::Error> {
    let identity = TlsIdentity::from_pem(chain_pem, key_pem).expect("identity from PEM");
    let mut config = ServerConfig::new(Arc::new(Store::fixture()), Arc::new(identity));
    config.pop3_listen = None;
    config.handshake_timeout = Duration::from_secs(2);
    let srv = start(config).await.expect("start");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).expect("root pem"))
        .expect("root");
    let client =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = TcpStream::connect(srv.pop3s_addr.expect("pop3s"))
        .await
        .expect("connect");
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let connected = timeout(WAIT, TlsConnector::from(Arc::new(client)).connect(name, tcp))
        .await
        .expect("handshake in time");
    let result = match connected {
        Ok(tls) => {
            let sent = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let mut c = Client::new(tls);
            Ok((sent, c.line_str().await))
        }
        Err(e) => Err(e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| panic!("not a rustls error: {e:?}"))),
    };
    srv.shutdown().await;
    result
}

/// The rustls error for a rejected chain, printed so the exact values can
/// be seen with `--nocapture`.
async fn rejected(case: &str, chain_pem: &str, key_pem: &str, root_pem: &str, name: &str) -> String {
    let err = handshake_with(chain_pem, key_pem, root_pem, name)
        .await
        .err()
        .unwrap_or_else(|| panic!("{case}: handshake should fail"));
    println!("{case}: Debug = {err:?}\n{case}: Display = {err}");
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{case}: {err:?}"
    );
    format!("{err:?}")
}

#[tokio::test]
async fn served_chain_is_verified_against_the_test_root() {
    let pki = Pki::new("mailcheck Test Root");
    assert_eq!(pki.root_name, "mailcheck Test Root");
    let now = certs::now();
    let (chain, key) = pki.leaf(&["localhost", "127.0.0.1"], now - DAY, now + 30 * DAY, true);
    assert_eq!(chain.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert_eq!(
        TlsIdentity::from_pem(&chain, &key).expect("identity").cert_pem,
        chain
    );

    for name in ["localhost", "127.0.0.1"] {
        let (sent, greeting) = handshake_with(&chain, &key, &pki.root_pem, name)
            .await
            .unwrap_or_else(|e| panic!("{name}: valid chain refused: {e:?}"));
        assert_eq!(sent.len(), 2, "leaf and intermediate are sent");
        let pem: Vec<CertificateDer> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain pem");
        assert_eq!(sent, pem);
        assert!(greeting.starts_with("+OK mailcheck POP3 ready"));
    }

    let (expired, key) = pki.leaf(&["localhost"], now - 60 * DAY, now - DAY, true);
    let debug = rejected("expired", &expired, &key, &pki.root_pem, "localhost").await;
    assert!(debug.contains("Expired"), "{debug}");

    let (future, key) = pki.leaf(&["localhost"], now + DAY, now + 60 * DAY, true);
    let debug = rejected("not yet valid", &future, &key, &pki.root_pem, "localhost").await;
    assert!(debug.contains("NotValidYet"), "{debug}");

    let (other, key) = pki.leaf(&["mail.example.test"], now - DAY, now + 30 * DAY, true);
    let debug = rejected("wrong name", &other, &key, &pki.root_pem, "localhost").await;
    assert!(debug.contains("NotValidForName"), "{debug}");
    let (dns_only, key) = pki.leaf(&["localhost"], now - DAY, now + 30 * DAY, true);
    let debug = rejected("wrong IP", &dns_only, &key, &pki.root_pem, "127.0.0.1").await;
    assert!(debug.contains("NotValidForName"), "{debug}");

    let (bare, key) = pki.leaf(&["localhost"], now - DAY, now + 30 * DAY, false);
    assert_eq!(bare.matches("-----BEGIN CERTIFICATE-----").count(), 1);
    let debug = rejected("no intermediate", &bare, &key, &pki.root_pem, "localhost").await;
    assert!(debug.contains("UnknownIssuer"), "{debug}");

    let (selfie, key) = certs::self_signed(&["localhost"], now - DAY, now + 30 * DAY);
    let debug = rejected("self-signed", &selfie, &key, &pki.root_pem, "localhost").await;
    assert!(debug.contains("UnknownIssuer"), "{debug}");

    // Another PKI's valid chain is just as unknown.
    let stranger = Pki::new("Some Other Root");
    let (theirs, key) = stranger.leaf(&["localhost"], now - DAY, now + 30 * DAY, true);
    let debug = rejected("other root", &theirs, &key, &pki.root_pem, "localhost").await;
    assert!(debug.contains("UnknownIssuer"), "{debug}");
}
