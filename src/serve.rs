//! `mailcheck serve` and `mailcheck demo`: the embedded reference server on
//! its own, or with the bundled suite run against it.

use crate::app::{bundled_scenarios, execute_runs, AppError};
use crate::cli::{DemoArgs, OutputArgs, ServeArgs, ServeProtocol};
use crate::run::RunConfig;
use crate::secret::Secret;
use crate::server::{self, Fault, Faults, ServerConfig, Store, TlsIdentity, FIXTURE_USERS};
use crate::wire::{Target, TlsSettings};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn parse_faults(names: &[String]) -> Result<Faults, AppError> {
    let mut faults = Faults::none();
    for n in names {
        let f: Fault = n
            .parse()
            .map_err(|e: server::ServerError| AppError::Usage(e.to_string()))?;
        faults.insert(f);
    }
    Ok(faults)
}

fn wants_fault_list(names: &[String]) -> bool {
    names.iter().any(|n| n == "list")
}

fn print_fault_list() -> ExitCode {
    println!("faults of the embedded server (--fault NAME, repeatable):");
    for f in Fault::ALL {
        println!("  {:<30} {}", f.name(), f.describe());
    }
    ExitCode::SUCCESS
}

fn addr(text: &str, flag: &str) -> Result<SocketAddr, AppError> {
    text.parse()
        .map_err(|_| AppError::Usage(format!("{flag} {text}: give an address like 127.0.0.1:10110")))
}

