//! The bundled SMTP scenarios against the embedded server: the correct
//! server passes with no MUST finding on each port (and the delivery check
//! reads the mail back over its POP3), and every SMTP fault switch makes the
//! matching bundled scenario fail, or warn where the rule is a SHOULD.

use mailcheck::app::load_scenarios;
use mailcheck::finding::Severity;
use mailcheck::run::{run_all, RunConfig, RunReport, Status};
use mailcheck::secret::Secret;
use mailcheck::server::{self, Fault, Faults, ServerConfig, FIXTURE_USERS};
use mailcheck::wire::{Target, TlsSettings};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Port {
    Relay,
    Submission,
    Smtps,
}

/// Run the bundled suite (or only the scenario `only`) on one port.
async fn run_suite(faults: Faults, port: Port, only: Option<&str>) -> RunReport {
    let mut config = ServerConfig::localhost().expect("config").with_smtp().with_imap();
    config.faults = faults;
    let cert = config.identity.cert_pem.clone();
    let running = server::start(config).await.expect("server");
    let target = match port {
        Port::Relay => format!("smtp://localhost:{}", running.smtp_addr.unwrap().port()),
        Port::Submission => format!(
            "submission://localhost:{}",
            running.submission_addr.unwrap().port()
        ),
        Port::Smtps => format!("smtps://localhost:{}", running.smtps_addr.unwrap().port()),
    };
    let pop3 = format!("pop3://localhost:{}", running.pop3_addr.unwrap().port());
    let imap = format!("imap://localhost:{}", running.imap_addr.unwrap().port());
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/smtp");
    let paths = match only {
        Some(stem) => vec![folder.join(format!("{stem}.yaml"))],
        None => vec![folder],
    };
    let scenarios = load_scenarios(&paths).unwrap_or_else(|e| panic!("bundled SMTP scenarios load: {e:?}"));
    let (user, password) = FIXTURE_USERS[0];
    let run = RunConfig {
        target: Target::parse(&target).unwrap(),
        tls: TlsSettings::with_pem_roots(&cert).unwrap(),
        starttls: false,
        user: Some(user.into()),
        password: Some(Secret::new(password)),
        vars: vec![("rcpt".into(), format!("{user}@localhost"))],
        timeout: Duration::from_secs(2),
        allow_destructive: true,
        allow_send: true,
        others: vec![Target::parse(&pop3).unwrap(), Target::parse(&imap).unwrap()],
    };
    let report = run_all(&scenarios, &run, |_| {}).await;
    running.shutdown().await;
    report
}

fn summary(r: &RunReport) -> String {
    let mut s = format!("connect error: {:?}\n", r.connect_error);
    for o in &r.scenarios {
        s.push_str(&format!(
            "{:?} {} {}\n",
            o.status,
            o.file,
            o.reason.as_deref().unwrap_or("")
        ));
        for f in &o.findings {
            s.push_str(&format!("    {f}\n"));
        }
    }
    s
}

fn status(r: &RunReport, stem: &str) -> Status {
    r.scenarios
        .iter()
        .find(|o| o.file.ends_with(&format!("/{stem}.yaml")))
        .map(|o| o.status)
        .unwrap_or_else(|| panic!("no scenario {stem}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_server_passes_the_smtp_suite_on_every_port() {
    for port in [Port::Relay, Port::Submission, Port::Smtps] {
        let r = run_suite(Faults::none(), port, None).await;
        let text = summary(&r);
        assert!(r.connect_error.is_none(), "{port:?}\n{text}");
        assert_eq!(r.totals.failed, 0, "{port:?}\n{text}");
        assert_eq!(r.totals.warnings, 0, "{port:?}\n{text}");
        assert!(r.totals.passed >= 20, "{port:?}\n{text}");
        for o in &r.scenarios {
            assert!(
                o.findings.iter().all(|f| f.severity != Severity::Must),
                "{port:?}\n{text}"
            );
            if o.status == Status::Skipped {
                assert!(o.reason.as_deref().is_some_and(|r| !r.is_empty()), "{text}");
            }
        }
        // The checks that need each kind of port did run.
        assert_eq!(status(&r, "delivery-to-pop3-intact"), Status::Passed, "{text}");
        assert_eq!(status(&r, "delivery-to-imap-intact"), Status::Passed, "{text}");
        assert_eq!(status(&r, "data-lf-dot-is-not-the-end"), Status::Passed, "{text}");
        if port == Port::Relay {
            assert_eq!(
                status(&r, "starttls-injection-discarded"),
                Status::Passed,
                "{text}"
            );
            assert_eq!(status(&r, "auth-plain-succeeds"), Status::Skipped, "{text}");
        } else {
            for s in [
                "auth-plain-succeeds",
                "auth-login-succeeds",
                "auth-cram-md5-succeeds",
                "auth-twice-refused",
            ] {
                assert_eq!(status(&r, s), Status::Passed, "{s} on {port:?}\n{text}");
            }
        }
    }
}

/// The fault makes `stem` fail, with a finding `rule` (when given) among its findings.
async fn fails(fault: Fault, port: Port, stem: &str, rule: Option<&str>) {
    let r = run_suite(Faults::none().with(fault), port, Some(stem)).await;
    let text = summary(&r);
    let o = r
        .scenarios
        .iter()
        .find(|o| o.file.ends_with(&format!("/{stem}.yaml")))
        .unwrap_or_else(|| panic!("no scenario {stem}"));
    assert_eq!(
        o.status,
        Status::Failed,
        "{} should fail {stem}:\n{text}",
        fault.name()
    );
    assert!(o.reason.as_deref().is_some_and(|r| !r.is_empty()), "{text}");
    if let Some(rule) = rule {
        assert!(
            o.findings
                .iter()
                .any(|f| f.rule == rule && f.severity == Severity::Must),
            "{} should give a MUST {rule} in {stem}:\n{text}",
            fault.name()
        );
    }
}

/// The fault breaks a SHOULD: `stem` passes with a warning `rule`.
async fn warns(fault: Fault, port: Port, stem: &str, rule: &str) {
    let r = run_suite(Faults::none().with(fault), port, Some(stem)).await;
    let text = summary(&r);
    let o = r
        .scenarios
        .iter()
        .find(|o| o.file.ends_with(&format!("/{stem}.yaml")))
        .unwrap();
    assert_eq!(o.status, Status::Passed, "{text}");
    assert!(
        o.findings
            .iter()
            .any(|f| f.rule == rule && f.severity == Severity::Should)
            || o.steps
                .iter()
                .any(|s| s.status == Status::Failed && s.severity == Severity::Should),
        "{} should warn in {stem}:\n{text}",
        fault.name()
    );
}

macro_rules! fault_tests {
    ($( $name:ident: $fault:ident on $port:ident => $kind:ident $stem:literal $rule:expr; )*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                fault_tests!(@run $kind, Fault::$fault, Port::$port, $stem, $rule);
            }
        )*

        /// Every smtp-* fault has one of the tests above.
        #[test]
        fn every_smtp_fault_is_caught_by_a_scenario() {
            let tested = [$(Fault::$fault.name()),*];
            for f in Fault::ALL.iter().filter(|f| f.name().starts_with("smtp-")) {
                assert!(tested.contains(&f.name()), "no suite test for {}", f.name());
            }
        }
    };
    (@run fails, $f:expr, $p:expr, $stem:literal, $rule:expr) => { fails($f, $p, $stem, $rule).await };
    (@run warns, $f:expr, $p:expr, $stem:literal, $rule:expr) => { warns($f, $p, $stem, $rule.unwrap()).await };
}

