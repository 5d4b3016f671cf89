//! The bundled suite against a real Dovecot (started by `ci/test`, which
//! points MAILCHECK_DOVECOT_ENV at its settings). Without that variable
//! these tests are skipped, unless MAILCHECK_REQUIRE_DOVECOT is set (as in
//! CI), where a missing server is a failure.

mod common;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

fn dovecot() -> Option<HashMap<String, String>> {
    env_file("MAILCHECK_DOVECOT_ENV", "MAILCHECK_REQUIRE_DOVECOT")
}

struct Run {
    out: Output,
    junit: String,
    json: String,
}

fn run_suite(env: &HashMap<String, String>, target: &str, user_key: &str, extra: &[&str]) -> Run {
    run_folder(env, "scenarios/pop3", target, user_key, extra)
}

fn run_folder(
    env: &HashMap<String, String>,
    folder: &str,
    target: &str,
    user_key: &str,
    extra: &[&str],
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let json = dir.path().join("report.json");
    let (user, pass) = match user_key {
        "USER2" => (
            &env["MAILCHECK_DOVECOT_USER2"],
            &env["MAILCHECK_DOVECOT_PASSWORD2"],
        ),
        _ => (&env["MAILCHECK_DOVECOT_USER"], &env["MAILCHECK_DOVECOT_PASSWORD"]),
    };
    let mut args = vec![
        "run",
        folder,
        "--target",
        target,
        "--user",
        user,
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--timeout",
        "10",
        "-v",
    ];
    args.extend_from_slice(extra);
    let out = mailcheck_env(&args, &[("MAILCHECK_PASSWORD", pass)], Duration::from_secs(300));
    Run {
        out,
        junit: std::fs::read_to_string(&junit).unwrap_or_default(),
        json: std::fs::read_to_string(&json).unwrap_or_default(),
    }
}

fn assert_clean(run: &Run, password: &str) {
    let text = run.out.all();
    assert_eq!(run.out.code, 0, "{text}");
    assert!(text.contains(" passed, 0 failed, "), "{text}");
    for (what, s) in [("console", &text), ("junit", &run.junit), ("json", &run.json)] {
        assert!(!s.contains(password), "the password appears in the {what} output");
    }
    quick_junit::Report::deserialize_from_str(&run.junit).expect("well-formed JUnit XML");
    let json: serde_json::Value = serde_json::from_str(&run.json).expect("valid JSON");
    assert_eq!(json["totals"]["failed"], 0);
    // Skips must say why.
    for s in json["scenarios"].as_array().unwrap() {
        if s["status"] == "skipped" {
            assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
        }
    }
}

fn passed(run: &Run) -> u64 {
    let json: serde_json::Value = serde_json::from_str(&run.json).expect("valid JSON");
    json["totals"]["passed"].as_u64().unwrap_or(0)
}

#[test]
fn suite_passes_on_plain_pop3() {
    let Some(env) = dovecot() else { return };
    let target = format!("pop3://{}", env["MAILCHECK_DOVECOT_POP3"]);
    let run = run_suite(
        &env,
        &target,
        "USER",
        &["--cacert", &env["MAILCHECK_DOVECOT_CACERT"]],
    );
    assert_clean(&run, &env["MAILCHECK_DOVECOT_PASSWORD"]);
    assert!(passed(&run) >= 20, "{}", run.out.stdout);
}

#[test]
fn suite_passes_after_stls() {
    let Some(env) = dovecot() else { return };
    let target = format!("pop3://localhost:{}", env["MAILCHECK_DOVECOT_POP3_PORT"]);
    let run = run_suite(
        &env,
        &target,
        "USER",
        &["--starttls", "--cacert", &env["MAILCHECK_DOVECOT_CACERT"]],
    );
    assert_clean(&run, &env["MAILCHECK_DOVECOT_PASSWORD"]);
    assert!(run.out.stdout.contains("(TLS)"), "{}", run.out.stdout);
}

#[test]
fn suite_passes_on_pop3s() {
    let Some(env) = dovecot() else { return };
    let target = format!("pop3s://localhost:{}", env["MAILCHECK_DOVECOT_POP3S_PORT"]);
    let run = run_suite(
        &env,
        &target,
        "USER",
        &["--cacert", &env["MAILCHECK_DOVECOT_CACERT"]],
    );
    assert_clean(&run, &env["MAILCHECK_DOVECOT_PASSWORD"]);
}

#[test]
fn pop3s_without_the_ca_fails_and_names_the_certificate() {
    let Some(env) = dovecot() else { return };
    let target = format!("pop3s://localhost:{}", env["MAILCHECK_DOVECOT_POP3S_PORT"]);
    let run = run_suite(&env, &target, "USER", &[]);
    assert_eq!(run.out.code, 1);
    let text = run.out.all();
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(text.contains("CN=localhost"), "{text}");
    // --insecure connects anyway and still says what was wrong.
    let run = run_suite(&env, &target, "USER", &["--insecure"]);
    assert_eq!(run.out.code, 0, "{}", run.out.all());
    assert!(run.out.stdout.contains("--insecure"), "{}", run.out.stdout);
}

#[test]
fn destructive_scenarios_pass_on_bob() {
    let Some(env) = dovecot() else { return };
    let target = format!("pop3://{}", env["MAILCHECK_DOVECOT_POP3"]);
    let cacert = &env["MAILCHECK_DOVECOT_CACERT"];
    let run = run_suite(
        &env,
        &target,
        "USER2",
        &["--allow-destructive", "--cacert", cacert],
    );
    assert_clean(&run, &env["MAILCHECK_DOVECOT_PASSWORD2"]);
    let json: serde_json::Value = serde_json::from_str(&run.json).unwrap();
    let destructive_ran = json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["file"].as_str().unwrap_or("").contains("quit-commits") && s["status"] == "passed");
    assert!(destructive_ran, "{}", run.out.stdout);
}

