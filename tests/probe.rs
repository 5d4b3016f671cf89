//! The probe against the embedded server set up to fail in each way, and
//! with certificates made in the test: each failure must produce the right
//! diagnosis id. No test needs the internet: names resolve through a
//! static resolver or `--resolve` pins to loopback.

mod common;
use common::certs::{now, self_signed, Pki, DAY};
use common::*;
use mailcheck::probe::chain::{Layer, Mark};
use mailcheck::probe::dns::StaticResolver;
use mailcheck::probe::{probe_all, Endpoint, EndpointReport, Pin, ProbeConfig, Service, TlsMode};
use mailcheck::secret::Secret;
use mailcheck::server::{self, Fault, Faults, RunningServer, ServerConfig, Store, TlsIdentity};
use mailcheck::wire::TlsSettings;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

const HOST: &str = "mail.example.test";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Setup {
    faults: Faults,
    identity: Option<TlsIdentity>,
    greeting_delay: Duration,
    auth_failure_text: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            faults: Faults::none(),
            identity: None,
            greeting_delay: Duration::ZERO,
            auth_failure_text: None,
        }
    }
}

async fn start(setup: Setup) -> RunningServer {
    let identity = match setup.identity {
        Some(i) => i,
        None => TlsIdentity::generate(&[HOST, "localhost", "127.0.0.1"]).unwrap(),
    };
    let mut config = ServerConfig::new(Arc::new(Store::fixture()), Arc::new(identity));
    config.faults = setup.faults;
    config.greeting_delay = setup.greeting_delay;
    config.auth_failure_text = setup.auth_failure_text;
    server::start(config).await.unwrap()
}

fn endpoint(service: Service, port: u16, tls: TlsMode) -> Endpoint {
    Endpoint {
        service,
        host: HOST.into(),
        port,
        tls,
        source: "test".into(),
    }
}

fn config(tls: TlsSettings, creds: bool, timeout: Duration) -> ProbeConfig {
    ProbeConfig {
        resolver: Arc::new(StaticResolver::new().ip(HOST, LOOPBACK)),
        pins: Vec::new(),
        tls,
        timeout,
        user: creds.then(|| "alice".to_string()),
        password: creds.then(|| Secret::new("alice-demo-pw")),
    }
}

async fn probe(ep: Endpoint, cfg: &ProbeConfig) -> EndpointReport {
    probe_all(vec![ep], cfg).await.remove(0)
}

fn failure(r: &EndpointReport) -> Option<(Layer, Option<&'static str>)> {
    r.checks
        .iter()
        .find(|c| c.mark == Mark::Failed)
        .map(|c| (c.layer, c.advice.as_ref().map(|a| a.id)))
}

fn dump(r: &EndpointReport) -> String {
    serde_json::to_string_pretty(r).unwrap()
}

/// The embedded server's own certificate, trusted.
fn trusted(server_pem: &str) -> TlsSettings {
    TlsSettings::with_pem_roots(server_pem).unwrap()
}

#[tokio::test]
async fn a_healthy_server_passes_every_layer_over_implicit_tls_and_stls() {
    let identity = TlsIdentity::generate(&[HOST]).unwrap();
    let pem = identity.cert_pem.clone();
    let s = start(Setup {
        identity: Some(identity),
        ..Default::default()
    })
    .await;
    let cfg = config(trusted(&pem), true, Duration::from_secs(5));
    for ep in [
        endpoint(Service::Pop3, s.pop3s_addr.unwrap().port(), TlsMode::Implicit),
        endpoint(Service::Pop3, s.pop3_addr.unwrap().port(), TlsMode::Starttls),
    ] {
        let r = probe(ep, &cfg).await;
        assert!(r.usable, "{}", dump(&r));
        let layers: Vec<Layer> = r.checks.iter().map(|c| c.layer).collect();
        for l in [
            Layer::Dns,
            Layer::Tcp,
            Layer::Tls,
            Layer::Greeting,
            Layer::Capabilities,
            Layer::Login,
            Layer::ReadOnly,
        ] {
            assert!(layers.contains(&l), "{l:?} missing: {}", dump(&r));
        }
        assert!(r.checks.iter().all(|c| c.mark == Mark::Ok), "{}", dump(&r));
        let read_only = r.checks.iter().find(|c| c.layer == Layer::ReadOnly).unwrap();
        assert!(read_only.summary.contains("4 messages"), "{}", dump(&r));
        let tls = r.tls.as_ref().unwrap();
        assert!(tls.days_left > 300, "{}", dump(&r));
        assert!(!dump(&r).contains("alice-demo-pw"));
    }
}

