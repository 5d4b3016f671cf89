//! The bundled IMAP scenarios against the embedded IMAP server: the correct
//! server passes with no MUST finding (plain, STARTTLS, IMAPS; OK, PREAUTH
//! and LOGINDISABLED set-ups), every IMAP fault switch makes the matching
//! bundled scenario fail, and the IMAP parts of the scenario language
//! (ordered, only/may, absent, greeting, idle, literals) pass and fail where
//! they should.

use mailcheck::app::load_scenarios;
use mailcheck::finding::Severity;
use mailcheck::run::{run_all, RunConfig, RunReport, ScenarioOutcome, Status};
use mailcheck::scenario::{load_str, Scenario};
use mailcheck::secret::Secret;
use mailcheck::server::{self, Fault, Faults, ImapGreeting, ServerConfig, FIXTURE_USERS};
use mailcheck::wire::{Target, TlsSettings};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the embedded server runs and how the suite connects to it.
#[derive(Clone, Copy, Default)]
struct Setup {
    faults: Faults,
    /// imaps:// instead of imap://.
    tls_target: bool,
    /// --starttls on an imap:// target.
    starttls: bool,
    /// The server advertises LOGINDISABLED before TLS.
    login_disabled: bool,
    greeting: ImapGreeting,
}

impl Setup {
    fn with(fault: Fault) -> Setup {
        Setup {
            faults: fault.into(),
            ..Setup::default()
        }
    }
}

async fn run_with(setup: Setup, scenarios: &[Scenario]) -> RunReport {
    let mut config = ServerConfig::localhost().expect("config").with_imap();
    config.faults = setup.faults;
    config.imap_login_disabled_on_plaintext = setup.login_disabled;
    config.imap_greeting = setup.greeting;
    let cert = config.identity.cert_pem.clone();
    let running = server::start(config).await.expect("server");
    let target = if setup.tls_target {
        format!("imaps://localhost:{}", running.imaps_addr.unwrap().port())
    } else {
        format!("imap://localhost:{}", running.imap_addr.unwrap().port())
    };
    let (user, password) = FIXTURE_USERS[0];
    let run = RunConfig {
        target: Target::parse(&target).unwrap(),
        tls: TlsSettings::with_pem_roots(&cert).unwrap(),
        starttls: setup.starttls,
        user: Some(user.into()),
        password: Some(Secret::new(password)),
        vars: Vec::new(),
        timeout: Duration::from_secs(2),
        allow_destructive: true,
        allow_send: false,
        others: Vec::new(),
    };
    let report = run_all(scenarios, &run, |_| {}).await;
    running.shutdown().await;
    report
}

/// The bundled scenarios; with `only`, just the files with those stems.
fn bundled(only: &[&str]) -> Vec<Scenario> {
    let all = load_scenarios(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/imap")])
        .unwrap_or_else(|_| panic!("bundled IMAP scenarios load"));
    if only.is_empty() {
        return all;
    }
    let picked: Vec<Scenario> = all
        .into_iter()
        .filter(|s| only.iter().any(|stem| s.path.ends_with(format!("{stem}.yaml"))))
        .collect();
    assert_eq!(
        picked.len(),
        only.len(),
        "no such bundled scenario among {only:?}"
    );
    picked
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
        if o.status == Status::Failed {
            for t in o.transcript.iter().take(60) {
                s.push_str(&format!("      {:?} {}\n", t.direction, t.text));
            }
        }
    }
    s
}

fn outcome<'r>(r: &'r RunReport, stem: &str) -> &'r ScenarioOutcome {
    r.scenarios
        .iter()
        .find(|o| o.file.ends_with(&format!("/{stem}.yaml")))
        .unwrap_or_else(|| panic!("no outcome for {stem}:\n{}", summary(r)))
}

/// Every scenario passed or was skipped with a reason; no MUST finding anywhere.
fn assert_clean(r: &RunReport) {
    let text = summary(r);
    assert!(r.connect_error.is_none(), "{text}");
    assert_eq!(r.totals.failed, 0, "{text}");
    for o in &r.scenarios {
        assert!(o.findings.iter().all(|f| f.severity != Severity::Must), "{text}");
        if o.status == Status::Skipped {
            assert!(o.reason.as_deref().is_some_and(|r| !r.is_empty()), "{text}");
        }
    }
}

