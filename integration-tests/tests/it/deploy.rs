//! `deploy/local-cluster.sh`, the 3-broker launcher: `start` brings up brokers that form one
//! metadata quorum and prints the bootstrap list, `status` reports them, `stop` ends exactly the
//! processes it started; the example 3-node configs load.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::MetadataRequest;
use streambus_integration_tests::{run_with_timeout, streambus_bin, KafkaConn, Output};

/// The script itself waits at most 90 s for the brokers to register.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The script waits 30 s after SIGTERM before it SIGKILLs.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Registration is in the metadata log before `start` returns, but each broker learns of the
/// others only when its own copy of the log catches up.
const METADATA_WAIT: Duration = Duration::from_secs(30);
const METADATA_ATTEMPTS: usize = 60;
const METADATA_RETRY: Duration = Duration::from_millis(500);

/// The launcher's ports for broker 1 (Kafka, raft, admin, HTTP); broker i adds 100*(i-1).
const BASE_PORTS: [u16; 4] = [9092, 9093, 9094, 9644];
const BROKERS: u16 = 3;
const OFFSET_ATTEMPTS: u32 = 50;

fn script() -> PathBuf {
    streambus_integration_tests::manifest_dir().join("../deploy/local-cluster.sh")
}

fn kafka_port(offset: u16, broker: u16) -> u16 {
    BASE_PORTS[0] + 100 * (broker - 1) + offset
}

/// A port offset at which all twelve ports of the cluster can be bound right now. The ports are
/// released before the brokers bind them; if something takes one in between, `start` fails and
/// says which broker could not start, it does not hang.
fn free_offset() -> u16 {
    // Offsets in 10000..22900 keep every port (at most 9844 + offset) below 32768, where Linux
    // starts handing out ephemeral ports: the other tests' port-0 listeners cannot collide with
    // them. Time and pid pick the first candidate, so concurrent runs try different ones.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos())
        ^ std::process::id();
    for attempt in 0..OFFSET_ATTEMPTS {
        let offset = 10_000 + (seed.wrapping_add(attempt.wrapping_mul(7_919)) % 12_900) as u16;
        let bound: Result<Vec<TcpListener>, _> = BASE_PORTS
            .iter()
            .flat_map(|base| (0..BROKERS).map(move |i| base + 100 * i + offset))
            .map(|port| TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if bound.is_ok() {
            return offset;
        }
    }
    panic!("no port offset with 12 free ports in {OFFSET_ATTEMPTS} attempts");
}

/// One cluster directory and port offset. Dropping it before [`LocalCluster::stop`] succeeded (a
/// failed assertion) stops the brokers: they run detached and would otherwise outlive the test.
#[derive(Debug)]
struct LocalCluster {
    dir: tempfile::TempDir,
    offset: u16,
    stopped: bool,
}

impl LocalCluster {
    fn new() -> LocalCluster {
        LocalCluster {
            dir: tempfile::tempdir().expect("tempdir"),
            offset: free_offset(),
            stopped: true,
        }
    }

    fn run(&self, subcommand: &str, timeout: Duration) -> Output {
        self.try_run(subcommand, timeout)
            .unwrap_or_else(|e| panic!("local-cluster.sh {subcommand}: {e:#}"))
    }

    fn try_run(&self, subcommand: &str, timeout: Duration) -> anyhow::Result<Output> {
        let mut command = Command::new(script());
        command.arg(subcommand);
        // The developer's own STREAMBUS_* settings (a cluster dir, broker args) must not leak
        // into the test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STREAMBUS_") {
                command.env_remove(name);
            }
        }
        command
            .env("STREAMBUS_BIN", streambus_bin()?)
            .env("STREAMBUS_CLUSTER_DIR", self.dir.path())
            .env("STREAMBUS_CLUSTER_PORT_OFFSET", self.offset.to_string());
        run_with_timeout(command, timeout)
    }

    fn start(&mut self) -> Output {
        // Set first: a `start` that fails midway may have left brokers running.
        self.stopped = false;
        self.run("start", START_TIMEOUT)
    }

    fn stop(&mut self) -> Output {
        let output = self.run("stop", STOP_TIMEOUT);
        if output.status.success() {
            self.stopped = true;
        }
        output
    }

    fn bootstrap(&self) -> String {
        (1..=BROKERS)
            .map(|broker| format!("127.0.0.1:{}", kafka_port(self.offset, broker)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // No panic here: this runs while a failed assertion unwinds.
        match self.try_run("stop", STOP_TIMEOUT) {
            Ok(output) => eprintln!(
                "stopped the cluster after a failure:\n{}{}",
                output.stdout, output.stderr
            ),
            Err(error) => eprintln!("could not stop the cluster after a failure: {error:#}"),
        }
    }
}

fn describe(output: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        output.status, output.stdout, output.stderr
    )
}

/// The `pid=N` fields of `status` output.
fn pids(status: &str) -> Vec<u32> {
    status
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("pid="))
                .and_then(|pid| pid.parse().ok())
        })
        .collect()
}

/// Whether `pid` is a live process (a zombie, whose command line is empty, is not).
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| !cmdline.is_empty())
}

