#!/usr/bin/env python3
"""Compares two StreamBus broker binaries on the pre-encoded pipelined producer of
kafka_bench.py (1,000-record batches, 8 requests in flight on one connection), alternating
builds round by round so that both see the same machine state, on 1 and 8 partitions.

    ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python bench/ab_produce.py \\
        --a /path/to/old/streambus --b $HOME/.cache/streambus-target/release/streambus

Prints, per build and partition count, each round's MB/s (10^6 bytes of record values) and the
broker's CPU, then the medians and their ratio b/a. Every broker is started on ephemeral
loopback ports with its own temporary data directory and stopped at the end.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_bench as kb  # noqa: E402  (shares the broker wrapper and the producer)


def run(args, brokers):
    payloads = kb.payload_pool(args.record_bytes, args.seed)
    results = {}
    for rnd in range(args.rounds):
        for label, binary in (("a", args.a), ("b", args.b)):
            broker = kb.Broker(binary, args.data_root, "%s-%d" % (label, rnd))
            brokers.append(broker)
            bootstrap = broker.start()
            for partitions in (1, 8):
                topic = "ab-p%d" % partitions
                kb.create_topics(bootstrap, [topic], partitions, 60)
                meter = kb.CpuMeter(broker.proc.pid)
                r = kb.produce_pipelined(bootstrap, topic, partitions, args.records, payloads,
                                         args.timeout)
                r.update(meter.done())
                results.setdefault((label, partitions), []).append(r)
                kb.log("round %d, build %s, %d partition(s): %.0f MB/s, broker CPU %.0f%%"
                       % (rnd, label, partitions, r["mb_s"], r["broker_cpu_pct"]))
            broker.stop(graceful=True)
    return {"a": args.a, "b": args.b, "records": args.records,
            "runs": {"%s-%d" % k: v for k, v in results.items()}}


def table(result):
    lines = ["a = %s" % result["a"], "b = %s" % result["b"],
             "%d records per run; MB/s (broker CPU %%) per round" % result["records"]]
    runs = result["runs"]
    for partitions in (1, 8):
        medians = {}
        for label in ("a", "b"):
            rs = runs["%s-%d" % (label, partitions)]
            medians[label] = statistics.median(r["mb_s"] for r in rs)
            lines.append("%s, %d partition(s): %s  median %.0f" % (
                label, partitions,
                "  ".join("%.0f (%.0f%%)" % (r["mb_s"], r["broker_cpu_pct"]) for r in rs),
                medians[label]))
        lines.append("b/a, %d partition(s): %.2f" % (partitions, medians["b"] / medians["a"]))
    return "\n".join(lines)


def main(argv=None):
    home = os.path.expanduser("~")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--a", required=True, help="the baseline broker binary")
    ap.add_argument("--b", default=os.path.join(home, ".cache/streambus-target/release/streambus"),
                    help="the broker binary compared with it")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--records", type=int, default=1_000_000, help="records per run")
    ap.add_argument("--record-bytes", type=int, default=1024, help="value size of every record")
    ap.add_argument("--seed", type=int, default=42, help="seed of the record payloads")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on each run, seconds")
    ap.add_argument("--data-root", default=None, help="where the brokers' data directories go")
    ap.add_argument("--json", action="store_true", help="JSON on stdout (the table on stderr)")
    args = ap.parse_args(argv)
    for name in ("a", "b"):
        path = os.path.abspath(os.path.expanduser(getattr(args, name)))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("broker binary %s is missing or not executable" % path)
        setattr(args, name, path)
    if args.rounds < 1 or args.records < 1:
        ap.error("--rounds and --records must be positive")
    return kb.run_with_brokers(args, run, table)


if __name__ == "__main__":
    sys.exit(main())
