//! Every fault switch of the embedded server is caught by the bundled suite
//! (the check fails on a misbehaving server), and the correct server passes
//! every scenario with no finding at all.

use mailcheck::app::load_scenarios;
use mailcheck::finding::Severity;
use mailcheck::run::{run_all, RunConfig, RunReport, Status};
use mailcheck::secret::Secret;
use mailcheck::server::{self, Fault, Faults, ServerConfig, FIXTURE_USERS};
use mailcheck::wire::{Target, TlsSettings};
use std::path::PathBuf;
use std::time::Duration;

async fn run_suite(faults: Faults, timeout: Duration) -> RunReport {
    let mut config = ServerConfig::localhost().expect("server config");
    config.faults = faults;
    let cert = config.identity.cert_pem.clone();
    let running = server::start(config).await.expect("start the embedded server");
    let addr = running.pop3_addr.expect("plain listener");
    let scenarios = load_scenarios(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/pop3")])
        .unwrap_or_else(|_| panic!("bundled scenarios load"));
    let (user, password) = FIXTURE_USERS[0];
    let run = RunConfig {
        target: Target::parse(&format!("pop3://{addr}")).unwrap(),
        tls: TlsSettings::with_pem_roots(&cert).unwrap(),
        starttls: false,
        user: Some(user.into()),
        password: Some(Secret::new(password)),
        vars: Vec::new(),
        timeout,
        allow_destructive: true,
        allow_send: false,
        others: Vec::new(),
    };
    let report = run_all(&scenarios, &run, |_| {}).await;
    running.shutdown().await;
    report
}

fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    if let Some(e) = &r.connect_error {
        s.push_str(&format!("connect error: {e}\n"));
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_server_passes_everything_without_findings() {
    let report = run_suite(Faults::none(), Duration::from_secs(5)).await;
    let text = summary(&report);
    assert!(report.connect_error.is_none(), "{text}");
    assert_eq!(report.totals.failed, 0, "{text}");
    assert_eq!(report.totals.warnings, 0, "{text}");
    assert!(report.totals.passed >= 20, "{text}");
    for o in &report.scenarios {
        assert!(o.findings.iter().all(|f| f.severity == Severity::Note), "{text}");
        if o.status == Status::Skipped {
            assert!(o.reason.is_some(), "{text}");
        }
    }
}

/// What must show up when a fault is on.
enum Expect {
    /// A MUST finding with this rule id, in a failed scenario.
    Rule(&'static str),
    /// This scenario file (stem) fails.
    Scenario(&'static str),
    /// Some failed scenario's reason (or the connect error) contains this text.
    Reason(&'static str),
}

async fn check(fault: Fault, expect: Expect) {
    let timeout = Duration::from_secs(2);
    let report = run_suite(Faults::none().with(fault), timeout).await;
    let text = summary(&report);
    assert!(
        report.totals.failed > 0 || report.connect_error.is_some(),
        "fault {fault} went unnoticed:\n{text}"
    );
    let failed = report.scenarios.iter().filter(|o| o.status == Status::Failed);
    let found = match expect {
        Expect::Rule(rule) => failed.clone().any(|o| {
            o.findings
                .iter()
                .any(|f| f.rule == rule && f.severity == Severity::Must)
        }),
        Expect::Scenario(stem) => failed.clone().any(|o| o.file.ends_with(&format!("/{stem}.yaml"))),
        Expect::Reason(t) => {
            failed
                .clone()
                .any(|o| o.reason.as_deref().unwrap_or("").contains(t))
                || report.connect_error.as_deref().unwrap_or("").contains(t)
        }
    };
    assert!(found, "fault {fault}: expected failure not found:\n{text}");
}

macro_rules! fault_tests {
    ($($name:ident: $fault:expr => $expect:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                check($fault, $expect).await;
            }
        )*
        /// IMAP and SMTP faults have no scenarios yet: tests/imap_server.rs
        /// and tests/smtp_server.rs show each one changing the bytes on the
        /// wire instead.
        #[test]
        fn every_fault_has_a_test() {
            let tested = [$($fault),*];
            let pop3 = |f: &&Fault| !f.name().starts_with("imap-") && !f.name().starts_with("smtp-");
            for f in Fault::ALL.iter().filter(pop3) {
                assert!(tested.contains(f), "fault {f} has no test");
            }
        }
    };
}

fault_tests! {
    no_byte_stuffing: Fault::NoByteStuffing => Expect::Rule("pop3.byte-stuffing");
    missing_terminator: Fault::MissingTerminator => Expect::Reason("no terminating '.'");
    commands_before_login: Fault::CommandsBeforeLogin => Expect::Rule("pop3.state");
    delete_without_quit: Fault::DeleteWithoutQuit => Expect::Scenario("disconnect-without-quit-keeps-mail");
    wrong_list_size: Fault::WrongListSize => Expect::Rule("pop3.retr-size");
    bare_lf: Fault::BareLf => Expect::Rule("pop3.crlf");
    long_reply: Fault::LongReply => Expect::Rule("pop3.reply-length");
    lowercase_status: Fault::LowercaseStatus => Expect::Rule("pop3.status-case");
    unstable_uidl: Fault::UnstableUidl => Expect::Rule("pop3.uidl-stable");
    deleted_visible: Fault::DeletedVisible => Expect::Rule("pop3.deleted-message");
    rset_ignored: Fault::RsetIgnored => Expect::Scenario("rset-unmarks-deleted-messages");
    stall_retr: Fault::StallRetr => Expect::Reason("waiting for the reply to `RETR");
    no_greeting: Fault::NoGreeting => Expect::Reason("waiting for the greeting");
    unknown_ok: Fault::UnknownOk => Expect::Scenario("unknown-command-rejected");
    top_ignores_lines: Fault::TopIgnoresLines => Expect::Rule("pop3.top-lines");
    bad_uidl_format: Fault::BadUidlFormat => Expect::Rule("pop3.uidl-format");
    list_n_mismatch: Fault::ListNMismatch => Expect::Rule("pop3.list-number");
    quit_no_commit: Fault::QuitNoCommit => Expect::Scenario("quit-commits-deletions");
    bad_pass_ok: Fault::BadPassOk => Expect::Scenario("pass-wrong-password-rejected");
    no_multiline_capa: Fault::NoMultilineCapa => Expect::Scenario("capa-listing-well-formed");
    stls_ignored_tls: Fault::StlsIgnoredTls => Expect::Reason("TLS handshake");
    close_on_accept: Fault::CloseOnAccept => Expect::Reason("closed the connection");
    plaintext_login_refused: Fault::PlaintextLoginRefused => Expect::Scenario("user-pass-login");
    login_disabled: Fault::LoginDisabled => Expect::Scenario("user-pass-login");
}