#[tokio::test]
async fn without_credentials_login_is_skipped_and_the_endpoint_is_usable() {
    let identity = TlsIdentity::generate(&[HOST]).unwrap();
    let pem = identity.cert_pem.clone();
    let s = start(Setup {
        identity: Some(identity),
        ..Default::default()
    })
    .await;
    let r = probe(
        endpoint(Service::Pop3, s.pop3s_addr.unwrap().port(), TlsMode::Implicit),
        &config(trusted(&pem), false, Duration::from_secs(5)),
    )
    .await;
    assert!(r.usable, "{}", dump(&r));
    assert!(r
        .checks
        .iter()
        .any(|c| c.layer == Layer::Login && c.mark == Mark::Skipped));
}

async fn cert_case(chain: (String, String), roots: &str) -> EndpointReport {
    let identity = TlsIdentity::from_pem(&chain.0, &chain.1).unwrap();
    let s = start(Setup {
        identity: Some(identity),
        ..Default::default()
    })
    .await;
    let tls = TlsSettings::with_pem_roots(roots).unwrap();
    probe(
        endpoint(Service::Pop3, s.pop3s_addr.unwrap().port(), TlsMode::Implicit),
        &config(tls, false, Duration::from_secs(5)),
    )
    .await
}

#[tokio::test]
async fn certificate_failures_get_their_diagnosis() {
    let pki = Pki::new("mailcheck Test Root");
    let n = now();
    let cases: Vec<(&str, (String, String), String)> = vec![
        (
            "cert-expired",
            pki.leaf(&[HOST], n - 30 * DAY, n - DAY, true),
            pki.root_pem.clone(),
        ),
        (
            "cert-not-yet-valid",
            pki.leaf(&[HOST], n + DAY, n + 90 * DAY, true),
            pki.root_pem.clone(),
        ),
        (
            "cert-wrong-host",
            pki.leaf(&["other.example.test"], n - DAY, n + 90 * DAY, true),
            pki.root_pem.clone(),
        ),
        (
            "cert-self-signed",
            self_signed(&[HOST], n - DAY, n + 90 * DAY),
            pki.root_pem.clone(),
        ),
        (
            "cert-unknown-issuer",
            Pki::new("Unrelated Corp Root").leaf(&[HOST], n - DAY, n + 90 * DAY, true),
            pki.root_pem.clone(),
        ),
        (
            "cert-missing-intermediate",
            pki.leaf(&[HOST], n - DAY, n + 90 * DAY, false),
            pki.root_pem.clone(),
        ),
        (
            "cert-antivirus-proxy",
            Pki::new("Kaspersky Anti-Virus Personal Root Certificate").leaf(
                &[HOST],
                n - DAY,
                n + 90 * DAY,
                false,
            ),
            pki.root_pem.clone(),
        ),
    ];
    for (id, chain, roots) in cases {
        let r = cert_case(chain, &roots).await;
        assert!(!r.usable, "{id}: {}", dump(&r));
        assert_eq!(failure(&r), Some((Layer::Tls, Some(id))), "{id}: {}", dump(&r));
        if id == "cert-wrong-host" {
            assert!(
                dump(&r).contains("other.example.test"),
                "the diagnosis names the certificate's names"
            );
        }
    }
    // The valid chain passes; one about to expire warns but stays usable.
    let r = cert_case(pki.leaf(&[HOST], n - DAY, n + 90 * DAY, true), &pki.root_pem).await;
    assert!(r.usable && failure(&r).is_none(), "{}", dump(&r));
    let r = cert_case(pki.leaf(&[HOST], n - DAY, n + 5 * DAY, true), &pki.root_pem).await;
    assert!(r.usable, "{}", dump(&r));
    assert!(
        r.checks
            .iter()
            .any(|c| c.layer == Layer::Tls && c.mark == Mark::Warning),
        "{}",
        dump(&r)
    );
}

