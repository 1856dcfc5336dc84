//! [`Cluster`]: several `streambus` processes on loopback forming one cluster, each on ports
//! fixed for the test's life (so a restarted broker is found where it was), with the faults a
//! test injects: SIGKILL, SIGTERM, SIGSTOP/SIGCONT, restart. Also the Metadata look-ups a
//! fault test needs (who leads a partition, its ISR, the controller). Each cluster gets a new
//! cluster id (`streambus --new-cluster-id`), as an operator formatting one would.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::{new_cluster_id, BrokerProcess, KafkaConn};

const STARTUP: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// One member of a [`Cluster`].
#[derive(Debug)]
pub struct Member {
    pub id: i32,
    pub kafka_addr: SocketAddr,
    /// The raft listener, which the other members know it by.
    pub raft_addr: SocketAddr,
    /// The HTTP listener (`/metrics`, health).
    pub http_addr: SocketAddr,
    /// The admin gRPC listener.
    pub admin_addr: SocketAddr,
    args: Vec<String>,
    /// Environment variables set for this member's process (e.g. `FAILPOINTS`).
    env: Vec<(String, String)>,
    pub process: Option<BrokerProcess>,
    /// SIGSTOPped: its sockets still accept connections but nothing answers.
    pub paused: bool,
}

/// A partition as a Metadata response describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Brokers `1..=n` on loopback; the first `voters` of them are the metadata quorum's voters,
/// the others join it as learners.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Given to every member with `--cluster-id`.
    pub cluster_id: String,
    pub members: Vec<Member>,
}

/// Broker flags for fault tests: short sessions and lag bounds, so faults are noticed in
/// seconds rather than Kafka's defaults.
pub const FAST_FAILOVER: &[&str] = &[
    "--set",
    "metadata.broker_session_timeout_ms=2000",
    "--set",
    "metadata.broker_heartbeat_interval_ms=400",
    "--set",
    "replication.lag_time_max_ms=5000",
    "--set",
    "replication.fetch_backoff_ms=200",
];

