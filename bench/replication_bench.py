#!/usr/bin/env python3
"""Replication benchmark of StreamBus on loopback, driven by confluent-kafka (librdkafka).

The script starts and stops its own broker processes and measures, in one run:

  * acks=1 on ONE broker (the baseline): a `streambus --dev` broker, a 1-partition topic,
    `--records` values of `--record-bytes` bytes (acks=1, linger.ms=5, batch.size=1,000,000, no
    compression, no idempotence);
  * acks=all on a 3-broker cluster: a 1-partition topic with replication factor 3 and
    min.insync.replicas=2, once its ISR holds all three brokers; the same records with acks=all,
    and the ratio to the baseline;
  * failover time: on the same cluster (default settings, so the default broker session
    timeout), an idempotent acks=all producer sends one record at a time; the partition's leader
    is SIGKILLed, and the figure is the time from the kill to the delivery of the first record
    produced after it. `--failover-rounds N` repeats it, restarting the killed broker and waiting
    for the full ISR between rounds, and reports the median.

Run it with the project venv's interpreter:

    ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python bench/replication_bench.py \\
        --broker-bin $HOME/.cache/streambus-target/release/streambus

MB means 10^6 bytes of record values. Progress goes to stderr; the table goes to stdout, or,
with --json, the JSON document goes to stdout and the table to stderr. The cluster brokers log
to files in the run's temporary directory, which is kept (without the brokers' data) when the
run fails.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

# The helpers (logging, deadlines, the --dev broker, client configuration, the acks=1 produce
# loop, machine info) are kafka_bench.py's; importing it has no side effects.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no bench/__pycache__ in the checkout
import kafka_bench as kb  # noqa: E402  (exits with a clear message if confluent-kafka is missing)
from kafka_bench import BenchError, Deadline, log  # noqa: E402

from confluent_kafka import KafkaException, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

CLUSTER_IDS = (1, 2, 3)
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
STOP_TIMEOUT_S = 30
FAILOVER_MESSAGE_TIMEOUT_MS = 120_000
# The broker default of metadata.broker_session_timeout_ms (broker/src/quorum.rs); the cluster
# runs without overrides, so this is the session timeout in effect. Reported, not enforced.
DEFAULT_SESSION_TIMEOUT_MS = 9_000


def free_ports(count):
    """Free loopback ports, found by binding port 0 and releasing them all at once (so they are
    distinct); another process could take one in between, and that broker then fails to start
    and says so in its log."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------------------------
# The 3-broker cluster


class Member:
    """One cluster broker on fixed loopback ports (so a restart finds it where it was). Its
    stdout and stderr are appended to `<workdir>/broker-<id>.log`."""

    def __init__(self, binary, workdir, node_id, kafka_port, raft_port, voters, cluster_id):
        self.id = node_id
        self.name = "broker-%d" % node_id
        self.data_dir = os.path.join(workdir, self.name)
        self.log_path = os.path.join(workdir, self.name + ".log")
        self.kafka_addr = "127.0.0.1:%d" % kafka_port
        self.cmd = [
            binary,
            "--node-id", str(node_id),
            "--cluster-id", cluster_id,
            "--data-dir", self.data_dir,
            "--kafka-listener", self.kafka_addr,
            "--raft-listener", "127.0.0.1:%d" % raft_port,
            "--admin-listener", "127.0.0.1:0",
            "--http-listener", "127.0.0.1:0",
            "--set", "metadata.quorum_voters=" + voters,
        ]
        self.proc = None
        self.starts = 0
        self.log_offset = 0  # where the current start's output begins in the log file

    def start(self):
        if self.running():
            raise BenchError("%s is already running (pid %d)" % (self.name, self.proc.pid))
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(b"=== replication_bench: start #%d: %s\n" % (self.starts, " ".join(self.cmd).encode()))
            f.flush()
            self.log_offset = f.tell()
            log("starting %s (log %s):" % (self.name, self.log_path), " ".join(self.cmd))
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         start_new_session=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _log_since_start(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return kb.ANSI_RE.sub("", f.read().decode("utf-8", "replace"))
        except OSError:
            return ""

    def wait_ready(self, deadline):
        """Until this start logged 'broker started' and 'broker registered' (joined the metadata
        quorum); fails if the process exits or the deadline passes."""
        while True:
            text = self._log_since_start()
            if "broker started" in text and "broker registered" in text:
                log("%s pid %d ready, kafka listener %s" % (self.name, self.proc.pid, self.kafka_addr))
                return
            if self.proc.poll() is not None:
                raise BenchError("%s exited with status %s before it registered; log %s, last lines:\n%s"
                                 % (self.name, self.proc.returncode, self.log_path, self.log_tail()))
            deadline.check("%s has not logged 'broker started' and 'broker registered'; log %s, "
                           "last lines:\n%s" % (self.name, self.log_path, self.log_tail()))
            time.sleep(0.1)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256 * 1024))
                text = kb.ANSI_RE.sub("", f.read().decode("utf-8", "replace"))
        except OSError as e:
            return "(no log: %s)" % e
        return "\n".join(text.splitlines()[-n:])

    def kill(self):
        """SIGKILL; returns the time.perf_counter() right after the signal was sent."""
        self.proc.kill()
        t = time.perf_counter()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            log("%s pid %d did not die within 10 s of SIGKILL" % (self.name, self.proc.pid))
        return t


