//! A minimal blocking Kafka client over `std::net::TcpStream`, built on kafka-protocol's codecs,
//! for tests that need exact control of requests (versions, raw bytes, sequence numbers), and
//! [`DevBroker`]: a `streambus --dev` process on free ports with its Kafka address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::BrokerProcess;

/// Socket timeouts of test connections: a broker that never answers fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
const STARTUP: Duration = Duration::from_secs(60);

/// One connection to a broker.
#[derive(Debug)]
pub struct KafkaConn {
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaConn {
    pub fn connect(addr: SocketAddr) -> anyhow::Result<KafkaConn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(KafkaConn {
            stream,
            correlation_id: 0,
        })
    }

    /// Sends `request` at `version` and returns the decoded response.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        let correlation_id = self.send_only(request, version)?;
        self.receive::<R>(version, correlation_id)
    }

    /// Sends without reading a response (Produce with acks=0, pipelining); returns the
    /// correlation id.
    pub fn send_only<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<i32> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("streambus-it")));
        let mut body = BytesMut::new();
        header.encode(&mut body, R::header_version(version))?;
        request.encode(&mut body, version)?;
        self.write_frame(&body)?;
        Ok(self.correlation_id)
    }

    /// Reads the response to `correlation_id`.
    pub fn receive<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> anyhow::Result<R::Response> {
        let mut frame = self.read_frame()?;
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )?;
        if header.correlation_id != correlation_id {
            bail!(
                "correlation id {} answered, {correlation_id} expected",
                header.correlation_id
            );
        }
        let response = R::Response::decode(&mut frame, version)?;
        Ok(response)
    }

    /// Writes `body` with its length prefix.
    pub fn write_frame(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.write_raw(&frame)
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads one length-prefixed frame.
    pub fn read_frame(&mut self) -> anyhow::Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("reading a frame length")?;
        let len = i32::from_be_bytes(len);
        if !(0..=256 * 1024 * 1024).contains(&len) {
            bail!("absurd response length {len}");
        }
        let mut body = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut body)
            .context("reading a frame")?;
        Ok(Bytes::from(body))
    }

    /// Whether the broker closed the connection: a read returns end-of-file (or a reset)
    /// within the I/O timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// Reads the i16 error code at the start of a buffer (for raw checks).
pub fn peek_i16(mut bytes: &[u8]) -> i16 {
    bytes.get_i16()
}

/// A `streambus --dev` process with its data in a temporary directory (kept across
/// [`DevBroker::restart`]) and every listener on a free port.
#[derive(Debug)]
pub struct DevBroker {
    pub process: Option<BrokerProcess>,
    pub kafka_addr: SocketAddr,
    /// The HTTP listener (`/metrics`, health), from the start line.
    pub http_addr: SocketAddr,
    /// The admin gRPC listener, from the start line.
    pub admin_addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl DevBroker {
    /// Starts a broker; `extra` are more command-line arguments (e.g. `--set k=v`).
    pub fn start(extra: &[&str]) -> anyhow::Result<DevBroker> {
        let data_dir = tempfile::tempdir()?;
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let (process, [kafka_addr, http_addr, admin_addr]) =
            launch(data_dir.path().to_str().context("utf-8 path")?, &extra)?;
        Ok(DevBroker {
            process: Some(process),
            kafka_addr,
            http_addr,
            admin_addr,
            data_dir,
            extra,
        })
    }

    /// `host:port` of the Kafka listener.
    pub fn bootstrap(&self) -> String {
        self.kafka_addr.to_string()
    }

    pub fn connect(&self) -> anyhow::Result<KafkaConn> {
        KafkaConn::connect(self.kafka_addr)
    }

    /// Stops the broker with SIGTERM (asserting a clean exit) and starts it again on the same
    /// data directory (the Kafka port changes).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(process) = self.process.take() {
            let status = process.terminate(Duration::from_secs(60))?;
            if !status.success() {
                bail!("broker exited with {status} on SIGTERM");
            }
        }
        let (process, [kafka_addr, http_addr, admin_addr]) = launch(
            self.data_dir.path().to_str().context("utf-8 path")?,
            &self.extra,
        )?;
        self.process = Some(process);
        self.kafka_addr = kafka_addr;
        self.http_addr = http_addr;
        self.admin_addr = admin_addr;
        Ok(())
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        self.process
            .as_ref()
            .map(BrokerProcess::log_text)
            .unwrap_or_default()
    }
}

/// Arguments of a `--dev` broker in `data_dir` with every listener on a free port (tests run in
/// parallel and must not collide on fixed ports).
pub fn dev_args(data_dir: &str) -> Vec<&str> {
    vec![
        "--dev",
        "--data-dir",
        data_dir,
        "--kafka-listener",
        "127.0.0.1:0",
        "--raft-listener",
        "127.0.0.1:0",
        "--admin-listener",
        "127.0.0.1:0",
        "--http-listener",
        "127.0.0.1:0",
    ]
}

/// Starts a dev broker; returns it with its Kafka, HTTP and admin addresses.
fn launch(data_dir: &str, extra: &[String]) -> anyhow::Result<(BrokerProcess, [SocketAddr; 3])> {
    let mut args = dev_args(data_dir);
    args.extend(extra.iter().map(String::as_str));
    let mut process = BrokerProcess::start(&args)?;
    process.wait_for_log("broker active", 0, STARTUP)?;
    let line = process.wait_for_log("broker started", 0, STARTUP)?;
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        let prefix = format!("{name}=");
        Ok(line
            .split_whitespace()
            .find_map(|field| field.strip_prefix(prefix.as_str()))
            .with_context(|| format!("no {name} in the start line"))?
            .parse()?)
    };
    let addrs = [
        field("kafka_listener")?,
        field("http_listener")?,
        field("admin_listener")?,
    ];
    Ok((process, addrs))
}

/// A wire topic name.
pub fn topic_name(topic: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(StrBytes::from_string(topic.to_owned()))
}

/// One v2 batch of `values` without a producer id (not idempotent), uncompressed, record `i` at
/// timestamp `1000 + i`.
pub fn plain_batch(values: &[Vec<u8>]) -> Bytes {
    use kafka_protocol::records::Compression;
    use streambus_storage::batch::testing::{batch_values, Producer};
    batch_values(values, 1_000, Producer::NONE, Compression::None)
}

/// Produces `records` to one partition with `acks`; returns the partition's error code and
/// base offset.
pub fn produce_to(
    conn: &mut KafkaConn,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> anyhow::Result<(i16, i64)> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let request = kafka_protocol::messages::ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let response = conn.send(&request, 9)?;
    let p = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("empty produce response")?;
    Ok((p.error_code, p.base_offset))
}

/// Every record of one partition from `offset` up to the high watermark (bounded), as
/// `(offset, value)`; the partition's error code if a fetch fails.
pub fn fetch_values(
    conn: &mut KafkaConn,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Result<Vec<(i64, Bytes)>, i16>> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::records::RecordBatchDecoder;
    let mut out = Vec::new();
    let mut next = offset;
    for _ in 0..100_000 {
        let request = kafka_protocol::messages::FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(4 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(4 << 20)])]);
        let response = conn.send(&request, 12)?;
        let p = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .context("empty fetch response")?;
        if p.error_code != 0 {
            return Ok(Err(p.error_code));
        }
        let mut records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            break;
        }
        for set in RecordBatchDecoder::decode_all(&mut records)? {
            for record in set.records {
                next = record.offset + 1;
                out.push((record.offset, record.value.unwrap_or_default()));
            }
        }
        if next >= p.high_watermark {
            break;
        }
    }
    Ok(Ok(out))
}
