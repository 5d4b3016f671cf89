//! End-to-end tests of the embedded SMTP server over real sockets: the
//! correct behaviour of every rule (on the relay, submission and implicit
//! TLS listeners), delivery seen through the store, POP3 and IMAP, every
//! `smtp-*` fault's effect on the wire, and robustness against silent or
//! abusive clients.

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use mailcheck::server::{start, Fault, Faults, RunningServer, ServerConfig, Store, TlsIdentity};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(300);

fn identity() -> Arc<TlsIdentity> {
    static ID: OnceLock<Arc<TlsIdentity>> = OnceLock::new();
    ID.get_or_init(|| Arc::new(TlsIdentity::generate(&["localhost", "127.0.0.1"]).expect("identity")))
        .clone()
}

/// SMTP (all three listeners), POP3 and IMAP over one fresh fixture store.
fn config(faults: Faults) -> (ServerConfig, Arc<Store>) {
    let store = Arc::new(Store::fixture());
    let mut config = ServerConfig::new(Arc::clone(&store), identity())
        .with_imap()
        .with_smtp();
    config.faults = faults;
    config.handshake_timeout = Duration::from_millis(500);
    (config, store)
}

async fn server_with(faults: Faults) -> (RunningServer, Arc<Store>) {
    server_tuned(faults, |_| {}).await
}

/// A server whose configuration `tune` adjusts first.
async fn server_tuned(faults: Faults, tune: impl FnOnce(&mut ServerConfig)) -> (RunningServer, Arc<Store>) {
    let (mut config, store) = config(faults);
    tune(&mut config);
    (start(config).await.expect("start"), store)
}

async fn server() -> (RunningServer, Arc<Store>) {
    server_with(Faults::none()).await
}

async fn faulty(fault: Fault) -> (RunningServer, Arc<Store>) {
    server_with(fault.into()).await
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

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Checks a whole reply the way a strict client would: CRLF endings, at
/// most 512 octets a line, one three-digit code on every line, `-` on all
/// lines but the last, and (unless `plain`: greeting, EHLO, HELO, 3xx) an
/// enhanced status code of the reply's class.
fn check_reply(reply: &str, plain: bool) {
    let lines: Vec<&str> = reply.split_inclusive("\r\n").collect();
    assert!(!lines.is_empty() && reply.ends_with("\r\n"), "{reply:?}");
    let code = &reply[..3];
    assert!(
        code.bytes().all(|b| b.is_ascii_digit()) && (b'2'..=b'5').contains(&code.as_bytes()[0]),
        "{reply:?}"
    );
    for (i, line) in lines.iter().enumerate() {
        assert!(line.len() <= 512, "{line:?}");
        assert_eq!(&line[..3], code, "{reply:?}");
        assert!(!line[..line.len() - 2].contains(['\r', '\n']), "{reply:?}");
        let sep = line.as_bytes().get(3).copied();
        if i + 1 < lines.len() {
            assert_eq!(sep, Some(b'-'), "{reply:?}");
        } else {
            assert!(matches!(sep, Some(b' ') | Some(b'\r')), "{reply:?}");
        }
        if !plain && !code.starts_with('3') {
            let status = line[4..].split(' ').next().unwrap_or("");
            let parts: Vec<&str> = status.split('.').collect();
            assert!(
                parts.len() == 3
                    && parts[0] == &code[..1]
                    && parts[1..]
                        .iter()
                        .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())),
                "enhanced status code of class {}: {reply:?}",
                &code[..1]
            );
        }
    }
}

/// A test client that keeps raw bytes so tests can assert on them.
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
        String::from_utf8(self.line().await).expect("utf-8")
    }

    /// A whole reply: lines up to the first without `-` after the code.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let line = self.line_str().await;
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return reply;
            }
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.io.get_mut();
        stream.write_all(bytes).await.expect("write");
        stream.flush().await.expect("flush");
    }

    async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Sends a command and returns its reply, checked by [`check_reply`].
    async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        let reply = self.reply().await;
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        check_reply(&reply, verb == "EHLO" || verb == "HELO");
        reply
    }

    async fn ehlo(&mut self) -> String {
        let reply = self.cmd("EHLO client.example").await;
        assert!(reply.starts_with("250-mailcheck.local "), "{reply}");
        reply
    }

    /// Sends a message (dot-stuffed here) after DATA's 354; returns the
    /// final reply.
    async fn message(&mut self, body: &[u8]) -> String {
        let reply = self.cmd("DATA").await;
        assert!(reply.starts_with("354 "), "{reply}");
        let mut wire = stuff(body);
        wire.extend_from_slice(b".\r\n");
        self.send_raw(&wire).await;
        let reply = self.reply().await;
        check_reply(&reply, false);
        reply
    }

    /// Checks that the server closes the connection without sending more.
    async fn expect_closed(mut self) {
        let mut rest = Vec::new();
        // A reset instead of a FIN is a close too.
        let _ = timeout(WAIT, self.io.read_to_end(&mut rest))
            .await
            .expect("server closes");
        assert!(rest.is_empty(), "nothing after the last reply: {rest:?}");
    }
}

async fn connect(addr: Option<SocketAddr>) -> Client<TcpStream> {
    let addr = addr.expect("listener address");
    Client::new(TcpStream::connect(addr).await.expect("connect"))
}

/// Connects and checks the greeting.
async fn greeted(addr: Option<SocketAddr>) -> Client<TcpStream> {
    let mut c = connect(addr).await;
    let greeting = c.reply().await;
    check_reply(&greeting, true);
    assert!(greeting.starts_with("220 mailcheck.local ESMTP "), "{greeting}");
    c
}

