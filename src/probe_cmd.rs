//! `mailcheck probe`, its `mailcheck NAME` shorthand, and `mailcheck explain`:
//! arguments in, a report out, the exit code from whether every endpoint is usable.

use crate::app::{read_password_from, timeout_of, AppError, EXIT_FAILED};
use crate::cli::ProbeArgs;
use crate::probe::advice;
use crate::probe::dns::SystemResolver;
use crate::probe::{presets, probe_all, targets, Pin, ProbeConfig, ProbeReport, Service};
use crate::secret::Secret;
use crate::wire::TlsSettings;
use clap::Parser;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// `mailcheck yandex --user me` -> `mailcheck probe yandex --user me`, for known
/// presets and things that look like domains; anything else is an unknown command.
pub fn shorthand(words: &[String]) -> Result<ProbeArgs, AppError> {
    let first = words.first().map(String::as_str).unwrap_or("");
    if presets::find(first).is_none() && !first.contains('.') {
        let close = presets::closest(first);
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", close.join(", "))
        };
        return Err(AppError::Usage(format!(
            "unknown command or provider `{first}`{hint} (commands: run, lint, serve, demo, probe, explain)"
        )));
    }
    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        args: ProbeArgs,
    }
    let argv = std::iter::once("mailcheck probe".to_string()).chain(words.iter().cloned());
    Probe::try_parse_from(argv)
        .map(|p| p.args)
        .map_err(|e| AppError::Usage(e.to_string()))
}

fn password(args: &ProbeArgs) -> Result<Option<Secret>, AppError> {
    if let Some(p) = read_password_from(args.password_file.as_deref())? {
        return Ok(Some(p));
    }
    let Some(user) = &args.user else { return Ok(None) };
    if !std::io::stdin().is_terminal() {
        return Err(AppError::Usage(format!(
            "--user {user}: set MAILCHECK_PASSWORD or use --password-file (no terminal to ask on)"
        )));
    }
    let p = rpassword::prompt_password(format!("password for {user}: "))
        .map_err(|e| AppError::Usage(format!("cannot read the password: {e}")))?;
    Ok((!p.is_empty()).then(|| Secret::new(p)))
}

pub async fn probe(args: ProbeArgs) -> Result<ExitCode, AppError> {
    let mut only = Vec::new();
    for name in &args.only {
        only.push(
            Service::from_name(name.trim())
                .ok_or_else(|| AppError::Usage(format!("--only {name}: use imap, pop3 and/or smtp")))?,
        );
    }
    let pins = args
        .resolve
        .iter()
        .map(|r| Pin::parse(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AppError::Usage)?;
    let timeout = timeout_of(args.timeout)?;
    let tls = TlsSettings::new(args.cacert.as_deref(), args.insecure).map_err(AppError::Usage)?;
    let password = password(&args)?;
    let resolver = Arc::new(SystemResolver::new(timeout).map_err(|e| AppError::Runtime(e.to_string()))?);
    let (endpoints, notes) = targets::endpoints(&args.targets, &only, resolver.as_ref())
        .await
        .map_err(AppError::Usage)?;
    if endpoints.is_empty() {
        return Err(AppError::Runtime(format!(
            "no endpoints to probe\n{}",
            notes.join("\n")
        )));
    }
    let config = ProbeConfig {
        resolver,
        pins,
        tls,
        timeout,
        user: args.user.clone(),
        password,
    };
    let started = Instant::now();
    let started_at = crate::run::schedule::now_rfc3339();
    let reports = probe_all(endpoints, &config).await;
    let report = ProbeReport {
        tool: format!("mailcheck {}", env!("CARGO_PKG_VERSION")),
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        usable: reports.iter().all(|r| r.usable),
        notes,
        endpoints: reports,
    };
    let mut out = anstream::stdout();
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| AppError::Runtime(format!("cannot encode JSON: {e}")))?;
        let _ = writeln!(out, "{text}");
    } else {
        let _ = write!(out, "{}", crate::probe::report::render(&report));
    }
    if let Some(path) = &args.junit {
        let xml = crate::probe::report::junit(&report).map_err(AppError::Runtime)?;
        crate::report::junit::write_file(path, xml.as_bytes()).map_err(AppError::Runtime)?;
    }
    Ok(if report.usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

pub fn explain(text: &str) -> Result<ExitCode, AppError> {
    let found = advice::explain(text);
    let mut out = anstream::stdout();
    if found.is_empty() {
        let _ = writeln!(out, "no known cause for: {text}");
        let _ = writeln!(
            out,
            "(mailcheck only explains texts it knows; try `mailcheck probe` on the server)"
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    for a in found {
        let _ = writeln!(
            out,
            "{} [{}]\n  cause: {}\n  fix:   {}\n",
            a.title, a.id, a.cause, a.fix
        );
    }
    Ok(ExitCode::SUCCESS)
}
