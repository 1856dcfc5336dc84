"""A confluent-kafka (librdkafka) member of a consumer group, for tests/it/sdk_groups.rs, which
puts it in one group with a Rust SDK member.

Usage: group_member.py <group> <topic> <assignor> <stop-file>

Subscribes to <topic> with partition.assignment.strategy=<assignor>, polls until <stop-file>
exists (or the watchdog fires), commits what it read, closes (leaving the group) and exits 0.
Prints JSON lines on stdout as things happen:
  {"event": "assigned", "partitions": [..]}    after each rebalance: the whole assignment
  {"event": "record", "partition": p, "offset": o}
  {"event": "closed"}
"""

import json
import os
import sys

from confluent_kafka import Consumer, KafkaException

from common import arm_watchdog, bootstrap_servers, log


def emit(event):
    print(json.dumps(event), flush=True)


def main():
    group, topic, assignor, stop_file = sys.argv[1:5]
    arm_watchdog(300)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers(),
            "group.id": group,
            "client.id": "ck-member",
            "partition.assignment.strategy": assignor,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        }
    )
    assigned = set()

    def on_assign(c, partitions):
        if assignor == "cooperative-sticky":
            assigned.update(p.partition for p in partitions)
        else:
            assigned.clear()
            assigned.update(p.partition for p in partitions)
        emit({"event": "assigned", "partitions": sorted(assigned)})

    def on_revoke(c, partitions):
        for p in partitions:
            assigned.discard(p.partition)
        if assignor != "cooperative-sticky":
            assigned.clear()

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while not os.path.exists(stop_file):
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        emit({"event": "record", "partition": msg.partition(), "offset": msg.offset()})
    if assigned:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            log("commit failed:", e)
    consumer.close()
    emit({"event": "closed"})


if __name__ == "__main__":
    main()
