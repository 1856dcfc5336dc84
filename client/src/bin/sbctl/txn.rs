//! `sbctl txn ...`: list, describe, find-hanging and abort of transactions, as
//! `kafka-transactions.sh` does them.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;
use streambus_client::admin::{ProducerDescription, TransactionFilter};
use streambus_client::{Admin, Client};

use crate::output::{self, Format};

/// Kafka's default `transaction.max.timeout.ms`, the age past which find-hanging looks.
const DEFAULT_MAX_TIMEOUT_MS: i64 = 900_000;

#[derive(Debug, Subcommand)]
pub enum TxnCommand {
    /// Transactions of every broker, with their producer and state.
    List {
        /// Only these states (Ongoing, PrepareCommit, CompleteAbort, ...); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only this producer id; repeatable.
        #[arg(long = "producer-id")]
        producer_ids: Vec<i64>,
        /// Only transactions running at least this long (ms).
        #[arg(long)]
        duration_ms: Option<i64>,
    },
    /// A transaction as its coordinator sees it: state, producer, timeout, age and partitions.
    Describe { transactional_id: String },
    /// Open transactions on a partition older than the maximum transaction timeout whose
    /// coordinator does not hold them open there: hanging, blocking read_committed consumers.
    FindHanging {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// The age past which an open transaction is suspect (Kafka's
        /// `transaction.max.timeout.ms`, 15 minutes by default).
        #[arg(long, default_value_t = DEFAULT_MAX_TIMEOUT_MS)]
        max_transaction_timeout_ms: i64,
    },
    /// Ends a hanging transaction on a partition with an abort marker. Give the producer id, or
    /// the start offset of its open transaction (as find-hanging prints it).
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long, required_unless_present = "start_offset")]
        producer_id: Option<i64>,
        #[arg(long, conflicts_with = "producer_id")]
        start_offset: Option<i64>,
    },
}

