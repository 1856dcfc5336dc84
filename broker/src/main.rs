//! The `streambus` binary: parses the command line, resolves the configuration and (from issue 5
//! on) runs the broker. Until then it says plainly that it cannot serve, and exits with code 2.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use streambus_broker::cli::Cli;
use streambus_broker::config::{self, BrokerConfig};
use tracing_subscriber::EnvFilter;

/// Exit code of a broker that did not start because serving is not implemented yet.
const EXIT_NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(&cli) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` keeps the whole cause chain on one line.
            eprintln!("streambus: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let env = config::env_from_process()?;
    let config = BrokerConfig::resolve(&cli.sources(env)?)?;
    if cli.print_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(
        node_id = config.node_id,
        data_dir = %config.data_dir.display(),
        dev = cli.dev,
        "configuration resolved"
    );
    eprintln!("# resolved configuration\n{}", config.to_toml());
    eprintln!("streambus: the broker is not implemented yet (issue 5); exiting");
    Ok(ExitCode::from(EXIT_NOT_IMPLEMENTED))
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`); colours only on a terminal, so
/// journald and CI logs stay plain text.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
