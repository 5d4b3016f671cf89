//! The bundled IMAP scenarios against the embedded IMAP server: the correct
//! server passes with no MUST finding, and every IMAP fault switch makes the
//! matching bundled scenario fail.

use mailcheck::app::load_scenarios;
use mailcheck::finding::Severity;
use mailcheck::run::{run_all, RunConfig, RunReport, Status};
use mailcheck::secret::Secret;
use mailcheck::server::{self, Fault, Faults, ServerConfig, FIXTURE_USERS};
use mailcheck::wire::{Target, TlsSettings};
use std::path::PathBuf;
use std::time::Duration;

async fn run_suite(faults: Faults, tls_target: bool) -> RunReport {
    let mut config = ServerConfig::localhost().expect("config").with_imap();
    config.faults = faults;
    let cert = config.identity.cert_pem.clone();
    let running = server::start(config).await.expect("server");
    let target = if tls_target {
        format!("imaps://localhost:{}", running.imaps_addr.unwrap().port())
    } else {
        format!("imap://localhost:{}", running.imap_addr.unwrap().port())
    };
    let scenarios = load_scenarios(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/imap")])
        .unwrap_or_else(|_| panic!("bundled IMAP scenarios load"));
    let (user, password) = FIXTURE_USERS[0];
    let run = RunConfig {
        target: Target::parse(&target).unwrap(),
        tls: TlsSettings::with_pem_roots(&cert).unwrap(),
        starttls: false,
        user: Some(user.into()),
        password: Some(Secret::new(password)),
        vars: Vec::new(),
        timeout: Duration::from_secs(2),
        allow_destructive: true,
        allow_send: false,
        others: Vec::new(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correct_server_passes_the_imap_suite() {
    for tls in [false, true] {
        let r = run_suite(Faults::none(), tls).await;
        let text = summary(&r);
        assert!(r.connect_error.is_none(), "{text}");
        assert_eq!(r.totals.failed, 0, "{text}");
        assert!(r.totals.passed >= 9, "{text}");
        for o in &r.scenarios {
            assert!(o.findings.iter().all(|f| f.severity != Severity::Must), "{text}");
        }
    }
}

async fn fails(fault: Fault, stem: &str) {
    let r = run_suite(Faults::none().with(fault), false).await;
    let text = summary(&r);
    let hit = r
        .scenarios
        .iter()
        .any(|o| o.status == Status::Failed && o.file.ends_with(&format!("/{stem}.yaml")));
    assert!(hit, "fault {fault}: scenario {stem} did not fail:\n{text}");
}

macro_rules! imap_fault_tests {
    ($($name:ident: $fault:expr => $stem:expr;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                fails($fault, $stem).await;
            }
        )*
    };
}

imap_fault_tests! {
    wrong_tag: Fault::ImapWrongTag => "capability-lists-imap4";
    no_completion: Fault::ImapNoCompletion => "fetch-size-matches-body";
    literal_miscount: Fault::ImapLiteralMiscount => "fetch-size-matches-body";
    select_no_uidvalidity: Fault::ImapSelectNoUidvalidity => "select-required-data";
    examine_writable: Fault::ImapExamineWritable => "examine-is-read-only";
    peek_sets_seen: Fault::ImapPeekSetsSeen => "fetch-peek-does-not-set-seen";
    uids_descending: Fault::ImapUidsDescending => "fetch-size-matches-body";
    ok_before_login: Fault::ImapOkBeforeLogin => "commands-refused-before-login";
    bad_as_no: Fault::ImapBadAsNo => "unknown-command-is-bad";
    no_bye_on_logout: Fault::ImapNoByeOnLogout => "logout-says-bye";
    expunge_silent: Fault::ImapExpungeSilent => "append-then-expunge-is-announced";
}
