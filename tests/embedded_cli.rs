//! The binary against the embedded server: the whole suite passes over
//! plain, STLS and implicit TLS, reports are well-formed, and the password
//! appears in no output. Also a server that sends hostile bytes.

mod common;
use common::*;
use mailcheck::server::{self, ServerConfig};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

struct Embedded {
    plain: String,
    tls: String,
    cert: tempfile::NamedTempFile,
    _stop: std::sync::mpsc::Sender<()>,
}

/// Start the embedded server on its own runtime thread.
fn embedded() -> Embedded {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let config = ServerConfig::localhost().unwrap();
            let pem = config.identity.cert_pem.clone();
            let running = server::start(config).await.unwrap();
            addr_tx
                .send((running.pop3_addr.unwrap(), running.pop3s_addr.unwrap(), pem))
                .unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            running.shutdown().await;
        });
    });
    let (plain, tls, pem) = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut cert = tempfile::NamedTempFile::new().unwrap();
    cert.write_all(pem.as_bytes()).unwrap();
    Embedded {
        plain: format!("pop3://{plain}"),
        tls: format!("pop3s://localhost:{}", tls.port()),
        cert,
        _stop: stop_tx,
    }
}

const PASSWORD: &str = "alice-demo-pw";

fn run(target: &str, extra: &[&str], password: &str) -> (Output, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("j.xml");
    let json = dir.path().join("r.json");
    let mut args = vec![
        "run",
        "scenarios/pop3",
        "--target",
        target,
        "--user",
        "alice",
        "-v",
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = mailcheck_env(
        &args,
        &[("MAILCHECK_PASSWORD", password)],
        Duration::from_secs(120),
    );
    let j = std::fs::read_to_string(junit).unwrap_or_default();
    let s = std::fs::read_to_string(json).unwrap_or_default();
    (out, j, s)
}

#[test]
fn suite_passes_on_plain_stls_and_pop3s_without_leaking_the_password() {
    let e = embedded();
    let cacert = e.cert.path().to_str().unwrap().to_string();
    for (target, extra) in [
        (e.plain.clone(), vec!["--cacert", cacert.as_str()]),
        (
            e.plain.replace("127.0.0.1", "localhost"),
            vec!["--starttls", "--cacert", cacert.as_str()],
        ),
        (e.tls.clone(), vec!["--cacert", cacert.as_str()]),
    ] {
        let (out, junit, json) = run(&target, &extra, PASSWORD);
        assert_eq!(out.code, 0, "{target}: {}", out.all());
        assert!(out.stdout.contains(" passed, 0 failed, "), "{}", out.stdout);
        for text in [&out.all(), &junit, &json] {
            assert!(!text.contains(PASSWORD), "password leaked for {target}");
        }
        assert!(
            out.stdout.contains("PASS ********"),
            "transcript shows the masked PASS"
        );
        quick_junit::Report::deserialize_from_str(&junit).expect("well-formed JUnit");
        serde_json::from_str::<serde_json::Value>(&json).expect("valid JSON");
    }
}

#[test]
fn wrong_password_fails_the_login_scenarios_and_is_not_shown() {
    let e = embedded();
    let wrong = "Wr0ng-pass-for-alice";
    let (out, junit, json) = run(&e.plain, &["--only", "login"], wrong);
    assert_eq!(out.code, 1, "{}", out.all());
    for text in [&out.all(), &junit, &json] {
        assert!(!text.contains(wrong));
    }
}

#[test]
fn password_file_is_read_and_redacted() {
    let e = embedded();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{PASSWORD}").unwrap();
    let cacert = e.cert.path().to_str().unwrap();
    let pwfile = f.path().to_str().unwrap();
    let out = mailcheck_env(
        &[
            "run",
            "scenarios/pop3",
            "--target",
            &e.plain,
            "--user",
            "alice",
            "-v",
            "--cacert",
            cacert,
        ]
        .into_iter()
        .chain(["--password-file", pwfile])
        .collect::<Vec<_>>(),
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains(PASSWORD));
}

#[test]
fn skips_say_why() {
    let e = embedded();
    // No credentials: the login scenarios are skipped with the reason.
    let cacert = e.cert.path().to_str().unwrap();
    let out = mailcheck(&["run", "scenarios/pop3", "--target", &e.plain, "--cacert", cacert]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("SKIP"), "{}", out.stdout);
    assert!(out.stdout.contains("needs credentials"), "{}", out.stdout);
    assert!(out.stdout.contains("--allow-destructive"), "{}", out.stdout);
}

#[test]
fn hostile_bytes_keep_the_junit_report_well_formed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut w = stream.try_clone().unwrap();
            let _ = w.write_all(b"+OK hi \x01\x1b[31m ]]> <&> \xff\xfe\r\n");
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let _ = w.write_all(b"-ERR \x00\x07 ]]><![CDATA[ & </testcase>\r\n");
                line.clear();
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(
        dir.path(),
        "x.yaml",
        "name: noop\nrfc: RFC 1939 section 5\nsteps:\n  - C: NOOP\n    S: \"+OK*\"\n",
    );
    let junit = dir.path().join("j.xml");
    let target = format!("pop3://127.0.0.1:{port}");
    let out = mailcheck(&[
        "run",
        path.to_str().unwrap(),
        "--target",
        &target,
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    let xml = std::fs::read_to_string(junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("well-formed JUnit");
    assert_eq!(report.failures, 1);
    assert!(xml.contains("]]&gt;") || xml.contains("]]>"), "{xml}");
}