class Cluster:
    def __init__(self, binary, workdir):
        self.workdir = workdir
        ports = free_ports(2 * len(CLUSTER_IDS))
        voters = ",".join("%d@127.0.0.1:%d" % (node_id, ports[2 * i + 1])
                          for i, node_id in enumerate(CLUSTER_IDS))
        # A multi-node broker needs a cluster id: a new one per cluster.
        cluster_id = subprocess.run([binary, "--new-cluster-id"], check=True, capture_output=True,
                                    text=True, timeout=30).stdout.strip()
        self.members = [Member(binary, workdir, node_id, ports[2 * i], ports[2 * i + 1], voters,
                               cluster_id)
                        for i, node_id in enumerate(CLUSTER_IDS)]

    def bootstrap(self):
        return ",".join(m.kafka_addr for m in self.members)

    def member(self, node_id):
        for m in self.members:
            if m.id == node_id:
                return m
        raise BenchError("no cluster member with node id %s" % node_id)

    def start(self, timeout_s):
        for m in self.members:  # all first: none registers before the quorum has a majority
            m.start()
        deadline = Deadline(timeout_s, "3-broker cluster start")
        for m in self.members:
            m.wait_ready(deadline)
        return self.bootstrap()

    def stop(self, graceful):
        """SIGTERM to every running member at once and one bounded wait when `graceful`, SIGKILL
        otherwise (and for those SIGTERM did not end). Safe to call more than once."""
        live = [m for m in self.members if m.running()]
        if graceful and live:
            log("stopping the cluster (SIGTERM to %s)" % ", ".join(m.name for m in live))
            for m in live:
                m.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for m in live:
                try:
                    m.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log("%s ignored SIGTERM for %d s; killing it" % (m.name, STOP_TIMEOUT_S))
        for m in live:
            if m.proc.poll() is None:
                m.proc.kill()
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    log("%s pid %d did not die after SIGKILL" % (m.name, m.proc.pid))
            elif graceful and m.proc.returncode != 0:
                log("%s exited with status %s on SIGTERM; last log lines:\n%s"
                    % (m.name, m.proc.returncode, m.log_tail(15)))

    def report_logs(self):
        for m in self.members:
            if m.proc is None:
                continue
            state = "running" if m.proc.poll() is None else "exited with %s" % m.proc.returncode
            log("%s (%s), log %s; last lines:\n%s" % (m.name, state, m.log_path, m.log_tail()))


# --------------------------------------------------------------------------------------------
# Topic metadata


def new_admin(bootstrap):
    return AdminClient(kb.base_conf(bootstrap, kb.ClientErrors(), "streambus-bench-admin"))


