//! Turns parsed arguments into the library's types, runs the command, and
//! maps every outcome to an exit code: 0 all passed, 1 a scenario failed
//! (or the server could not be reached), 2 usage or scenario-file errors.

use crate::cli::{Cli, ColorWhen, Command, ConnArgs, OutputArgs, RunArgs};
use crate::report::console::Console;
use crate::run::{run_all, RunConfig, RunReport};
use crate::scenario::{self, Scenario};
use crate::secret::Secret;
use crate::wire::{Target, TlsSettings};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Why a command could not do its job.
#[derive(Debug)]
pub enum AppError {
    /// Bad arguments or scenario files: exit 2.
    Usage(String),
    /// The job ran into a failure outside the scenarios: exit 1.
    Runtime(String),
}

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

pub fn main(cli: Cli) -> ExitCode {
    let choice = match cli.color {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    };
    choice.write_global();
    let result = match cli.command {
        Command::Lint { paths } => lint(&paths),
        Command::Run(args) => with_runtime(|| async move { run(args).await }),
        Command::Serve(args) => with_runtime(|| async move { crate::serve::serve(args).await }),
        Command::Demo(args) => with_runtime(|| async move { crate::serve::demo(args).await }),
        Command::Probe(args) => with_runtime(|| async move { crate::probe_cmd::probe(args).await }),
        Command::Explain { text } => crate::probe_cmd::explain(&text.join(" ")),
        Command::Shorthand(words) => match crate::probe_cmd::shorthand(&words) {
            Ok(args) => with_runtime(|| async move { crate::probe_cmd::probe(args).await }),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(AppError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(AppError::Runtime(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn with_runtime<F, Fut>(f: F) -> Result<ExitCode, AppError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, AppError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AppError::Runtime(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(f())
}

fn lint(paths: &[PathBuf]) -> Result<ExitCode, AppError> {
    let scenarios = load_scenarios(paths)?;
    for s in &scenarios {
        println!("ok  {}  {}", s.path.display(), s.name);
    }
    println!("{} scenario file(s) are valid", scenarios.len());
    Ok(ExitCode::SUCCESS)
}

/// Load every file; report all errors at once (exit 2) rather than the first.
pub fn load_scenarios(paths: &[PathBuf]) -> Result<Vec<Scenario>, AppError> {
    let files = scenario::collect_files(paths).map_err(AppError::Usage)?;
    if files.is_empty() {
        return Err(AppError::Usage(format!(
            "no scenario files (.yaml) in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    collect_loaded(files.iter().map(|f| scenario::load_file(f)))
}

/// The bundled suites, loaded from the copies embedded at build time.
pub fn bundled_scenarios(prefix: &str) -> Result<Vec<Scenario>, AppError> {
    collect_loaded(
        BUNDLED
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(p, text)| scenario::load_str(Path::new(p), text)),
    )
}

fn collect_loaded(
    results: impl Iterator<Item = Result<Scenario, scenario::LoadError>>,
) -> Result<Vec<Scenario>, AppError> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(s) => ok.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(AppError::Usage(format!(
            "{} scenario file(s) have errors:\n{}",
            errors.len(),
            errors.join("\n\n")
        )))
    }
}

fn read_password(conn: &ConnArgs) -> Result<Option<Secret>, AppError> {
    read_password_from(conn.password_file.as_deref())
}

/// The password from FILE's first line, else MAILCHECK_PASSWORD; never from the command line.
pub fn read_password_from(file: Option<&Path>) -> Result<Option<Secret>, AppError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::Usage(format!("cannot read --password-file {}: {e}", path.display())))?;
        let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if first.is_empty() {
            return Err(AppError::Usage(format!(
                "--password-file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(Secret::new(first)));
    }
    Ok(std::env::var("MAILCHECK_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new))
}

pub fn timeout_of(secs: f64) -> Result<Duration, AppError> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(AppError::Usage(format!(
            "--timeout {secs}: give a number of seconds above 0"
        )))
    }
}

fn parse_vars(raw: &[String]) -> Result<Vec<(String, String)>, AppError> {
    raw.iter()
        .map(|v| {
            let (k, val) = v
                .split_once('=')
                .ok_or_else(|| AppError::Usage(format!("--var {v}: write it as name=value")))?;
            let valid = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(AppError::Usage(format!(
                    "--var {k}=...: `{k}` is not a variable name"
                )));
            }
            if k == "password" {
                return Err(AppError::Usage(
                    "--var password=...: pass the password with MAILCHECK_PASSWORD or --password-file".into(),
                ));
            }
            Ok((k.to_string(), val.to_string()))
        })
        .collect()
}

/// Build the run's configuration from the connection arguments (one target).
pub fn run_config(
    target: &str,
    conn: &ConnArgs,
    vars: &[String],
    allow_destructive: bool,
) -> Result<RunConfig, AppError> {
    let mut configs = run_configs(&[target.to_string()], conn, vars, allow_destructive, false)?;
    Ok(configs.remove(0))
}

/// One configuration per target, each knowing the others (for scenarios
/// with sessions on another protocol). At most one target per protocol.
pub fn run_configs(
    targets: &[String],
    conn: &ConnArgs,
    vars: &[String],
    allow_destructive: bool,
    allow_send: bool,
) -> Result<Vec<RunConfig>, AppError> {
    let mut parsed: Vec<Target> = Vec::new();
    for t in targets {
        let target = Target::parse(t).map_err(|e| AppError::Usage(e.to_string()))?;
        if let Some(other) = parsed.iter().find(|p| p.protocol == target.protocol) {
            return Err(AppError::Usage(format!(
                "--target {target} and --target {other} are both {}: give one target per protocol",
                target.protocol
            )));
        }
        parsed.push(target);
    }
    let tls = TlsSettings::new(conn.cacert.as_deref(), conn.insecure).map_err(AppError::Usage)?;
    let password = read_password(conn)?;
    let vars = parse_vars(vars)?;
    let timeout = timeout_of(conn.timeout)?;
    let url_user = parsed.iter().find_map(|t| t.user.clone());
    Ok(parsed
        .iter()
        .map(|target| RunConfig {
            user: conn
                .user
                .clone()
                .or_else(|| target.user.clone())
                .or_else(|| url_user.clone()),
            target: target.clone(),
            tls: tls.clone(),
            starttls: conn.starttls,
            password: password.clone(),
            vars: vars.clone(),
            timeout,
            allow_destructive,
            allow_send,
            others: parsed.iter().filter(|o| *o != target).cloned().collect(),
        })
        .collect())
}

async fn run(args: RunArgs) -> Result<ExitCode, AppError> {
    let configs = run_configs(
        &args.target,
        &args.conn,
        &args.vars,
        args.allow_destructive,
        args.allow_send,
    )?;
    let mut scenarios = load_scenarios(&args.paths)?;
    if !args.only.is_empty() {
        scenarios.retain(|s| {
            args.only
                .iter()
                .any(|o| s.name.contains(o.as_str()) || s.path.display().to_string().contains(o.as_str()))
        });
        if scenarios.is_empty() {
            return Err(AppError::Usage(format!(
                "no scenario matches --only {}",
                args.only.join(", ")
            )));
        }
    }
    // Each scenario runs in the run of its protocol's target; those without
    // one go with the first run, which reports them skipped (once).
    let mut groups: Vec<Vec<Scenario>> = vec![Vec::new(); configs.len()];
    for s in scenarios {
        let i = configs
            .iter()
            .position(|c| c.target.protocol == s.protocol)
            .unwrap_or(0);
        groups[i].push(s);
    }
    let runs: Vec<(&[Scenario], &RunConfig)> = groups
        .iter()
        .zip(&configs)
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, c)| (g.as_slice(), c))
        .collect();
    execute_runs(&runs, &args.output).await
}

/// Run, report on the console and in files, and pick the exit code.
pub async fn execute(
    scenarios: &[Scenario],
    config: &RunConfig,
    output: &OutputArgs,
) -> Result<ExitCode, AppError> {
    execute_runs(&[(scenarios, config)], output).await
}

/// Several runs (one per target) reported as one: one console, one
/// summary line, one JUnit and JSON file.
pub async fn execute_runs(
    runs: &[(&[Scenario], &RunConfig)],
    output: &OutputArgs,
) -> Result<ExitCode, AppError> {
    let console = Console {
        verbose: output.verbose,
        quiet: output.quiet,
    };
    let mut report: Option<RunReport> = None;
    for (scenarios, config) in runs {
        let one = run_all(scenarios, config, |e| console.on_event(e)).await;
        report = Some(match report {
            None => one,
            Some(mut all) => {
                all.target = format!("{}, {}", all.target, one.target);
                all.duration_ms += one.duration_ms;
                all.connect_error = all.connect_error.or(one.connect_error);
                all.scenarios.extend(one.scenarios);
                all.totals = crate::run::Totals::of(&all.scenarios);
                all
            }
        });
    }
    let report = report.ok_or_else(|| AppError::Runtime("nothing to run".into()))?;
    write_reports(&report, output.junit.as_deref(), output.json.as_deref())?;
    console.summary(&report.totals, report.duration_ms);
    if let Some(e) = &report.connect_error {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(if report.totals.failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn write_reports(report: &RunReport, junit: Option<&Path>, json: Option<&Path>) -> Result<(), AppError> {
    if let Some(p) = junit {
        crate::report::junit::write(report, p).map_err(AppError::Runtime)?;
        println!("JUnit report: {}", p.display());
    }
    if let Some(p) = json {
        crate::report::json::write(report, p).map_err(AppError::Runtime)?;
        println!("JSON report: {}", p.display());
    }
    Ok(())
}