async fn tls_handshake(tcp: TcpStream) -> TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("name");
    timeout(WAIT, tls_connector().connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// EHLO, STARTTLS and the handshake.
async fn upgraded(addr: Option<SocketAddr>) -> Client<TlsStream<TcpStream>> {
    let mut c = greeted(addr).await;
    assert!(c.ehlo().await.contains("250-STARTTLS\r\n"));
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS\r\n");
    Client::new(tls_handshake(c.io.into_inner()).await)
}

/// Implicit TLS, greeting checked.
async fn smtps(srv: &RunningServer) -> Client<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(srv.smtps_addr.expect("smtps"))
        .await
        .expect("connect");
    let mut c = Client::new(tls_handshake(tcp).await);
    let greeting = c.reply().await;
    check_reply(&greeting, true);
    assert!(greeting.starts_with("220 mailcheck.local ESMTP "), "{greeting}");
    c
}

/// Dot-stuffing as a client does it before sending.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(body.len() + 64);
    for line in body.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire
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

/// The message without the Return-Path and Received fields the server
/// prepends (Received is folded over several lines).
fn without_trace(stored: &[u8]) -> &[u8] {
    let mut lines = stored.split_inclusive(|b| *b == b'\n').peekable();
    let mut skipped = 0;
    let first = lines.next().expect("a line");
    assert!(
        first.starts_with(b"Return-Path: <"),
        "{:?}",
        String::from_utf8_lossy(first)
    );
    skipped += first.len();
    let received = lines.next().expect("a line");
    assert!(
        received.starts_with(b"Received: from "),
        "{:?}",
        String::from_utf8_lossy(received)
    );
    skipped += received.len();
    while let Some(next) = lines.peek() {
        if !next.starts_with(b"\t") {
            break;
        }
        skipped += next.len();
        lines.next();
    }
    &stored[skipped..]
}

/// A message exercising what delivery must keep intact: dot-leading lines
/// (one exactly "."), UTF-8 and raw 8-bit octets, and a 998-octet line.
fn tricky_body() -> Vec<u8> {
    let mut body = b"From: Sender <sender@remote.example>\r\n\
        To: alice@localhost\r\n\
        Subject: delivery test\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\
        \r\n\
        .leading dot\r\n\
        ..two dots\r\n\
        .\r\n\
        . dot space\r\n"
        .to_vec();
    body.extend_from_slice("caf\u{e9} \u{fc}ber \u{2603}\r\n".as_bytes());
    body.extend((0x80..=0xffu8).collect::<Vec<u8>>());
    body.extend_from_slice(b"\r\n");
    body.extend(vec![b'y'; 998]);
    body.extend_from_slice(b"\r\nlast line\r\n");
    body
}

async fn send_mail<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>, to: &str, body: &[u8]) -> String {
    assert!(c
        .cmd("MAIL FROM:<sender@remote.example>")
        .await
        .starts_with("250 2.1.0 "));
    assert!(c.cmd(&format!("RCPT TO:<{to}>")).await.starts_with("250 2.1.5 "));
    c.message(body).await
}

fn last_message(store: &Store, user: &str) -> Vec<u8> {
    store
        .messages(user)
        .expect("account")
        .last()
        .expect("a message")
        .data
        .to_vec()
}

fn inbox_len(store: &Store, user: &str) -> usize {
    store.messages(user).expect("account").len()
}

// ---- The correct server ----

