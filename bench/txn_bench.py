#!/usr/bin/env python3
"""Transactions benchmark of StreamBus on loopback, driven by confluent-kafka (librdkafka).

It starts and stops its own brokers and measures, in one run:

  * overhead, on one broker: produce throughput of 1 KiB records to 4 partitions, idempotent
    (acks=all, no transaction) against transactional with a commit every 100 ms and every
    1,000 ms, each producing for the same number of seconds; the transactional rows give their
    ratio to the idempotent one (Kafka reports about 3 % overhead at 100 ms);
  * small transactions, on 3 brokers (replication factor 3, min.insync.replicas=2): transactions
    of 10 records to 1 partition back to back for a fixed time, transactions per second and the
    p50/p99 latency of commit_transaction();
  * end-to-end latency, on 3 brokers: transactions of one record each; the time from produce()
    to the record reaching a read_committed consumer (which can only see it after the commit
    marker), p50/p99;
  * overhead again with the Rust SDK (`sbctl perf produce`, `--sbctl-bin`), whose producer is
    not the limit the Python one is: idempotent against transactional (transaction version 2,
    the broker's default) with a commit every 100 ms and every 1,000 ms, in alternating rounds
    (`--sdk-rounds`), each for the same number of seconds; the ratio of the medians.

Run it with the project venv's interpreter (`make bench-txn` builds the release broker first):

    ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python bench/txn_bench.py \\
        --broker-bin $HOME/.cache/streambus-target/release/streambus

Progress goes to stderr; the table goes to stdout (with --json, the JSON document instead).
Compare ratios measured in one run: the machine is shared and noisy.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kafka_bench as kb  # noqa: E402
import replication_bench as rb  # noqa: E402
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

RECORD_BYTES = 1024
OVERHEAD_PARTITIONS = 4


def log(*parts):
    kb.log(*parts)


def create_topic(bootstrap, topic, partitions, replication, min_isr=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication,
                   config={"min.insync.replicas": str(min_isr)})
    admin.create_topics([new])[topic].result(timeout=60)


def producer_conf(bootstrap, transactional_id=None):
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "socket.timeout.ms": 30000,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
    return conf


def produce_for(bootstrap, topic, seconds, commit_every_s, payload):
    """Produces `payload` round-robin over the topic's partitions for `seconds`; with
    `commit_every_s`, inside transactions committed every that many seconds. Records/s and MB/s
    of what was acknowledged (committed)."""
    transactional = commit_every_s is not None
    p = Producer(producer_conf(bootstrap, "bench-%s" % uuid.uuid4().hex[:8] if transactional else None))
    if transactional:
        p.init_transactions(60)
    p.list_topics(topic, timeout=10)
    delivered = {"ok": 0, "failed": 0}

    def on_delivery(err, _msg):
        delivered["failed" if err else "ok"] += 1

    start = time.perf_counter()
    end = start + seconds
    next_commit = start + (commit_every_s or 0)
    sent = 0
    commits = 0
    if transactional:
        p.begin_transaction()
    while time.perf_counter() < end:
        try:
            p.produce(topic, payload, partition=sent % OVERHEAD_PARTITIONS, on_delivery=on_delivery)
            sent += 1
        except BufferError:
            p.poll(0.005)
        if (sent & 255) == 0:
            p.poll(0)
        if transactional and time.perf_counter() >= next_commit:
            p.commit_transaction(60)
            commits += 1
            p.begin_transaction()
            next_commit = time.perf_counter() + commit_every_s
    if transactional:
        p.commit_transaction(60)
        commits += 1
    else:
        p.flush(60)
    elapsed = time.perf_counter() - start
    if delivered["failed"]:
        raise kb.BenchError("%d records failed" % delivered["failed"])
    return {
        "seconds": elapsed,
        "records": delivered["ok"],
        "records_s": delivered["ok"] / elapsed,
        "mb_s": delivered["ok"] * len(payload) / elapsed / kb.MB,
        "commits": commits,
    }


def small_transactions(bootstrap, topic, seconds, payload):
    """Back-to-back transactions of 10 records to one partition for `seconds`."""
    p = Producer(producer_conf(bootstrap, "bench-small-%s" % uuid.uuid4().hex[:8]))
    p.init_transactions(60)
    p.list_topics(topic, timeout=10)
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        p.begin_transaction()
        for _ in range(10):
            p.produce(topic, payload, partition=0)
        t0 = time.perf_counter()
        p.commit_transaction(60)
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "transactions": len(latencies),
        "transactions_s": len(latencies) / elapsed,
        "commit_p50_ms": kb.percentile(latencies, 0.50),
        "commit_p99_ms": kb.percentile(latencies, 0.99),
    }


def end_to_end(bootstrap, topic, count):
    """`count` transactions of one record each; produce() to read_committed delivery."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "bench-e2e-%s" % uuid.uuid4().hex[:8],
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "latest",
        "fetch.wait.max.ms": 10,
        "fetch.min.bytes": 1,
    })
    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
    sent_at = {}
    received = []
    stop = threading.Event()

    def consume():
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            key = msg.value()
            t = sent_at.get(key)
            if t is not None:
                received.append((time.perf_counter() - t) * 1000)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(2)  # the consumer has its position before the first transaction
    p = Producer(producer_conf(bootstrap, "bench-e2e-%s" % uuid.uuid4().hex[:8]))
    p.init_transactions(60)
    for i in range(count):
        value = b"e2e-%08d" % i
        p.begin_transaction()
        sent_at[value] = time.perf_counter()
        p.produce(topic, value, partition=0)
        p.commit_transaction(60)
    deadline = time.monotonic() + 60
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    reader.join(10)
    consumer.close()
    if len(received) < count:
        raise kb.BenchError("end-to-end: %d of %d records read_committed" % (len(received), count))
    received.sort()
    return {"records": count, "p50_ms": kb.percentile(received, 0.50),
            "p99_ms": kb.percentile(received, 0.99)}


