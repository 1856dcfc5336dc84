"""Keyed records from confluent-kafka with librdkafka's Java-compatible partitioner.

  python3 keyed_produce.py <topic> <count>
      Produces <count> records to the existing <topic> without naming a partition, with keys
      key_bytes(i) for i in 0..count (lengths 0 to ~40, so every murmur2 tail length occurs;
      key 0 is empty), the partitioner `murmur2_random` (librdkafka's equivalent of the Java
      client's default partitioner) and acks=all. Prints one JSON object per acknowledged
      record to stdout: {"key": <key as hex>, "partition": <p>, "offset": <o>}.
      Exit status 0 when every record was acknowledged, 1 otherwise.

The Rust test (integration-tests/tests/it/client.rs) creates the topic, runs this script, then
reads the topic with the streambus-client consumer and checks that each key sits in the
partition its own partitioner picks. The broker comes from STREAMBUS_BOOTSTRAP; every wait is
bounded.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from confluent_kafka import KafkaException, Producer  # noqa: E402

from ck import SOCKET_TIMEOUT_MS  # noqa: E402
from common import arm_watchdog, bootstrap_servers, log  # noqa: E402

FLUSH_TIMEOUT_S = 60


def key_bytes(i):
    """Key i: empty for 0, else a prefix of a varied text of length i % 41 (so lengths 0..40
    and every length mod 4), made distinct with the index."""
    if i == 0:
        return b""
    text = b"%d:the-quick-brown-fox-jumps-over-the-lazy-dog" % i
    return text[: max(len(b"%d:" % i), i % 41)]


def main(argv):
    arm_watchdog(120)
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    topic, count = argv[1], int(argv[2])
    p = Producer({
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "streambus-keyed-producer",
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
        "allow.auto.create.topics": False,
    })
    acked = []
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append((msg.key(), err))
        else:
            acked.append((msg.key(), msg.partition(), msg.offset()))

    try:
        keys = [key_bytes(i) for i in range(count)]
        if len(set(keys)) != len(keys):
            raise ValueError("keys are not distinct")
        for key in keys:
            p.produce(topic, value=b"value-of-" + key, key=key, on_delivery=on_delivery)
        remaining = p.flush(FLUSH_TIMEOUT_S)
    except (KafkaException, BufferError, ValueError) as e:
        log("error:", e)
        return 1
    for key, partition, offset in acked:
        print(json.dumps({"key": key.hex(), "partition": partition, "offset": offset}))
    log("%d acknowledged, %d failed (first: %s), %d undelivered"
        % (len(acked), len(failed), failed[0] if failed else None, remaining))
    return 0 if len(acked) == count else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
