//! `sbctl produce` (lines to records) and `sbctl consume` (records to lines or JSON).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use serde_json::json;
use streambus_client::producer::parse_compression;
use streambus_client::{
    Acks, Client, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};

use crate::output::{self, Format};
use crate::topic::parse_key_value;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Split each line at the first occurrence into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// A header `key=value` on every record; repeatable.
    #[arg(long = "header", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Write every record to this partition (default: the partitioner picks).
    #[arg(long)]
    partition: Option<i32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Start at the log start (default: only new records).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start offset: a number, `earliest` or `latest` (requires --partition for a number).
    #[arg(long)]
    offset: Option<String>,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Exit when no record arrived for this long (ms); default: wait forever.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Line template: %t topic, %p partition, %o offset, %T timestamp, %k key, %v value,
    /// %h headers (k=v,...), \n, \t. Default: %v. Ignored with `--output json`.
    #[arg(long)]
    format: Option<String>,
}

pub async fn produce(client: Client, format: Format, args: ProduceArgs) -> anyhow::Result<()> {
    let acks: Acks = args.acks.parse()?;
    let config = ProducerConfig {
        acks,
        compression: parse_compression(&args.compression)?,
        linger: Duration::from_millis(args.linger_ms),
        ..ProducerConfig::default()
    };
    let reader: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    // Check the topic first, so a typo fails before any input is read.
    let metadata = client
        .refresh_metadata(std::slice::from_ref(&args.topic), false)
        .await?;
    if !metadata.topics.contains_key(&args.topic) {
        bail!("unknown topic or partition: {}", args.topic);
    }
    let producer = Producer::new(client, config).await?;
    let mut deliveries = Vec::new();
    let mut produced = 0u64;
    // Input errors stop reading, but what was already sent is still delivered (and checked)
    // before the error is reported.
    let read = send_lines(&producer, &args, reader, &mut deliveries, &mut produced).await;
    producer.flush().await;
    let mut undelivered = None;
    for delivery in deliveries {
        if let Err(e) = delivery.await {
            undelivered.get_or_insert(e);
        }
    }
    producer.close().await;
    read?;
    if let Some(e) = undelivered {
        return Err(e).context("record not delivered");
    }
    if format == Format::Json {
        output::json(&json!({ "topic": args.topic, "produced": produced }));
    }
    Ok(())
}

