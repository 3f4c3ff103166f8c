//! The `agegate` binary: parse, wire, map errors to exit codes. Everything else is in the
//! library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGEGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli::run(cli) {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::NothingProcessed) => ExitCode::from(1),
        Ok(cli::Outcome::Fault) => ExitCode::from(3),
        Err(e) => {
            cli::print_err(&format!("agegate: error: {e:#}"));
            ExitCode::from(2)
        }
    }
}