def create_replicated_topic(admin, topic, timeout_s):
    new = NewTopic(topic, num_partitions=1, replication_factor=REPLICATION_FACTOR,
                   config={"min.insync.replicas": str(MIN_INSYNC_REPLICAS)})
    futures = admin.create_topics([new], operation_timeout=timeout_s, request_timeout=timeout_s)
    try:
        futures[topic].result(timeout=timeout_s + 10)
    except KafkaException as e:
        raise BenchError("CreateTopics %s (replication factor %d, min.insync.replicas=%d): %s"
                         % (topic, REPLICATION_FACTOR, MIN_INSYNC_REPLICAS, e)) from e
    except Exception as e:  # concurrent.futures.TimeoutError and the like
        raise BenchError("CreateTopics %s: no answer within %.0f s (%s)" % (topic, timeout_s + 10, e)) from e


def partition_state(admin, topic, timeout_s=5.0):
    """Partition 0 of `topic` as one Metadata response has it: a dict with leader, replicas,
    isrs and error, or None if the topic or partition is missing or no broker answered."""
    try:
        md = admin.list_topics(topic=topic, timeout=max(0.5, timeout_s))
    except KafkaException:
        return None
    t = md.topics.get(topic)
    if t is None or t.error is not None or 0 not in t.partitions:
        return None
    p = t.partitions[0]
    return {"leader": p.leader, "replicas": sorted(p.replicas), "isrs": sorted(p.isrs),
            "error": None if p.error is None else str(p.error)}


def wait_partition(admin, topic, what, ok, timeout_s):
    """Polls the metadata of partition 0 until `ok(state)`; logs each new state, and fails with
    the last one seen when `timeout_s` passes."""
    deadline = Deadline(timeout_s, "%s [0] %s" % (topic, what))
    last = "no metadata yet"
    while True:
        state = partition_state(admin, topic, min(5.0, max(0.5, deadline.remaining())))
        if state is not None:
            desc = "leader %(leader)s, replicas %(replicas)s, ISR %(isrs)s, error %(error)s" % state
            if desc != last:
                log("  %s [0]: %s" % (topic, desc))
                last = desc
            if ok(state):
                return state
        deadline.check("last metadata: %s" % last)
        time.sleep(0.2)


def wait_full_isr(admin, topic, timeout_s):
    want = sorted(CLUSTER_IDS)
    return wait_partition(
        admin, topic, "leader and ISR of all %d brokers" % len(want),
        lambda s: s["error"] is None and s["leader"] in want and s["isrs"] == want, timeout_s)


# --------------------------------------------------------------------------------------------
# Failover


