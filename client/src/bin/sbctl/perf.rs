//! `sbctl perf produce` / `sbctl perf consume`: throughput and latency figures in the manner of
//! Kafka's `kafka-producer-perf-test` and `kafka-consumer-perf-test`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use streambus_client::admin::NewTopic;
use streambus_client::producer::parse_compression;
use streambus_client::{
    Acks, Admin, Client, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, RecordMetadata,
};
use tokio::sync::mpsc;

use crate::output::Format;

#[derive(Debug, Subcommand)]
pub enum PerfCommand {
    /// Produce fixed-size records as fast as allowed; report throughput and latency.
    Produce(ProduceArgs),
    /// Read a topic from the beginning; report throughput.
    Consume(ConsumeArgs),
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    /// Records to send (default 100000 unless --duration-secs is given).
    #[arg(long)]
    num_records: Option<u64>,
    /// Send for this long instead of a count.
    #[arg(long, conflicts_with = "num_records")]
    duration_secs: Option<u64>,
    /// Bytes per record value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per second cap; -1: unlimited.
    #[arg(long, default_value_t = -1)]
    throughput: i64,
    /// 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    partitions: Option<i32>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Produce in transactions of this transactional id (as kafka-producer-perf-test's
    /// `--transactional-id`; implies acks=all and idempotence).
    #[arg(long)]
    transactional_id: Option<String>,
    /// With --transactional-id: commit a transaction this often.
    #[arg(long, default_value_t = 3000, requires = "transactional_id")]
    transaction_duration_ms: u64,
    /// Print the summary as JSON (and no progress bar).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    /// Stop after this many records (default: at the end of the topic as it was at the start).
    #[arg(long)]
    messages: Option<u64>,
    /// Stop after this long.
    #[arg(long)]
    duration_secs: Option<u64>,
    #[arg(long)]
    json: bool,
}

/// `--output json` means the same as `--json` here.
pub async fn run(client: Client, format: Format, command: PerfCommand) -> anyhow::Result<()> {
    let json = format == Format::Json;
    match command {
        PerfCommand::Produce(mut args) => {
            args.json |= json;
            produce(client, args).await
        }
        PerfCommand::Consume(mut args) => {
            args.json |= json;
            consume(client, args).await
        }
    }
}

fn progress(total: Option<u64>, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} records {per_sec} {msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn ensure_topic(client: &Client, topic: &str, partitions: Option<i32>) -> anyhow::Result<()> {
    let metadata = client.refresh_metadata(&[topic.to_owned()], false).await?;
    if metadata.topics.contains_key(topic) {
        return Ok(());
    }
    let Some(partitions) = partitions else {
        bail!("unknown topic or partition: {topic} (give --partitions to create it)");
    };
    let admin = Admin::new(client.clone());
    for (_, result) in admin
        .create_topics(&[NewTopic::new(topic, partitions, -1)], false)
        .await?
    {
        // 36: TOPIC_ALREADY_EXISTS (another run created it meanwhile).
        if let Err(e) = result {
            if e.kafka_code() != Some(36) {
                return Err(e).context("creating the perf topic");
            }
        }
    }
    Ok(())
}

type Completion = (Instant, Instant, streambus_client::Result<RecordMetadata>);

async fn produce(client: Client, args: ProduceArgs) -> anyhow::Result<()> {
    if args.record_size == 0 {
        bail!("--record-size must be > 0");
    }
    ensure_topic(&client, &args.topic, args.partitions).await?;
    let mut config = ProducerConfig {
        acks: args.acks.parse::<Acks>()?,
        compression: parse_compression(&args.compression)?,
        ..ProducerConfig::default()
    };
    if let Some(size) = args.batch_size {
        config.batch_size = size;
        // A batch is one request's worth at most; the broker's max.message.bytes still applies.
        config.max_request_size = config.max_request_size.max(size);
        config.buffer_memory = config.buffer_memory.max(4 * size);
    }
    if let Some(ms) = args.linger_ms {
        config.linger = Duration::from_millis(ms);
    }
    if let Some(id) = &args.transactional_id {
        config.transactional_id = Some(id.clone());
        config.acks = Acks::All;
        config.enable_idempotence = true;
    }
    let producer = Producer::new(client, config).await?;
    let transaction_duration = Duration::from_millis(args.transaction_duration_ms.max(1));
    let transactional = args.transactional_id.is_some();
    let mut transaction_started = Instant::now();
    let mut transactions = 0u64;
    if transactional {
        producer.begin_transaction().await?;
    }
    let count = match (args.num_records, args.duration_secs) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(100_000),
    };
    let until = args
        .duration_secs
        .map(|s| Instant::now() + Duration::from_secs(s));
    // A fixed payload of varied bytes (compression sees realistic-ish data); each record shares
    // it, as the Java perf test does.
    let payload: Bytes = (0..args.record_size)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + i / 13) % 36])
        .collect::<Vec<u8>>()
        .into();
    let bar = progress(count, args.json);

    // Completions are timed in a collector task, so the send loop never waits on acks.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, streambus_client::DeliveryFuture)>();
    let collector_bar = bar.clone();
    let collector = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
            .expect("static histogram bounds are valid");
        let mut pending = FuturesUnordered::new();
        let mut errors = 0u64;
        let mut first_error = None;
        let mut open = true;
        loop {
            tokio::select! {
                next = rx.recv(), if open => match next {
                    Some((sent, delivery)) => pending.push(async move {
                        let result = delivery.await;
                        (sent, Instant::now(), result) as Completion
                    }),
                    None => open = false,
                },
                Some((sent, done, result)) = pending.next(), if !pending.is_empty() => {
                    match result {
                        Ok(_) => {
                            let micros = done.duration_since(sent).as_micros() as u64;
                            let _ = histogram.record(micros.max(1));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                    collector_bar.inc(1);
                }
                else => break,
            }
        }
        (histogram, errors, first_error)
    });

    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        if count.is_some_and(|n| sent >= n) || until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        if args.throughput > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / args.throughput as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        if transactional && transaction_started.elapsed() >= transaction_duration {
            // Commit waits for every record of the transaction to be acknowledged.
            producer.commit_transaction().await?;
            transactions += 1;
            producer.begin_transaction().await?;
            transaction_started = Instant::now();
        }
        let record = ProducerRecord {
            topic: args.topic.clone(),
            value: Some(payload.clone()),
            ..ProducerRecord::default()
        };
        let now = Instant::now();
        let delivery = producer.send(record).await?;
        if tx.send((now, delivery)).is_err() {
            break;
        }
        sent += 1;
    }
    drop(tx);
    if transactional {
        producer.commit_transaction().await?;
        transactions += 1;
    }
    producer.flush().await;
    let (histogram, errors, first_error) = collector.await.context("collector task")?;
    let elapsed = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    producer.close().await;

    let acked = sent - errors;
    let records_per_sec = acked as f64 / elapsed;
    let mb_per_sec = records_per_sec * args.record_size as f64 / (1024.0 * 1024.0);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        outln!(
            "{}",
            json!({
                "records": acked, "errors": errors, "record_size": args.record_size,
                "seconds": elapsed, "records_per_sec": records_per_sec, "mb_per_sec": mb_per_sec,
                "transactions": transactions,
                "latency_ms": {
                    "avg": histogram.mean() / 1000.0, "p50": ms(0.5), "p95": ms(0.95),
                    "p99": ms(0.99), "p999": ms(0.999), "max": histogram.max() as f64 / 1000.0,
                },
            })
        );
    } else {
        outln!(
            "{acked} records sent, {records_per_sec:.1} records/sec ({mb_per_sec:.2} MB/sec), \
             {:.2} ms avg latency, {:.2} ms max latency, {:.2} ms 50th, {:.2} ms 95th, \
             {:.2} ms 99th, {:.2} ms 99.9th.",
            histogram.mean() / 1000.0,
            histogram.max() as f64 / 1000.0,
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(0.999)
        );
        if transactional {
            outln!("{transactions} transactions committed.");
        }
    }
    if let Some(error) = first_error {
        bail!("{errors} records failed; first error: {error}");
    }
    Ok(())
}

