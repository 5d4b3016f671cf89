//! End-to-end tests of the embedded IMAP server over real sockets (plain,
//! STARTTLS and implicit TLS): the correct behaviour, the store it shares
//! with the POP3 server, every IMAP fault's effect on the wire, and
//! robustness against abusive clients.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mailcheck::server::{
    start, Fault, Faults, ImapGreeting, RunningServer, ServerConfig, ServerError, Store, TlsIdentity,
    FIXTURE_USERS,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(400);

fn identity() -> Arc<TlsIdentity> {
    static ID: OnceLock<Arc<TlsIdentity>> = OnceLock::new();
    ID.get_or_init(|| Arc::new(TlsIdentity::generate(&["localhost", "127.0.0.1"]).expect("identity")))
        .clone()
}

fn config(store: &Arc<Store>) -> ServerConfig {
    let mut config = ServerConfig::new(Arc::clone(store), identity()).with_imap();
    config.handshake_timeout = Duration::from_millis(500);
    config
}

async fn server_with(faults: Faults) -> (RunningServer, Arc<Store>) {
    let store = Arc::new(Store::fixture());
    let mut config = config(&store);
    config.faults = faults;
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

/// `{n}` at the end of a response line: a literal of n octets follows.
fn trailing_literal(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?;
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    std::str::from_utf8(&inner[open + 1..]).ok()?.parse().ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A minimal IMAP test client that keeps the raw bytes so tests can assert
/// on them.
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
        self.try_line(WAIT).await.expect("a response line")
    }

    async fn line_str(&mut self) -> String {
        String::from_utf8(self.line().await).expect("ascii")
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.io.get_mut();
        stream.write_all(bytes).await.expect("write");
        stream.flush().await.expect("flush");
    }

    async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Everything up to and including the tagged completion, literals read
    /// by their announced size.
    async fn response(&mut self, tag: &str) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let first = self.line().await;
            out.extend_from_slice(&first);
            let mut current = first.clone();
            while let Some(n) = trailing_literal(&current) {
                let mut literal = vec![0u8; n];
                timeout(WAIT, self.io.read_exact(&mut literal))
                    .await
                    .expect("literal in time")
                    .expect("literal");
                out.extend_from_slice(&literal);
                current = self.line().await;
                out.extend_from_slice(&current);
            }
            if first.starts_with(format!("{tag} ").as_bytes()) {
                return out;
            }
        }
    }

    /// Sends `tag command` and returns the whole response as text.
    async fn cmd(&mut self, tag: &str, command: &str) -> String {
        self.send(&format!("{tag} {command}")).await;
        String::from_utf8_lossy(&self.response(tag).await).into_owned()
    }

    async fn greeting(&mut self) -> String {
        let greeting = self.line_str().await;
        assert!(greeting.starts_with("* OK [CAPABILITY IMAP4rev1 "), "{greeting}");
        greeting
    }

    async fn login(&mut self, user: &str, password: &str) {
        let reply = self.cmd("L", &format!("LOGIN {user} {password}")).await;
        assert!(reply.starts_with("L OK"), "{reply}");
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

async fn greeted(addr: Option<SocketAddr>) -> Client<TcpStream> {
    let mut c = connect(addr).await;
    c.greeting().await;
    c
}

/// Greeted, logged in as alice, INBOX selected.
async fn alice(srv: &RunningServer) -> Client<TcpStream> {
    let mut c = greeted(srv.imap_addr).await;
    c.login(FIXTURE_USERS[0].0, FIXTURE_USERS[0].1).await;
    let select = c.cmd("S", "SELECT INBOX").await;
    assert!(select.contains("S OK [READ-WRITE]"), "{select}");
    c
}

/// (RFC822.SIZE, announced literal size, literal bytes) of each FETCH
/// response for `(RFC822.SIZE BODY[...])`.
fn sizes_and_literals(response: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let mut found = Vec::new();
    let mut rest = response;
    while let Some(at) = rest.windows(12).position(|w| w == b"RFC822.SIZE ") {
        rest = &rest[at + 12..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let size: usize = std::str::from_utf8(&rest[..digits])
            .expect("ascii")
            .parse()
            .expect("size");
        let open = rest.iter().position(|b| *b == b'{').expect("literal");
        let close = rest.iter().position(|b| *b == b'}').expect("literal end");
        let announced: usize = std::str::from_utf8(&rest[open + 1..close])
            .expect("ascii")
            .parse()
            .expect("count");
        let data_start = close + 3;
        let data = rest[data_start..data_start + announced].to_vec();
        found.push((size, announced, data));
        rest = &rest[data_start + announced..];
    }
    found
}

#[tokio::test]
async fn greeting_capabilities_and_states() {
    let (srv, _store) = server().await;
    let mut c = connect(srv.imap_addr).await;
    let greeting = c.greeting().await;
    assert!(greeting.ends_with("] mailcheck IMAP ready\r\n"), "{greeting}");
    for cap in [
        " STARTTLS ",
        " AUTH=PLAIN ",
        " SASL-IR ",
        " LITERAL+ ",
        " UIDPLUS ",
        " MOVE ",
        " UNSELECT ",
        " IDLE ",
        " NAMESPACE ",
        " ID ",
        " ENABLE ",
        " CHILDREN]",
    ] {
        assert!(greeting.contains(cap), "{cap} in {greeting}");
    }
    assert!(!greeting.contains("IMAP4rev2") && !greeting.contains("LOGINDISABLED"));

    let caps = c.cmd("a1", "capability").await;
    assert!(
        caps.starts_with("* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN"),
        "{caps}"
    );
    assert!(caps.ends_with("a1 OK CAPABILITY completed\r\n"));
    // Commands before login, unknown commands and odd tags.
    assert_eq!(
        c.cmd("a2", "SELECT INBOX").await,
        "a2 BAD command not valid before login; log in first\r\n"
    );
    assert!(c.cmd("a3", "FETCH 1 FLAGS").await.starts_with("a3 BAD"));
    assert_eq!(
        c.cmd("tag.with]odd", "XYZZY").await,
        "tag.with]odd BAD unknown command\r\n"
    );
    assert!(c.cmd("a4", "LOGIN alice").await.starts_with("a4 BAD"));
    assert_eq!(c.cmd("a5", "NOOP").await, "a5 OK NOOP completed\r\n");
    c.send("+bad NOOP").await;
    assert_eq!(c.line_str().await, "* BAD invalid or missing command tag\r\n");
    assert_eq!(
        c.cmd("a6", "LOGOUT").await,
        "* BYE mailcheck IMAP server logging out\r\na6 OK LOGOUT completed\r\n"
    );
    let mut rest = Vec::new();
    timeout(WAIT, c.io.read_to_end(&mut rest))
        .await
        .expect("closed")
        .ok();
    assert!(rest.is_empty());
    srv.shutdown().await;
}

#[tokio::test]
async fn login_and_authenticate() {
    let (srv, _store) = server().await;
    let mut c = greeted(srv.imap_addr).await;
    assert_eq!(
        c.cmd("a1", "LOGIN alice wrong-password").await,
        "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    );
    assert!(c
        .cmd("a2", "LOGIN nobody alice-demo-pw")
        .await
        .starts_with("a2 NO"));
    // A quoted user name and a synchronizing literal password.
    c.send("a3 LOGIN \"alice\" {13}").await;
    assert!(c.line_str().await.starts_with("+ "));
    c.send("alice-demo-pw").await;
    let ok = String::from_utf8(c.response("a3").await).expect("ascii");
    assert!(ok.starts_with("a3 OK [CAPABILITY IMAP4rev1 LITERAL+"), "{ok}");
    assert!(!ok.contains("STARTTLS") && !ok.contains("AUTH="), "{ok}");
    assert!(c
        .cmd("a4", "LOGIN alice alice-demo-pw")
        .await
        .starts_with("a4 BAD"));
    c.hang_up().await;

    // AUTHENTICATE PLAIN with a continuation, then with SASL-IR.
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut c = greeted(srv.imap_addr).await;
    c.send("b1 AUTHENTICATE PLAIN").await;
    assert_eq!(c.line_str().await, "+ \r\n");
    c.send(&b64("\0bob\0wrong")).await;
    assert!(c.line_str().await.starts_with("b1 NO [AUTHENTICATIONFAILED]"));
    c.send("b2 AUTHENTICATE PLAIN").await;
    assert_eq!(c.line_str().await, "+ \r\n");
    c.send("*").await;
    assert_eq!(c.line_str().await, "b2 BAD AUTHENTICATE cancelled\r\n");
    assert!(c.cmd("b3", "AUTHENTICATE CRAM-MD5").await.starts_with("b3 NO"));
    let ir = b64("bob\0bob\0bob-demo-pw");
    assert!(c
        .cmd("b4", &format!("AUTHENTICATE PLAIN {ir}"))
        .await
        .starts_with("b4 OK [CAPABILITY"));
    let status = c.cmd("b5", "STATUS INBOX (MESSAGES UIDNEXT)").await;
    assert_eq!(
        status,
        "* STATUS INBOX (MESSAGES 4 UIDNEXT 5)\r\nb5 OK STATUS completed\r\n"
    );
    c.hang_up().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn select_reports_the_mailbox() {
    let (srv, store) = server().await;
    let mut c = greeted(srv.imap_addr).await;
    c.login("alice", "alice-demo-pw").await;
    let validity = store.mailbox("alice", "INBOX").expect("INBOX").uid_validity;
    let select = c.cmd("s1", "SELECT INBOX").await;
    assert_eq!(
        select,
        format!(
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
             * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] flags permitted\r\n\
             * 4 EXISTS\r\n* 4 RECENT\r\n* OK [UNSEEN 1] first unseen message\r\n\
             * OK [UIDVALIDITY {validity}] UIDs valid\r\n* OK [UIDNEXT 5] predicted next UID\r\n\
             s1 OK [READ-WRITE] SELECT completed\r\n"
        )
    );
    // \Recent went to the first session; EXAMINE is read-only.
    let mut other = greeted(srv.imap_addr).await;
    other.login("alice", "alice-demo-pw").await;
    let examine = other.cmd("e1", "EXAMINE INBOX").await;
    assert!(examine.contains("* 4 EXISTS\r\n* 0 RECENT\r\n"), "{examine}");
    assert!(examine.contains("* OK [PERMANENTFLAGS ()]"), "{examine}");
    assert!(
        examine.ends_with("e1 OK [READ-ONLY] EXAMINE completed\r\n"),
        "{examine}"
    );
    assert_eq!(
        other.cmd("e2", "STORE 1 +FLAGS (\\Seen)").await,
        "e2 NO mailbox is read-only\r\n"
    );
    // A failed SELECT still closes the mailbox that was selected.
    assert_eq!(
        other.cmd("e3", "SELECT nope").await,
        "* OK [CLOSED] previous mailbox closed\r\ne3 NO [NONEXISTENT] no such mailbox\r\n"
    );
    assert_eq!(
        other.cmd("e4", "FETCH 1 UID").await,
        "e4 BAD no mailbox selected\r\n"
    );
    // EXAMINE shows \Recent without taking it away from a later SELECT.
    let mut bob = greeted(srv.imap_addr).await;
    bob.login("bob", "bob-demo-pw").await;
    assert!(bob
        .cmd("b1", "EXAMINE INBOX")
        .await
        .contains("* 4 EXISTS\r\n* 4 RECENT\r\n"));
    assert!(bob
        .cmd("b2", "SELECT INBOX")
        .await
        .contains("* 4 EXISTS\r\n* 4 RECENT\r\n"));
    srv.shutdown().await;
}

#[tokio::test]
async fn fetch_literals_match_rfc822_size_octet_for_octet() {
    let (srv, store) = server().await;
    let mut c = alice(&srv).await;
    c.send("f1 FETCH 1:* (RFC822.SIZE BODY.PEEK[])").await;
    let response = c.response("f1").await;
    let stored = store.messages("alice").expect("alice");
    let found = sizes_and_literals(&response);
    assert_eq!(found.len(), 4);
    for ((size, announced, data), message) in found.iter().zip(&stored) {
        assert_eq!(*size, message.size());
        assert_eq!(*announced, *size);
        assert_eq!(&data[..], &message.data[..]);
    }
    assert!(response.ends_with(b"f1 OK FETCH completed\r\n"));

    // Headers, text, partials, ENVELOPE and BODYSTRUCTURE of message 1.
    let plain = &stored[0].data;
    let split = plain
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("blank line")
        + 4;
    c.send("f2 FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<0.4> RFC822.HEADER)")
        .await;
    let response = c.response("f2").await;
    let header = &plain[..split];
    let text = &plain[split..];
    let mut expected = format!("* 1 FETCH (BODY[HEADER] {{{}}}\r\n", header.len()).into_bytes();
    expected.extend_from_slice(header);
    expected.extend_from_slice(format!(" BODY[TEXT] {{{}}}\r\n", text.len()).as_bytes());
    expected.extend_from_slice(text);
    expected.extend_from_slice(b" BODY[]<0> {4}\r\nDate");
    expected.extend_from_slice(format!(" RFC822.HEADER {{{}}}\r\n", header.len()).as_bytes());
    expected.extend_from_slice(header);
    expected.extend_from_slice(b")\r\nf2 OK FETCH completed\r\n");
    assert_eq!(
        String::from_utf8_lossy(&response),
        String::from_utf8_lossy(&expected)
    );

    let structure = c.cmd("f3", "FETCH 1 (ENVELOPE BODYSTRUCTURE)").await;
    let expected = format!(
        "* 1 FETCH (ENVELOPE (\"Mon, 06 Jan 2025 09:00:00 +0000\" \"Welcome\" \
         ((\"Mailcheck Fixture\" NIL \"fixture\" \"mailcheck.local\")) \
         ((\"Mailcheck Fixture\" NIL \"fixture\" \"mailcheck.local\")) \
         ((\"Mailcheck Fixture\" NIL \"fixture\" \"mailcheck.local\")) \
         ((\"Mailcheck Users\" NIL \"users\" \"mailcheck.local\")) NIL NIL NIL \
         \"<fixture-1@mailcheck.local>\") \
         BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" {} 3 NIL NIL NIL NIL))\r\n\
         f3 OK FETCH completed\r\n",
        text.len()
    );
    assert_eq!(structure, expected);
    let fast = c.cmd("f4", "UID FETCH 4 FAST").await;
    assert_eq!(
        fast,
        format!(
            "* 4 FETCH (UID 4 FLAGS (\\Recent) INTERNALDATE \" 6-Jan-2025 09:15:00 +0000\" RFC822.SIZE {})\r\n\
             f4 OK FETCH completed\r\n",
            stored[3].size()
        )
    );
    assert!(c.cmd("f5", "FETCH 5 FLAGS").await.starts_with("f5 BAD"));
    assert_eq!(
        c.cmd("f6", "UID FETCH 99 FLAGS").await,
        "f6 OK FETCH completed\r\n"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn body_sets_seen_and_peek_does_not() {
    let (srv, _store) = server().await;
    let mut c = alice(&srv).await;
    let peek = c.cmd("p1", "FETCH 2 BODY.PEEK[TEXT]").await;
    assert!(!peek.contains("FLAGS"), "{peek}");
    assert_eq!(
        c.cmd("p2", "FETCH 2 FLAGS").await,
        "* 2 FETCH (FLAGS (\\Recent))\r\np2 OK FETCH completed\r\n"
    );
    let body = c.cmd("p3", "FETCH 2 BODY[TEXT]").await;
    assert!(body.contains(" FLAGS (\\Seen \\Recent))\r\n"), "{body}");
    assert_eq!(
        c.cmd("p4", "FETCH 2 FLAGS").await,
        "* 2 FETCH (FLAGS (\\Seen \\Recent))\r\np4 OK FETCH completed\r\n"
    );
    assert_eq!(
        c.cmd("p5", "SEARCH UNSEEN").await,
        "* SEARCH 1 3 4\r\np5 OK SEARCH completed\r\n"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn store_flags_then_fetch_them() {
    let (srv, store) = server().await;
    let mut c = alice(&srv).await;
    assert_eq!(
        c.cmd("t1", "STORE 1:2 +FLAGS (\\Flagged \\Answered)").await,
        "* 1 FETCH (FLAGS (\\Flagged \\Answered \\Recent))\r\n\
         * 2 FETCH (FLAGS (\\Flagged \\Answered \\Recent))\r\nt1 OK STORE completed\r\n"
    );
    assert_eq!(
        c.cmd("t2", "STORE 2 -FLAGS.SILENT (\\Answered)").await,
        "t2 OK STORE completed\r\n"
    );
    assert_eq!(
        c.cmd("t3", "UID STORE 3 FLAGS (\\Draft)").await,
        "* 3 FETCH (FLAGS (\\Draft \\Recent) UID 3)\r\nt3 OK STORE completed\r\n"
    );
    assert_eq!(
        c.cmd("t4", "FETCH 1:3 FLAGS").await,
        "* 1 FETCH (FLAGS (\\Flagged \\Answered \\Recent))\r\n* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n\
         * 3 FETCH (FLAGS (\\Draft \\Recent))\r\nt4 OK FETCH completed\r\n"
    );
    assert_eq!(
        c.cmd("t5", "SEARCH FLAGGED").await,
        "* SEARCH 1 2\r\nt5 OK SEARCH completed\r\n"
    );
    assert!(c
        .cmd("t6", "STORE 1 +FLAGS (\\Recent)")
        .await
        .starts_with("t6 BAD"));
    let stored = store.mailbox("alice", "INBOX").expect("INBOX");
    assert_eq!(stored.messages[1].flags, vec!["\\Flagged".to_string()]);
    srv.shutdown().await;
}

#[tokio::test]
async fn expunge_announces_each_message() {
    let (srv, store) = server().await;
    let mut c = alice(&srv).await;
    c.cmd("x1", "STORE 1,3:4 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(
        c.cmd("x2", "EXPUNGE").await,
        "* 4 EXPUNGE\r\n* 3 EXPUNGE\r\n* 1 EXPUNGE\r\nx2 OK EXPUNGE completed\r\n"
    );
    assert_eq!(store.messages("alice").map(|m| m.len()), Some(1));
    assert_eq!(
        c.cmd("x3", "FETCH 1 UID").await,
        "* 1 FETCH (UID 2)\r\nx3 OK FETCH completed\r\n"
    );
    // UID EXPUNGE only removes the named \Deleted messages; CLOSE is silent.
    c.cmd("x4", "APPEND INBOX (\\Deleted) {6+}\r\nhi\r\n\r\n").await;
    c.cmd("x5", "STORE 1 +FLAGS (\\Deleted)").await;
    assert_eq!(
        c.cmd("x6", "UID EXPUNGE 5").await,
        "* 2 EXPUNGE\r\nx6 OK EXPUNGE completed\r\n"
    );
    assert_eq!(c.cmd("x7", "CLOSE").await, "x7 OK CLOSE completed\r\n");
    assert_eq!(store.messages("alice").map(|m| m.len()), Some(0));
    srv.shutdown().await;
}

#[tokio::test]
async fn append_with_synchronizing_and_non_synchronizing_literals() {
    let (srv, store) = server().await;
    let mut c = alice(&srv).await;
    let mut message = b"Subject: binary\r\n\r\nbytes: ".to_vec();
    message.extend_from_slice(&[0xff, 0xfe, 0x80, b'\r', b'\n']);
    c.send(&format!(
        "a1 APPEND INBOX (\\Seen $Important) {{{}}}",
        message.len()
    ))
    .await;
    // Nothing may be sent before the server's go-ahead.
    let go = c.line_str().await;
    assert!(go.starts_with("+ "), "{go}");
    c.send_raw(&message).await;
    c.send_raw(b"\r\n").await;
    let appended = String::from_utf8_lossy(&c.response("a1").await).into_owned();
    let validity = store.mailbox("alice", "INBOX").expect("INBOX").uid_validity;
    assert_eq!(
        appended,
        format!(
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)\r\n* 5 EXISTS\r\n* 5 RECENT\r\n\
             a1 OK [APPENDUID {validity} 5] APPEND completed\r\n"
        )
    );
    c.send("a2 FETCH 5 (FLAGS RFC822.SIZE BODY.PEEK[])").await;
    let response = c.response("a2").await;
    let found = sizes_and_literals(&response);
    assert_eq!(found, vec![(message.len(), message.len(), message.clone())]);
    assert!(contains(&response, b"FLAGS (\\Seen $Important \\Recent)"));

    // LITERAL+: the octets follow at once, with no `+` in between.
    let mut raw = b"a3 APPEND INBOX \"17-Jul-1996 02:44:25 -0700\" {5+}\r\nx\r\n\r\n".to_vec();
    raw.extend_from_slice(b"\r\n");
    c.send_raw(&raw).await;
    let response = String::from_utf8(c.response("a3").await).expect("ascii");
    assert!(
        response.ends_with(&format!("a3 OK [APPENDUID {validity} 6] APPEND completed\r\n")),
        "{response}"
    );
    assert!(!response.contains("+ "));
    assert_eq!(
        c.cmd("a4", "UID FETCH 6 INTERNALDATE").await,
        "* 6 FETCH (UID 6 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\")\r\na4 OK FETCH completed\r\n"
    );
    assert!(c
        .cmd("a5", "APPEND Nowhere {1+}\r\nx")
        .await
        .starts_with("a5 NO [TRYCREATE]"));
    let stored = store.messages("alice").expect("alice");
    assert_eq!(&stored[4].data[..], &message[..]);
    srv.shutdown().await;
}

#[tokio::test]
async fn mailboxes_copy_and_move() {
    let (srv, store) = server().await;
    let mut c = alice(&srv).await;
    assert_eq!(
        c.cmd("m1", "CREATE Archive/2025").await,
        "m1 OK CREATE completed\r\n"
    );
    assert_eq!(
        c.cmd("m2", "LIST \"\" *").await,
        "* LIST (\\HasNoChildren) \"/\" INBOX\r\n* LIST (\\HasChildren) \"/\" Archive\r\n\
         * LIST (\\HasNoChildren) \"/\" Archive/2025\r\nm2 OK LIST completed\r\n"
    );
    let copy = c.cmd("m3", "COPY 1:2 Archive").await;
    let archive = store.mailbox("alice", "Archive").expect("Archive");
    assert_eq!(
        copy,
        format!(
            "m3 OK [COPYUID {} 1:2 1:2] COPY completed\r\n",
            archive.uid_validity
        )
    );
    let moved = c.cmd("m4", "UID MOVE 3:4 Archive/2025").await;
    let target = store.mailbox("alice", "Archive/2025").expect("Archive/2025");
    assert_eq!(
        moved,
        format!(
            "* OK [COPYUID {} 3:4 1:2] moved\r\n* 4 EXPUNGE\r\n* 3 EXPUNGE\r\nm4 OK MOVE completed\r\n",
            target.uid_validity
        )
    );
    assert_eq!(target.messages.len(), 2);
    assert_eq!(store.messages("alice").map(|m| m.len()), Some(2));
    assert!(c
        .cmd("m5", "COPY 1 Missing")
        .await
        .starts_with("m5 NO [TRYCREATE]"));
    assert_eq!(
        c.cmd("m6", "STATUS Archive (MESSAGES RECENT UNSEEN)").await,
        "* STATUS Archive (MESSAGES 2 RECENT 2 UNSEEN 2)\r\nm6 OK STATUS completed\r\n"
    );
    assert!(c.cmd("m7", "RENAME Archive Old").await.starts_with("m7 OK"));
    assert!(c.cmd("m8", "DELETE Old").await.starts_with("m8 NO [HASCHILDREN]"));
    assert!(c.cmd("m9", "DELETE Old/2025").await.starts_with("m9 OK"));
    assert_eq!(store.mailbox_names("alice"), vec!["INBOX", "Old"]);
    srv.shutdown().await;
}

#[tokio::test]
async fn two_sessions_see_each_others_changes_after_noop() {
    let (srv, _store) = server().await;
    let mut a = alice(&srv).await;
    let mut b = alice(&srv).await;
    assert_eq!(
        a.cmd("a1", "STORE 3 +FLAGS (\\Flagged)").await,
        "* 3 FETCH (FLAGS (\\Flagged \\Recent))\r\na1 OK STORE completed\r\n"
    );
    assert_eq!(
        b.cmd("b1", "NOOP").await,
        "* 3 FETCH (FLAGS (\\Flagged))\r\nb1 OK NOOP completed\r\n"
    );
    a.cmd("a2", "STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(
        a.cmd("a3", "EXPUNGE").await,
        "* 2 EXPUNGE\r\na3 OK EXPUNGE completed\r\n"
    );
    // During FETCH the expunge is held back, so numbers stay valid...
    assert_eq!(
        b.cmd("b2", "FETCH 2:3 UID").await,
        "* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nb2 OK FETCH completed\r\n"
    );
    // ...and announced by the next NOOP.
    assert_eq!(
        b.cmd("b3", "NOOP").await,
        "* 2 EXPUNGE\r\nb3 OK NOOP completed\r\n"
    );
    assert_eq!(
        b.cmd("b4", "FETCH 2 UID").await,
        "* 2 FETCH (UID 3)\r\nb4 OK FETCH completed\r\n"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn idle_reports_new_mail_until_done() {
    let (srv, store) = server().await;
    let mut a = alice(&srv).await;
    a.send("i1 IDLE").await;
    assert_eq!(a.line_str().await, "+ idling\r\n");
    assert!(a.try_line(SHORT).await.is_none(), "nothing to report yet");

    let mut b = greeted(srv.imap_addr).await;
    b.login("alice", "alice-demo-pw").await;
    let appended = b.cmd("b1", "APPEND INBOX {15+}\r\nSubject: hi\r\n\r\n").await;
    assert!(appended.starts_with("b1 OK [APPENDUID"), "{appended}");
    assert_eq!(a.line_str().await, "* 5 EXISTS\r\n");
    assert_eq!(a.line_str().await, "* 5 RECENT\r\n");
    // A POP3-style removal is reported as it happens too.
    let first = store.messages("alice").expect("alice")[0].uid.clone();
    store.delete_messages("alice", &[&first]);
    assert_eq!(a.line_str().await, "* 1 EXPUNGE\r\n");
    a.send("DONE").await;
    assert_eq!(a.line_str().await, "i1 OK IDLE terminated\r\n");
    assert_eq!(a.cmd("i2", "NOOP").await, "i2 OK NOOP completed\r\n");
    // Anything but DONE ends IDLE with BAD.
    a.send("i3 IDLE").await;
    assert_eq!(a.line_str().await, "+ idling\r\n");
    a.send("i4 NOOP").await;
    assert_eq!(a.line_str().await, "i3 BAD expected DONE\r\n");
    srv.shutdown().await;
}

async fn pop3_line<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>, command: &str) -> String {
    c.send(command).await;
    c.line_str().await
}

#[tokio::test]
async fn pop3_and_imap_share_one_store() {
    let (srv, store) = server().await;
    // Delete message 1 through POP3.
    let mut pop = connect(srv.pop3_addr).await;
    assert!(pop.line_str().await.starts_with("+OK"));
    assert!(pop3_line(&mut pop, "USER alice").await.starts_with("+OK"));
    assert!(pop3_line(&mut pop, "PASS alice-demo-pw").await.starts_with("+OK"));
    assert!(pop3_line(&mut pop, "DELE 1").await.starts_with("+OK"));
    assert!(pop3_line(&mut pop, "QUIT").await.starts_with("+OK"));
    pop.hang_up().await;

    let mut c = greeted(srv.imap_addr).await;
    c.login("alice", "alice-demo-pw").await;
    let select = c.cmd("s1", "SELECT INBOX").await;
    assert!(select.contains("* 3 EXISTS\r\n"), "{select}");
    assert!(select.contains("* OK [UIDNEXT 5]"), "{select}");
    assert_eq!(
        c.cmd("s2", "FETCH 1:* UID").await,
        "* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 4)\r\ns2 OK FETCH completed\r\n"
    );

    // And the other way: an IMAP expunge is gone for POP3.
    c.cmd("s3", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    c.cmd("s4", "EXPUNGE").await;
    let mut pop = connect(srv.pop3_addr).await;
    assert!(pop.line_str().await.starts_with("+OK"));
    pop3_line(&mut pop, "USER alice").await;
    assert!(pop3_line(&mut pop, "PASS alice-demo-pw")
        .await
        .starts_with("+OK maildrop has 2 messages"));
    let left = store.messages("alice").expect("alice");
    let total: usize = left.iter().map(|m| m.size()).sum();
    assert_eq!(pop3_line(&mut pop, "STAT").await, format!("+OK 2 {total}\r\n"));
    srv.shutdown().await;
}

#[tokio::test]
async fn starttls_and_implicit_tls() {
    let (srv, _store) = server().await;
    let mut c = greeted(srv.imap_addr).await;
    assert!(c.cmd("t1", "STARTTLS extra").await.starts_with("t1 BAD"));
    // A command pipelined behind STARTTLS must not survive the upgrade.
    c.send_raw(b"t2 STARTTLS\r\nt3 LOGIN alice alice-demo-pw\r\n")
        .await;
    assert_eq!(c.line_str().await, "t2 OK Begin TLS negotiation now\r\n");
    let tcp = c.io.into_inner();
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tls_connector().connect(name, tcp).await.expect("handshake");
    let mut t = Client::new(tls);
    let caps = t.cmd("t4", "CAPABILITY").await;
    assert!(
        !caps.contains("STARTTLS") && caps.contains("AUTH=PLAIN"),
        "{caps}"
    );
    assert!(t.cmd("t5", "STARTTLS").await.starts_with("t5 BAD"));
    t.login("alice", "alice-demo-pw").await;
    assert!(t.cmd("t6", "SELECT INBOX").await.contains("* 4 EXISTS"));
    assert!(t.cmd("t7", "LOGOUT").await.starts_with("* BYE"));

    let tcp = TcpStream::connect(srv.imaps_addr.expect("imaps"))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut t = Client::new(tls_connector().connect(name, tcp).await.expect("handshake"));
    let greeting = t.greeting().await;
    assert!(!greeting.contains("STARTTLS"), "{greeting}");
    t.login("bob", "bob-demo-pw").await;
    assert!(t.cmd("i1", "EXAMINE INBOX").await.contains("[READ-ONLY]"));
    srv.shutdown().await;
}

#[tokio::test]
async fn login_disabled_until_tls_when_configured() {
    let store = Arc::new(Store::fixture());
    let mut config = config(&store);
    config.imap_login_disabled_on_plaintext = true;
    let srv = start(config).await.expect("start");
    let mut c = connect(srv.imap_addr).await;
    let greeting = c.greeting().await;
    assert!(greeting.contains(" LOGINDISABLED "), "{greeting}");
    assert!(!greeting.contains("AUTH=PLAIN"), "{greeting}");
    assert!(c
        .cmd("l1", "LOGIN alice alice-demo-pw")
        .await
        .starts_with("l1 NO [PRIVACYREQUIRED]"));
    assert!(c
        .cmd("l2", "AUTHENTICATE PLAIN =")
        .await
        .starts_with("l2 NO [PRIVACYREQUIRED]"));
    assert_eq!(
        c.cmd("l3", "STARTTLS").await,
        "l3 OK Begin TLS negotiation now\r\n"
    );
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tls_connector()
        .connect(name, c.io.into_inner())
        .await
        .expect("handshake");
    let mut t = Client::new(tls);
    let caps = t.cmd("l4", "CAPABILITY").await;
    assert!(
        !caps.contains("LOGINDISABLED") && caps.contains("AUTH=PLAIN"),
        "{caps}"
    );
    t.login("alice", "alice-demo-pw").await;
    // Implicit TLS never had the restriction.
    let tcp = TcpStream::connect(srv.imaps_addr.expect("imaps"))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut t = Client::new(tls_connector().connect(name, tcp).await.expect("handshake"));
    assert!(!t.greeting().await.contains("LOGINDISABLED"));
    srv.shutdown().await;
}

#[tokio::test]
async fn imap_only_configuration() {
    let store = Arc::new(Store::fixture());
    let mut config = config(&store);
    config.pop3_listen = None;
    config.pop3s_listen = None;
    config.imaps_listen = None;
    let srv = start(config).await.expect("an IMAP-only server starts");
    assert!(srv.pop3_addr.is_none() && srv.pop3s_addr.is_none() && srv.imaps_addr.is_none());
    let mut c = greeted(srv.imap_addr).await;
    c.login("alice", "alice-demo-pw").await;
    srv.shutdown().await;

    // ServerConfig::new alone serves POP3 only; with no listener at all
    // start refuses.
    let plain = ServerConfig::new(Arc::clone(&store), identity());
    assert!(plain.imap_listen.is_none() && plain.imaps_listen.is_none());
    let mut none = config_without_listeners(&store);
    none.imap_login_disabled_on_plaintext = true;
    assert!(matches!(start(none).await, Err(ServerError::NoListener)));
}

fn config_without_listeners(store: &Arc<Store>) -> ServerConfig {
    let mut config = config(store);
    config.pop3_listen = None;
    config.pop3s_listen = None;
    config.imap_listen = None;
    config.imaps_listen = None;
    config
}

#[tokio::test]
async fn huge_lines_and_literal_announcements_are_refused_without_hanging() {
    let store = Arc::new(Store::fixture());
    let mut config = config(&store);
    config.idle_timeout = Duration::from_secs(5);
    let srv = start(config).await.expect("start");
    let mut c = greeted(srv.imap_addr).await;
    let started = Instant::now();

    // A 1 MB command line is read to its end, dropped and answered BAD.
    let mut line = b"h1 NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    line.extend_from_slice(b"\r\n");
    c.send_raw(&line).await;
    assert_eq!(c.line_str().await, "h1 BAD command line too long\r\n");
    assert_eq!(c.cmd("h2", "NOOP").await, "h2 OK NOOP completed\r\n");

    // A synchronizing literal that is too large is refused before any
    // octet is sent (no `+`), and the session goes on.
    c.send("h3 LOGIN alice {999999999}").await;
    assert_eq!(c.line_str().await, "h3 BAD literal too large\r\n");
    c.login("alice", "alice-demo-pw").await;
    c.send("h4 APPEND INBOX {999999999}").await;
    assert!(c.line_str().await.starts_with("h4 NO [TOOBIG]"));
    assert_eq!(c.cmd("h5", "NOOP").await, "h5 OK NOOP completed\r\n");

    // A non-synchronizing one is coming regardless: the server says BYE
    // and closes instead of reading (or allocating) it.
    c.send("h6 APPEND INBOX {999999999+}").await;
    assert_eq!(c.line_str().await, "* BYE literal too large for this server\r\n");
    let mut rest = Vec::new();
    timeout(WAIT, c.io.read_to_end(&mut rest))
        .await
        .expect("closed")
        .ok();
    assert!(started.elapsed() < WAIT);

    // A deep SEARCH program is refused, not recursed into.
    let mut d = greeted(srv.imap_addr).await;
    d.login("alice", "alice-demo-pw").await;
    d.cmd("d1", "SELECT INBOX").await;
    let deep = format!("SEARCH {}ALL", "NOT ".repeat(10_000));
    assert_eq!(
        d.cmd("d2", &deep).await,
        "d2 BAD search program nested too deeply\r\n"
    );
    assert_eq!(d.cmd("d3", "NOOP").await, "d3 OK NOOP completed\r\n");
    srv.shutdown().await;
}

// ---- Faults: each one changes the bytes on the wire as described. ----

/// Runs `commands` (tag, command) against a fresh server and returns the
/// raw bytes, reading each response up to its tagged completion.
async fn wire(faults: Faults, login: bool, commands: &[(&str, &str)]) -> String {
    let (srv, _store) = server_with(faults).await;
    let mut c = greeted(srv.imap_addr).await;
    if login {
        c.login("alice", "alice-demo-pw").await;
    }
    let mut out = String::new();
    for (tag, command) in commands {
        out.push_str(&c.cmd(tag, command).await);
    }
    srv.shutdown().await;
    out
}

/// The same script against the correct and the faulty server: the bytes
/// differ.
async fn differs(fault: Fault, login: bool, commands: &[(&str, &str)]) -> (String, String) {
    let good = wire(Faults::none(), login, commands).await;
    let bad = wire(fault.into(), login, commands).await;
    assert_ne!(good, bad, "{fault} left the wire unchanged");
    (good, bad)
}

#[tokio::test]
async fn fault_imap_wrong_tag() {
    let (srv, _store) = server_with(Fault::ImapWrongTag.into()).await;
    let mut c = greeted(srv.imap_addr).await;
    c.send("A001 NOOP").await;
    assert_eq!(c.line_str().await, "A002 OK NOOP completed\r\n");
    c.send("tag LOGIN alice alice-demo-pw").await;
    assert!(c.line_str().await.starts_with("tagx OK"));
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_imap_no_completion() {
    let (srv, _store) = server_with(Fault::ImapNoCompletion.into()).await;
    let mut c = alice(&srv).await;
    c.send("f1 FETCH 1 UID").await;
    assert_eq!(c.line_str().await, "* 1 FETCH (UID 1)\r\n");
    assert!(
        c.try_line(SHORT).await.is_none(),
        "no tagged completion for FETCH"
    );
    c.send("f2 UID FETCH 2 UID").await;
    assert_eq!(c.line_str().await, "* 2 FETCH (UID 2)\r\n");
    assert!(c.try_line(SHORT).await.is_none());
    assert_eq!(c.cmd("n1", "NOOP").await, "n1 OK NOOP completed\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_imap_literal_miscount() {
    for (faults, extra) in [(Faults::none(), 0), (Fault::ImapLiteralMiscount.into(), 1)] {
        let (srv, store) = server_with(faults).await;
        let mut c = alice(&srv).await;
        let size = store.messages("alice").expect("alice")[3].size();
        c.send("f1 FETCH 4 (RFC822.SIZE BODY.PEEK[])").await;
        // Read line by line: a miscounted literal cannot be trusted.
        let first = c.line_str().await;
        assert_eq!(
            first,
            format!("* 4 FETCH (RFC822.SIZE {size} BODY[] {{{}}}\r\n", size + extra)
        );
        loop {
            if c.line().await.starts_with(b"f1 OK") {
                break;
            }
        }
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn fault_imap_select_no_uidvalidity() {
    let commands = [("s1", "SELECT INBOX"), ("s2", "EXAMINE INBOX")];
    let (good, bad) = differs(Fault::ImapSelectNoUidvalidity, true, &commands).await;
    assert_eq!(good.matches("[UIDVALIDITY ").count(), 2);
    assert!(!bad.contains("UIDVALIDITY"), "{bad}");
}

#[tokio::test]
async fn fault_imap_examine_writable() {
    let commands = [("e1", "EXAMINE INBOX"), ("e2", "STORE 1 +FLAGS (\\Seen)")];
    let (good, bad) = differs(Fault::ImapExamineWritable, true, &commands).await;
    assert!(
        good.contains("e1 OK [READ-ONLY]") && good.contains("e2 NO"),
        "{good}"
    );
    assert!(
        bad.contains("e1 OK [READ-WRITE]") && bad.contains("e2 OK"),
        "{bad}"
    );
}

#[tokio::test]
async fn fault_imap_peek_sets_seen() {
    let commands = [
        ("s1", "SELECT INBOX"),
        ("p1", "FETCH 1 BODY.PEEK[]<0.4>"),
        ("p2", "FETCH 1 FLAGS"),
    ];
    let (good, bad) = differs(Fault::ImapPeekSetsSeen, true, &commands).await;
    assert!(good.contains("* 1 FETCH (FLAGS (\\Recent))"), "{good}");
    assert!(bad.contains("* 1 FETCH (FLAGS (\\Seen \\Recent))"), "{bad}");
}

#[tokio::test]
async fn fault_imap_uids_descending() {
    let commands = [("s1", "SELECT INBOX"), ("f1", "FETCH 1:* UID")];
    let (good, bad) = differs(Fault::ImapUidsDescending, true, &commands).await;
    assert!(good.contains("* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n* 4 FETCH (UID 4)"));
    assert!(bad.contains("* 1 FETCH (UID 4)\r\n* 2 FETCH (UID 3)\r\n* 3 FETCH (UID 2)\r\n* 4 FETCH (UID 1)"));
}

#[tokio::test]
async fn fault_imap_expunge_silent() {
    let commands = [
        ("s1", "SELECT INBOX"),
        ("x1", "STORE 2 +FLAGS.SILENT (\\Deleted)"),
        ("x2", "EXPUNGE"),
    ];
    let (good, bad) = differs(Fault::ImapExpungeSilent, true, &commands).await;
    assert!(good.contains("* 2 EXPUNGE\r\nx2 OK"), "{good}");
    assert!(!bad.contains("EXPUNGE\r\n") && bad.contains("x2 OK"), "{bad}");
}

#[tokio::test]
async fn fault_imap_ok_before_login() {
    let commands = [("s1", "SELECT INBOX")];
    let (good, bad) = differs(Fault::ImapOkBeforeLogin, false, &commands).await;
    assert!(good.starts_with("s1 BAD"), "{good}");
    assert!(
        bad.contains("* 4 EXISTS") && bad.contains("s1 OK [READ-WRITE]"),
        "{bad}"
    );
}

#[tokio::test]
async fn fault_imap_bad_as_no() {
    let commands = [("b1", "FROBNICATE"), ("b2", "FETCH")];
    let (good, bad) = differs(Fault::ImapBadAsNo, true, &commands).await;
    assert!(good.starts_with("b1 BAD") && good.contains("b2 BAD"), "{good}");
    assert!(bad.starts_with("b1 NO") && bad.contains("b2 NO"), "{bad}");
}

#[tokio::test]
async fn fault_imap_no_bye_on_logout() {
    let commands = [("o1", "LOGOUT")];
    let (good, bad) = differs(Fault::ImapNoByeOnLogout, true, &commands).await;
    assert!(good.starts_with("* BYE "), "{good}");
    assert_eq!(bad, "o1 OK LOGOUT completed\r\n");
}

/// A server with the given faults and config tweaks.
async fn server_like(faults: Faults, tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let store = Arc::new(Store::fixture());
    let mut config = config(&store);
    config.faults = faults;
    tweak(&mut config);
    start(config).await.expect("start")
}

#[tokio::test]
async fn preauth_and_bye_greetings() {
    let srv = server_like(Faults::none(), |c| c.imap_greeting = ImapGreeting::Preauth).await;
    let mut c = connect(srv.imap_addr).await;
    let greeting = c.line_str().await;
    assert!(
        greeting.starts_with("* PREAUTH [CAPABILITY IMAP4rev1 "),
        "{greeting}"
    );
    assert!(
        !greeting.contains("AUTH=") && !greeting.contains("STARTTLS"),
        "{greeting}"
    );
    assert!(c.cmd("s1", "SELECT INBOX").await.contains("s1 OK [READ-WRITE]"));
    assert!(c
        .cmd("l1", "LOGIN alice alice-demo-pw")
        .await
        .starts_with("l1 BAD"));
    srv.shutdown().await;

    let srv = server_like(Faults::none(), |c| c.imap_greeting = ImapGreeting::Bye).await;
    let mut c = connect(srv.imap_addr).await;
    assert!(c.line_str().await.starts_with("* BYE "));
    assert!(c.try_line(WAIT).await.is_none(), "the server closes after BYE");
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_imap_preauth_unauthenticated() {
    for (faults, select) in [
        (Faults::none(), "s1 OK [READ-WRITE]"),
        (Fault::ImapPreauthUnauthenticated.into(), "s1 BAD"),
    ] {
        let srv = server_like(faults, |c| c.imap_greeting = ImapGreeting::Preauth).await;
        let mut c = connect(srv.imap_addr).await;
        assert!(c.line_str().await.starts_with("* PREAUTH "));
        let reply = c.cmd("s1", "SELECT INBOX").await;
        assert!(reply.contains(select), "{faults}: {reply}");
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn fault_imap_login_despite_logindisabled() {
    // Correct: LOGINDISABLED on plaintext, and LOGIN refused there.
    let srv = server_like(Faults::none(), |c| c.imap_login_disabled_on_plaintext = true).await;
    let mut c = greeted(srv.imap_addr).await;
    assert!(c.cmd("c1", "CAPABILITY").await.contains(" LOGINDISABLED"));
    assert!(c
        .cmd("l1", "LOGIN alice alice-demo-pw")
        .await
        .starts_with("l1 NO"));
    srv.shutdown().await;
    let commands = [("c1", "CAPABILITY"), ("l1", "LOGIN alice alice-demo-pw")];
    let (good, bad) = differs(Fault::ImapLoginDespiteLogindisabled, false, &commands).await;
    assert!(
        !good.contains("LOGINDISABLED") && good.contains("l1 OK"),
        "{good}"
    );
    assert!(bad.contains(" LOGINDISABLED") && bad.contains("l1 OK"), "{bad}");
}

#[tokio::test]
async fn fault_imap_starttls_stale_capabilities() {
    for (faults, stale) in [
        (Faults::none(), false),
        (Fault::ImapStarttlsStaleCapabilities.into(), true),
    ] {
        let srv = server_like(faults, |c| c.imap_login_disabled_on_plaintext = true).await;
        let mut c = greeted(srv.imap_addr).await;
        assert!(c.cmd("t1", "STARTTLS").await.starts_with("t1 OK"));
        let name = ServerName::try_from("localhost").expect("name");
        let tls = tls_connector()
            .connect(name, c.io.into_inner())
            .await
            .expect("handshake");
        let mut t = Client::new(tls);
        let caps = t.cmd("t2", "CAPABILITY").await;
        assert_eq!(caps.contains(" STARTTLS"), stale, "{caps}");
        assert_eq!(caps.contains(" LOGINDISABLED"), stale, "{caps}");
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn fault_imap_no_version_after_login() {
    let (good, bad) = differs(Fault::ImapNoVersionAfterLogin, true, &[("c1", "CAPABILITY")]).await;
    assert!(good.starts_with("* CAPABILITY IMAP4rev1 "), "{good}");
    assert!(!bad.contains("IMAP4rev1"), "{bad}");
}

#[tokio::test]
async fn fault_imap_lsub_unsubscribed() {
    let commands = [("c1", "CREATE unsubscribed"), ("l1", "LSUB \"\" unsubscribed")];
    let (good, bad) = differs(Fault::ImapLsubUnsubscribed, true, &commands).await;
    assert!(!good.contains("* LSUB"), "{good}");
    assert!(bad.contains("* LSUB () \"/\" unsubscribed"), "{bad}");
}

#[tokio::test]
async fn fault_imap_uid_search_seqs() {
    let commands = [
        ("s1", "SELECT INBOX"),
        ("x1", "STORE 1 +FLAGS.SILENT (\\Deleted)"),
        ("x2", "EXPUNGE"),
        ("u1", "UID SEARCH ALL"),
    ];
    let (good, bad) = differs(Fault::ImapUidSearchSeqs, true, &commands).await;
    assert!(good.contains("* SEARCH 2 3 4\r\nu1 OK"), "{good}");
    assert!(bad.contains("* SEARCH 1 2 3\r\nu1 OK"), "{bad}");
}

#[tokio::test]
async fn fault_imap_uid_store_no_uid() {
    let commands = [("s1", "SELECT INBOX"), ("u1", "UID STORE 2 +FLAGS (\\Flagged)")];
    let (good, bad) = differs(Fault::ImapUidStoreNoUid, true, &commands).await;
    assert!(
        good.contains("* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2)"),
        "{good}"
    );
    assert!(bad.contains("* 2 FETCH (FLAGS (\\Flagged \\Recent))"), "{bad}");
}

#[tokio::test]
async fn fault_imap_copy_lost() {
    let commands = [
        ("c1", "CREATE target"),
        ("s1", "SELECT INBOX"),
        ("c2", "COPY 1:2 target"),
        ("s2", "STATUS target (MESSAGES)"),
    ];
    let (good, bad) = differs(Fault::ImapCopyLost, true, &commands).await;
    assert!(
        good.contains("c2 OK [COPYUID ") && good.contains("(MESSAGES 2)"),
        "{good}"
    );
    assert!(
        bad.contains("c2 OK COPY completed") && bad.contains("(MESSAGES 0)"),
        "{bad}"
    );
}

#[tokio::test]
async fn fault_imap_move_silent() {
    let commands = [
        ("c1", "CREATE target"),
        ("s1", "SELECT INBOX"),
        ("m1", "MOVE 1 target"),
    ];
    let (good, bad) = differs(Fault::ImapMoveSilent, true, &commands).await;
    assert!(good.contains("* 1 EXPUNGE\r\nm1 OK"), "{good}");
    assert!(!bad.contains("EXPUNGE") && bad.contains("m1 OK"), "{bad}");
}

#[tokio::test]
async fn fault_imap_idle_no_continuation() {
    for (faults, plus) in [
        (Faults::none(), true),
        (Fault::ImapIdleNoContinuation.into(), false),
    ] {
        let (srv, _store) = server_with(faults).await;
        let mut c = alice(&srv).await;
        c.send("i1 IDLE").await;
        let first = c.try_line(SHORT).await;
        assert_eq!(first.is_some_and(|l| l.starts_with(b"+ ")), plus, "{faults}");
        c.send("DONE").await;
        assert!(c.line_str().await.starts_with("i1 OK"), "{faults}");
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn fault_imap_idle_no_updates() {
    for (faults, live) in [(Faults::none(), true), (Fault::ImapIdleNoUpdates.into(), false)] {
        let (srv, _store) = server_with(faults).await;
        let mut a = alice(&srv).await;
        a.send("i1 IDLE").await;
        assert!(a.line_str().await.starts_with("+ "));
        let mut b = greeted(srv.imap_addr).await;
        b.login("alice", "alice-demo-pw").await;
        let appended = b.cmd("p1", "APPEND INBOX {8+}\r\nSubject:").await;
        assert!(appended.contains("p1 OK"), "{appended}");
        let update = a.try_line(SHORT).await;
        assert_eq!(
            update.as_deref() == Some(&b"* 5 EXISTS\r\n"[..]),
            live,
            "{faults}: {update:?}"
        );
        a.send("DONE").await;
        let rest = a.response("i1").await;
        // Either way the client learns of the message by the completion.
        assert_eq!(contains(&rest, b"* 5 EXISTS"), !live, "{faults}");
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn fault_imap_internaldate_wrong_form() {
    let commands = [("s1", "SELECT INBOX"), ("f1", "FETCH 1 INTERNALDATE")];
    let (good, bad) = differs(Fault::ImapInternaldateWrongForm, true, &commands).await;
    let date = |t: &str| {
        t.split("INTERNALDATE \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(str::to_string)
    };
    let (good, bad) = (date(&good).expect("date"), date(&bad).expect("date"));
    assert_eq!(good.len(), 26, "{good}");
    assert_eq!(good.replacen('-', " ", 2), bad);
}

#[tokio::test]
async fn fault_imap_envelope_short() {
    let commands = [("s1", "SELECT INBOX"), ("f1", "FETCH 1 ENVELOPE")];
    let (good, bad) = differs(Fault::ImapEnvelopeShort, true, &commands).await;
    assert!(good.contains("\"<") && good.contains(">\"))"), "{good}");
    assert!(!bad.contains(">\"))"), "{bad}");
}

#[tokio::test]
async fn fault_imap_bodystructure_no_lines() {
    let commands = [("s1", "SELECT INBOX"), ("f1", "FETCH 1 (BODY BODYSTRUCTURE)")];
    let (good, bad) = differs(Fault::ImapBodystructureNoLines, true, &commands).await;
    // `"7BIT" octets lines`: the fault leaves the line count out, in both items.
    let tail = good.split("\"7BIT\" ").nth(1).expect("a text part");
    let mut numbers = tail.split([' ', ')']);
    let (octets, lines) = (numbers.next().expect("octets"), numbers.next().expect("lines"));
    assert!(lines.chars().all(|c| c.is_ascii_digit()), "{good}");
    let with = format!("\"7BIT\" {octets} {lines}");
    assert_eq!(good.matches(&with).count(), 2, "{good}");
    assert_eq!(good.replace(&with, &format!("\"7BIT\" {octets}")), bad);
}

#[tokio::test]
async fn fault_imap_wrong_size() {
    let commands = [
        ("s1", "SELECT INBOX"),
        ("f1", "FETCH 1 (RFC822.SIZE BODY.PEEK[])"),
    ];
    let (good, bad) = differs(Fault::ImapWrongSize, true, &commands).await;
    let (g, b) = (
        sizes_and_literals(good.as_bytes()),
        sizes_and_literals(bad.as_bytes()),
    );
    assert_eq!(g[0].0, g[0].1, "{good}");
    assert_eq!(b[0].0, b[0].1 + 1, "{bad}");
}

#[tokio::test]
async fn fault_imap_literal_no_continuation() {
    for (faults, plus) in [
        (Faults::none(), true),
        (Fault::ImapLiteralNoContinuation.into(), false),
    ] {
        let (srv, _store) = server_with(faults).await;
        let mut c = greeted(srv.imap_addr).await;
        c.login("alice", "alice-demo-pw").await;
        c.send("e1 EXAMINE {5}").await;
        let first = c.try_line(SHORT).await;
        assert_eq!(first.is_some_and(|l| l.starts_with(b"+ ")), plus, "{faults}");
        // A client that sends the data anyway gets its answer.
        c.send("INBOX").await;
        assert!(
            contains(&c.response("e1").await, b"e1 OK [READ-ONLY]"),
            "{faults}"
        );
        srv.shutdown().await;
    }
}

#[tokio::test]
async fn fault_imap_literal_plus_refused() {
    let commands = [("e1", "EXAMINE {5+}\r\nINBOX"), ("n1", "NOOP")];
    let (good, bad) = differs(Fault::ImapLiteralPlusRefused, true, &commands).await;
    assert!(good.contains("e1 OK [READ-ONLY]"), "{good}");
    assert!(bad.starts_with("e1 BAD ") && bad.contains("n1 OK"), "{bad}");
}

#[tokio::test]
async fn fault_imap_double_completion() {
    let (srv, _store) = server_with(Fault::ImapDoubleCompletion.into()).await;
    let mut c = greeted(srv.imap_addr).await;
    c.send("n1 NOOP").await;
    assert_eq!(c.line_str().await, "n1 OK NOOP completed\r\n");
    assert_eq!(c.line_str().await, "n1 OK NOOP completed\r\n");
    assert_eq!(c.cmd("c1", "CAPABILITY").await.matches(" OK ").count(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn fault_imap_failure_as_bad() {
    let commands = [
        ("l1", "LOGIN alice wrong"),
        ("l2", "LOGIN alice alice-demo-pw"),
        ("s1", "SELECT nosuch"),
    ];
    let (good, bad) = differs(Fault::ImapFailureAsBad, false, &commands).await;
    assert!(good.starts_with("l1 NO") && good.contains("s1 NO"), "{good}");
    assert!(
        bad.starts_with("l1 BAD") && bad.contains("l2 OK") && bad.contains("s1 BAD"),
        "{bad}"
    );
}

#[test]
fn every_imap_fault_has_a_wire_test() {
    let source = include_str!("imap_server.rs");
    for fault in Fault::ALL.iter().filter(|f| f.name().starts_with("imap-")) {
        let test = format!("fn fault_{}()", fault.name().replace('-', "_"));
        assert!(source.contains(&test), "{fault} has no test here");
    }
}
