"""Reads a whole topic with librdkafka (confluent-kafka) and prints what it read as one JSON
line: {"partition": [values...]} in offset order. Used by Rust tests to check what another client
wrote, read independently of our SDK.

Usage: read_topic.py TOPIC read_committed|read_uncommitted
Reads every partition from the beginning to its end (the LSO under read_committed), bounded by
STREAMBUS_TEST_TIMEOUT_S.
"""

import json
import sys

from confluent_kafka import KafkaError, TopicPartition

from ck import admin_client, consumer
from common import Deadline, arm_watchdog, log


def main():
    topic, isolation = sys.argv[1], sys.argv[2]
    assert isolation in ("read_committed", "read_uncommitted"), isolation
    seconds = arm_watchdog(60)
    metadata = admin_client().list_topics(topic, timeout=30)
    partitions = sorted(metadata.topics[topic].partitions)
    reader = consumer({"isolation.level": isolation, "enable.partition.eof": True})
    reader.assign([TopicPartition(topic, p, 0) for p in partitions])
    values = {str(p): [] for p in partitions}
    at_end = set()
    deadline = Deadline(seconds - 5)
    while len(at_end) < len(partitions):
        assert not deadline.expired(), "timed out after %ss reading %s" % (seconds, topic)
        message = reader.poll(0.2)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
                continue
            raise RuntimeError(message.error())
        at_end.discard(message.partition())
        values[str(message.partition())].append(message.value().decode())
    reader.close()
    log("read", sum(len(v) for v in values.values()), "records of", topic, isolation)
    print(json.dumps(values))


if __name__ == "__main__":
    main()
