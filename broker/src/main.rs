//! The `streambus` binary: parses the command line, resolves the configuration, starts the
//! broker (metadata quorum member, partitions, Kafka listener), then runs until SIGTERM or
//! SIGINT and stops gracefully. If the metadata quorum's raft core fails instead, the process
//! exits with an error (status 1) so that its supervisor restarts it: a broker without a raft
//! core would keep listening but never serve metadata again.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use streambus_broker::broker::Broker;
use streambus_broker::cli::{Cli, LogFormat, Subcommand};
use streambus_broker::config::{self, BrokerConfig};
use streambus_raft::ClusterId;
use tracing_subscriber::EnvFilter;

/// How long the process waits for blocking tasks once the broker has stopped.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
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
    if let Some(Subcommand::ValidateConfig { file }) = &cli.command {
        return Ok(validate_config(file));
    }
    if cli.new_cluster_id {
        println!("{}", ClusterId::random());
        return Ok(ExitCode::SUCCESS);
    }
    configure_failpoints()?;
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
    let served = runtime.block_on(serve(config, cli.dev));
    // Bounded: a blocking task stuck behind a failed component must not keep the process from
    // exiting (and its supervisor from restarting it).
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    served?;
    Ok(ExitCode::SUCCESS)
}

/// `streambus validate-config FILE`: the file over the embedded defaults, checked as a start
/// checks its configuration before it touches the data directory (syntax, keys, types, ranges,
/// listeners, quorum voters, topic defaults, coordinator tables); nothing else is read.
fn validate_config(file: &std::path::Path) -> ExitCode {
    let sources = config::Sources {
        file: Some(file.to_path_buf()),
        ..config::Sources::default()
    };
    match BrokerConfig::resolve(&sources) {
        Ok(_) => {
            println!("{}: valid", file.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            // `{:#}` keeps the cause chain (the I/O error of an unreadable file) on one line.
            eprintln!(
                "{}: invalid: {:#}",
                file.display(),
                anyhow::Error::from(error)
            );
            ExitCode::FAILURE
        }
    }
}

/// Fault-injection tests set failpoints in `FAILPOINTS`, fail-rs's `name=actions;...` (e.g.
/// `log::fsync=1*return`). Parsed here rather than by `FailScenario::setup`, which panics on a
/// bad value; a build without the `failpoints` feature refuses the variable instead of
/// silently running without the faults a test asked for.
fn configure_failpoints() -> anyhow::Result<()> {
    let Some(spec) = std::env::var_os("FAILPOINTS") else {
        return Ok(());
    };
    if !fail::has_failpoints() {
        anyhow::bail!(
            "FAILPOINTS is set but this build has no failpoints (build the broker with \
             `--features failpoints`, or the whole workspace)"
        );
    }
    let spec = spec
        .into_string()
        .map_err(|_| anyhow::anyhow!("FAILPOINTS is not valid UTF-8"))?;
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("FAILPOINTS entry {entry:?} is not name=actions"))?;
        fail::cfg(name.trim(), actions.trim())
            .map_err(|error| anyhow::anyhow!("FAILPOINTS entry {entry:?}: {error}"))?;
        tracing::warn!(
            failpoint = name.trim(),
            actions = actions.trim(),
            "failpoint configured"
        );
    }
    Ok(())
}

async fn serve(config: BrokerConfig, dev: bool) -> anyhow::Result<()> {
    // Installed before the broker starts, so a signal during startup is not lost.
    let mut signals = ShutdownSignals::new()?;
    let broker = Broker::start(config, dev).await?;
    tracing::info!(
        kafka_listener = %broker.kafka_addr(),
        raft_listener = %broker.raft_addr(),
        http_listener = %broker.http_addr(),
        admin_listener = %broker.admin_addr(),
        "broker started"
    );
    broker.run_until(signals.recv()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM (systemd, `kill`) and SIGINT (Ctrl-C).
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first of either.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`, openraft at `warn`); colours only on a terminal, so
/// journald and CI logs stay plain text.
/// `--log-format json` writes one JSON object per line instead (with each event's span fields,
/// the request context among them), for log shippers.
fn init_tracing(format: LogFormat) {
    // openraft narrates every vote and tick at `info`; its warnings are what an operator needs.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}