class ClusterHandle:
    """The 3-broker cluster as `kb.run_with_brokers` stops what it started."""

    name = "3-broker cluster"
    proc = None

    def __init__(self, cluster):
        self.cluster = cluster

    def log_tail(self):
        return ""

    def stop(self, graceful):
        if not graceful:
            self.cluster.report_logs()
        self.cluster.stop(graceful)


def run(args, brokers):
    payload = os.urandom(RECORD_BYTES)
    out = {"machine": kb.machine_info(args.broker_bin),
           "params": {"seconds": args.seconds, "record_bytes": RECORD_BYTES,
                      "e2e_transactions": args.e2e_transactions}}

    broker = kb.Broker(args.broker_bin, args.data_root, "txn", args.keep_data)
    brokers.append(broker)
    bootstrap = broker.start()
    out["overhead"] = {}
    python_modes = () if args.skip_python else (
        ("idempotent", None), ("commit_100ms", 0.1), ("commit_1000ms", 1.0))
    for label, every in python_modes:
        topic = "bench-txn-%s" % label.replace("_", "-")
        create_topic(bootstrap, topic, OVERHEAD_PARTITIONS, 1)
        log("produce for %d s: %s" % (args.seconds, label))
        meter = kb.CpuMeter(broker.proc.pid)
        result = produce_for(bootstrap, topic, args.seconds, every, payload)
        result.update(meter.done())
        out["overhead"][label] = result
        log("  %.0f records/s, %.1f MB/s, %d commits (CPU: broker %.0f%%, client %.0f%%)"
            % (result["records_s"], result["mb_s"], result["commits"], result["broker_cpu_pct"],
               result["client_cpu_pct"]))
    if python_modes:
        base = out["overhead"]["idempotent"]["records_s"]
        for label in ("commit_100ms", "commit_1000ms"):
            out["overhead"][label]["ratio_to_idempotent"] = (
                out["overhead"][label]["records_s"] / base)
    if args.sbctl_bin and args.sdk_rounds > 0:
        out["sdk_overhead"] = sdk_overhead(args, broker, bootstrap)
    broker.stop(graceful=True)
    brokers.remove(broker)
    if args.skip_python:
        return out

    workdir = os.path.join(args.data_root, "txn-cluster-%s" % uuid.uuid4().hex[:6])
    os.makedirs(workdir)
    cluster = rb.Cluster(args.broker_bin, workdir)
    brokers.append(ClusterHandle(cluster))
    bootstrap = cluster.start(120)
    create_topic(bootstrap, "bench-txn-small", 1, 3, 2)
    log("small transactions for %d s on 3 brokers" % args.seconds)
    out["small"] = small_transactions(bootstrap, "bench-txn-small", args.seconds, payload)
    log("  %.0f transactions/s, commit p50 %.2f ms, p99 %.2f ms"
        % (out["small"]["transactions_s"], out["small"]["commit_p50_ms"],
           out["small"]["commit_p99_ms"]))
    create_topic(bootstrap, "bench-txn-e2e", 1, 3, 2)
    log("end-to-end latency, %d transactions of one record" % args.e2e_transactions)
    out["e2e"] = end_to_end(bootstrap, "bench-txn-e2e", args.e2e_transactions)
    log("  produce -> read_committed: p50 %.2f ms, p99 %.2f ms"
        % (out["e2e"]["p50_ms"], out["e2e"]["p99_ms"]))
    return out


