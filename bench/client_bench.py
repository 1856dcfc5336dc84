#!/usr/bin/env python3
"""sbctl perf produce next to librdkafka (confluent-kafka), against one release broker, in the
same run.

For 1 and 8 partitions, `--rounds` times each, alternating: librdkafka produces `--records`
values of `--record-bytes` bytes (kafka_bench.py's produce phase: acks=1, linger.ms=5,
batch.size=1,000,000, no compression, no idempotence, round-robin partitions), then
`sbctl perf produce` the same (acks=1, linger 5 ms, batch size 1,000,000, no compression, no
idempotence since acks=1, sticky partitioning). Each into a fresh topic. Reports MB/s and
records/s, the CPU the broker and each client used (percent of one core), and the ratio
sbctl / librdkafka of the medians. Every phase is bounded by `--timeout`.

    cargo build --release -p streambus-broker -p streambus-client
    "${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python" bench/client_bench.py
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kafka_bench as kb  # noqa: E402  (exits with a clear message if confluent-kafka is missing)
from kafka_bench import MB, BenchError, log  # noqa: E402


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_librdkafka(args, bootstrap, broker, topic, partitions, payloads):
    cpu = kb.CpuMeter(broker.proc.pid)
    r = kb.produce_throughput(bootstrap, topic, partitions, args.records, payloads, args.timeout)
    r.update(cpu.done())
    return r


def run_sbctl(args, bootstrap, broker, topic):
    cmd = [
        args.sbctl_bin, "--bootstrap-server", bootstrap,
        "perf", "produce", "--topic", topic,
        "--num-records", str(args.records), "--record-size", str(args.record_bytes),
        "--acks", "1", "--batch-size", "1000000", "--linger-ms", "5", "--json",
    ]
    broker_cpu = kb.process_cpu_seconds(broker.proc.pid)
    client_cpu = children_cpu_seconds()
    wall = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("sbctl perf produce still running after %d s" % args.timeout)
    wall = time.perf_counter() - wall
    if done.returncode != 0:
        raise BenchError("sbctl perf produce failed (%d): %s" % (done.returncode, done.stderr.strip()))
    summary = json.loads(done.stdout)
    if summary["records"] != args.records or summary["errors"]:
        raise BenchError("sbctl perf produce: %s" % done.stdout)
    # sbctl times itself from its first send; its CPU share is over the whole process (start,
    # connection and metadata included), a slight overestimate.
    nbytes = args.records * args.record_bytes
    return {
        "seconds": summary["seconds"],
        "records_s": args.records / summary["seconds"],
        "mb_s": nbytes / summary["seconds"] / MB,
        "broker_cpu_pct": 100.0 * (kb.process_cpu_seconds(broker.proc.pid) - broker_cpu) / wall,
        "client_cpu_pct": 100.0 * (children_cpu_seconds() - client_cpu) / wall,
        "latency_ms": summary["latency_ms"],
    }


def run(args, brokers):
    broker = kb.Broker(args.broker_bin, args.data_root, "client-bench")
    brokers.append(broker)
    bootstrap = broker.start()
    payloads = kb.payload_pool(args.record_bytes, args.seed)
    result = {"machine": kb.machine_info(args.broker_bin), "records": args.records,
              "record_bytes": args.record_bytes, "by_partitions": {}}
    for partitions in (1, 8):
        runs = {"librdkafka": [], "sbctl": []}
        for round_ in range(args.rounds):
            for client in ("librdkafka", "sbctl"):
                topic = "client-bench-%s-%dp-%d" % (client, partitions, round_)
                kb.create_topics(bootstrap, [topic], partitions, args.timeout)
                if client == "librdkafka":
                    r = run_librdkafka(args, bootstrap, broker, topic, partitions, payloads)
                else:
                    r = run_sbctl(args, bootstrap, broker, topic)
                log("%d partition(s), %s, round %d: %.1f MB/s, %.0f records/s, broker %.0f %% CPU, "
                    "client %.0f %% CPU" % (partitions, client, round_ + 1, r["mb_s"], r["records_s"],
                                            r["broker_cpu_pct"], r["client_cpu_pct"]))
                runs[client].append(r)
        medians = {c: statistics.median(r["mb_s"] for r in rs) for c, rs in runs.items()}
        result["by_partitions"][str(partitions)] = {
            "runs": runs,
            "median_mb_s": medians,
            "ratio_sbctl_to_librdkafka": medians["sbctl"] / medians["librdkafka"],
        }
    return result


def table(result):
    lines = ["%d records of %d bytes, acks=1, one broker on loopback"
             % (result["records"], result["record_bytes"]),
             "%-11s %-11s %9s %12s %11s %11s" % ("partitions", "client", "MB/s", "records/s",
                                                  "broker CPU", "client CPU")]
    for partitions, p in result["by_partitions"].items():
        for client, runs in p["runs"].items():
            for r in runs:
                lines.append("%-11s %-11s %9.1f %12.0f %10.0f%% %10.0f%%" % (
                    partitions, client, r["mb_s"], r["records_s"], r["broker_cpu_pct"],
                    r["client_cpu_pct"]))
        lines.append("%-11s sbctl / librdkafka (medians): %.2f"
                     % (partitions, p["ratio_sbctl_to_librdkafka"]))
    return "\n".join(lines)


def parse_args(argv):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/streambus-target"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker-bin", default=os.path.join(target, "release/streambus"))
    ap.add_argument("--sbctl-bin", default=os.path.join(target, "release/sbctl"))
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--record-bytes", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2, help="runs of each client per partition count")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on each phase, seconds")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--data-root", default=None, help="where the broker's data directory goes")
    ap.add_argument("--json", action="store_true", help="JSON on stdout (the table goes to stderr)")
    args = ap.parse_args(argv)
    kb.check_common_args(ap, args)
    args.sbctl_bin = os.path.abspath(os.path.expanduser(args.sbctl_bin))
    if not (os.path.isfile(args.sbctl_bin) and os.access(args.sbctl_bin, os.X_OK)):
        ap.error("sbctl binary %s is missing or not executable" % args.sbctl_bin)
    if args.rounds < 1:
        ap.error("--rounds must be positive")
    args.data_root = args.data_root or tempfile.gettempdir()
    return args


def main(argv=None):
    return kb.run_with_brokers(parse_args(argv), run, table)


if __name__ == "__main__":
    sys.exit(main())