/// Free loopback ports for brokers to bind later, taken outside the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): every broker also binds listeners on port 0, which the
/// kernel serves from that range, and a port picked there could be handed to one of them
/// before the broker it was picked for binds it. Each candidate is checked by binding it; all
/// are held until the last is found, so one call never returns a port twice. Another test
/// could still take one in between: the broker then fails to start and says so.
pub fn free_ports(count: usize) -> Vec<u16> {
    let (low, high) = below_ephemeral_range();
    let mut state = seed();
    let mut held: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    // Bounded: a crowded range falls back to the kernel's choice.
    for _ in 0..count.saturating_mul(200) {
        if held.len() == count {
            break;
        }
        // xorshift64: a new candidate each pass.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let span = u64::from(high - low);
        let port = low + u16::try_from(state % span).unwrap_or(0);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    while held.len() < count {
        held.push(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"));
    }
    held.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// `[low, high)` for test ports: 10000–19000, below both the kernel's ephemeral range (32768 by
/// default) and the 19092+ ports `deploy.rs`'s local cluster picks from; above the ephemeral
/// range if it starts that low.
fn below_ephemeral_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low >= 19_000 {
        (10_000, 19_000)
    } else {
        (61_000, 65_000)
    }
}

/// A per-process, per-call seed (time and pid), never zero.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

impl Cluster {
    /// Starts `n` brokers with `extra` arguments each and waits until all are active (registered, serving their partitions).
    pub fn start(n: usize, voters: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        Cluster::start_full(n, voters, &[], extra, &[])
    }

    /// [`Cluster::start`], with `(broker id, name, value)` environment variables for some
    /// members (kept for their restarts), e.g. `FAILPOINTS` for one broker.
    pub fn start_with_env(
        n: usize,
        voters: usize,
        extra: &[&str],
        env: &[(i32, &str, &str)],
    ) -> anyhow::Result<Cluster> {
        Cluster::start_full(n, voters, &[], extra, env)
    }

    /// [`Cluster::start`] with more voters in `metadata.quorum_voters` than the cluster starts:
    /// `foreign` `(node id, raft address)` entries that lead elsewhere (e.g. to a broker of
    /// another cluster), as a stale or mistyped address would.
    pub fn start_with_voters(
        n: usize,
        voters: usize,
        foreign: &[(i32, SocketAddr)],
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        Cluster::start_full(n, voters, foreign, extra, &[])
    }

    fn start_full(
        n: usize,
        voters: usize,
        foreign: &[(i32, SocketAddr)],
        extra: &[&str],
        env: &[(i32, &str, &str)],
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let cluster_id = new_cluster_id()?;
        // One call: ports released between two calls could be handed out twice.
        let all_ports = free_ports(4 * n);
        let (ports, rest) = all_ports.split_at(2 * n);
        let (http_ports, admin_ports) = rest.split_at(n);
        let voter_list = (0..voters.min(n))
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, ports[2 * i + 1]))
            .chain(foreign.iter().map(|(id, addr)| format!("{id}@{addr}")))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let id = i32::try_from(i + 1)?;
            let data_dir = dir.path().join(format!("broker-{id}"));
            let mut args: Vec<String> = [
                "--node-id",
                &id.to_string(),
                "--cluster-id",
                &cluster_id,
                "--data-dir",
                data_dir.to_str().context("utf-8 path")?,
                "--kafka-listener",
                &format!("127.0.0.1:{}", ports[2 * i]),
                "--raft-listener",
                &format!("127.0.0.1:{}", ports[2 * i + 1]),
                "--admin-listener",
                &format!("127.0.0.1:{}", admin_ports[i]),
                "--http-listener",
                &format!("127.0.0.1:{}", http_ports[i]),
                "--set",
                &format!("metadata.quorum_voters={voter_list}"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let env = env
                .iter()
                .filter(|(member, _, _)| *member == id)
                .map(|(_, name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect();
            members.push(Member {
                id,
                kafka_addr: format!("127.0.0.1:{}", ports[2 * i]).parse()?,
                raft_addr: format!("127.0.0.1:{}", ports[2 * i + 1]).parse()?,
                http_addr: format!("127.0.0.1:{}", http_ports[i]).parse()?,
                admin_addr: format!("127.0.0.1:{}", admin_ports[i]).parse()?,
                args,
                env,
                process: None,
                paused: false,
            });
        }
        let mut cluster = Cluster {
            dir,
            cluster_id,
            members,
        };
        for member in &mut cluster.members {
            let args: Vec<&str> = member.args.iter().map(String::as_str).collect();
            member.process = Some(BrokerProcess::start_with_env(&args, &member.env)?);
        }
        for id in 1..=n {
            cluster.wait_active(i32::try_from(id)?, 0)?;
        }
        Ok(cluster)
    }

    pub fn member(&self, id: i32) -> &Member {
        &self.members[usize::try_from(id - 1).expect("ids start at 1")]
    }

    fn member_mut(&mut self, id: i32) -> &mut Member {
        &mut self.members[usize::try_from(id - 1).expect("ids start at 1")]
    }

    /// `host:port,...` of every member.
    pub fn bootstrap(&self) -> String {
        self.members
            .iter()
            .map(|m| m.kafka_addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits for the `nth` "broker active" line of broker `id` (0 for the first start).
    pub fn wait_active(&mut self, id: i32, nth: usize) -> anyhow::Result<()> {
        let process = self
            .member_mut(id)
            .process
            .as_mut()
            .context("broker not running")?;
        process.wait_for_log("broker active", nth, STARTUP)?;
        Ok(())
    }

    /// SIGKILL of broker `id`.
    pub fn kill(&mut self, id: i32) {
        self.member_mut(id).paused = false;
        if let Some(process) = self.member_mut(id).process.take() {
            process.kill();
        }
    }

    /// SIGTERM of broker `id`, asserting a clean exit.
    pub fn stop(&mut self, id: i32) -> anyhow::Result<()> {
        if let Some(process) = self.member_mut(id).process.take() {
            let status = process.terminate(Duration::from_secs(60))?;
            if !status.success() {
                bail!("broker {id} exited with {status} on SIGTERM");
            }
        }
        Ok(())
    }

    /// Starts broker `id` again on its data directory and ports; waits until it is active.
    pub fn restart(&mut self, id: i32) -> anyhow::Result<()> {
        self.launch(id)?;
        self.wait_active(id, 0)
    }

    /// Starts broker `id` again without waiting for it: a whole cluster restarts by launching
    /// every member, then waiting for each (alone, none would find a quorum).
    pub fn launch(&mut self, id: i32) -> anyhow::Result<()> {
        let member = self.member_mut(id);
        if member.process.is_some() {
            bail!("broker {id} is running");
        }
        let args: Vec<&str> = member.args.iter().map(String::as_str).collect();
        member.process = Some(BrokerProcess::start_with_env(&args, &member.env)?);
        Ok(())
    }

    /// Sends `signal` to broker `id` (`STOP`, `CONT`); a stopped broker is skipped by
    /// [`Cluster::connect_any`].
    pub fn signal(&mut self, id: i32, signal: &str) -> anyhow::Result<()> {
        let member = self.member_mut(id);
        member
            .process
            .as_ref()
            .context("broker not running")?
            .signal(signal)?;
        match signal {
            "STOP" => member.paused = true,
            "CONT" => member.paused = false,
            _ => {}
        }
        Ok(())
    }

    pub fn is_running(&self, id: i32) -> bool {
        self.member(id).process.is_some()
    }

    /// The members whose process has exited on its own, with how.
    pub fn exited(&mut self) -> anyhow::Result<Vec<(i32, String)>> {
        let mut exited = Vec::new();
        for member in &mut self.members {
            if let Some(process) = member.process.as_mut() {
                if let Some(status) = process.exit_status()? {
                    exited.push((member.id, status.to_string()));
                }
            }
        }
        Ok(exited)
    }

    /// Waits up to `timeout` for a log line of broker `id` containing `needle`.
    pub fn wait_for_log(
        &mut self,
        id: i32,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.member_mut(id)
            .process
            .as_mut()
            .context("broker not running")?
            .wait_for_log(needle, 0, timeout)
    }

    /// The log of broker `id` so far.
    pub fn log_text(&self, id: i32) -> String {
        self.member(id)
            .process
            .as_ref()
            .map(BrokerProcess::log_text)
            .unwrap_or_default()
    }

    /// The last `lines` log lines of every running broker, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for member in &self.members {
            let text = self.log_text(member.id);
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- broker {} (last {lines} lines)\n", member.id));
            out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// A connection to some running broker, trying each.
    pub fn connect_any(&self) -> anyhow::Result<KafkaConn> {
        for member in self
            .members
            .iter()
            .filter(|m| m.process.is_some() && !m.paused)
        {
            if let Ok(conn) = KafkaConn::connect(member.kafka_addr) {
                return Ok(conn);
            }
        }
        bail!("no broker reachable")
    }

    /// Partition `partition` of `topic` and the controller id, as a running broker sees them.
    pub fn describe(&self, topic: &str, partition: i32) -> anyhow::Result<(PartitionView, i32)> {
        let mut conn = self.connect_any()?;
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_owned())),
            ))]))
            .with_allow_auto_topic_creation(false);
        let response = conn.send(&request, 12)?;
        let topic = response
            .topics
            .first()
            .context("no topic in the response")?;
        let p = topic
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)
            .with_context(|| format!("no partition {partition} (error {})", topic.error_code))?;
        Ok((
            PartitionView {
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            },
            response.controller_id.0,
        ))
    }

    /// Polls [`Cluster::describe`] until `done` holds (at most `timeout`).
    pub fn wait_for(
        &self,
        topic: &str,
        partition: i32,
        timeout: Duration,
        what: &str,
        done: impl Fn(&PartitionView) -> bool,
    ) -> anyhow::Result<PartitionView> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok((view, _)) = self.describe(topic, partition) {
                if done(&view) {
                    return Ok(view);
                }
                last = Some(view);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not reached after {timeout:?}, last seen {last:?}\n{}",
                    self.logs_tail(40)
                );
            }
            thread::sleep(POLL);
        }
    }
}