def failover_round(cluster, admin, topic, payload, round_no, warmup_s, timeout_s):
    """One round: one record at a time for `warmup_s`, SIGKILL of the leader, then one record at
    a time until one produced after the kill is delivered without error."""
    errors = kb.ClientErrors()
    results = {}
    perf = time.perf_counter
    conf = kb.base_conf(cluster.bootstrap(), errors, "streambus-bench-failover")
    conf.update({
        "acks": "all",
        "linger.ms": 0,
        "enable.idempotence": True,
        "message.timeout.ms": FAILOVER_MESSAGE_TIMEOUT_MS,
        "compression.type": "none",
    })
    p = Producer(conf)
    deadline = Deadline(timeout_s, "failover round %d" % round_no)

    def send_one(seq):
        """Produces record `seq` and serves callbacks until its delivery report; returns
        (error or None, produce() time, delivery time)."""
        t0 = perf()
        p.produce(topic, payload, partition=0,
                  on_delivery=lambda err, _msg, seq=seq: results.__setitem__(seq, (err, perf())))
        while seq not in results:
            p.poll(min(0.5, max(0.01, deadline.remaining())))
            if errors.fatal:
                raise BenchError("failover round %d: fatal producer error: %s" % (round_no, errors.fatal))
            deadline.check("record %d produced %.1f s ago is not delivered yet" % (seq, perf() - t0))
        err, t1 = results[seq]
        return err, t0, t1

    try:
        p.list_topics(topic, timeout=10)
        seq = 0
        before = []
        warm_end = perf() + warmup_s
        while perf() < warm_end or not before:
            seq += 1
            err, t0, t1 = send_one(seq)
            if err is not None:
                raise BenchError("failover round %d: delivery failed before the kill: %s" % (round_no, err))
            before.append(t1 - t0)
        before.sort()

        state = partition_state(admin, topic)
        if state is None or state["leader"] not in CLUSTER_IDS:
            raise BenchError("failover round %d: no leader for %s [0] in the metadata (%s)" % (round_no, topic, state))
        victim = cluster.member(state["leader"])
        if not victim.running():
            raise BenchError("failover round %d: the metadata names %s, which is not running, as leader"
                             % (round_no, victim.name))
        log("round %d: %d records delivered in %.1f s before the kill (p50 %.2f ms); SIGKILL of the "
            "leader %s (pid %d), ISR %s" % (round_no, len(before), warmup_s, kb.percentile(before, 0.5) * 1e3,
                                             victim.name, victim.proc.pid, state["isrs"]))
        t_kill = victim.kill()

        failed = 0
        first_error = None
        attempts = 0
        while True:
            seq += 1
            attempts += 1
            err, t0, t1 = send_one(seq)
            if err is None:
                break
            failed += 1
            first_error = first_error or str(err)
            if failed <= 5:
                log("  round %d: record produced %.2f s after the kill failed: %s" % (round_no, t0 - t_kill, err))
        seconds = t1 - t_kill
        log("round %d: first record produced after the kill delivered %.2f s after the kill "
            "(%d attempt%s)" % (round_no, seconds, attempts, "" if attempts == 1 else "s"))
        after = wait_partition(admin, topic, "a leader other than broker %d" % victim.id,
                               lambda s: s["leader"] in CLUSTER_IDS and s["leader"] != victim.id,
                               max(5.0, deadline.remaining()))
        return {
            "killed_broker": victim.id,
            "isr_before": state["isrs"],
            "new_leader": after["leader"],
            "isr_after": after["isrs"],
            "seconds": seconds,
            "attempts_after_kill": attempts,
            "failed_deliveries_after_kill": failed,
            "first_error_after_kill": first_error,
            "records_before_kill": len(before),
            "p50_ms_before_kill": kb.percentile(before, 0.5) * 1e3,
        }
    finally:
        if len(p):  # a failed round: drop what is left rather than wait for message.timeout.ms
            p.purge()
            p.flush(5)


# --------------------------------------------------------------------------------------------
# Orchestration


