"""Static members (KIP-345) see no rebalance while the brokers restart one by one
(confluent-kafka / librdkafka).

Usage: group_static.py <topic> <group> <ready-marker> <stop-marker>

Two members with a `group.instance.id` each join <group> on <topic> (6 partitions, created by
the Rust test). Once both hold their assignment, the script writes <ready-marker>; the test
restarts every broker in turn (the coordinator among them) and then writes <stop-marker>. The
script checks that neither member's assignment callbacks fired again in between: the new
coordinator loaded the group from `__consumer_offsets` and accepted its members' heartbeats.
"""

import os
import sys
import threading
import time

from confluent_kafka import Consumer

from common import Deadline, arm_watchdog, bootstrap_servers, log

PARTITIONS = 6


def main():
    arm_watchdog(400)
    topic, group, ready, stop_marker = sys.argv[1:5]
    events = []
    lock = threading.Lock()
    consumers = []
    for i in range(2):
        name = "static-%d" % i

        def on_assign(_c, partitions, name=name):
            with lock:
                events.append((time.monotonic(), name, "assign", sorted(p.partition for p in partitions)))

        def on_revoke(_c, partitions, name=name):
            with lock:
                events.append((time.monotonic(), name, "revoke", sorted(p.partition for p in partitions)))

        c = Consumer({
            "bootstrap.servers": bootstrap_servers(),
            "group.id": group,
            "group.instance.id": name,
            "client.id": name,
            "session.timeout.ms": 45000,
            "heartbeat.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "partition.assignment.strategy": "range",
            "socket.timeout.ms": 10000,
        })
        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        consumers.append(c)
    deadline = Deadline(60)
    while not deadline.expired():
        for c in consumers:
            c.poll(0.1)
        sizes = [len(c.assignment()) for c in consumers]
        if all(sizes) and sum(sizes) == PARTITIONS:
            break
    assignments = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
    assert sum(len(a) for a in assignments) == PARTITIONS, "never settled: %r" % assignments
    # Let a straggling first-round rebalance finish before watching.
    settle = Deadline(3)
    while not settle.expired():
        for c in consumers:
            c.poll(0.1)
    with lock:
        watched_from = len(events)
    open(ready, "w").close()
    log("settled", assignments, "; brokers may restart")
    restarts = Deadline(300)
    while not os.path.exists(stop_marker) and not restarts.expired():
        for c in consumers:
            c.poll(0.1)
    assert os.path.exists(stop_marker), "the test never finished restarting brokers"
    # A few more heartbeats with every broker back.
    tail = Deadline(3)
    while not tail.expired():
        for c in consumers:
            c.poll(0.1)
    final = [sorted(tp.partition for tp in c.assignment()) for c in consumers]
    with lock:
        later = events[watched_from:]
    for c in consumers:
        c.close()
    assert not later, "rebalance callbacks during the restarts: %r" % later
    assert final == assignments, "assignments changed: %r -> %r" % (assignments, final)
    print("ok: no rebalance through the restarts; assignments %r" % final)


if __name__ == "__main__":
    main()
