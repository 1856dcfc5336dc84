#!/usr/bin/env python3
"""Compares two StreamBus broker binaries, a (the baseline) and b, on produce throughput, fetch
throughput and produce latency, alternating builds round by round on fresh brokers so that both
see the same machine state, and measures each build's own round-to-round spread (the noise a
b/a ratio is judged against).

    ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python bench/ab_compare.py \\
        --a /tmp/streambus-old --b $HOME/.cache/streambus-target/release/streambus

Every round starts one broker of build a, measures it and stops it, then does the same with
build b. `--a-args` / `--b-args` add broker arguments to one build, so one binary can be
compared with itself under two configurations (`make bench-metrics`: metrics off against on). On each broker, in this order:

  * produce latency: 1 partition, librdkafka (confluent-kafka), acks=1, linger.ms=0, at a fixed
    --latency-rate (10,000 records/s) for --latency-seconds (5 s); p50 and p99 of the time from
    produce() to the delivery callback (kafka_bench.py's latency phase). Run first, on the idle
    broker, so that the writeback of the throughput phases does not land in it;
  * for 1 and 8 partitions: produce throughput with kafka_bench.py's pre-encoded pipelined
    producer (1,000-record batches, 8 requests in flight on one connection, acks=1), then fetch
    throughput: kafka_bench.py's librdkafka consumer (assign from offset 0, no group, no
    commits) reading back everything that was produced.

Throughput is MB/s of record values (10^6 bytes; no keys, headers or protocol overhead); the
broker's and this client's CPU (percent of one core) are kept with each figure, since a client
near 100 % says the figure is the client's limit rather than the broker's. The table shows, per
metric and build, every round, the median and the spread ((max - min) / median over the rounds),
then the ratio b/a of the medians and whether it is beyond the larger of the two spreads. Every
broker runs on ephemeral loopback ports with its own temporary data directory and is stopped at
the end, or killed on any error or interrupt; every phase is bounded by --timeout.
"""

import argparse
import os
import shlex
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_bench as kb  # noqa: E402  (shares the broker wrapper, the clients and the output)

BUILDS = ("a", "b")

# (key, label, unit, higher is better); the key indexes a round's results.
METRICS = (
    ("produce_p1", "produce, 1 partition", "MB/s", True),
    ("produce_p8", "produce, 8 partitions", "MB/s", True),
    ("fetch_p1", "fetch, 1 partition", "MB/s", True),
    ("fetch_p8", "fetch, 8 partitions", "MB/s", True),
    ("latency_p50", "produce latency p50", "ms", False),
    ("latency_p99", "produce latency p99", "ms", False),
)


def value_of(key, r):
    """The figure a metric compares, from one round's result `r` of that metric's phase."""
    if key.startswith("latency_"):
        return r[key[len("latency_"):] + "_ms"]
    return r["mb_s"]


