//! Command-line definitions (clap). Only parsing lives here; `app` checks
//! the values and turns them into the library's types.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "mailcheck",
    version,
    about = "Test mail servers against the RFCs (POP3, IMAP, SMTP) and diagnose their endpoints",
    after_help = "`mailcheck NAME` (a provider preset or a domain) is short for `mailcheck probe NAME`."
)]
pub struct Cli {
    /// When to use colours: auto honours NO_COLOR and whether output is a terminal.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenario files (or folders of them) against a server.
    Run(RunArgs),
    /// Check scenario files without connecting.
    Lint {
        /// Files or folders (searched for .yaml / .yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the embedded reference server until interrupted.
    Serve(ServeArgs),
    /// Start the embedded server and run the bundled suite against it.
    Demo(DemoArgs),
    /// Check a provider's or domain's mail endpoints layer by layer and explain failures.
    Probe(ProbeArgs),
    /// Look up an error text a mail client showed: likely cause and fix.
    Explain {
        /// The text, e.g. "Login failure or POP3 disabled" (may start with `-ERR`).
        #[arg(required = true, allow_hyphen_values = true, trailing_var_arg = true)]
        text: Vec<String>,
    },
    /// `mailcheck yandex` is short for `mailcheck probe yandex`.
    #[command(external_subcommand)]
    Shorthand(Vec<String>),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Provider presets (yandex, gmail, ...), domains (example.org) or URLs (imaps://host, pop3://host:110).
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Log in (read-only) as this user; the password comes from MAILCHECK_PASSWORD,
    /// --password-file, or a prompt.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Only these services, comma-separated: imap,pop3,smtp.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub only: Vec<String>,
    /// Seconds to wait for each DNS query, connection, handshake and reply.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Trust this CA certificate (PEM) in addition to the system roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Do not verify certificates (problems are still reported as warnings).
    #[arg(long)]
    pub insecure: bool,
    /// Connect to ADDR for HOST:PORT; SNI and certificate checks keep HOST (repeatable).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// Print the result as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write a JUnit report (one testcase per check).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario files or folders.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Server URL: pop3:// (110), pop3s:// (995), imap:// (143), imaps:// (993),
    /// smtp:// (25), submission:// (587, STARTTLS) or smtps:// (465). Repeat it
    /// for several protocols (one target each): each scenario runs against the
    /// target of its protocol.
    #[arg(long, short = 't', required = true)]
    pub target: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Set a scenario variable (repeatable): --var name=value.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Also run scenarios that delete mail (DELE + QUIT, EXPUNGE).
    #[arg(long)]
    pub allow_destructive: bool,
    /// Also run scenarios that send mail (complete an SMTP DATA transaction).
    #[arg(long)]
    pub allow_send: bool,
    /// Only scenarios whose name or file contains this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ConnArgs {
    /// User name (also taken from the URL: pop3://alice@host).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Read the password from this file (first line). Otherwise MAILCHECK_PASSWORD is used.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Upgrade with STLS / STARTTLS right after the greeting, before any step.
    #[arg(long)]
    pub starttls: bool,
    /// Trust this CA certificate (PEM) in addition to the system roots.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Do not verify the certificate (problems are still reported).
    #[arg(long)]
    pub insecure: bool,
    /// Seconds to wait for a connection, a handshake, or each reply.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Show the transcript of every scenario, not only failing ones.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Show only failures, warnings and the summary.
    #[arg(long, short = 'q', conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeProtocol {
    Pop3,
    Imap,
    Smtp,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which protocol to serve.
    #[arg(value_enum)]
    pub protocol: ServeProtocol,
    /// Plain listener (with STLS / STARTTLS); port 0 picks a free port.
    /// Default 127.0.0.1:10110 for pop3, 127.0.0.1:10143 for imap,
    /// 127.0.0.1:10025 for smtp (relay-style: local delivery without AUTH).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Implicit-TLS listener (POP3S / IMAPS / SMTPS submission), off unless given.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<String>,
    /// smtp only: a submission listener (STARTTLS, then AUTH before MAIL), off unless given.
    #[arg(long, value_name = "ADDR")]
    pub submission_listen: Option<String>,
    /// Misbehave on purpose (repeatable); `--fault list` shows the names.
    #[arg(long = "fault", value_name = "NAME")]
    pub faults: Vec<String>,
    /// Write the server's self-signed certificate (PEM) here, for --cacert.
    #[arg(long, value_name = "FILE")]
    pub cert_out: Option<PathBuf>,
    /// Greet without an APOP timestamp.
    #[arg(long)]
    pub no_apop: bool,
    /// smtp only: the SIZE limit in octets (default 10485760); larger mail gets 552.
    #[arg(long, value_name = "OCTETS")]
    pub max_message_size: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the JUnit report.
    #[arg(long, value_name = "FILE", default_value = "reports/junit.xml")]
    pub junit: PathBuf,
    /// Also write a JSON report.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Make the embedded server misbehave (repeatable), to see failures reported.
    #[arg(long = "fault", value_name = "NAME")]
    pub faults: Vec<String>,
    /// Show every transcript.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}