#[test]
fn wrong_password_fails_without_showing_it() {
    let Some(env) = dovecot() else { return };
    let target = format!("pop3://{}", env["MAILCHECK_DOVECOT_POP3"]);
    let wrong = "not-the-Right-pw-4711";
    let out = mailcheck_env(
        &[
            "run",
            "scenarios/pop3",
            "--target",
            &target,
            "--user",
            "alice",
            "--only",
            "login",
            "-v",
        ],
        &[("MAILCHECK_PASSWORD", wrong)],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("-ERR"), "{}", out.all());
    assert!(!out.all().contains(wrong), "{}", out.all());
}

#[test]
fn probe_logs_in_read_only_on_every_dovecot_endpoint() {
    let Some(env) = dovecot() else { return };
    let port = |k: &str| env[&format!("MAILCHECK_DOVECOT_{k}_PORT")].clone();
    let urls = [
        format!("imap://localhost:{}", port("IMAP")),
        format!("imaps://localhost:{}", port("IMAPS")),
        format!("pop3://localhost:{}", port("POP3")),
        format!("pop3s://localhost:{}", port("POP3S")),
    ];
    let password = &env["MAILCHECK_DOVECOT_PASSWORD"];
    let mut args = vec!["probe"];
    args.extend(urls.iter().map(String::as_str));
    args.extend([
        "--user",
        "alice",
        "--cacert",
        &env["MAILCHECK_DOVECOT_CACERT"],
        "--json",
    ]);
    let out = mailcheck_env(
        &args,
        &[("MAILCHECK_PASSWORD", password)],
        Duration::from_secs(120),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains(password.as_str()));
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let endpoints = json["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 4);
    for ep in endpoints {
        assert_eq!(ep["usable"], true, "{ep}");
        let checks = ep["checks"].as_array().unwrap();
        let mark = |layer: &str| {
            checks
                .iter()
                .find(|c| c["layer"] == layer)
                .map(|c| c["mark"].clone())
        };
        assert_eq!(mark("login"), Some("ok".into()), "{ep}");
        assert_eq!(mark("read-only"), Some("ok".into()), "{ep}");
        assert_eq!(mark("tls"), Some("ok".into()), "{ep}");
    }
    // A wrong password is diagnosed with the provider-independent advice.
    let out = mailcheck_env(
        &[
            "probe",
            &urls[1],
            "--user",
            "alice",
            "--cacert",
            &env["MAILCHECK_DOVECOT_CACERT"],
        ],
        &[("MAILCHECK_PASSWORD", "not-alices-password")],
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("imap-login-failure"), "{}", out.stdout);
    assert!(!out.all().contains("not-alices-password"));
}

#[test]
fn imap_suite_passes_on_plain_starttls_and_imaps() {
    let Some(env) = dovecot() else { return };
    let cacert = env["MAILCHECK_DOVECOT_CACERT"].clone();
    let plain = format!("imap://localhost:{}", env["MAILCHECK_DOVECOT_IMAP_PORT"]);
    let tls = format!("imaps://localhost:{}", env["MAILCHECK_DOVECOT_IMAPS_PORT"]);
    for (target, extra) in [
        // The destructive scenarios work in mailboxes they create themselves.
        (
            plain.clone(),
            vec!["--cacert", cacert.as_str(), "--allow-destructive"],
        ),
        (plain.clone(), vec!["--starttls", "--cacert", cacert.as_str()]),
        (tls, vec!["--cacert", cacert.as_str()]),
    ] {
        let run = run_folder(&env, "scenarios/imap", &target, "USER", &extra);
        assert_clean(&run, &env["MAILCHECK_DOVECOT_PASSWORD"]);
        assert!(passed(&run) >= 25, "{}", run.out.stdout);
        assert!(
            run.out.stdout.contains("LOGIN \"alice\" ********"),
            "{}",
            run.out.stdout
        );
    }
}

#[test]
fn imap_logindisabled_listener_refuses_plaintext_login_and_works_after_starttls() {
    let Some(env) = dovecot() else { return };
    let cacert = env["MAILCHECK_DOVECOT_CACERT"].clone();
    // Dovecot with disable_plaintext_auth on this listener advertises LOGINDISABLED.
    let target = format!("imap://{}", env["MAILCHECK_DOVECOT_IMAP_LOGINDISABLED"]);
    let run = run_folder(
        &env,
        "scenarios/imap",
        &target,
        "USER",
        &[
            "--cacert",
            &cacert,
            "--only",
            "logindisabled-refuses-login",
            "--only",
            "starttls-then-capability",
        ],
    );
    assert_clean(&run, &env["MAILCHECK_DOVECOT_PASSWORD"]);
    assert_eq!(passed(&run), 2, "{}", run.out.stdout);
    // Over STARTTLS the same listener takes the whole suite; the LOGINDISABLED
    // scenario is skipped there because it needs a plaintext connection.
    let run = run_folder(
        &env,
        "scenarios/imap",
        &target,
        "USER",
        &["--starttls", "--cacert", &cacert],
    );
    assert_clean(&run, &env["MAILCHECK_DOVECOT_PASSWORD"]);
    assert!(passed(&run) >= 25, "{}", run.out.stdout);
    assert!(
        run.out.stdout.contains("needs a plaintext start"),
        "{}",
        run.out.stdout
    );
}