#[tokio::test]
async fn insecure_connects_but_still_says_what_is_wrong() {
    let n = now();
    let chain = self_signed(&[HOST], n - DAY, n + 90 * DAY);
    let identity = TlsIdentity::from_pem(&chain.0, &chain.1).unwrap();
    let s = start(Setup {
        identity: Some(identity),
        ..Default::default()
    })
    .await;
    let tls = TlsSettings::new(None, true).unwrap();
    let r = probe(
        endpoint(Service::Pop3, s.pop3s_addr.unwrap().port(), TlsMode::Implicit),
        &config(tls, true, Duration::from_secs(5)),
    )
    .await;
    assert!(r.usable, "{}", dump(&r));
    let c = r.checks.iter().find(|c| c.layer == Layer::Tls).unwrap();
    assert_eq!(c.mark, Mark::Warning, "{}", dump(&r));
    assert_eq!(
        c.advice.as_ref().map(|a| a.id),
        Some("cert-self-signed"),
        "{}",
        dump(&r)
    );
}

#[tokio::test]
async fn server_failures_get_their_diagnosis() {
    let cases: Vec<(Setup, Layer, &str)> = vec![
        (
            Setup {
                faults: Faults::none().with(Fault::LoginDisabled),
                auth_failure_text: Some("[AUTH] Login failure or POP3 disabled".into()),
                ..Default::default()
            },
            Layer::Login,
            "pop3-login-failure",
        ),
        (
            Setup {
                faults: Faults::none().with(Fault::CloseOnAccept),
                ..Default::default()
            },
            Layer::Greeting,
            "closed-after-accept",
        ),
        (
            Setup {
                greeting_delay: Duration::from_secs(5),
                ..Default::default()
            },
            Layer::Greeting,
            "no-greeting",
        ),
    ];
    for (setup, layer, id) in cases {
        let identity = TlsIdentity::generate(&[HOST]).unwrap();
        let pem = identity.cert_pem.clone();
        let s = start(Setup {
            identity: Some(identity),
            ..setup
        })
        .await;
        let r = probe(
            endpoint(Service::Pop3, s.pop3_addr.unwrap().port(), TlsMode::Starttls),
            &config(trusted(&pem), true, Duration::from_secs(1)),
        )
        .await;
        assert_eq!(failure(&r), Some((layer, Some(id))), "{id}: {}", dump(&r));
        if id == "pop3-login-failure" {
            let c = r.checks.iter().find(|c| c.layer == Layer::Login).unwrap();
            assert!(
                c.server_text
                    .as_deref()
                    .unwrap_or("")
                    .contains("Login failure or POP3 disabled"),
                "{}",
                dump(&r)
            );
            assert!(!dump(&r).contains("alice-demo-pw"));
        }
    }
}

#[tokio::test]
async fn socket_failures_get_their_diagnosis() {
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        TlsSettings::new(None, false).unwrap(),
        false,
        Duration::from_secs(2),
    );
    let r = probe(endpoint(Service::Imap, free, TlsMode::Implicit), &cfg).await;
    assert_eq!(
        failure(&r),
        Some((Layer::Tcp, Some("tcp-refused"))),
        "{}",
        dump(&r)
    );
    assert!(dump(&r).contains(&format!("127.0.0.1:{free}")));

    let unknown = Endpoint {
        host: "nowhere.example.test".into(),
        ..endpoint(Service::Imap, 993, TlsMode::Implicit)
    };
    let r = probe(unknown, &cfg).await;
    assert_eq!(
        failure(&r),
        Some((Layer::Dns, Some("dns-not-found"))),
        "{}",
        dump(&r)
    );
    // Later layers are marked skipped, not silently missing.
    assert!(
        r.checks
            .iter()
            .any(|c| c.layer == Layer::Tls && c.mark == Mark::Skipped),
        "{}",
        dump(&r)
    );
}

#[tokio::test]
async fn resolve_pins_keep_the_host_name_for_tls() {
    let identity = TlsIdentity::generate(&[HOST]).unwrap();
    let pem = identity.cert_pem.clone();
    let s = start(Setup {
        identity: Some(identity),
        ..Default::default()
    })
    .await;
    let port = s.pop3s_addr.unwrap().port();
    let mut cfg = config(trusted(&pem), false, Duration::from_secs(5));
    cfg.resolver = Arc::new(StaticResolver::new()); // nothing resolves by DNS
    cfg.pins = vec![Pin::parse(&format!("{HOST}:{port}:127.0.0.1")).unwrap()];
    let r = probe(endpoint(Service::Pop3, port, TlsMode::Implicit), &cfg).await;
    assert!(r.usable, "{}", dump(&r));
    assert!(r.checks[0].summary.contains("--resolve"), "{}", dump(&r));
}

