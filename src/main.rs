//! The `mailcheck` binary: parse arguments, run, map the result to an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = mailcheck::cli::Cli::parse();
    mailcheck::app::main(cli)
}