def sbctl_produce(sbctl, bootstrap, topic, seconds, transaction_ms):
    """One `sbctl perf produce` run; its JSON summary."""
    command = [sbctl, "--bootstrap-server", bootstrap, "perf", "produce", "--topic", topic,
               "--duration-secs", str(seconds), "--record-size", str(RECORD_BYTES),
               "--acks", "all", "--partitions", str(OVERHEAD_PARTITIONS), "--json"]
    if transaction_ms is not None:
        command += ["--transactional-id", "bench-%s" % uuid.uuid4().hex[:8],
                    "--transaction-duration-ms", str(transaction_ms)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError("sbctl perf produce failed: %s" % done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def sdk_overhead(args, broker, bootstrap):
    """Idempotent against transactional produce with the Rust SDK, alternating rounds."""
    modes = (("idempotent", None), ("commit_100ms", 100), ("commit_1000ms", 1000))
    rates = {label: [] for label, _ in modes}
    for round_index in range(args.sdk_rounds):
        for label, every in modes:
            topic = "bench-sdk-%s-%d" % (label.replace("_", "-"), round_index)
            log("sdk round %d: %s for %d s" % (round_index + 1, label, args.seconds))
            meter = kb.CpuMeter(broker.proc.pid)
            result = sbctl_produce(args.sbctl_bin, bootstrap, topic, args.seconds, every)
            cpu = meter.done()
            rates[label].append(result["records_per_sec"])
            log("  %.0f records/s (broker CPU %.0f%%)" % (result["records_per_sec"],
                                                        cpu["broker_cpu_pct"]))
    out = {label: {"records_s": statistics.median(values), "rounds": values}
           for label, values in rates.items()}
    base = out["idempotent"]["records_s"]
    for label in ("commit_100ms", "commit_1000ms"):
        out[label]["ratio_to_idempotent"] = out[label]["records_s"] / base
    return out


def table(r):
    version = r["machine"]["confluent_kafka"]
    if isinstance(version, (list, tuple)):
        version = version[0]
    lines = ["Transactions (confluent-kafka %s, librdkafka %s, 1 KiB records)"
             % (version, r["machine"]["librdkafka"]), ""]
    lines.append("%-16s %12s %9s %8s %11s %11s %9s" % ("mode", "records/s", "MB/s", "commits",
                                                       "broker CPU", "client CPU", "ratio"))
    for label in [m for m in ("idempotent", "commit_100ms", "commit_1000ms")
                  if m in r["overhead"]]:
        row = r["overhead"][label]
        lines.append("%-16s %12.0f %9.1f %8d %10.0f%% %10.0f%% %9s" % (
            label, row["records_s"], row["mb_s"], row["commits"], row["broker_cpu_pct"],
            row["client_cpu_pct"],
            "%.3f" % row["ratio_to_idempotent"] if "ratio_to_idempotent" in row else "-"))
    if "sdk_overhead" in r:
        lines += ["", "Rust SDK (sbctl perf produce), median of %d alternating rounds:"
                  % len(r["sdk_overhead"]["idempotent"]["rounds"])]
        for label in ("idempotent", "commit_100ms", "commit_1000ms"):
            row = r["sdk_overhead"][label]
            lines.append("%-16s %12.0f %9s" % (
                label, row["records_s"],
                "%.3f" % row["ratio_to_idempotent"] if "ratio_to_idempotent" in row else "-"))
    if "small" not in r:
        return "\n".join(lines)
    s = r["small"]
    lines += ["", "3 brokers, RF 3: %.0f transactions/s of 10 records; commit p50 %.2f ms, p99 %.2f ms"
              % (s["transactions_s"], s["commit_p50_ms"], s["commit_p99_ms"])]
    e = r["e2e"]
    lines.append("3 brokers, RF 3: produce -> read_committed consumer p50 %.2f ms, p99 %.2f ms (%d transactions)"
                 % (e["p50_ms"], e["p99_ms"], e["records"]))
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--broker-bin", required=True)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--seconds", type=int, default=10, help="per produce phase")
    ap.add_argument("--e2e-transactions", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sbctl-bin", default=None,
                    help="sbctl for the Rust SDK overhead rows (skipped without it)")
    ap.add_argument("--sdk-rounds", type=int, default=3)
    ap.add_argument("--skip-python", action="store_true",
                    help="only the Rust SDK overhead rows (needs --sbctl-bin)")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.broker_bin):
        ap.error("no broker binary at %s" % args.broker_bin)
    if args.skip_python and not args.sbctl_bin:
        ap.error("--skip-python needs --sbctl-bin")
    if args.data_root is None:
        args.data_root = os.environ.get("TMPDIR", "/tmp")
    return args


def main(argv=None):
    return kb.run_with_brokers(parse_args(argv), run, table)


if __name__ == "__main__":
    sys.exit(main())