def run(args, workdir, cluster, singles):
    payloads = kb.payload_pool(args.record_bytes, args.seed)
    out = {
        "machine": kb.machine_info(args.broker_bin),
        "params": {
            "records": args.records,
            "record_bytes": args.record_bytes,
            "seed": args.seed,
            "cluster_brokers": len(CLUSTER_IDS),
            "replication_factor": REPLICATION_FACTOR,
            "min_insync_replicas": MIN_INSYNC_REPLICAS,
            "failover_rounds": args.failover_rounds,
            "failover_warmup_seconds": args.warmup_seconds,
            "failover_message_timeout_ms": FAILOVER_MESSAGE_TIMEOUT_MS,
            "broker_session_timeout_ms": DEFAULT_SESSION_TIMEOUT_MS,
            "timeout_seconds": args.timeout,
            "ready_timeout_seconds": args.ready_timeout,
        },
    }

    # 1. acks=1 on one --dev broker, stopped before the cluster starts.
    single = kb.Broker(args.broker_bin, workdir, "acks1")
    singles.append(single)
    bootstrap = single.start(args.ready_timeout)
    kb.create_topics(bootstrap, ["bench-acks1"], 1, args.ready_timeout)
    log("acks=1, one broker: produce %d x %d B to bench-acks1" % (args.records, args.record_bytes))
    base = kb.produce_throughput(bootstrap, "bench-acks1", 1, args.records, payloads, args.timeout, acks=1)
    log("  %.0f records/s, %.1f MB/s in %.2f s" % (base["records_s"], base["mb_s"], base["seconds"]))
    out["acks1_single_broker"] = base
    single.stop(graceful=True)
    singles.remove(single)  # a later failure is the cluster's: its logs are the ones to show

    # 2. acks=all on the 3-broker cluster, RF=3, min.insync.replicas=2.
    bootstrap = cluster.start(args.ready_timeout)
    admin = new_admin(bootstrap)
    topic = "bench-acks-all"
    log("creating %s: 1 partition, replication factor %d, min.insync.replicas=%d"
        % (topic, REPLICATION_FACTOR, MIN_INSYNC_REPLICAS))
    create_replicated_topic(admin, topic, args.ready_timeout)
    wait_full_isr(admin, topic, args.ready_timeout)
    log("acks=all, 3 brokers: produce %d x %d B to %s" % (args.records, args.record_bytes, topic))
    rep = kb.produce_throughput(bootstrap, topic, 1, args.records, payloads, args.timeout, acks="all")
    rep["ratio_to_acks1"] = rep["mb_s"] / base["mb_s"]
    log("  %.0f records/s, %.1f MB/s in %.2f s (%.2f x acks=1)"
        % (rep["records_s"], rep["mb_s"], rep["seconds"], rep["ratio_to_acks1"]))
    out["acks_all_cluster"] = rep

    # 3. Failover time with the default session timeout.
    topic = "bench-failover"
    create_replicated_topic(admin, topic, args.ready_timeout)
    wait_full_isr(admin, topic, args.ready_timeout)
    rounds = []
    for r in range(1, args.failover_rounds + 1):
        if r > 1:
            killed = cluster.member(rounds[-1]["killed_broker"])
            killed.start()
            killed.wait_ready(Deadline(args.ready_timeout, "restart of %s" % killed.name))
            wait_full_isr(admin, topic, args.ready_timeout)
        rounds.append(failover_round(cluster, admin, topic, payloads[0], r, args.warmup_seconds, args.timeout))
    out["failover"] = {
        "rounds": rounds,
        "median_seconds": statistics.median(x["seconds"] for x in rounds),
    }
    cluster.stop(graceful=True)
    return out


def table(r):
    m = r["machine"]
    p = r["params"]
    lines = []
    lines.append("StreamBus replication benchmark: %s (%s)" % (m["broker_bin"], m["broker_version"]))
    lines.append("machine: %d CPUs, %s, kernel %s; client: confluent-kafka %s / librdkafka %s, Python %s"
                 % (m["cpus"], m["cpu"], m["kernel"], m["confluent_kafka"], m["librdkafka"], m["python"]))
    lines.append("records: %d x %d B (MB = 10^6 B of record values), 1 partition, linger.ms=5, "
                 "batch.size=1000000, no compression, no idempotence" % (p["records"], p["record_bytes"]))
    lines.append("the client and all %d cluster brokers share these %d CPUs" % (p["cluster_brokers"], m["cpus"]))
    lines.append("")
    lines.append("%-46s %10s %12s %10s" % ("", "MB/s", "records/s", "vs acks=1"))
    b = r["acks1_single_broker"]
    lines.append("%-46s %10.1f %12.0f %10s" % ("acks=1, 1 broker (--dev)", b["mb_s"], b["records_s"], "1.00"))
    a = r["acks_all_cluster"]
    lines.append("%-46s %10.1f %12.0f %10.2f" % (
        "acks=all, %d brokers, RF=%d, min.insync=%d" % (p["cluster_brokers"], p["replication_factor"],
                                                       p["min_insync_replicas"]),
        a["mb_s"], a["records_s"], a["ratio_to_acks1"]))
    f = r["failover"]
    lines.append("")
    lines.append("failover: SIGKILL of the partition leader -> first record produced after the kill delivered")
    lines.append("  (acks=all, idempotent, linger.ms=0, one record at a time, message.timeout.ms=%d; "
                 "default metadata.broker_session_timeout_ms=%d)"
                 % (p["failover_message_timeout_ms"], p["broker_session_timeout_ms"]))
    for i, x in enumerate(f["rounds"], 1):
        lines.append("  round %d: killed broker %d, new leader %s (ISR %s -> %s): %.2f s; %d failed "
                     "deliveries after the kill; before it %d records, p50 %.2f ms"
                     % (i, x["killed_broker"], x["new_leader"], x["isr_before"], x["isr_after"], x["seconds"],
                        x["failed_deliveries_after_kill"], x["records_before_kill"], x["p50_ms_before_kill"]))
    lines.append("  median: %.2f s over %d round%s" % (f["median_seconds"], len(f["rounds"]),
                                                         "" if len(f["rounds"]) == 1 else "s"))
    return "\n".join(lines)


