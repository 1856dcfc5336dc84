"""confluent-kafka's side of the sbctl cross-client test (tests/it/sbctl.rs).

    cross_client.py produce <topic> <jsonl-file>
        Produces each line {"key", "value", "headers": [[k, v], ...], "partition"} (strings) with
        an idempotent acks=all producer; exits 1 if any record is not delivered.
    cross_client.py consume <topic> <partition> <count>
        Reads `count` records of one partition from the beginning and prints each as a JSON line
        {"offset", "key", "value", "headers"} (strings; null for a missing key or value).
"""

import json
import os
import sys

from confluent_kafka import Producer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ck import SOCKET_TIMEOUT_MS, consume_partition, headers_of  # noqa: E402
from common import arm_watchdog, bootstrap_servers  # noqa: E402


def text(raw):
    return None if raw is None else raw.decode("utf-8")


def produce(topic, path):
    p = Producer({
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "streambus-cross-client",
        "enable.idempotence": True,
        "acks": "all",
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
        "message.timeout.ms": 60000,
    })
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    count = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            key = record.get("key")
            p.produce(
                topic,
                value=record["value"].encode("utf-8"),
                key=None if key is None else key.encode("utf-8"),
                headers=[(k, v.encode("utf-8")) for k, v in record.get("headers", [])],
                partition=record.get("partition", 0),
                on_delivery=on_delivery,
            )
            p.poll(0)
            count += 1
    remaining = p.flush(90)
    if remaining or failures:
        print("undelivered: %d, failures: %s" % (remaining, failures[:5]), file=sys.stderr)
        sys.exit(1)
    print("produced %d" % count, file=sys.stderr)


def consume(topic, partition, count):
    for m in consume_partition(topic, partition, count):
        print(json.dumps({
            "offset": m.offset(),
            "key": text(m.key()),
            "value": text(m.value()),
            "headers": [[k, text(v)] for k, v in headers_of(m)],
        }, ensure_ascii=False))


def main():
    arm_watchdog(300)
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "consume":
        consume(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: cross_client.py produce|consume ...")


if __name__ == "__main__":
    main()
