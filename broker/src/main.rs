//! The `streambus` binary: parses the command line, resolves the configuration, starts the
//! broker (metadata quorum member, partitions, Kafka listener), then runs until SIGTERM or
//! SIGINT and stops gracefully.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use streambus_broker::broker::Broker;
use streambus_broker::cli::Cli;
use streambus_broker::config::{self, BrokerConfig};
use streambus_raft::ClusterId;
use tracing_subscriber::EnvFilter;

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
    if cli.new_cluster_id {
        println!("{}", ClusterId::random());
        return Ok(ExitCode::SUCCESS);
    }
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, cli.dev))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: BrokerConfig, dev: bool) -> anyhow::Result<()> {
    let broker = Broker::start(config, dev).await?;
    tracing::info!(
        kafka_listener = %broker.kafka_addr(),
        raft_listener = %broker.raft_addr(),
        "broker started"
    );
    shutdown_signal().await?;
    tracing::info!("shutting down");
    broker.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on the first SIGTERM (systemd, `kill`) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`, openraft at `warn`); colours only on a terminal, so
/// journald and CI logs stay plain text.
fn init_tracing() {
    // openraft narrates every vote and tick at `info`; its warnings are what an operator needs.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