pub async fn run(client: Client, format: Format, command: TxnCommand) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match command {
        TxnCommand::List {
            states,
            producer_ids,
            duration_ms,
        } => {
            let filter = TransactionFilter {
                states,
                producer_ids,
                min_duration_ms: duration_ms,
            };
            let listed = admin.list_transactions(&filter).await?;
            match format {
                Format::Json => output::json(&serde_json::to_value(&listed)?),
                Format::Table => output::table(
                    &["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"],
                    &listed
                        .iter()
                        .map(|t| {
                            vec![
                                t.transactional_id.clone(),
                                t.coordinator.to_string(),
                                t.producer_id.to_string(),
                                t.state.clone(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
            Ok(())
        }
        TxnCommand::Describe { transactional_id } => {
            let described = admin.describe_transaction(&transactional_id).await?;
            let age_ms = described.start_time_ms.map(|start| now_ms() - start);
            match format {
                Format::Json => {
                    let mut value = serde_json::to_value(&described)?;
                    value["age_ms"] = json!(age_ms);
                    output::json(&value);
                }
                Format::Table => output::table(
                    &[
                        "COORDINATOR",
                        "TRANSACTIONAL-ID",
                        "PRODUCER-ID",
                        "PRODUCER-EPOCH",
                        "STATE",
                        "TIMEOUT-MS",
                        "AGE-MS",
                        "PARTITIONS",
                    ],
                    &[vec![
                        described
                            .coordinator
                            .map_or("-".to_owned(), |c| c.to_string()),
                        described.transactional_id.clone(),
                        described.producer_id.to_string(),
                        described.producer_epoch.to_string(),
                        described.state.clone(),
                        described.timeout_ms.to_string(),
                        age_ms.map_or("-".to_owned(), |a| a.to_string()),
                        described
                            .partitions
                            .iter()
                            .map(|(t, p)| format!("{t}-{p}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]],
                ),
            }
            Ok(())
        }
        TxnCommand::FindHanging {
            topic,
            partition,
            max_transaction_timeout_ms,
        } => {
            let hanging =
                find_hanging(&admin, &topic, partition, max_transaction_timeout_ms).await?;
            match format {
                Format::Json => output::json(&json!(hanging
                    .iter()
                    .map(|p| json!({
                        "topic": topic,
                        "partition": partition,
                        "producer_id": p.producer_id,
                        "producer_epoch": p.producer_epoch,
                        "start_offset": p.current_txn_start_offset,
                        "last_timestamp_ms": p.last_timestamp_ms,
                    }))
                    .collect::<Vec<_>>())),
                Format::Table => output::table(
                    &[
                        "TOPIC",
                        "PARTITION",
                        "PRODUCER-ID",
                        "PRODUCER-EPOCH",
                        "START-OFFSET",
                        "LAST-TIMESTAMP-MS",
                    ],
                    &hanging
                        .iter()
                        .map(|p| {
                            vec![
                                topic.clone(),
                                partition.to_string(),
                                p.producer_id.to_string(),
                                p.producer_epoch.to_string(),
                                p.current_txn_start_offset
                                    .map_or("-".to_owned(), |o| o.to_string()),
                                p.last_timestamp_ms.to_string(),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
            }
            Ok(())
        }
        TxnCommand::Abort {
            topic,
            partition,
            producer_id,
            start_offset,
        } => {
            let producers = admin.describe_producers(&topic, partition).await?;
            let producer = producers
                .iter()
                .find(|p| {
                    p.current_txn_start_offset.is_some()
                        && (Some(p.producer_id) == producer_id
                            || (producer_id.is_none()
                                && p.current_txn_start_offset == start_offset))
                })
                .with_context(|| {
                    format!("no open transaction of that producer on {topic}-{partition}")
                })?;
            let epoch =
                i16::try_from(producer.producer_epoch).context("producer epoch out of range")?;
            admin
                .abort_transaction(
                    &topic,
                    partition,
                    producer.producer_id,
                    epoch,
                    producer.coordinator_epoch,
                )
                .await?;
            match format {
                Format::Json => output::json(&json!({
                    "topic": topic,
                    "partition": partition,
                    "producer_id": producer.producer_id,
                    "producer_epoch": epoch,
                    "aborted": true,
                })),
                Format::Table => outln!(
                    "aborted the transaction of producer {} (epoch {epoch}) on {topic}-{partition}",
                    producer.producer_id
                ),
            }
            Ok(())
        }
    }
}

/// The producers with a transaction open on the partition for longer than
/// `max_timeout_ms` (by their last write) that their coordinator does not hold open there
/// (Kafka's `find-hanging`).
async fn find_hanging(
    admin: &Admin,
    topic: &str,
    partition: i32,
    max_timeout_ms: i64,
) -> anyhow::Result<Vec<ProducerDescription>> {
    if max_timeout_ms < 0 {
        bail!("--max-transaction-timeout-ms must not be negative");
    }
    let now = now_ms();
    let old: Vec<ProducerDescription> = admin
        .describe_producers(topic, partition)
        .await?
        .into_iter()
        .filter(|p| p.current_txn_start_offset.is_some())
        .filter(|p| now - p.last_timestamp_ms > max_timeout_ms)
        .collect();
    let mut hanging = Vec::new();
    for producer in old {
        let filter = TransactionFilter {
            producer_ids: vec![producer.producer_id],
            ..TransactionFilter::default()
        };
        let mut held_open = false;
        for listed in admin.list_transactions(&filter).await? {
            let described = admin.describe_transaction(&listed.transactional_id).await?;
            let open = matches!(
                described.state.as_str(),
                "Ongoing" | "PrepareCommit" | "PrepareAbort" | "PrepareEpochFence"
            );
            if open
                && described
                    .partitions
                    .iter()
                    .any(|(t, p)| t == topic && *p == partition)
            {
                held_open = true;
            }
        }
        if !held_open {
            hanging.push(producer);
        }
    }
    Ok(hanging)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