/// (node id, host, port) of every broker in a Metadata response from `addr`, once all
/// `BROKERS` are there; the last attempt's answer or error when they never are.
fn brokers_seen_by(addr: SocketAddr) -> Result<Vec<(i32, String, i32)>, String> {
    let deadline = Instant::now() + METADATA_WAIT;
    let mut last = String::from("no attempt");
    for _ in 0..METADATA_ATTEMPTS {
        // An empty topic list asks for brokers only, so nothing is auto-created.
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        match KafkaConn::connect(addr).and_then(|mut conn| conn.send(&request, 12)) {
            Ok(response) => {
                let mut brokers: Vec<(i32, String, i32)> = response
                    .brokers
                    .iter()
                    .map(|b| (b.node_id.0, b.host.to_string(), b.port))
                    .collect();
                brokers.sort();
                if brokers.len() == usize::from(BROKERS) {
                    return Ok(brokers);
                }
                last = format!("brokers {brokers:?}");
            }
            Err(error) => last = format!("{error:#}"),
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(METADATA_RETRY);
    }
    Err(last)
}

#[test]
fn the_local_cluster_script_starts_three_brokers_that_know_each_other_and_stops_them() {
    let mut cluster = LocalCluster::new();

    let started = cluster.start();
    assert!(started.status.success(), "start: {}", describe(&started));
    assert_eq!(
        started.stdout.lines().last(),
        Some(cluster.bootstrap().as_str()),
        "the last line is the bootstrap list: {}",
        describe(&started)
    );

    let status = cluster.run("status", STATUS_TIMEOUT);
    assert_eq!(
        status.status.code(),
        Some(0),
        "status: {}",
        describe(&status)
    );
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "one line per broker: {}", describe(&status));
    assert!(
        lines.iter().all(|line| line.contains("state=running")),
        "all running: {}",
        describe(&status)
    );
    let broker_pids = pids(&status.stdout);
    assert_eq!(broker_pids.len(), 3, "three pids: {}", describe(&status));
    // Each broker's HTTP listener, as `status` names it, reports it ready.
    for line in &lines {
        let http: SocketAddr = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("http="))
            .unwrap_or_else(|| panic!("no http= in {line}"))
            .parse()
            .expect("an address");
        let deadline = Instant::now() + METADATA_WAIT;
        // One request per pass, until the deadline.
        loop {
            let last = match streambus_integration_tests::http::get(http, "/readyz") {
                Ok((200, _)) => break,
                Ok((code, body)) => format!("{code} {body}"),
                Err(error) => format!("{error:#}"),
            };
            assert!(Instant::now() < deadline, "{http} never ready: {last}");
            thread::sleep(Duration::from_millis(200));
        }
    }

    // Registration proves each broker reached the quorum; the Metadata answer proves the
    // registrations are one shared log with the endpoints the launcher assigned.
    let first = SocketAddr::from(([127, 0, 0, 1], kafka_port(cluster.offset, 1)));
    let brokers = brokers_seen_by(first).unwrap_or_else(|last| {
        panic!("broker 1 never listed 3 brokers within {METADATA_WAIT:?}; last: {last}")
    });
    let expected: Vec<(i32, String, i32)> = (1..=BROKERS)
        .map(|id| {
            (
                i32::from(id),
                "127.0.0.1".to_owned(),
                i32::from(kafka_port(cluster.offset, id)),
            )
        })
        .collect();
    assert_eq!(brokers, expected);
    // One new cluster id, recorded in every broker's data directory.
    let ids: Vec<String> = (1..=BROKERS)
        .map(|id| {
            let path = cluster
                .dir
                .path()
                .join(format!("broker-{id}/data/meta.properties"));
            let text = std::fs::read_to_string(&path).expect("meta.properties written");
            text.lines()
                .find_map(|line| line.strip_prefix("cluster.id="))
                .expect("a cluster.id line")
                .to_owned()
        })
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.len() == 22),
        "{ids:?}"
    );

    let stopped = cluster.stop();
    assert!(stopped.status.success(), "stop: {}", describe(&stopped));
    for pid in broker_pids {
        assert!(!alive(pid), "broker pid {pid} still running after stop");
    }

    let status = cluster.run("status", STATUS_TIMEOUT);
    assert_eq!(
        status.status.code(),
        Some(3),
        "status: {}",
        describe(&status)
    );
    assert_eq!(
        status
            .stdout
            .lines()
            .filter(|line| line.contains("state=stopped"))
            .count(),
        3,
        "all stopped: {}",
        describe(&status)
    );
}

#[test]
fn the_example_three_node_configs_are_accepted_by_the_broker() {
    for id in 1..=3 {
        let path = streambus_integration_tests::manifest_dir()
            .join(format!("../deploy/config/broker-{id}.toml"));
        let output = streambus_integration_tests::run_streambus(&[
            "--config",
            path.to_str().expect("utf-8 path"),
            "--print-config",
        ])
        .expect("runs");
        assert!(
            output.status.success(),
            "broker-{id}.toml refused: {}",
            output.stderr
        );
        assert!(
            output.stdout.contains(&format!("node_id = {id}")),
            "{}",
            output.stdout
        );
    }
}