fn assert_skipped(r: &RunReport, stem: &str, because: &str) {
    let o = outcome(r, stem);
    assert_eq!(o.status, Status::Skipped, "{}", summary(r));
    assert!(
        o.reason.as_deref().unwrap_or("").contains(because),
        "{}",
        summary(r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_server_passes_the_imap_suite() {
    let plain = run_with(Setup::default(), &bundled(&[])).await;
    assert_clean(&plain);
    assert!(plain.totals.passed >= 35, "{}", summary(&plain));
    // The skips the plain embedded server is expected to have, and why.
    assert_skipped(&plain, "preauth-starts-authenticated", "PREAUTH");
    assert_skipped(&plain, "logindisabled-refuses-login", "LOGINDISABLED");
    assert_eq!(plain.totals.skipped, 2, "{}", summary(&plain));

    let tls = Setup {
        tls_target: true,
        ..Setup::default()
    };
    let r = run_with(tls, &bundled(&[])).await;
    assert_clean(&r);
    assert_skipped(&r, "starttls-then-capability", "plaintext");

    let starttls = Setup {
        starttls: true,
        ..Setup::default()
    };
    assert_clean(&run_with(starttls, &bundled(&[])).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logindisabled_server_passes_over_starttls_and_refuses_plaintext_login() {
    let plain = Setup {
        login_disabled: true,
        ..Setup::default()
    };
    let r = run_with(
        plain,
        &bundled(&["logindisabled-refuses-login", "starttls-then-capability"]),
    )
    .await;
    assert_clean(&r);
    assert_eq!(r.totals.passed, 2, "{}", summary(&r));
    // Without TLS, `login` steps refuse to send the password, and say why.
    let r = run_with(plain, &bundled(&["login-success"])).await;
    let o = outcome(&r, "login-success");
    assert_eq!(o.status, Status::Failed, "{}", summary(&r));
    assert!(
        o.reason.as_deref().unwrap_or("").contains("--starttls"),
        "{}",
        summary(&r)
    );
    // With STARTTLS the whole suite runs.
    let starttls = Setup {
        starttls: true,
        ..plain
    };
    let r = run_with(starttls, &bundled(&[])).await;
    assert_clean(&r);
    assert_skipped(&r, "logindisabled-refuses-login", "plaintext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preauth_server_starts_authenticated() {
    for tls_target in [true, false] {
        let setup = Setup {
            greeting: ImapGreeting::Preauth,
            tls_target,
            ..Setup::default()
        };
        let r = run_with(
            setup,
            &bundled(&[
                "greeting-is-ok-or-preauth",
                "preauth-starts-authenticated",
                "select-required-data",
                "fetch-size-matches-body",
            ]),
        )
        .await;
        assert_clean(&r);
        assert_eq!(r.totals.passed, 4, "{}", summary(&r));
        // PREAUTH without TLS is a SHOULD-level warning, not a failure.
        let cleartext = r
            .scenarios
            .iter()
            .any(|o| o.findings.iter().any(|f| f.rule == "imap.preauth-cleartext"));
        assert_eq!(cleartext, !tls_target, "{}", summary(&r));
    }
    // A server that greets PREAUTH but does not act on it fails.
    let r = run_with(
        Setup {
            greeting: ImapGreeting::Preauth,
            tls_target: true,
            faults: Fault::ImapPreauthUnauthenticated.into(),
            ..Setup::default()
        },
        &bundled(&["preauth-starts-authenticated"]),
    )
    .await;
    assert_eq!(r.totals.failed, 1, "{}", summary(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_greeting_is_reported_as_a_rejected_connection() {
    let setup = Setup {
        greeting: ImapGreeting::Bye,
        ..Setup::default()
    };
    let r = run_with(
        setup,
        &bundled(&["greeting-is-ok-or-preauth", "capability-lists-imap4"]),
    )
    .await;
    let text = summary(&r);
    assert!(
        r.connect_error
            .as_deref()
            .unwrap_or("")
            .contains("rejected the connection"),
        "{text}"
    );
    assert_eq!(r.totals.failed, 2, "{text}");
    for o in &r.scenarios {
        let reason = o.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("rejected the connection") && reason.contains("* BYE"),
            "{text}"
        );
    }
}

/// Run the one bundled scenario `stem` under `setup`: it must fail, and when
/// `rule` is given that always-on rule must be among its findings.
async fn fails(setup: Setup, stem: &str, rule: Option<&str>) {
    let r = run_with(setup, &bundled(&[stem])).await;
    let text = summary(&r);
    let o = outcome(&r, stem);
    assert_eq!(
        o.status,
        Status::Failed,
        "faults {}: {stem} did not fail:\n{text}",
        setup.faults
    );
    if let Some(rule) = rule {
        assert!(
            o.findings.iter().any(|f| f.rule == rule),
            "faults {}: {stem} failed without {rule}:\n{text}",
            setup.faults
        );
    }
}

macro_rules! imap_fault_tests {
    ($($name:ident: $setup:expr => $stem:expr, $rule:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                fails($setup, $stem, $rule).await;
            }
        )*
    };
}

imap_fault_tests! {
    wrong_tag: Setup::with(Fault::ImapWrongTag) => "capability-lists-imap4", Some("imap.unknown-tag");
    no_completion: Setup::with(Fault::ImapNoCompletion) => "fetch-size-matches-body", None;
    literal_miscount: Setup::with(Fault::ImapLiteralMiscount) => "fetch-size-matches-body", None;
    select_no_uidvalidity: Setup::with(Fault::ImapSelectNoUidvalidity) => "select-required-data", None;
    examine_writable: Setup::with(Fault::ImapExamineWritable) => "examine-is-read-only", None;
    peek_sets_seen: Setup::with(Fault::ImapPeekSetsSeen) => "fetch-peek-does-not-set-seen", Some("imap.peek-seen");
    uids_descending: Setup::with(Fault::ImapUidsDescending) => "fetch-size-matches-body", Some("imap.uid-order");
    ok_before_login: Setup::with(Fault::ImapOkBeforeLogin) => "commands-refused-before-login", None;
    bad_as_no: Setup::with(Fault::ImapBadAsNo) => "unknown-command-is-bad", None;
    no_bye_on_logout: Setup::with(Fault::ImapNoByeOnLogout) => "logout-says-bye", Some("imap.logout-bye");
    expunge_silent: Setup::with(Fault::ImapExpungeSilent) => "append-then-expunge-is-announced", None;
    login_despite_logindisabled: Setup::with(Fault::ImapLoginDespiteLogindisabled)
        => "logindisabled-refuses-login", Some("imap.logindisabled");
    starttls_stale_capabilities: Setup::with(Fault::ImapStarttlsStaleCapabilities)
        => "starttls-then-capability", None;
    starttls_stale_logindisabled: Setup { login_disabled: true, ..Setup::with(Fault::ImapStarttlsStaleCapabilities) }
        => "starttls-then-capability", None;
    no_version_after_login: Setup::with(Fault::ImapNoVersionAfterLogin)
        => "capability-after-login", Some("imap.capability-version");
    lsub_unsubscribed: Setup::with(Fault::ImapLsubUnsubscribed) => "lsub-follows-subscriptions", None;
    uid_search_seqs: Setup::with(Fault::ImapUidSearchSeqs) => "uid-search-returns-uids", Some("imap.uid-search");
    uid_store_no_uid: Setup::with(Fault::ImapUidStoreNoUid) => "uid-store-reports-uid", Some("imap.uid-missing");
    copy_lost: Setup::with(Fault::ImapCopyLost) => "copy-keeps-the-source", None;
    move_silent: Setup::with(Fault::ImapMoveSilent) => "move-removes-from-source", None;
    idle_no_continuation: Setup::with(Fault::ImapIdleNoContinuation)
        => "idle-ends-with-done", Some("imap.no-continuation");
    idle_no_updates: Setup::with(Fault::ImapIdleNoUpdates) => "idle-reports-new-message", None;
    internaldate_wrong_form: Setup::with(Fault::ImapInternaldateWrongForm)
        => "fetch-internaldate", Some("imap.internaldate");
    envelope_short: Setup::with(Fault::ImapEnvelopeShort) => "fetch-envelope", Some("imap.envelope");
    bodystructure_no_lines: Setup::with(Fault::ImapBodystructureNoLines)
        => "fetch-bodystructure", Some("imap.bodystructure");
    wrong_size: Setup::with(Fault::ImapWrongSize) => "rfc822-size-matches-body-literal", Some("imap.rfc822-size");
    literal_no_continuation: Setup::with(Fault::ImapLiteralNoContinuation)
        => "literal-in-command", Some("imap.no-continuation");
    literal_plus_refused: Setup::with(Fault::ImapLiteralPlusRefused) => "literal-plus-in-command", None;
    double_completion: Setup::with(Fault::ImapDoubleCompletion)
        => "noop-in-every-state", Some("imap.duplicate-completion");
    failure_as_bad: Setup::with(Fault::ImapFailureAsBad) => "login-wrong-password-is-no", Some("imap.bad-for-valid");
    failure_as_bad_select: Setup::with(Fault::ImapFailureAsBad) => "failed-select-leaves-selected-state", None;
}

// ----- the IMAP scenario language ------------------------------------------

/// Load scenario texts as if they were files in an `imap/` folder.
fn scenarios(texts: &[(&str, &str)]) -> Vec<Scenario> {
    texts
        .iter()
        .map(|(name, text)| {
            load_str(Path::new(&format!("lang/imap/{name}.yaml")), text)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect()
}

fn status_of(r: &RunReport, name: &str) -> (Status, String) {
    let o = outcome(r, name);
    (o.status, o.reason.clone().unwrap_or_default())
}

const HEAD: &str = "rfc: test\nrequires: [credentials]\nsteps:\n  - login: {}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_expectations_ordered_only_may_absent() {
    let texts = [
        // The embedded server sends FLAGS before EXISTS.
        (
            "ordered-ok",
            format!("name: a\n{HEAD}  - C: EXAMINE INBOX\n    S: [\"* FLAGS *\", \"* * EXISTS\", \"OK*\"]\n    ordered: true\n"),
        ),
        (
            "ordered-wrong",
            format!("name: b\n{HEAD}  - C: EXAMINE INBOX\n    S: [\"* * EXISTS\", \"* FLAGS *\", \"OK*\"]\n    ordered: true\n"),
        ),
        (
            "any-order",
            format!("name: c\n{HEAD}  - C: EXAMINE INBOX\n    S: [\"* * EXISTS\", \"* FLAGS *\", \"OK*\"]\n"),
        ),
        (
            "only-nothing",
            format!("name: d\n{HEAD}  - C: NOOP\n    S: \"OK*\"\n    only: true\n"),
        ),
        (
            "only-missing",
            format!("name: e\n{HEAD}  - C: EXAMINE INBOX\n    S: [\"* * EXISTS\", \"OK*\"]\n    only: true\n"),
        ),
        (
            "only-with-may",
            format!(
                "name: f\n{HEAD}  - C: EXAMINE INBOX\n    S: [\"* {{n}} EXISTS\", \"OK*\"]\n    only: true\n    may: [\"* FLAGS *\", \"* OK *\", \"* * RECENT\", \"* OK [UIDNEXT {{next}}]*\", \"* NO SUCH THING\"]\n  - C: STATUS INBOX (UIDNEXT MESSAGES)\n    S: [\"* STATUS INBOX (UIDNEXT ${{next}} MESSAGES ${{n}})\", \"OK*\"]\n"
            ),
        ),
        (
            "absent-ok",
            format!("name: g\n{HEAD}  - C: EXAMINE INBOX\n    S: \"OK*\"\n    absent: [\"* * EXPUNGE\"]\n"),
        ),
        (
            "absent-hit",
            format!("name: h\n{HEAD}  - C: EXAMINE INBOX\n    S: \"OK*\"\n    absent: [\"* FLAGS *\"]\n"),
        ),
        // A literal's octet count is matched in place of its data, whatever the item order.
        (
            "literal-count",
            format!(
                "name: i\n{HEAD}  - C: EXAMINE INBOX\n    S: \"OK*\"\n  - C: FETCH 1 (BODY.PEEK[] RFC822.SIZE)\n    S: [\"* 1 FETCH (BODY[] \\\\{{{{octets}}\\\\}} *\", \"* 1 FETCH (*RFC822.SIZE ${{octets}})\", \"OK*\"]\n"
            ),
        ),
    ];
    let owned: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let r = run_with(Setup::default(), &scenarios(&owned)).await;
    let text = summary(&r);
    for pass in [
        "ordered-ok",
        "any-order",
        "only-nothing",
        "only-with-may",
        "absent-ok",
        "literal-count",
    ] {
        assert_eq!(status_of(&r, pass).0, Status::Passed, "{pass}:\n{text}");
    }
    for (fail, says) in [
        ("ordered-wrong", "ordered: true"),
        ("only-missing", "only: true"),
        ("absent-hit", "must not appear"),
    ] {
        let (status, reason) = status_of(&r, fail);
        assert_eq!(status, Status::Failed, "{fail}:\n{text}");
        assert!(reason.contains(says), "{fail}: {reason}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_idle_and_literal_steps() {
    let texts = [
        ("greeting-ok", "name: a\nrfc: t\nsteps:\n  - greeting: \"* OK *\"\n".to_string()),
        (
            "greeting-wrong",
            "name: b\nrfc: t\nsteps:\n  - greeting: \"* PREAUTH*\"\n".to_string(),
        ),
        (
            "idle-plain",
            format!("name: c\n{HEAD}  - C: SELECT INBOX\n    S: \"OK*\"\n  - idle: {{}}\n  - C: NOOP\n    S: \"OK*\"\n"),
        ),
        (
            "idle-update",
            format!(
                "name: d\n{HEAD}  - C: SELECT INBOX\n    S: [\"* {{before}} EXISTS\", \"OK*\"]\n  - session: other\n    login: {{}}\n  - idle:\n      during:\n        - session: other\n          C: APPEND INBOX\n          literal: \"Subject: x\\n\\nidle\\n\"\n          S: \"OK*\"\n      updates: [\"* ${{before+1}} EXISTS\"]\n      S: \"OK IDLE*\"\n      tag: I1\n"
            ),
        ),
        (
            "idle-nothing-comes",
            format!("name: e\n{HEAD}  - C: SELECT INBOX\n    S: \"OK*\"\n  - idle:\n      updates: [\"* 99 EXISTS\"]\n  - C: NOOP\n    S: \"OK*\"\n"),
        ),
        (
            "literal-plus",
            format!("name: f\n{HEAD}  - C: EXAMINE\n    literal_plus: INBOX\n    S: [\"* * EXISTS\", \"OK [READ-ONLY]*\"]\n"),
        ),
    ];
    let owned: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let r = run_with(Setup::default(), &scenarios(&owned)).await;
    let text = summary(&r);
    for pass in ["greeting-ok", "idle-plain", "idle-update", "literal-plus"] {
        assert_eq!(status_of(&r, pass).0, Status::Passed, "{pass}:\n{text}");
    }
    let (status, reason) = status_of(&r, "greeting-wrong");
    assert_eq!(status, Status::Failed, "{text}");
    assert!(reason.contains("greeting does not match"), "{reason}");
    let (status, reason) = status_of(&r, "idle-nothing-comes");
    assert_eq!(status, Status::Failed, "{text}");
    assert!(reason.contains("during IDLE"), "{reason}");
    // DONE was still sent and completed, so the connection was usable.
    let o = outcome(&r, "idle-nothing-comes");
    assert!(o.transcript.iter().any(|t| t.text == "DONE"), "{text}");
    assert!(o.findings.iter().all(|f| f.severity != Severity::Must), "{text}");
}