def parse_args(argv):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.expanduser("~"), ".cache/streambus-target")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--broker-bin", default=os.path.join(target, "release/streambus"),
                    help="streambus binary to benchmark")
    ap.add_argument("--record-bytes", type=int, default=1024, help="value size of every record")
    ap.add_argument("--records", type=int, default=200_000, help="records per throughput run")
    ap.add_argument("--json", action="store_true", help="JSON on stdout (the table goes to stderr)")
    ap.add_argument("--failover-rounds", type=int, default=1,
                    help="leader kills (median reported); the killed broker is restarted between rounds")
    ap.add_argument("--warmup-seconds", type=float, default=2.0,
                    help="one-at-a-time acks=all traffic before each leader kill")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="bound, in seconds, on each produce run and each failover round")
    ap.add_argument("--ready-timeout", type=float, default=60.0,
                    help="bound, in seconds, on each broker start, topic creation and ISR wait")
    ap.add_argument("--seed", type=int, default=42, help="seed of the record payloads")
    ap.add_argument("--data-root", default=None,
                    help="parent of the run's temporary directory (default: the system temp dir)")
    ap.add_argument("--keep-data", action="store_true", help="keep the temporary directory and the brokers' data")
    args = ap.parse_args(argv)
    kb.check_common_args(ap, args)
    if args.failover_rounds < 1:
        ap.error("--failover-rounds must be at least 1")
    if args.timeout <= 0 or args.ready_timeout <= 0 or args.warmup_seconds < 0:
        ap.error("--timeout and --ready-timeout must be positive, --warmup-seconds not negative")
    return args


def main(argv=None):
    args = parse_args(argv)

    def on_term(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    workdir = tempfile.mkdtemp(prefix="streambus-repl-bench-", dir=args.data_root)
    log("temporary directory %s" % workdir)
    singles = []
    cluster = None
    ok = False
    status = 1
    try:
        cluster = Cluster(args.broker_bin, workdir)
        result = run(args, workdir, cluster, singles)
        ok = True
    except Exception as e:  # every failure: report, show the brokers' logs, kill them
        if isinstance(e, BenchError):
            log("FAILED:", e)
        else:
            log("FAILED:", "".join(traceback.format_exception(e)).rstrip())
        for b in singles:
            if b.proc is not None:
                state = "running" if b.proc.poll() is None else "exited with %s" % b.proc.returncode
                log("%s broker (%s); last log lines:\n%s" % (b.name, state, b.log_tail()))
        if cluster is not None:
            cluster.report_logs()
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        for b in singles:
            b.stop(graceful=ok)
        if cluster is not None:
            cluster.stop(graceful=ok)
        if args.keep_data:
            log("kept %s" % workdir)
        elif ok:
            shutil.rmtree(workdir, ignore_errors=True)
        elif cluster is not None and any(m.starts for m in cluster.members):
            # Keep the cluster's logs for the post-mortem, not the brokers' data.
            for m in cluster.members:
                shutil.rmtree(m.data_dir, ignore_errors=True)
            log("cluster broker logs kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not ok:
        return status
    kb.emit(result, table(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