fn identity() -> Result<Arc<TlsIdentity>, AppError> {
    TlsIdentity::generate(&["localhost", "127.0.0.1"])
        .map(Arc::new)
        .map_err(|e| AppError::Runtime(e.to_string()))
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode, AppError> {
    if wants_fault_list(&args.faults) {
        return Ok(print_fault_list());
    }
    let faults = parse_faults(&args.faults)?;
    let identity = identity()?;
    let mut config = ServerConfig::new(Arc::new(Store::fixture()), identity.clone());
    let default = match args.protocol {
        ServeProtocol::Pop3 => "127.0.0.1:10110",
        ServeProtocol::Imap => "127.0.0.1:10143",
        ServeProtocol::Smtp => "127.0.0.1:10025",
    };
    let plain = Some(addr(args.listen.as_deref().unwrap_or(default), "--listen")?);
    let tls = args
        .tls_listen
        .as_deref()
        .map(|a| addr(a, "--tls-listen"))
        .transpose()?;
    let submission = args
        .submission_listen
        .as_deref()
        .map(|a| addr(a, "--submission-listen"))
        .transpose()?;
    if submission.is_some() && args.protocol != ServeProtocol::Smtp {
        return Err(AppError::Usage(
            "--submission-listen is only for `mailcheck serve smtp`".into(),
        ));
    }
    // `ServerConfig::new` turns the POP3 listeners on; only the asked
    // protocol's listeners should run.
    (config.pop3_listen, config.pop3s_listen) = (None, None);
    match args.protocol {
        ServeProtocol::Pop3 => (config.pop3_listen, config.pop3s_listen) = (plain, tls),
        ServeProtocol::Imap => (config.imap_listen, config.imaps_listen) = (plain, tls),
        ServeProtocol::Smtp => {
            (config.smtp_listen, config.submission_listen, config.smtps_listen) = (plain, submission, tls)
        }
    }
    config.faults = faults;
    config.apop = !args.no_apop;
    if let Some(n) = args.max_message_size {
        if args.protocol != ServeProtocol::Smtp || n == 0 {
            return Err(AppError::Usage(
                "--max-message-size is for `serve smtp`, and takes a number of octets above 0".into(),
            ));
        }
        config.smtp_max_message_size = n;
    }
    if let Some(path) = &args.cert_out {
        crate::report::junit::write_file(path, identity.cert_pem.as_bytes()).map_err(AppError::Runtime)?;
    }
    let running = server::start(config)
        .await
        .map_err(|e| AppError::Runtime(e.to_string()))?;
    if let Some(a) = running.pop3_addr {
        println!("listening: pop3://{a} (STLS available)");
    }
    if let Some(a) = running.pop3s_addr {
        println!("listening: pop3s://{a}");
    }
    if let Some(a) = running.imap_addr {
        println!("listening: imap://{a} (STARTTLS available)");
    }
    if let Some(a) = running.imaps_addr {
        println!("listening: imaps://{a}");
    }
    if let Some(a) = running.smtp_addr {
        println!("listening: smtp://{a} (STARTTLS available; AUTH after STARTTLS; local mail needs no AUTH)");
    }
    if let Some(a) = running.submission_addr {
        println!("listening: submission://{a} (STARTTLS, then AUTH before MAIL)");
    }
    if let Some(a) = running.smtps_addr {
        println!("listening: smtps://{a} (AUTH before MAIL)");
    }
    let users: Vec<&str> = FIXTURE_USERS.iter().map(|(u, _)| *u).collect();
    println!("users: {} (each password is NAME-demo-pw)", users.join(", "));
    if args.protocol == ServeProtocol::Smtp {
        println!(
            "mail to USER@localhost, USER@mailcheck.local or USER@example.test is delivered to USER's INBOX"
        );
    }
    if let Some(path) = &args.cert_out {
        println!("certificate: {} (pass it with --cacert)", path.display());
    }
    if !faults.is_empty() {
        println!("faults: {faults}");
    }
    println!("press Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn demo(args: DemoArgs) -> Result<ExitCode, AppError> {
    if wants_fault_list(&args.faults) {
        return Ok(print_fault_list());
    }
    let faults = parse_faults(&args.faults)?;
    let identity = identity()?;
    let mut config = ServerConfig::new(Arc::new(Store::fixture()), identity.clone())
        .with_imap()
        .with_smtp();
    config.faults = faults;
    let running = server::start(config)
        .await
        .map_err(|e| AppError::Runtime(e.to_string()))?;
    let (Some(plain), Some(imap), Some(smtp), Some(submission)) = (
        running.pop3_addr,
        running.imap_addr,
        running.smtp_addr,
        running.submission_addr,
    ) else {
        return Err(AppError::Runtime(
            "the embedded server did not start its listeners".into(),
        ));
    };
    let scenarios = bundled_scenarios("scenarios/pop3/")?;
    let imap_scenarios = bundled_scenarios("scenarios/imap/")?;
    // SMTP scenarios that need TLS (AUTH) go to the submission port, the
    // rest (STARTTLS itself, smuggling, delivery) to the relay port.
    let (smtp_tls, smtp_plain): (Vec<_>, Vec<_>) = bundled_scenarios("scenarios/smtp/")?
        .into_iter()
        .partition(|s| s.requires.contains(&crate::scenario::Requirement::Tls));
    if scenarios.is_empty() || imap_scenarios.is_empty() || smtp_plain.is_empty() {
        return Err(AppError::Runtime(
            "this build has no bundled scenarios (scenarios/pop3, imap or smtp was empty)".into(),
        ));
    }
    let (user, password) = FIXTURE_USERS[0];
    let target = Target::parse(&format!("pop3://{plain}")).map_err(|e| AppError::Runtime(e.to_string()))?;
    let run = RunConfig {
        target,
        tls: TlsSettings::with_pem_roots(&identity.cert_pem).map_err(AppError::Runtime)?,
        starttls: false,
        user: Some(user.to_string()),
        password: Some(Secret::new(password)),
        vars: Vec::new(),
        // Short, so a fault that stalls the server shows up quickly.
        timeout: Duration::from_secs(3),
        allow_destructive: true,
        allow_send: true,
        others: Vec::new(),
    };
    let parse = |url: String| Target::parse(&url).map_err(|e| AppError::Runtime(e.to_string()));
    let imap_run = RunConfig {
        target: parse(format!("imap://{imap}"))?,
        ..run.clone()
    };
    // Mail the SMTP scenarios send goes to the demo user, and the delivery
    // checks read it back over POP3 and IMAP.
    let smtp_run = RunConfig {
        target: parse(format!("smtp://{smtp}"))?,
        vars: vec![("rcpt".into(), format!("{user}@localhost"))],
        others: vec![
            parse(format!("pop3://{plain}"))?,
            parse(format!("imap://{imap}"))?,
        ],
        ..run.clone()
    };
    let submission_run = RunConfig {
        target: parse(format!("submission://{submission}"))?,
        ..smtp_run.clone()
    };
    println!(
        "mailcheck demo: the embedded server listens on pop3://{plain}, imap://{imap}, smtp://{smtp} and submission://{submission}; user {user}"
    );
    if !faults.is_empty() {
        println!("faults switched on: {faults}");
    }
    let output = OutputArgs {
        junit: Some(args.junit.clone()),
        json: args.json.clone(),
        verbose: args.verbose,
        quiet: false,
    };
    let code = execute_runs(
        &[
            (&scenarios, &run),
            (&imap_scenarios, &imap_run),
            (&smtp_plain, &smtp_run),
            (&smtp_tls, &submission_run),
        ],
        &output,
    )
    .await;
    running.shutdown().await;
    if faults.is_empty() {
        println!("see a failure: mailcheck demo --fault no-byte-stuffing   (list: --fault list)");
    }
    code
}
