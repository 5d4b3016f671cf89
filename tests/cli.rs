//! The command line's contract for bad input: clear errors, the right exit
//! code, nothing hangs. These need no server.

mod common;
use common::*;
use std::net::TcpListener;
use std::time::Duration;

#[test]
fn malformed_yaml_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(
        dir.path(),
        "bad.yaml",
        "name: x\nrfc: y\nsteps:\n  - C: STAT\n    S: [unclosed\n",
    );
    let out = mailcheck(&["lint", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains(&format!("{}:", path.display())),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("bad.yaml:5:") || out.stderr.contains("bad.yaml:6:"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_key_is_an_error_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(
        dir.path(),
        "k.yaml",
        "name: x\nrfc: y\nsteps:\n  - C: STAT\n    expect: +OK\n",
    );
    let out = mailcheck(&["lint", path.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("k.yaml:5:"), "{}", out.stderr);
    assert!(out.stderr.contains("expect"), "{}", out.stderr);
}

#[test]
fn yaml_alias_line_gets_a_quoting_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(
        dir.path(),
        "a.yaml",
        "name: x\nrfc: y\nsteps:\n  - C: NOOP\n    S: * OK\n",
    );
    let out = mailcheck(&["lint", path.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("quote"), "{}", out.stderr);
}

#[test]
fn unknown_option_is_a_usage_error() {
    let out = mailcheck(&[
        "run",
        "scenarios/pop3",
        "--target",
        "pop3://127.0.0.1:1",
        "--frobnicate",
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--frobnicate"), "{}", out.stderr);
}

#[test]
fn unknown_scheme_is_a_usage_error() {
    let out = mailcheck(&["run", "scenarios/pop3", "--target", "gopher://127.0.0.1:70"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown target scheme `gopher://`"),
        "{}",
        out.stderr
    );
}

#[test]
fn one_target_per_protocol() {
    let out = mailcheck(&[
        "run",
        "scenarios/smtp",
        "--target",
        "smtp://127.0.0.1:1",
        "--target",
        "smtps://127.0.0.1:2",
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("one target per protocol"), "{}", out.stderr);
    let out = mailcheck(&["run", "scenarios/smtp", "--target", "smtp://127.0.0.1:1"]);
    // Unreachable, not a usage error; the message names host:port.
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("127.0.0.1:1"), "{}", out.all());
}

#[test]
fn missing_scenario_path_is_a_usage_error() {
    let out = mailcheck(&["run", "no/such/dir", "--target", "pop3://127.0.0.1:1"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no/such/dir"), "{}", out.stderr);
}

#[test]
fn connection_refused_names_host_port_and_os_error() {
    // Bind then drop to find a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("pop3://127.0.0.1:{port}");
    let out = mailcheck(&["run", "scenarios/pop3", "--target", &target, "--timeout", "2"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let text = out.all();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert!(text.contains(" failed, "), "{text}");
}

#[test]
fn a_server_that_never_greets_times_out_with_what_we_waited_for() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s); // accept and say nothing
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(
        dir.path(),
        "g.yaml",
        "name: greeting\nrfc: RFC 1939 section 4\nsteps:\n  - C: QUIT\n",
    );
    let target = format!("pop3://127.0.0.1:{port}");
    let out = mailcheck_env(
        &[
            "run",
            path.to_str().unwrap(),
            "--target",
            &target,
            "--timeout",
            "1",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.all().contains("timed out after 1 s waiting for the greeting"),
        "{}",
        out.all()
    );
}

#[test]
fn bad_timeout_and_var_are_usage_errors() {
    let out = mailcheck(&["run", "scenarios/pop3", "--target", "pop3://h", "--timeout", "0"]);
    assert_eq!(out.code, 2);
    let out = mailcheck(&[
        "run",
        "scenarios/pop3",
        "--target",
        "pop3://h",
        "--var",
        "novalue",
    ]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("name=value"));
}

#[test]
fn password_in_the_url_is_refused_without_echoing_it() {
    let out = mailcheck(&[
        "run",
        "scenarios/pop3",
        "--target",
        "pop3://alice:sup3rsecret@127.0.0.1",
    ]);
    assert_eq!(out.code, 2);
    assert!(!out.all().contains("sup3rsecret"), "{}", out.all());
}

#[test]
fn bundled_scenarios_lint_clean() {
    let out = mailcheck(&["lint", "scenarios"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("are valid"));
}

#[test]
fn bytes_sent_after_the_stls_reply_are_reported_before_the_handshake() {
    // A server that answers STLS with +OK and, in the same write, a line that
    // would be read as if it came through TLS (the STARTTLS injection class).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let _ = w.write_all(b"+OK ready\r\n");
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let reply: &[u8] = match line.trim_end() {
                        "STLS" => b"+OK begin TLS\r\n+OK injected\r\n",
                        "CAPA" => b"+OK\r\nSTLS\r\n.\r\n",
                        _ => b"+OK\r\n",
                    };
                    let _ = w.write_all(reply);
                    line.clear();
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(
        dir.path(),
        "s.yaml",
        "name: stls\nrfc: RFC 2595 section 4\nsteps:\n  - stls: {}\n",
    );
    let json = dir.path().join("r.json");
    let target = format!("pop3://127.0.0.1:{port}");
    let out = mailcheck_env(
        &[
            "run",
            path.to_str().unwrap(),
            "--target",
            &target,
            "--timeout",
            "1",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    let report = std::fs::read_to_string(json).unwrap();
    assert!(report.contains("pop3.stls-early-data"), "{report}");
    assert!(report.contains("+OK injected"), "{report}");
}

/// A POP3 server whose answer to QUIT is scripted; everything else gets +OK.
fn quit_server(quit_reply: &'static [u8], close_after_quit: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = stream.try_clone().unwrap();
                let _ = w.write_all(b"+OK ready\r\n");
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if line.trim_end() == "QUIT" {
                        let _ = w.write_all(quit_reply);
                        if close_after_quit {
                            return;
                        }
                    } else if line.trim_end() == "CAPA" {
                        let _ = w.write_all(b"-ERR no CAPA\r\n");
                    } else {
                        let _ = w.write_all(b"+OK\r\n");
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

#[test]
fn the_server_must_close_after_quit_and_send_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_file(
        dir.path(),
        "q.yaml",
        "name: quit\nrfc: RFC 1939 section 6\nsteps:\n  - C: QUIT\n    S: \"+OK*\"\n",
    );
    let run = |port: u16| {
        let json = dir.path().join(format!("{port}.json"));
        let target = format!("pop3://127.0.0.1:{port}");
        let out = mailcheck_env(
            &[
                "run",
                path.to_str().unwrap(),
                "--target",
                &target,
                "--timeout",
                "1",
                "--json",
                json.to_str().unwrap(),
            ],
            &[],
            Duration::from_secs(30),
        );
        (out, std::fs::read_to_string(json).unwrap_or_default())
    };
    // Correct: +OK, then close.
    let (out, report) = run(quit_server(b"+OK bye\r\n", true));
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        !report.contains("pop3.quit-close") && !report.contains("pop3.data-after-quit"),
        "{report}"
    );
    // More data after the QUIT reply: a MUST violation.
    let (out, report) = run(quit_server(b"+OK bye\r\n+OK one more thing\r\n", true));
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(report.contains("pop3.data-after-quit"), "{report}");
    // Staying open after QUIT: a SHOULD-level warning, the scenario still passes.
    let (out, report) = run(quit_server(b"+OK bye\r\n", false));
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(report.contains("pop3.quit-close"), "{report}");
}