def measure_broker(args, binary, label, rnd, payloads, brokers):
    """One fresh broker of `binary`: latency, then produce and fetch on 1 and 8 partitions.
    Returns {phase key: result dict}, the latency result under "latency"."""
    extra = shlex.split(getattr(args, "%s_args" % label))
    broker = kb.Broker(binary, args.data_root, "%s-%d" % (label, rnd), extra_args=extra)
    brokers.append(broker)
    bootstrap = broker.start()
    out = {}

    kb.create_topics(bootstrap, ["ab-latency"], 1, 60)
    lat = kb.produce_latency(bootstrap, "ab-latency", args.latency_rate, args.latency_seconds,
                             payloads)
    out["latency"] = lat
    kb.log("round %d, build %s, latency at %.0f records/s (%.0f achieved): p50 %.2f ms, p99 %.2f ms"
           % (rnd, label, lat["target_records_s"], lat["achieved_records_s"], lat["p50_ms"],
              lat["p99_ms"]))

    for partitions in (1, 8):
        topic = "ab-p%d" % partitions
        kb.create_topics(bootstrap, [topic], partitions, 60)
        meter = kb.CpuMeter(broker.proc.pid)
        prod = kb.produce_pipelined(bootstrap, topic, partitions, args.records, payloads,
                                    args.timeout)
        prod.update(meter.done())
        out["produce_p%d" % partitions] = prod
        kb.log("round %d, build %s, produce, %d partition(s): %.0f MB/s (CPU: broker %.0f%%, "
               "client %.0f%%)" % (rnd, label, partitions, prod["mb_s"], prod["broker_cpu_pct"],
                                  prod["client_cpu_pct"]))
        meter = kb.CpuMeter(broker.proc.pid)
        # Everything the pipelined producer wrote (whole batches, so possibly a little more
        # than --records), from offset 0.
        fetch = kb.consume_throughput(bootstrap, topic, partitions, prod["records"], args.timeout)
        fetch.update(meter.done())
        fetch["records"] = prod["records"]
        out["fetch_p%d" % partitions] = fetch
        kb.log("round %d, build %s, fetch, %d partition(s): %.0f MB/s (CPU: broker %.0f%%, "
               "client %.0f%%)" % (rnd, label, partitions, fetch["mb_s"], fetch["broker_cpu_pct"],
                                  fetch["client_cpu_pct"]))
    broker.stop(graceful=True)
    return out


def run(args, brokers):
    payloads = kb.payload_pool(args.record_bytes, args.seed)
    rounds = {label: [] for label in BUILDS}
    binaries = {"a": args.a, "b": args.b}
    for rnd in range(args.rounds):
        for label in BUILDS:  # a then b in every round, each on a fresh broker
            rounds[label].append(measure_broker(args, binaries[label], label, rnd, payloads,
                                                brokers))
    runs = {}
    for key, _label, _unit, _higher in METRICS:
        phase = "latency" if key.startswith("latency_") else key
        runs[key] = {label: [r[phase] for r in rounds[label]] for label in BUILDS}
    return {
        "a": args.a, "b": args.b,
        "versions": {label: (kb.machine_info(binaries[label])["broker_version"].splitlines()
                             or ["unknown"])[0] for label in BUILDS},
        "params": {"rounds": args.rounds, "records": args.records,
                   "record_bytes": args.record_bytes, "seed": args.seed,
                   "latency_rate": args.latency_rate, "latency_seconds": args.latency_seconds},
        "runs": runs,
        "summary": summarize(runs),
    }


def spread(values):
    """(max - min) / median: how far apart one build's rounds are, relative to its median.
    None with fewer than two rounds (not measured)."""
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else float("inf")


def summarize(runs):
    """Per metric: each build's values, median and spread; the ratio b/a of the medians; the
    noise (the larger of the two spreads) and a verdict on the ratio against it."""
    out = {}
    for key, _label, _unit, higher in METRICS:
        s = {}
        for label in BUILDS:
            values = [value_of(key, r) for r in runs[key][label]]
            s[label] = {"values": values, "median": statistics.median(values),
                        "spread": spread(values)}
            if not key.startswith("latency_"):
                s[label]["broker_cpu_pct"] = statistics.median(
                    r["broker_cpu_pct"] for r in runs[key][label])
                s[label]["client_cpu_pct"] = statistics.median(
                    r["client_cpu_pct"] for r in runs[key][label])
        med_a = s["a"]["median"]
        ratio = s["b"]["median"] / med_a if med_a else float("nan")
        spreads = [s[label]["spread"] for label in BUILDS]
        noise = None if None in spreads else max(spreads)
        if noise is None:
            verdict = "noise not measured (1 round)"
        else:
            # The change b makes, signed so that a positive number is worse.
            worse = (1.0 - ratio) if higher else (ratio - 1.0)
            if worse > noise:
                verdict = "b WORSE beyond noise"
            elif -worse > noise:
                verdict = "b better beyond noise"
            else:
                verdict = "within noise"
        s.update({"ratio_b_a": ratio, "noise": noise, "verdict": verdict,
                  "higher_is_better": higher})
        out[key] = s
    return out


