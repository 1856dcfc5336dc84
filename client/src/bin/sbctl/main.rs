//! `sbctl`: the StreamBus command line, with Kafka's CLI habits (`--bootstrap-server`, topic
//! admin, consumer groups, console produce/consume, perf tests), talking only the Kafka protocol through the
//! `streambus-client` SDK. Errors print one line on stderr and exit 1; bad flags exit 2.

// First, so that its `outln!` macro is in scope in the others.
#[macro_use]
mod output;
mod cluster;
mod group;
mod io;
mod perf;
mod topic;
mod txn;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use streambus_client::{Client, ClientConfig};

use output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "sbctl",
    version,
    about = "StreamBus command line (any Kafka-compatible broker)"
)]
struct Cli {
    /// Brokers to bootstrap from, comma-separated host:port.
    #[arg(
        long,
        global = true,
        env = "STREAMBUS_BOOTSTRAP",
        default_value = "localhost:9092"
    )]
    bootstrap_server: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// How long an operation keeps retrying (ms).
    #[arg(long, global = true, default_value_t = 30_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, delete and configure topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Write lines from stdin (or a file) as records.
    Produce(io::ProduceArgs),
    /// Print records of a topic.
    Consume(io::ConsumeArgs),
    /// Cluster state.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Consumer groups: list, describe, reset offsets, delete.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Transactions: list, describe, find hanging ones, abort.
    #[command(subcommand)]
    Txn(txn::TxnCommand),
    /// Throughput and latency tests, like kafka-producer-perf-test / kafka-consumer-perf-test.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SBCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = ClientConfig::new(&cli.bootstrap_server);
    config.client_id = "sbctl".to_owned();
    config.api_timeout = Duration::from_millis(cli.timeout_ms);
    config.connect_timeout = config.connect_timeout.min(config.api_timeout);
    let client = Client::connect(config).await?;
    match cli.command {
        Command::Topic(command) => topic::run(client, cli.output, command).await,
        Command::Produce(args) => io::produce(client, cli.output, args).await,
        Command::Consume(args) => io::consume(client, cli.output, args).await,
        Command::Cluster(command) => cluster::run(client, cli.output, command).await,
        Command::Group(command) => group::run(client, cli.output, command).await,
        Command::Perf(command) => perf::run(client, cli.output, command).await,
        Command::Txn(command) => txn::run(client, cli.output, command).await,
    }
}
