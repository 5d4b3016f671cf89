//! The bundled SMTP suite against a real Postfix (started by `ci/test` in
//! front of the real Dovecot, which it authenticates against and delivers
//! into). Without MAILCHECK_POSTFIX_ENV these tests are skipped, unless
//! MAILCHECK_REQUIRE_POSTFIX is set (as in CI), where that is a failure.
//!
//! Mail goes to `carol`, a Dovecot user no other test counts messages of.

mod common;
use base64::Engine;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// Postfix's and Dovecot's settings, merged.
fn servers() -> Option<HashMap<String, String>> {
    let mut env = env_file("MAILCHECK_POSTFIX_ENV", "MAILCHECK_REQUIRE_POSTFIX")?;
    env.extend(env_file("MAILCHECK_DOVECOT_ENV", "MAILCHECK_REQUIRE_DOVECOT")?);
    Some(env)
}

struct Run {
    out: Output,
    json: serde_json::Value,
    junit: String,
}

fn run_smtp(env: &HashMap<String, String>, targets: &[String], password: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let json = dir.path().join("report.json");
    let rcpt = format!(
        "{}@{}",
        env["MAILCHECK_DOVECOT_USER3"], env["MAILCHECK_POSTFIX_DOMAIN"]
    );
    let rcpt_var = format!("rcpt={rcpt}");
    let mut args = vec!["run", "scenarios/smtp"];
    for t in targets {
        args.extend(["--target", t.as_str()]);
    }
    args.extend([
        "--user",
        &env["MAILCHECK_DOVECOT_USER3"],
        "--var",
        &rcpt_var,
        "--cacert",
        &env["MAILCHECK_POSTFIX_CACERT"],
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--timeout",
        "10",
        "-v",
    ]);
    args.extend_from_slice(extra);
    let out = mailcheck_env(
        &args,
        &[("MAILCHECK_PASSWORD", password)],
        Duration::from_secs(300),
    );
    let json = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    Run {
        out,
        json,
        junit: std::fs::read_to_string(&junit).unwrap_or_default(),
    }
}

fn status<'a>(run: &'a Run, file_part: &str) -> &'a str {
    run.json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"].as_str().unwrap_or("").contains(file_part))
        .and_then(|s| s["status"].as_str())
        .unwrap_or("missing")
}

fn assert_clean(run: &Run, password: &str) {
    let text = run.out.all();
    assert_eq!(run.out.code, 0, "{text}");
    assert_eq!(run.json["totals"]["failed"], 0, "{text}");
    // Neither the password nor an AUTH blob that carries it may show.
    let plain_blob = base64::engine::general_purpose::STANDARD.encode(password);
    for (what, s) in [
        ("console", &text),
        ("junit", &run.junit),
        ("json", &run.json.to_string()),
    ] {
        assert!(!s.contains(password), "the password appears in the {what} output");
        assert!(
            !s.contains(&plain_blob),
            "the base64 password appears in the {what} output"
        );
    }
    quick_junit::Report::deserialize_from_str(&run.junit).expect("well-formed JUnit XML");
    for s in run.json["scenarios"].as_array().unwrap() {
        if s["status"] == "skipped" {
            assert!(s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
        }
    }
}

/// All three ports, each with the delivery checks through Dovecot's POP3 and IMAP.
/// One test, so the deliveries to carol never overlap.
#[test]
fn smtp_suite_passes_on_relay_submission_and_smtps_with_delivery() {
    let Some(env) = servers() else { return };
    let password = env["MAILCHECK_DOVECOT_PASSWORD3"].clone();
    let pop3 = format!("pop3://{}", env["MAILCHECK_DOVECOT_POP3"]);
    let imap = format!("imap://{}", env["MAILCHECK_DOVECOT_IMAP"]);
    let port = |k: &str| env[&format!("MAILCHECK_POSTFIX_{k}_PORT")].clone();
    for (target, auth_ran) in [
        (format!("smtp://{}", env["MAILCHECK_POSTFIX_SMTP"]), false),
        (format!("submission://localhost:{}", port("SUBMISSION")), true),
        (format!("smtps://localhost:{}", port("SMTPS")), true),
    ] {
        let run = run_smtp(
            &env,
            &[target.clone(), pop3.clone(), imap.clone()],
            &password,
            &["--allow-send"],
        );
        assert_clean(&run, &password);
        let passed = run.json["totals"]["passed"].as_u64().unwrap_or(0);
        assert!(passed >= 20, "{target}: only {passed} passed\n{}", run.out.stdout);
        for delivery in ["delivery-to-pop3-intact", "delivery-to-imap-intact"] {
            assert_eq!(status(&run, delivery), "passed", "{target}\n{}", run.out.stdout);
        }
        assert_eq!(status(&run, "data-lf-dot-is-not-the-end"), "passed", "{target}");
        assert_eq!(status(&run, "pipelining-replies-in-order"), "passed", "{target}");
        let want = if auth_ran { "passed" } else { "skipped" };
        assert_eq!(
            status(&run, "auth-plain-succeeds"),
            want,
            "{target}\n{}",
            run.out.stdout
        );
        assert_eq!(status(&run, "auth-wrong-password-535"), want, "{target}");
        if !auth_ran {
            // The relay port starts in plaintext: the STARTTLS checks ran.
            assert_eq!(status(&run, "starttls-injection-discarded"), "passed");
            assert_eq!(status(&run, "starttls-not-offered-after-tls"), "passed");
        }
        assert!(
            run.out.stdout.contains("AUTH PLAIN ********") || !auth_ran,
            "{}",
            run.out.stdout
        );
    }
}

#[test]
fn sending_scenarios_are_skipped_without_allow_send() {
    let Some(env) = servers() else { return };
    let password = env["MAILCHECK_DOVECOT_PASSWORD3"].clone();
    let target = format!("smtp://{}", env["MAILCHECK_POSTFIX_SMTP"]);
    let run = run_smtp(&env, &[target], &password, &[]);
    assert_clean(&run, &password);
    let scenario = run.json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["file"].as_str().unwrap_or("").contains("data-bare-lf-line"))
        .unwrap();
    assert_eq!(scenario["status"], "skipped");
    assert!(
        scenario["reason"].as_str().unwrap().contains("--allow-send"),
        "{scenario}"
    );
    // The delivery checks also say which target they need.
    let run = run_smtp(
        &env,
        &[format!("smtp://{}", env["MAILCHECK_POSTFIX_SMTP"])],
        &password,
        &["--allow-send", "--only", "delivery"],
    );
    let reasons: Vec<&str> = run.json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("target for pop3")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("target for imap")),
        "{reasons:?}"
    );
}

#[test]
fn a_wrong_password_gets_535_and_is_never_shown() {
    let Some(env) = servers() else { return };
    let wrong = "Not-Carols-Password-0815";
    let target = format!(
        "submission://localhost:{}",
        env["MAILCHECK_POSTFIX_SUBMISSION_PORT"]
    );
    let run = run_smtp(&env, &[target], wrong, &["--only", "auth-plain-succeeds"]);
    assert_eq!(run.out.code, 1, "{}", run.out.all());
    let text = run.out.all();
    assert!(text.contains("535"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    let blob = base64::engine::general_purpose::STANDARD.encode(format!("\0carol\0{wrong}"));
    assert!(!text.contains(&blob), "the AUTH PLAIN blob is shown: {text}");
}