/// A scripted server: a greeting, then one canned reply per command verb.
fn fake_server(greeting: &'static str, replies: &'static [(&'static str, &'static str)]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut w = stream.try_clone().unwrap();
            let _ = w.write_all(greeting.as_bytes());
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let mut words = line.split_whitespace();
                let first = words.next().unwrap_or("").to_ascii_uppercase();
                // IMAP commands carry a tag first: answer with the same tag.
                let (tag, verb) = match words.next() {
                    Some(v) if first.len() <= 2 && first.chars().any(|c| c.is_ascii_digit()) => {
                        (first.clone(), v.to_ascii_uppercase())
                    }
                    _ => (String::new(), first.clone()),
                };
                let reply = replies
                    .iter()
                    .find(|(v, _)| *v == verb)
                    .map(|(_, r)| *r)
                    .unwrap_or("-ERR unknown\r\n");
                let _ = w.write_all(reply.replace("{tag}", &tag).as_bytes());
                line.clear();
            }
        }
    });
    port
}

#[tokio::test]
async fn plaintext_login_refusal_and_logindisabled_are_diagnosed() {
    let cfg = config(
        TlsSettings::new(None, false).unwrap(),
        true,
        Duration::from_secs(2),
    );
    // A POP3 server without STLS that refuses logins in cleartext (Dovecot's words).
    let pop3 = fake_server(
        "+OK ready\r\n",
        &[
            ("CAPA", "+OK\r\nTOP\r\n.\r\n"),
            ("USER", "-ERR [SYS/PERM] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"),
            ("QUIT", "+OK bye\r\n"),
        ],
    );
    let r = probe(endpoint(Service::Pop3, pop3, TlsMode::Plain), &cfg).await;
    assert_eq!(
        failure(&r),
        Some((Layer::Login, Some("plaintext-login-refused"))),
        "{}",
        dump(&r)
    );
    // An IMAP server that disables LOGIN in cleartext and offers no STARTTLS.
    let imap = fake_server(
        "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n",
        &[("LOGOUT", "* BYE\r\n{tag} OK bye\r\n")],
    );
    let r = probe(endpoint(Service::Imap, imap, TlsMode::Plain), &cfg).await;
    assert_eq!(
        failure(&r),
        Some((Layer::Login, Some("logindisabled-without-starttls"))),
        "{}",
        dump(&r)
    );
}

/// A scripted SMTP server that refuses every AUTH.
fn fake_smtp(auth_reply: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut w = stream.try_clone().unwrap();
            let _ = w.write_all(b"220 fake.example.test ESMTP\r\n");
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-fake.example.test\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 1000000\r\n",
                    "AUTH" => auth_reply.as_bytes(),
                    "QUIT" => b"221 bye\r\n",
                    _ => b"502 not implemented\r\n",
                };
                let _ = w.write_all(reply);
                line.clear();
            }
        }
    });
    port
}

#[tokio::test]
async fn smtp_auth_failure_and_missing_starttls_are_diagnosed() {
    let port = fake_smtp("535 5.7.8 Authentication credentials invalid\r\n");
    let cfg = config(
        TlsSettings::new(None, false).unwrap(),
        true,
        Duration::from_secs(2),
    );
    let r = probe(endpoint(Service::Smtp, port, TlsMode::Plain), &cfg).await;
    assert_eq!(
        failure(&r),
        Some((Layer::Login, Some("smtp-auth-failed"))),
        "{}",
        dump(&r)
    );
    assert!(
        r.checks
            .iter()
            .any(|c| c.layer == Layer::Tls && c.mark == Mark::Warning),
        "{}",
        dump(&r)
    );
    let caps = r.checks.iter().find(|c| c.layer == Layer::Capabilities).unwrap();
    assert!(
        caps.summary.contains("AUTH PLAIN LOGIN") && caps.summary.contains("SIZE 1000000"),
        "{}",
        dump(&r)
    );
    // Expecting STARTTLS where none is offered is a failure of the TLS layer.
    let r = probe(endpoint(Service::Smtp, port, TlsMode::Starttls), &cfg).await;
    assert_eq!(failure(&r).map(|f| f.0), Some(Layer::Tls), "{}", dump(&r));
    assert!(!dump(&r).contains("alice-demo-pw"));
}