fault_tests! {
    bad_greeting: SmtpBadGreeting on Relay => fails "greeting-220" None;
    multiline_code_mismatch: SmtpMultilineCodeMismatch on Relay => fails "ehlo-multiline-reply" Some("smtp.multiline-code");
    bad_separator: SmtpBadSeparator on Relay => fails "ehlo-multiline-reply" Some("smtp.reply-syntax");
    bare_lf: SmtpBareLf on Relay => fails "greeting-220" Some("smtp.crlf");
    long_reply: SmtpLongReply on Relay => fails "ehlo-multiline-reply" Some("smtp.reply-too-long");
    enhanced_class_mismatch: SmtpEnhancedClassMismatch on Relay => fails "unknown-command-500" Some("smtp.enhanced-code");
    out_of_order_ok: SmtpOutOfOrderOk on Relay => fails "rcpt-before-mail-503" Some("smtp.sequence");
    rset_ignored: SmtpRsetIgnored on Relay => fails "rset-clears-transaction" None;
    starttls_keeps_state: SmtpStarttlsKeepsState on Relay => warns "starttls-requires-new-ehlo" Some("smtp.sequence");
    starttls_still_advertised: SmtpStarttlsStillAdvertised on Relay => fails "starttls-not-offered-after-tls" Some("smtp.starttls-after-tls");
    starttls_injection: SmtpStarttlsInjection on Relay => fails "starttls-injection-discarded" Some("smtp.starttls-injection");
    starttls_early_data: SmtpStarttlsEarlyData on Relay => fails "starttls-not-offered-after-tls" Some("smtp.starttls-early-data");
    auth_in_cleartext: SmtpAuthInCleartext on Relay => warns "auth-not-offered-in-cleartext" Some("smtp.auth-cleartext");
    auth_bad_ok: SmtpAuthBadOk on Submission => fails "auth-wrong-password-535" None;
    size_ignored: SmtpSizeIgnored on Relay => fails "size-over-limit-refused" None;
    lf_dot_ends_data: SmtpLfDotEndsData on Relay => fails "data-lf-dot-is-not-the-end" Some("smtp.smuggling");
    no_dot_unstuff: SmtpNoDotUnstuff on Relay => fails "delivery-to-pop3-intact" None;
    strip_8bit: SmtpStrip8bit on Relay => fails "delivery-to-pop3-intact" None;
    no_dot_unstuff_over_imap: SmtpNoDotUnstuff on Relay => fails "delivery-to-imap-intact" None;
    strip_8bit_over_imap: SmtpStrip8bit on Relay => fails "delivery-to-imap-intact" None;
    quit_stays_open: SmtpQuitStaysOpen on Relay => fails "quit-221-then-close" Some("smtp.quit-close");
    pipelining_drops: SmtpPipeliningDrops on Relay => fails "pipelining-replies-in-order" None;
    no_greeting: SmtpNoGreeting on Relay => fails "greeting-220" None;
    unknown_ok: SmtpUnknownOk on Relay => fails "unknown-command-500" None;
}