async fn consume(client: Client, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 10_000,
            ..ConsumerConfig::default()
        },
    );
    let partitions = consumer.assign_topic(&args.topic).await?;
    // Without --messages, read up to the end as it is now.
    let at = |timestamp: i64| -> Vec<_> {
        partitions
            .iter()
            .map(|tp| (tp.clone(), timestamp))
            .collect()
    };
    let ends = consumer
        .offsets(&at(streambus_client::consumer::LATEST))
        .await?;
    let starts = consumer
        .offsets(&at(streambus_client::consumer::EARLIEST))
        .await?;
    let available: i64 = partitions
        .iter()
        .map(|tp| ends.get(tp).copied().unwrap_or(0) - starts.get(tp).copied().unwrap_or(0))
        .sum();
    // Without --messages: up to each partition's end as it was at the start (transaction
    // markers and compaction make the record count smaller than the offset range).
    let target = args.messages.unwrap_or(available.max(0) as u64);
    let at_end = |consumer: &Consumer| {
        partitions
            .iter()
            .all(|tp| consumer.position(tp).unwrap_or(-1) >= ends.get(tp).copied().unwrap_or(0))
    };
    let until = args
        .duration_secs
        .map(|s| Instant::now() + Duration::from_secs(s));
    let bar = progress(Some(target), args.json);
    let start = Instant::now();
    let mut last_record = start;
    let mut records = 0u64;
    let mut bytes = 0u64;
    loop {
        let done = match args.messages {
            Some(n) => records >= n,
            None => at_end(&consumer),
        };
        if done || until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let batch = consumer.poll(Duration::from_millis(500)).await?;
        if batch.is_empty() {
            if last_record.elapsed() > Duration::from_secs(10) {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for record in &batch {
            bytes += record.value.as_ref().map_or(0, |v| v.len() as u64)
                + record.key.as_ref().map_or(0, |k| k.len() as u64);
        }
        records += batch.len() as u64;
        bar.set_position(records);
    }
    let complete = match args.messages {
        Some(n) => records >= n,
        None => at_end(&consumer),
    };
    bar.finish_and_clear();
    // Up to the last record: a trailing wait for records that never came is not throughput.
    let elapsed = last_record.duration_since(start).as_secs_f64().max(1e-9);
    let mb = bytes as f64 / (1024.0 * 1024.0);
    if args.json {
        outln!(
            "{}",
            json!({
                "records": records, "bytes": bytes, "seconds": elapsed,
                "records_per_sec": records as f64 / elapsed, "mb_per_sec": mb / elapsed,
            })
        );
    } else {
        outln!(
            "{records} records ({mb:.2} MB) in {elapsed:.2} s: {:.1} records/sec, {:.2} MB/sec",
            records as f64 / elapsed,
            mb / elapsed
        );
    }
    if !complete && args.duration_secs.is_none() {
        bail!("read {records} records, then none arrived for 10 s");
    }
    Ok(())
}