#[test]
fn explain_finds_known_texts_and_admits_unknown_ones() {
    let out = mailcheck(&["explain", "-ERR [AUTH] Login failure or POP3 disabled"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("pop3-login-failure"), "{}", out.stdout);
    let out = mailcheck(&[
        "explain",
        "553 5.7.1 Sender address rejected: not owned by auth user.",
    ]);
    assert!(out.stdout.contains("smtp-sender-not-owned"), "{}", out.stdout);
    let out = mailcheck(&["explain", "554 5.7.1 Message rejected under suspicion of SPAM"]);
    assert!(out.stdout.contains("smtp-spam-rejected"), "{}", out.stdout);
    let out = mailcheck(&["explain", "530 5.7.0 Authentication required"]);
    assert!(out.stdout.contains("smtp-auth-required"), "{}", out.stdout);
    let out = mailcheck(&["explain", "certificate is not trusted"]);
    assert!(out.stdout.contains("cert-unknown-issuer"), "{}", out.stdout);
    let out = mailcheck(&["explain", "the frobnicator is sad"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("no known cause"), "{}", out.stdout);
}

#[test]
fn shorthand_and_unknown_presets() {
    let out = mailcheck(&["yandx"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("yandex"), "{}", out.stderr);
    // `mailcheck yandex` probes the preset; --resolve pins it to a closed loopback port.
    let out = mailcheck(&[
        "yandex",
        "--only",
        "imap",
        "--resolve",
        "imap.yandex.ru:993:127.0.0.1",
        "--timeout",
        "2",
        "--json",
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["usable"], false);
    assert_eq!(json["endpoints"][0]["endpoint"]["host"], "imap.yandex.ru");
    assert!(out.stdout.contains("--resolve"), "{}", out.stdout);
}

#[test]
fn probe_cli_against_the_embedded_server_writes_junit_and_hides_the_password() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let identity = TlsIdentity::generate(&["localhost"]).unwrap();
            let pem = identity.cert_pem.clone();
            let s = start(Setup {
                identity: Some(identity),
                ..Default::default()
            })
            .await;
            tx.send((s.pop3_addr.unwrap().port(), s.pop3s_addr.unwrap().port(), pem))
                .unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            s.shutdown().await;
        });
    });
    let (plain, tls, pem) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let junit = dir.path().join("probe.xml");
    let out = mailcheck_env(
        &[
            "probe",
            &format!("pop3://localhost:{plain}"),
            &format!("pop3s://localhost:{tls}"),
            "--user",
            "alice",
            "--cacert",
            ca.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
        &[("MAILCHECK_PASSWORD", "alice-demo-pw")],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("2 usable"), "{}", out.stdout);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("well-formed JUnit");
    assert_eq!(report.failures, 0);
    assert!(report.tests >= 14, "{xml}");
    for text in [out.all(), xml] {
        assert!(!text.contains("alice-demo-pw"));
    }
    let _ = stop_tx.send(());
}

#[test]
fn serve_imap_and_probe_it_end_to_end() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailcheck"))
        .args([
            "serve",
            "imap",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    for line in lines.by_ref().take(2) {
        let line = line.unwrap();
        urls.push(
            line.trim_start_matches("listening: ")
                .split(' ')
                .next()
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        urls[0].starts_with("imap://") && urls[1].starts_with("imaps://"),
        "{urls:?}"
    );
    let out = mailcheck_env(
        &[
            "probe",
            &urls[0],
            &urls[1],
            "--insecure",
            "--user",
            "alice",
            "--json",
        ],
        &[("MAILCHECK_PASSWORD", "alice-demo-pw")],
        Duration::from_secs(60),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.code, 0, "{}", out.all());
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for ep in json["endpoints"].as_array().unwrap() {
        let login = ep["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["layer"] == "login")
            .unwrap();
        assert_eq!(login["mark"], "ok", "{ep}");
    }
}