def pct(x):
    return "n/a" if x is None else "%.1f%%" % (100.0 * x)


def table(result):
    p = result["params"]
    lines = [
        "a = %s (%s)" % (result["a"], result["versions"]["a"]),
        "b = %s (%s)" % (result["b"], result["versions"]["b"]),
        "%d alternating round(s) (a then b, a fresh broker each); throughput: %d x %d B records "
        "per run, MB = 10^6 B of record values; latency: 1 partition, acks=1, linger.ms=0, "
        "%.0f records/s for %.0f s"
        % (p["rounds"], p["records"], p["record_bytes"], p["latency_rate"], p["latency_seconds"]),
        "spread = (max - min) / median of one build's rounds; noise = the larger spread; "
        "CPU = medians, broker / client, % of one core",
        "",
    ]
    width = max(len(label) + len(unit) + 3 for _k, label, unit, _h in METRICS)
    for key, label, unit, higher in METRICS:
        s = result["summary"][key]
        name = "%s (%s)" % (label, unit)
        for build in BUILDS:
            b = s[build]
            fmt = "%.0f" if unit == "MB/s" else "%.2f"
            rounds = "  ".join(fmt % v for v in b["values"])
            cpu = ""
            if "broker_cpu_pct" in b:
                cpu = "   CPU %.0f%% / %.0f%%" % (b["broker_cpu_pct"], b["client_cpu_pct"])
            lines.append("%-*s %s: %s   median %s   spread %s%s"
                         % (width, name if build == "a" else "", build, rounds,
                            fmt % b["median"], pct(b["spread"]), cpu))
        lines.append("%-*s b/a %.3f   noise %s   %s   (%s is better)"
                     % (width, "", s["ratio_b_a"], pct(s["noise"]), s["verdict"],
                        "higher" if higher else "lower"))
    return "\n".join(lines)


def main(argv=None):
    home = os.path.expanduser("~")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(home, ".cache/streambus-target")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--a", required=True, help="the baseline broker binary")
    ap.add_argument("--b", default=os.path.join(target, "release/streambus"),
                    help="the broker binary compared with it")
    ap.add_argument("--a-args", default="",
                    help="more broker arguments for build a (e.g. '--set metrics.enabled=false': "
                         "the same binary compared with itself under two configurations)")
    ap.add_argument("--b-args", default="", help="more broker arguments for build b")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds (at least 2 to measure the noise)")
    ap.add_argument("--records", type=int, default=1_000_000,
                    help="records per produce run (rounded up to whole 1,000-record batches); "
                         "the fetch run reads them all back")
    ap.add_argument("--record-bytes", type=int, default=1024, help="value size of every record")
    ap.add_argument("--latency-rate", type=float, default=10_000.0,
                    help="records/s of the latency run")
    ap.add_argument("--latency-seconds", type=float, default=5.0, help="length of the latency run")
    ap.add_argument("--seed", type=int, default=42, help="seed of the record payloads")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on each run, seconds")
    ap.add_argument("--data-root", default=None, help="where the brokers' data directories go")
    ap.add_argument("--json", action="store_true", help="JSON on stdout (the table on stderr)")
    args = ap.parse_args(argv)
    for name in BUILDS:
        path = os.path.abspath(os.path.expanduser(getattr(args, name)))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            ap.error("broker binary %s is missing or not executable" % path)
        setattr(args, name, path)
    if args.rounds < 1 or args.records < 1 or args.record_bytes < 1:
        ap.error("--rounds, --records and --record-bytes must be positive")
    if not (args.latency_rate > 0 and args.latency_seconds > 0):
        ap.error("--latency-rate and --latency-seconds must be positive")
    if args.rounds < 2:
        kb.log("one round: the round-to-round noise is not measured (use --rounds 2 or more)")
    return kb.run_with_brokers(args, run, table)


if __name__ == "__main__":
    sys.exit(main())