#[tokio::test]
async fn greeting_ehlo_and_helo() {
    let (srv, _) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    let ehlo = c.ehlo().await;
    assert_eq!(
        ehlo,
        "250-mailcheck.local Hello client.example\r\n\
         250-PIPELINING\r\n\
         250-SIZE 10485760\r\n\
         250-8BITMIME\r\n\
         250-STARTTLS\r\n\
         250 ENHANCEDSTATUSCODES\r\n",
        "no AUTH before TLS"
    );
    assert_eq!(
        c.cmd("HELO client.example").await,
        "250 mailcheck.local Hello client.example\r\n"
    );
    assert!(c.cmd("QUIT").await.starts_with("221 2.0.0 "));
    c.expect_closed().await;

    let (srv2, _) = server_tuned(Faults::none(), |c| c.smtp_max_message_size = 12_345).await;
    let mut c = greeted(srv2.submission_addr).await;
    assert!(c.ehlo().await.contains("\r\n250-SIZE 12345\r\n"));
    srv2.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn commands_out_of_order_get_503_and_syntax_errors_500_501() {
    let (srv, _) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    assert!(c.cmd("MAIL FROM:<a@b.example>").await.starts_with("503 5.5.1 "));
    assert!(c.cmd("RCPT TO:<alice@localhost>").await.starts_with("503 5.5.1 "));
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1 "));
    assert!(c.cmd("NOOP").await.starts_with("250 2.0.0 "));
    assert!(c.cmd("VRFY alice").await.starts_with("252 2.5.2 "));
    assert!(c.cmd("EXPN staff").await.starts_with("502 5.5.1 "));
    assert!(c.cmd("HELP").await.starts_with("214 2.0.0 "));
    assert!(c.cmd("XYZZY").await.starts_with("500 5.5.2 "));
    assert!(c.cmd("EHLO").await.starts_with("501 5.5.4 "));
    c.ehlo().await;
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1 "));
    assert!(c.cmd("RCPT TO:<alice@localhost>").await.starts_with("503 5.5.1 "));
    assert!(c
        .cmd("MAIL FROM:sender@remote.example")
        .await
        .starts_with("501 5.5.4 "));
    assert!(c.cmd("MAIL FROM:<no-domain>").await.starts_with("501 5.1.7 "));
    assert!(c
        .cmd("MAIL FROM:<a@b.example> X-UNKNOWN=1")
        .await
        .starts_with("555 5.5.4 "));
    assert!(c
        .cmd("MAIL FROM:<a@b.example> BODY=8BITMIME")
        .await
        .starts_with("250 2.1.0 "));
    assert!(
        c.cmd("MAIL FROM:<a@b.example>").await.starts_with("503 5.5.1 "),
        "nested MAIL"
    );
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1 "), "no recipient yet");
    assert!(c
        .cmd("RCPT TO:<nobody@localhost>")
        .await
        .starts_with("550 5.1.1 "));
    assert!(c
        .cmd("RCPT TO:<alice@elsewhere.example>")
        .await
        .starts_with("550 5.7.1 "));
    assert!(c.cmd("RCPT TO:<a b@localhost>").await.starts_with("501 5.1.3 "));
    assert!(
        c.cmd("DATA").await.starts_with("503 5.5.1 "),
        "no valid recipient"
    );
    assert!(c.cmd("RCPT TO:<postmaster>").await.starts_with("250 2.1.5 "));
    assert!(c.cmd("RSET").await.starts_with("250 2.0.0 "));
    assert!(
        c.cmd("RCPT TO:<alice@localhost>").await.starts_with("503 5.5.1 "),
        "RSET ended it"
    );
    assert!(
        c.cmd("MAIL FROM:<>").await.starts_with("250 2.1.0 "),
        "a new MAIL works"
    );
    assert!(
        c.cmd("STARTTLS").await.starts_with("503 5.5.1 "),
        "not inside a transaction"
    );
    assert!(c.cmd("QUIT").await.starts_with("221 2.0.0 "));
    c.expect_closed().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn command_lines_are_limited_to_512_octets() {
    let (srv, _) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    // "NOOP " + padding + CRLF = exactly 512 octets.
    let at_limit = format!("NOOP {}", "x".repeat(512 - 5 - 2));
    assert!(c.cmd(&at_limit).await.starts_with("250 "));
    let over = format!("NOOP {}", "x".repeat(512 - 5 - 1));
    assert!(c.cmd(&over).await.starts_with("500 5.5.2 "));
    // A flood without a line end is discarded as it arrives; the session
    // goes on once the line ends.
    c.send_raw(&vec![b'A'; 200 * 1024]).await;
    assert!(c.cmd("").await.starts_with("500 5.5.2 "));
    assert!(c.cmd("NOOP").await.starts_with("250 "));
    // Control characters and 8-bit octets in a command are refused.
    c.send_raw(b"NOOP \x00\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2 "));
    c.send_raw(b"HELO caf\xc3\xa9\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn delivered_mail_is_visible_through_the_store_pop3_and_imap() {
    let (srv, store) = server().await;
    let body = tricky_body();
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    let done = send_mail(&mut c, "alice@localhost", &body).await;
    assert!(done.starts_with("250 2.0.0 OK: queued as MC"), "{done}");
    let id = done.trim_end().rsplit(' ').next().expect("id").to_string();
    assert!(c.cmd("QUIT").await.starts_with("221 "));

    assert_eq!(inbox_len(&store, "alice"), 5);
    assert_eq!(inbox_len(&store, "bob"), 4);
    let stored = last_message(&store, "alice");
    assert_eq!(
        without_trace(&stored),
        &body[..],
        "octet for octet after the trace fields"
    );
    let trace = String::from_utf8_lossy(&stored[..stored.len() - body.len()]).to_string();
    assert!(
        trace.starts_with(
            "Return-Path: <sender@remote.example>\r\nReceived: from client.example ([127.0.0.1])\r\n\t\
             by mailcheck.local (mailcheck) with ESMTP id "
        ),
        "{trace}"
    );
    assert!(
        trace.contains(&format!(" id {id}\r\n\tfor <alice@localhost>;\r\n\t")),
        "{trace}"
    );
    assert!(trace.ends_with(" +0000\r\n"), "{trace}");

    // POP3: RETR gives the same octets.
    let mut p = Client::new(
        TcpStream::connect(srv.pop3_addr.expect("pop3"))
            .await
            .expect("connect"),
    );
    assert!(p.line_str().await.starts_with("+OK"));
    p.send("USER alice").await;
    assert!(p.line_str().await.starts_with("+OK"));
    p.send("PASS alice-demo-pw").await;
    assert!(p.line_str().await.starts_with("+OK maildrop has 5 messages"));
    p.send("RETR 5").await;
    assert!(p.line_str().await.starts_with("+OK"));
    let mut wire = Vec::new();
    loop {
        let line = p.line().await;
        if line == b".\r\n" {
            break;
        }
        wire.extend_from_slice(&line);
    }
    let retrieved = unstuff(&wire);
    assert_eq!(retrieved, stored);
    assert_eq!(without_trace(&retrieved), &body[..]);
    assert!(contains(&wire, b"\r\n..leading dot\r\n") && contains(&wire, b"\r\n..\r\n"));
    assert!(contains(
        &retrieved,
        &[vec![b'y'; 998], b"\r\n".to_vec()].concat()
    ));

    // IMAP: SELECT sees the new message, with the same size.
    let mut i = Client::new(
        TcpStream::connect(srv.imap_addr.expect("imap"))
            .await
            .expect("connect"),
    );
    assert!(i.line_str().await.starts_with("* OK"));
    let mut imap = async |tag: &str, command: &str| {
        i.send(&format!("{tag} {command}")).await;
        let mut text = String::new();
        loop {
            let line = i.line_str().await;
            text.push_str(&line);
            if line.starts_with(&format!("{tag} ")) {
                assert!(line.starts_with(&format!("{tag} OK")), "{text}");
                return text;
            }
        }
    };
    imap("a1", "LOGIN alice alice-demo-pw").await;
    let select = imap("a2", "SELECT INBOX").await;
    assert!(select.contains("* 5 EXISTS\r\n"), "{select}");
    let fetch = imap("a3", "FETCH 5 (RFC822.SIZE)").await;
    assert!(
        fetch.contains(&format!("* 5 FETCH (RFC822.SIZE {})", stored.len())),
        "{fetch}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn one_copy_per_account_and_8bit_and_empty_messages() {
    let (srv, store) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    assert!(c.cmd("MAIL FROM:<> BODY=8BITMIME").await.starts_with("250 "));
    for to in [
        "bob@localhost",
        "BOB@example.test",
        "\"bob\"@mailcheck.local",
        "alice@localhost",
    ] {
        assert!(
            c.cmd(&format!("RCPT TO:<{to}>")).await.starts_with("250 2.1.5 "),
            "{to}"
        );
    }
    let body = b"Subject: to both\r\n\r\n\xe9t\xe9\r\n";
    assert!(c.message(body).await.starts_with("250 2.0.0 "));
    assert_eq!(inbox_len(&store, "bob"), 5, "one copy for three addresses of bob");
    assert_eq!(inbox_len(&store, "alice"), 5);
    let stored = last_message(&store, "bob");
    assert_eq!(without_trace(&stored), &body[..]);
    assert!(stored.starts_with(b"Return-Path: <>\r\n"));
    assert!(!contains(&stored, b"\tfor <"), "several recipients: no `for`");

    // An empty message: just the terminator.
    assert!(c
        .cmd("MAIL FROM:<sender@remote.example>")
        .await
        .starts_with("250 "));
    assert!(c.cmd("RCPT TO:<bob@localhost>").await.starts_with("250 "));
    assert!(c.message(b"").await.starts_with("250 2.0.0 "));
    assert_eq!(without_trace(&last_message(&store, "bob")), b"");
    srv.shutdown().await;
}

/// The classic SMTP smuggling payload: a `.` after a bare LF, then a
/// second transaction, then the real end of data.
fn smuggling_payload(dot: &[u8]) -> Vec<u8> {
    let mut wire = b"Subject: first\r\n\r\nfirst".to_vec();
    wire.extend_from_slice(dot);
    wire.extend_from_slice(
        b"MAIL FROM:<evil@remote.example>\r\n\
          RCPT TO:<bob@localhost>\r\n\
          DATA\r\n\
          Subject: smuggled\r\n\
          \r\n\
          smuggled\r\n\
          .\r\n",
    );
    wire
}

#[tokio::test]
async fn bare_lf_never_ends_data_and_refuses_the_message() {
    let (srv, store) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    for dot in [&b"\r\n.\n"[..], b"\n.\r\n", b"\n.\n", b"\r.\r"] {
        assert!(c
            .cmd("MAIL FROM:<sender@remote.example>")
            .await
            .starts_with("250 "));
        assert!(c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "));
        assert!(c.cmd("DATA").await.starts_with("354 "));
        c.send_raw(&smuggling_payload(dot)).await;
        let reply = c.reply().await;
        check_reply(&reply, false);
        assert!(reply.starts_with("554 5.6.0 "), "{dot:?}: {reply}");
        // Nothing else was answered: the next reply is the NOOP's.
        assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK\r\n", "{dot:?}");
    }
    assert_eq!(inbox_len(&store, "alice"), 4);
    assert_eq!(inbox_len(&store, "bob"), 4, "nothing smuggled");
    srv.shutdown().await;
}

#[tokio::test]
async fn text_lines_over_1000_octets_refuse_the_message() {
    let (srv, store) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    let mut body = b"Subject: long\r\n\r\n".to_vec();
    body.extend(vec![b'z'; 999]);
    body.extend_from_slice(b"\r\n");
    let reply = send_mail(&mut c, "alice@localhost", &body).await;
    assert!(reply.starts_with("554 5.6.0 "), "{reply}");
    // Far longer: streamed past without being buffered.
    let mut body = b"Subject: longer\r\n\r\n".to_vec();
    body.extend(vec![b'z'; 300_000]);
    body.extend_from_slice(b"\r\n");
    let reply = send_mail(&mut c, "alice@localhost", &body).await;
    assert!(reply.starts_with("554 5.6.0 "), "{reply}");
    assert_eq!(inbox_len(&store, "alice"), 4);
    assert!(c.cmd("NOOP").await.starts_with("250 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn size_limit_at_mail_and_after_data() {
    let (srv, store) = server_tuned(Faults::none(), |c| c.smtp_max_message_size = 1000).await;
    let mut c = greeted(srv.smtp_addr).await;
    assert!(c.ehlo().await.contains("250-SIZE 1000\r\n"));
    assert!(c
        .cmd("MAIL FROM:<a@remote.example> SIZE=1001")
        .await
        .starts_with("552 5.3.4 "));
    assert!(c
        .cmd("MAIL FROM:<a@remote.example> SIZE=99999999999999999999")
        .await
        .starts_with("552 5.3.4 "));
    assert!(c
        .cmd("MAIL FROM:<a@remote.example> SIZE=1000")
        .await
        .starts_with("250 "));
    assert!(c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "));
    // Lines of 100 octets that each need a stuffing dot, which does not
    // count (RFC 1870): 1000 octets are within the limit, 1001 are not.
    let line = [&b"."[..], &[b'q'; 97], b"\r\n"].concat();
    let exact = line.repeat(10);
    let mut big = line.repeat(9);
    big.extend([&b"."[..], &[b'q'; 98], b"\r\n"].concat());
    assert_eq!((exact.len(), big.len()), (1000, 1001));
    let reply = c.message(&big).await;
    assert!(reply.starts_with("552 5.3.4 "), "{reply}");
    assert_eq!(inbox_len(&store, "alice"), 4);
    assert!(c.cmd("MAIL FROM:<a@remote.example>").await.starts_with("250 "));
    assert!(c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "));
    assert!(c.message(&exact).await.starts_with("250 2.0.0 "));
    assert_eq!(without_trace(&last_message(&store, "alice")), &exact[..]);
    srv.shutdown().await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let (srv, store) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    c.send_raw(
        b"EHLO client.example\r\n\
          MAIL FROM:<sender@remote.example>\r\n\
          RCPT TO:<alice@localhost>\r\n\
          RCPT TO:<nobody@localhost>\r\n\
          RCPT TO:<bob@localhost>\r\n\
          DATA\r\n",
    )
    .await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let reply = c.reply().await;
        check_reply(&reply, reply.starts_with("250-") || reply.starts_with("354"));
        codes.push(reply[..3].to_string());
    }
    assert_eq!(codes, ["250", "250", "250", "550", "250", "354"]);
    c.send_raw(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        .await;
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(c.reply().await);
    }
    assert!(replies[0].starts_with("250 2.0.0 OK: queued as "), "{replies:?}");
    assert!(replies[1].starts_with("250 2.1.0 "), "{replies:?}");
    assert_eq!(replies[2..4], ["250 2.0.0 OK\r\n", "250 2.0.0 OK\r\n"]);
    assert!(replies[4].starts_with("221 2.0.0 "), "{replies:?}");
    c.expect_closed().await;
    assert_eq!(inbox_len(&store, "alice"), 5);
    assert_eq!(inbox_len(&store, "bob"), 5);
    srv.shutdown().await;
}

#[tokio::test]
async fn starttls_resets_the_session_and_unlocks_auth() {
    let (srv, store) = server().await;
    let mut c = upgraded(srv.smtp_addr).await;
    assert!(
        c.try_line(SHORT).await.is_none(),
        "nothing unsolicited after the handshake"
    );
    assert!(
        c.cmd("MAIL FROM:<a@remote.example>")
            .await
            .starts_with("503 5.5.1 "),
        "EHLO needed again"
    );
    let ehlo = c.ehlo().await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n"), "{ehlo}");
    assert!(c.cmd("STARTTLS").await.starts_with("503 5.5.1 "));
    let plain = b64(b"\0alice\0alice-demo-pw");
    assert!(c
        .cmd(&format!("AUTH PLAIN {plain}"))
        .await
        .starts_with("235 2.7.0 "));
    assert!(c
        .cmd(&format!("AUTH PLAIN {plain}"))
        .await
        .starts_with("503 5.5.1 "));
    assert!(send_mail(&mut c, "bob@localhost", b"Subject: tls\r\n\r\nhi\r\n")
        .await
        .starts_with("250 "));
    assert!(contains(&last_message(&store, "bob"), b" with ESMTPSA id "));
    srv.shutdown().await;
}

#[tokio::test]
async fn plaintext_sent_after_starttls_is_discarded() {
    let (srv, _) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    c.send_raw(b"STARTTLS\r\nEHLO injected.example\r\nMAIL FROM:<evil@remote.example>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS\r\n");
    assert!(c.io.buffer().is_empty(), "no early data from the server");
    let mut c = Client::new(tls_handshake(c.io.into_inner()).await);
    assert!(
        c.try_line(SHORT).await.is_none(),
        "the injected commands were not run"
    );
    assert!(c
        .cmd("MAIL FROM:<a@remote.example>")
        .await
        .starts_with("503 5.5.1 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn relay_port_auth_only_over_tls() {
    let (srv, store) = server().await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    let plain = b64(b"\0alice\0alice-demo-pw");
    assert!(c
        .cmd(&format!("AUTH PLAIN {plain}"))
        .await
        .starts_with("538 5.7.11 "));
    // Local delivery needs no AUTH on this port.
    assert!(
        send_mail(&mut c, "alice@localhost", b"Subject: anon\r\n\r\nx\r\n")
            .await
            .starts_with("250 ")
    );
    assert!(contains(&last_message(&store, "alice"), b" with ESMTP id "));
    srv.shutdown().await;
}

#[tokio::test]
async fn submission_needs_tls_then_auth() {
    let (srv, store) = server().await;
    let mut c = greeted(srv.submission_addr).await;
    let ehlo = c.ehlo().await;
    assert!(
        ehlo.contains("250-STARTTLS\r\n") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@localhost>").await,
        "530 5.7.0 Authentication required\r\n"
    );
    assert!(c.cmd("AUTH LOGIN").await.starts_with("538 5.7.11 "));

    let mut c = upgraded(srv.submission_addr).await;
    assert!(c.ehlo().await.contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n"));
    assert!(c
        .cmd("MAIL FROM:<alice@localhost>")
        .await
        .starts_with("530 5.7.0 "));
    let wrong = b64(b"\0alice\0not-the-password");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {wrong}")).await,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    // PLAIN without an initial response, then cancelled.
    assert_eq!(c.cmd("AUTH PLAIN").await, "334 \r\n");
    assert!(c.cmd("*").await.starts_with("501 5.7.0 "));
    assert!(c.cmd("AUTH PLAIN").await.starts_with("334 "));
    assert!(c.cmd("not base64!").await.starts_with("501 5.5.2 "));
    // LOGIN, prompting for both.
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd(&b64(b"bob")).await, "334 UGFzc3dvcmQ6\r\n");
    assert!(c.cmd(&b64(b"bob-demo-pw")).await.starts_with("235 2.7.0 "));
    assert!(
        send_mail(&mut c, "alice@localhost", b"Subject: submitted\r\n\r\nx\r\n")
            .await
            .starts_with("250 ")
    );
    assert!(contains(&last_message(&store, "alice"), b" with ESMTPSA id "));
    srv.shutdown().await;
}

#[tokio::test]
async fn implicit_tls_submission_with_cram_md5() {
    let (srv, store) = server().await;
    let mut c = smtps(&srv).await;
    let ehlo = c.ehlo().await;
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n"),
        "{ehlo}"
    );
    assert!(c.cmd("STARTTLS").await.starts_with("503 5.5.1 "));
    assert!(c
        .cmd("MAIL FROM:<alice@localhost>")
        .await
        .starts_with("530 5.7.0 "));
    assert!(c.cmd("AUTH CRAM-MD5 dGVzdA==").await.starts_with("501 "));
    let challenge = c.cmd("AUTH CRAM-MD5").await;
    let challenge = base64::engine::general_purpose::STANDARD
        .decode(challenge[4..].trim_end())
        .expect("base64 challenge");
    let digest = {
        // HMAC-MD5 by hand, as an independent check of the server's.
        use md5::{Digest, Md5};
        let mut key = [0u8; 64];
        key[..13].copy_from_slice(b"alice-demo-pw");
        let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
        let inner = Md5::new().chain_update(&ipad).chain_update(&challenge).finalize();
        let outer = Md5::new().chain_update(&opad).chain_update(inner).finalize();
        outer.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert!(c
        .cmd(&b64(format!("alice {digest}").as_bytes()))
        .await
        .starts_with("235 2.7.0 "));
    assert!(
        send_mail(&mut c, "bob@example.test", b"Subject: smtps\r\n\r\nx\r\n")
            .await
            .starts_with("250 ")
    );
    assert!(contains(&last_message(&store, "bob"), b" with ESMTPSA id "));
    assert!(c.cmd("QUIT").await.starts_with("221 "));
    c.expect_closed().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn silent_stalled_and_abusive_clients_do_not_wedge_the_server() {
    let (srv, _) = server_tuned(Faults::none(), |c| c.idle_timeout = Duration::from_millis(700)).await;

    let silent = greeted(srv.smtp_addr).await;
    let mut mid_data = greeted(srv.smtp_addr).await;
    mid_data.ehlo().await;
    assert!(mid_data.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(mid_data.cmd("RCPT TO:<alice@localhost>").await.starts_with("250"));
    assert!(mid_data.cmd("DATA").await.starts_with("354"));
    mid_data.send_raw(b"partial line without an end").await;
    let stalled_tls = TcpStream::connect(srv.smtps_addr.expect("smtps"))
        .await
        .expect("connect");
    let mut garbage_tls = TcpStream::connect(srv.smtps_addr.expect("smtps"))
        .await
        .expect("connect");
    garbage_tls
        .write_all(b"EHLO x\r\n\x00\xff\r\n")
        .await
        .expect("write");
    let mut mid_handshake = greeted(srv.submission_addr).await;
    mid_handshake.ehlo().await;
    assert!(mid_handshake.cmd("STARTTLS").await.starts_with("220"));

    // Meanwhile sessions work on every listener.
    let mut c = greeted(srv.smtp_addr).await;
    assert!(c.cmd("NOOP").await.starts_with("250"));
    let mut t = smtps(&srv).await;
    assert!(t.cmd("NOOP").await.starts_with("250"));

    // Idle sessions are told why before they are closed.
    for (name, mut c) in [("silent", silent), ("mid-data", mid_data)] {
        let mut rest = Vec::new();
        let read = timeout(WAIT, c.io.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{name}: the server closes it");
        assert_eq!(
            String::from_utf8_lossy(&rest),
            "421 4.4.2 mailcheck.local idle timeout, closing connection\r\n",
            "{name}"
        );
    }
    for (name, stream) in [
        ("stalled TLS", stalled_tls),
        ("garbage TLS", garbage_tls),
        ("mid-handshake", mid_handshake.io.into_inner()),
    ] {
        let mut stream = stream;
        let mut rest = Vec::new();
        let read = timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{name}: the server closes it");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn random_input_never_breaks_a_session() {
    let (srv, _) = server().await;
    let words: &[&[u8]] = &[
        b"EHLO x.example",
        b"MAIL FROM:<a@b.example>",
        b"RCPT TO:<alice@localhost>",
        b"DATA",
        b".",
        b"AUTH LOGIN",
        b"AUTH PLAIN",
        b"AUTH CRAM-MD5",
        b"*",
        b"RSET",
        b"\x00\xff\xfe",
        b"\r",
        b"..",
        b"VRFY",
    ];
    for seed in [1u64, 0x5eed_cafe_f00d_0001, 0xdead_beef] {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut wire = Vec::new();
        for _ in 0..400 {
            let n = next();
            if n % 3 == 0 {
                let len = (next() % 700) as usize;
                wire.extend((0..len).map(|_| (next() % 256) as u8).filter(|b| *b != b'\n'));
            } else {
                wire.extend_from_slice(words[(n % words.len() as u64) as usize]);
            }
            wire.extend_from_slice(if n % 7 == 0 { b"\n" } else { b"\r\n" });
        }
        // End any DATA or AUTH exchange the noise left open, then leave: the
        // session must still be there to say goodbye.
        wire.extend_from_slice(b"\r\n.\r\n*\r\nRSET\r\nQUIT\r\n");
        let mut c = greeted(srv.smtp_addr).await;
        c.send_raw(&wire).await;
        let mut all = Vec::new();
        timeout(WAIT, c.io.read_to_end(&mut all))
            .await
            .expect("the server closes after QUIT")
            .expect("read");
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.ends_with("\r\n221 2.0.0 mailcheck.local closing connection\r\n"),
            "seed {seed}: {text}"
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_and_start_errors() {
    let (srv, _) = server().await;
    let addr = srv.smtp_addr;
    let mut c = greeted(srv.smtp_addr).await;
    timeout(WAIT, srv.shutdown()).await.expect("shutdown in time");
    assert!(c.try_line(WAIT).await.is_none(), "session closed");
    assert!(TcpStream::connect(addr.expect("addr")).await.is_err());

    let mut config = ServerConfig::new(Arc::new(Store::new()), identity());
    config.pop3_listen = None;
    config.pop3s_listen = None;
    let err = start(config).await.expect_err("no listener");
    assert!(err.to_string().contains("smtp_listen"), "{err}");

    let mut only_smtp = ServerConfig::new(Arc::new(Store::fixture()), identity());
    only_smtp.pop3_listen = None;
    only_smtp.pop3s_listen = None;
    only_smtp.submission_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let srv = start(only_smtp).await.expect("one SMTP listener is enough");
    assert!(srv.pop3_addr.is_none() && srv.smtp_addr.is_none() && srv.smtps_addr.is_none());
    greeted(srv.submission_addr).await;
    srv.shutdown().await;
}

// ---- Faults: each one changes the bytes on the wire as described. ----

#[tokio::test]
async fn fault_smtp_bad_greeting() {
    let (srv, _) = faulty(Fault::SmtpBadGreeting).await;
    let mut c = connect(srv.smtp_addr).await;
    let greeting = c.line_str().await;
    assert_eq!(greeting, "mailcheck.local ESMTP mailcheck ready\r\n");
    assert!(!greeting.as_bytes()[..3].iter().all(u8::is_ascii_digit));
    assert!(c.cmd("NOOP").await.starts_with("250 "), "otherwise normal");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_multiline_code_mismatch() {
    let (srv, _) = faulty(Fault::SmtpMultilineCodeMismatch).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.send("EHLO client.example").await;
    assert!(c.line_str().await.starts_with("250-mailcheck.local "));
    assert_eq!(c.line_str().await, "251-PIPELINING\r\n");
    assert_eq!(c.line_str().await, "250-SIZE 10485760\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_bad_separator() {
    let (srv, _) = faulty(Fault::SmtpBadSeparator).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.send("EHLO client.example").await;
    let mut lines = Vec::new();
    for _ in 0..6 {
        lines.push(c.line_str().await);
    }
    assert_eq!(lines[2], "250SIZE 10485760\r\n", "{lines:?}");
    assert_eq!(lines[5], "250 ENHANCEDSTATUSCODES\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_bare_lf() {
    let (srv, _) = faulty(Fault::SmtpBareLf).await;
    let mut c = connect(srv.smtp_addr).await;
    let greeting = c.line().await;
    assert!(
        greeting.starts_with(b"220 ") && greeting.ends_with(b"ready\n"),
        "{greeting:?}"
    );
    c.send("EHLO client.example").await;
    for _ in 0..6 {
        let line = c.line().await;
        assert!(line.ends_with(b"\n") && !line.contains(&b'\r'), "{line:?}");
    }
    c.send("NOOP").await;
    assert_eq!(c.line().await, b"250 2.0.0 OK\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_long_reply() {
    let (srv, _) = faulty(Fault::SmtpLongReply).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.send("EHLO client.example").await;
    let first = c.line().await;
    assert_eq!(first.len(), 600);
    assert!(first.starts_with(b"250-mailcheck.local Hello client.example x") && first.ends_with(b"x\r\n"));
    assert_eq!(c.line_str().await, "250-PIPELINING\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_enhanced_class_mismatch() {
    let (srv, _) = faulty(Fault::SmtpEnhancedClassMismatch).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    c.send("MAIL FROM:<> X-UNKNOWN=1").await;
    assert!(c.line_str().await.starts_with("555 2.5.4 "));
    assert!(
        c.cmd("MAIL FROM:<>").await.starts_with("250 2.1.0 "),
        "2xx unchanged"
    );
    c.send("RCPT TO:<nobody@localhost>").await;
    assert_eq!(
        c.line_str().await,
        "550 2.1.1 <nobody@localhost>: no such user here\r\n"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_out_of_order_ok() {
    let (srv, store) = faulty(Fault::SmtpOutOfOrderOk).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    assert!(
        c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "),
        "RCPT before MAIL"
    );
    assert!(c
        .message(b"Subject: no MAIL\r\n\r\nx\r\n")
        .await
        .starts_with("250 "));
    assert_eq!(inbox_len(&store, "alice"), 5);
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250 "));
    assert!(c.cmd("DATA").await.starts_with("354 "), "DATA before RCPT");
    c.send_raw(b"x\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_rset_ignored() {
    let (srv, _) = faulty(Fault::SmtpRsetIgnored).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    assert!(c.cmd("MAIL FROM:<a@remote.example>").await.starts_with("250 "));
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK\r\n");
    assert!(c
        .cmd("MAIL FROM:<b@remote.example>")
        .await
        .starts_with("503 5.5.1 "));
    assert!(
        c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "),
        "still in the old transaction"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_starttls_keeps_state() {
    let (srv, _) = faulty(Fault::SmtpStarttlsKeepsState).await;
    let mut c = upgraded(srv.smtp_addr).await;
    assert!(
        c.cmd("MAIL FROM:<a@remote.example>").await.starts_with("250 "),
        "no EHLO needed after the handshake"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_starttls_still_advertised() {
    let (srv, _) = faulty(Fault::SmtpStarttlsStillAdvertised).await;
    let mut c = upgraded(srv.smtp_addr).await;
    assert!(c.ehlo().await.contains("\r\n250-STARTTLS\r\n"));
    assert!(c.cmd("STARTTLS").await.starts_with("503 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_starttls_injection() {
    let (srv, _) = faulty(Fault::SmtpStarttlsInjection).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    c.send_raw(b"STARTTLS\r\nEHLO injected.example\r\nMAIL FROM:<evil@remote.example>\r\n")
        .await;
    assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS\r\n");
    let mut c = Client::new(tls_handshake(c.io.into_inner()).await);
    // The plaintext commands ran inside the TLS session, unasked.
    assert!(c
        .reply()
        .await
        .starts_with("250-mailcheck.local Hello injected.example\r\n"));
    assert!(c
        .reply()
        .await
        .starts_with("250 2.1.0 sender <evil@remote.example> OK"));
    assert!(c
        .cmd("MAIL FROM:<a@remote.example>")
        .await
        .starts_with("503 5.5.1 nested"));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_starttls_early_data() {
    let (srv, _) = faulty(Fault::SmtpStarttlsEarlyData).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    c.send("STARTTLS").await;
    assert_eq!(c.line_str().await, "220 2.0.0 Ready to start TLS\r\n");
    let extra = c.try_line(WAIT).await.expect("plaintext after the 220");
    assert!(extra.starts_with(b"250 "), "{extra:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_auth_in_cleartext() {
    let (srv, _) = faulty(Fault::SmtpAuthInCleartext).await;
    let mut c = greeted(srv.submission_addr).await;
    assert!(c.ehlo().await.contains("250-AUTH PLAIN LOGIN CRAM-MD5\r\n"));
    let plain = b64(b"\0alice\0alice-demo-pw");
    assert!(c.cmd(&format!("AUTH PLAIN {plain}")).await.starts_with("235 "));
    assert!(c.cmd("MAIL FROM:<alice@localhost>").await.starts_with("250 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_auth_bad_ok() {
    let (srv, _) = faulty(Fault::SmtpAuthBadOk).await;
    let mut c = smtps(&srv).await;
    c.ehlo().await;
    let wrong = b64(b"\0alice\0definitely-wrong");
    assert!(c
        .cmd(&format!("AUTH PLAIN {wrong}"))
        .await
        .starts_with("235 2.7.0 "));
    assert!(c.cmd("MAIL FROM:<alice@localhost>").await.starts_with("250 "));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_size_ignored() {
    let (srv, store) = server_tuned(Fault::SmtpSizeIgnored.into(), |c| c.smtp_max_message_size = 1000).await;
    let mut c = greeted(srv.smtp_addr).await;
    assert!(c.ehlo().await.contains("250-SIZE 1000\r\n"), "still announced");
    assert!(c
        .cmd("MAIL FROM:<a@remote.example> SIZE=5000")
        .await
        .starts_with("250 "));
    assert!(c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "));
    let big = b"0123456789abcdefghijklmnopqrstuvwxyz\r\n".repeat(100);
    assert!(big.len() > 1000);
    assert!(c.message(&big).await.starts_with("250 "));
    assert_eq!(without_trace(&last_message(&store, "alice")), &big[..]);
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_lf_dot_ends_data() {
    let (srv, store) = faulty(Fault::SmtpLfDotEndsData).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    assert!(c
        .cmd("MAIL FROM:<sender@remote.example>")
        .await
        .starts_with("250 "));
    assert!(c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "));
    assert!(c.cmd("DATA").await.starts_with("354 "));
    c.send_raw(&smuggling_payload(b"\r\n.\n")).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(c.reply().await[..3].to_string());
    }
    // The first message ended at "\r\n.\n" and the rest ran as commands.
    assert_eq!(codes, ["250", "250", "250", "354", "250"]);
    let smuggled = last_message(&store, "bob");
    assert!(contains(&smuggled, b"Return-Path: <evil@remote.example>"));
    assert!(contains(&smuggled, b"Subject: smuggled\r\n"));
    assert_eq!(
        without_trace(&last_message(&store, "alice")),
        b"Subject: first\r\n\r\nfirst\r\n"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_no_dot_unstuff() {
    let (srv, store) = faulty(Fault::SmtpNoDotUnstuff).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    let body = b"Subject: dots\r\n\r\n.one\r\n..two\r\n";
    assert!(send_mail(&mut c, "alice@localhost", body)
        .await
        .starts_with("250 "));
    assert_eq!(without_trace(&last_message(&store, "alice")), &stuff(body)[..]);
    assert_eq!(
        without_trace(&last_message(&store, "alice")),
        b"Subject: dots\r\n\r\n..one\r\n...two\r\n"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_strip_8bit() {
    let (srv, store) = faulty(Fault::SmtpStrip8bit).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    let body = "Subject: 8bit\r\n\r\ncaf\u{e9}\r\n".as_bytes();
    assert!(send_mail(&mut c, "alice@localhost", body)
        .await
        .starts_with("250 "));
    let stored = last_message(&store, "alice");
    let delivered = without_trace(&stored);
    assert_ne!(delivered, body);
    assert_eq!(delivered, &body.iter().map(|b| b & 0x7f).collect::<Vec<u8>>()[..]);
    assert!(delivered.is_ascii());
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_quit_stays_open() {
    let (srv, _) = faulty(Fault::SmtpQuitStaysOpen).await;
    let mut c = greeted(srv.smtp_addr).await;
    assert!(c.cmd("QUIT").await.starts_with("221 2.0.0 "));
    let mut buf = [0u8; 16];
    let read = timeout(SHORT, c.io.read(&mut buf)).await;
    assert!(read.is_err(), "no EOF after QUIT: {read:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_pipelining_drops() {
    let (srv, _) = faulty(Fault::SmtpPipeliningDrops).await;
    let mut c = greeted(srv.smtp_addr).await;
    c.ehlo().await;
    c.send_raw(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@localhost>\r\nNOOP\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 2.1.0 "));
    assert!(c.try_line(SHORT).await.is_none(), "RCPT and NOOP were dropped");
    assert!(
        c.cmd("RCPT TO:<alice@localhost>").await.starts_with("250 "),
        "one at a time works"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_no_greeting() {
    let (srv, _) = faulty(Fault::SmtpNoGreeting).await;
    let mut c = connect(srv.smtp_addr).await;
    assert!(c.try_line(SHORT).await.is_none(), "no greeting");
    c.send("EHLO client.example").await;
    assert!(c.try_line(SHORT).await.is_none(), "still silent");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_smtp_unknown_ok() {
    let (srv, _) = faulty(Fault::SmtpUnknownOk).await;
    let mut c = greeted(srv.smtp_addr).await;
    assert_eq!(c.cmd("XYZZY").await, "250 2.0.0 OK\r\n");
    assert!(
        c.cmd("EXPN staff").await.starts_with("502 "),
        "known commands unchanged"
    );
    srv.shutdown().await;
}

#[test]
fn every_smtp_fault_has_a_wire_test() {
    let source = include_str!("smtp_server.rs");
    let smtp: Vec<&Fault> = Fault::ALL
        .iter()
        .filter(|f| f.name().starts_with("smtp-"))
        .collect();
    assert_eq!(smtp.len(), 22);
    for fault in smtp {
        let test = format!("fn fault_{}()", fault.name().replace('-', "_"));
        assert!(source.contains(&test), "{fault} has no test here");
    }
}

/// `mailcheck serve smtp` with all three listeners, checked by the probe
/// (greeting, EHLO, STARTTLS or implicit TLS, AUTH, QUIT) on each.
#[test]
fn serve_smtp_and_probe_it_end_to_end() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailcheck"))
        .args([
            "serve",
            "smtp",
            "--listen",
            "127.0.0.1:0",
            "--submission-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mailcheck serve smtp");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut urls = Vec::new();
    for line in lines.by_ref().take(3) {
        let line = line.expect("a line");
        urls.push(
            line.trim_start_matches("listening: ")
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let schemes: Vec<&str> = urls.iter().map(|u| u.split("://").next().unwrap_or("")).collect();
    assert_eq!(schemes, ["smtp", "submission", "smtps"], "{urls:?}");
    let mut args = vec!["probe"];
    args.extend(urls.iter().map(String::as_str));
    args.extend(["--insecure", "--user", "alice", "--json"]);
    let out = common::mailcheck_env(
        &args,
        &[("MAILCHECK_PASSWORD", "alice-demo-pw")],
        Duration::from_secs(60),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains("alice-demo-pw"));
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let endpoints = json["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 3, "{json}");
    for ep in endpoints {
        let login = ep["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["layer"] == "login")
            .expect("a login check");
        assert_eq!(login["mark"], "ok", "{ep}");
    }
}