/// Sends each input line (bytes, without its `\n`) as a record.
async fn send_lines(
    producer: &Producer,
    args: &ProduceArgs,
    mut reader: Box<dyn BufRead>,
    deliveries: &mut Vec<streambus_client::DeliveryFuture>,
    produced: &mut u64,
) -> anyhow::Result<()> {
    let mut line = Vec::new();
    for number in 1u64.. {
        line.clear();
        // Reading stdin may block indefinitely (a terminal): off the async worker's hands.
        let read = tokio::task::block_in_place(|| reader.read_until(b'\n', &mut line));
        if read.context("reading input")? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let (key, value) = match &args.key_separator {
            Some(separator) => match find(&line, separator.as_bytes()) {
                Some(at) => (
                    Some(Bytes::copy_from_slice(&line[..at])),
                    Bytes::copy_from_slice(&line[at + separator.len()..]),
                ),
                None => bail!("line {number}: no key separator {separator:?} found"),
            },
            None => (None, Bytes::copy_from_slice(&line)),
        };
        let mut record = ProducerRecord::new(&args.topic, value);
        record.key = key;
        record.partition = args.partition;
        for (k, v) in &args.headers {
            record = record.with_header(k.clone(), v.clone());
        }
        deliveries.push(producer.send(record).await?);
        *produced += 1;
        // Completed deliveries are checked as we go, so memory stays bounded on long inputs.
        if deliveries.len() >= 10_000 {
            for delivery in deliveries.drain(..) {
                delivery.await.context("record not delivered")?;
            }
        }
    }
    Ok(())
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub async fn consume(client: Client, format: Format, args: ConsumeArgs) -> anyhow::Result<()> {
    let reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            auto_offset_reset: reset,
            ..ConsumerConfig::default()
        },
    );
    let all = consumer.assign_topic(&args.topic).await?;
    if let Some(partition) = args.partition {
        let tp = TopicPartition::new(&args.topic, partition);
        if !all.contains(&tp) {
            bail!("unknown topic or partition: {tp}");
        }
        consumer.assign([tp]);
    }
    if let Some(offset) = &args.offset {
        for tp in consumer.assignment() {
            match offset.as_str() {
                "earliest" => consumer.seek_to_beginning(&tp)?,
                "latest" => consumer.seek_to_end(&tp)?,
                number => {
                    let Some(_) = args.partition else {
                        bail!("--offset {number} needs --partition");
                    };
                    let offset: i64 = number
                        .parse()
                        .with_context(|| format!("invalid --offset {number:?}"))?;
                    consumer.seek(&tp, offset)?;
                }
            }
        }
    } else if args.from_beginning {
        for tp in consumer.assignment() {
            consumer.seek_to_beginning(&tp)?;
        }
    }
    let template = args.format.as_deref().unwrap_or("%v");
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if idle.is_some_and(|idle| last_record.elapsed() >= idle) {
            break;
        }
        let wait = idle.map_or(Duration::from_secs(1), |idle| {
            idle.saturating_sub(last_record.elapsed())
                .min(Duration::from_secs(1))
        });
        let records = tokio::select! {
            records = consumer.poll(wait) => records?,
            _ = tokio::signal::ctrl_c() => break,
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        // A slow reader of stdout blocks these writes: off the async worker's hands.
        let written = tokio::task::block_in_place(|| {
            let mut out = stdout.lock();
            for record in records {
                if args.max_messages.is_some_and(|max| printed >= max) {
                    break;
                }
                match format {
                    Format::Json => writeln!(out, "{}", record_json(&record))?,
                    Format::Table => out.write_all(&render(template, &record))?,
                }
                printed += 1;
            }
            out.flush()
        });
        if let Err(e) = written {
            output::exit_on_closed_pipe(&e);
            return Err(e).context("writing to stdout");
        }
    }
    eprintln!("Processed a total of {printed} messages");
    Ok(())
}

fn text(bytes: &Option<Bytes>) -> Option<String> {
    bytes
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn record_json(record: &ConsumerRecord) -> serde_json::Value {
    json!({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": text(&record.key),
        "value": text(&record.value),
        "headers": record.headers.iter().map(|h| json!({ "key": h.key, "value": text(&h.value) })).collect::<Vec<_>>(),
    })
}

/// Expands the `--format` template; keys and values are written as raw bytes.
fn render(template: &str, record: &ConsumerRecord) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.extend_from_slice(record.topic.as_bytes()),
                Some('p') => out.extend_from_slice(record.partition.to_string().as_bytes()),
                Some('o') => out.extend_from_slice(record.offset.to_string().as_bytes()),
                Some('T') => out.extend_from_slice(record.timestamp_ms.to_string().as_bytes()),
                Some('k') => out.extend_from_slice(record.key.as_deref().unwrap_or_default()),
                Some('v') => out.extend_from_slice(record.value.as_deref().unwrap_or_default()),
                Some('h') => {
                    let headers: Vec<String> = record
                        .headers
                        .iter()
                        .map(|h| format!("{}={}", h.key, text(&h.value).unwrap_or_default()))
                        .collect();
                    out.extend_from_slice(headers.join(",").as_bytes());
                }
                Some('%') => out.push(b'%'),
                Some(other) => {
                    out.push(b'%');
                    out.extend_from_slice(other.to_string().as_bytes());
                }
                None => out.push(b'%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some(other) => {
                    out.push(b'\\');
                    out.extend_from_slice(other.to_string().as_bytes());
                }
                None => out.push(b'\\'),
            },
            c => out.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    if !template.ends_with("\\n") {
        out.push(b'\n');
    }
    out
}
