"""A consumer group rides through the loss of its coordinator (confluent-kafka / librdkafka).

Usage: group_failover.py <topic> <group> <records> <marker-file>

The topic exists (created by the Rust test `group_coordinator.rs`, 6 partitions, replicated).
This script produces <records> records over its partitions with acks=all, then runs two
members of <group> (range assignor) that consume slowly and commit synchronously every few
records, and an observer that reads the group's committed offsets. After the first commits it
writes <marker-file>: the test then SIGKILLs the coordinator of the group (and later restarts
it). The script checks:
- every record is consumed and the group's final committed offsets are the end offsets;
- a committed offset, as the observer and the members see it, never goes backwards;
- a new member of the group afterwards gets no record (it resumes at the committed offsets).
"""

import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from common import Deadline, arm_watchdog, bootstrap_servers, log

PARTITIONS = 6
COMMIT_EVERY = 20


def member_conf(group, name):
    return {
        "bootstrap.servers": bootstrap_servers(),
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 10000,
    }


def produce(topic, count):
    producer = Producer({"bootstrap.servers": bootstrap_servers(), "acks": "all",
                         "enable.idempotence": True})
    failures = []
    for i in range(count):
        producer.produce(topic, value=b"v-%06d" % i, partition=i % PARTITIONS,
                         on_delivery=lambda err, _msg: err and failures.append(err))
        if i % 500 == 0:
            producer.poll(0)
    left = producer.flush(60)
    assert left == 0 and not failures, "produce: %d left, failures %r" % (left, failures[:3])


class Progress:
    """What the members consumed and committed, shared between threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.consumed = set()  # (partition, offset)
        self.committed = {}  # partition -> highest offset a member committed
        self.problems = []
        self.commits = 0

    def note_commit(self, who, offsets):
        with self.lock:
            for tp in offsets:
                if tp.error is not None or tp.offset < 0:
                    continue
                self.committed[tp.partition] = max(self.committed.get(tp.partition, -1), tp.offset)
            self.commits += 1


def run_member(name, group, topic, progress, stop, deadline):
    consumer = Consumer(member_conf(group, name))
    consumer.subscribe([topic])
    since_commit = 0
    try:
        while not stop.is_set() and not deadline.expired():
            msg = consumer.poll(0.2)
            if msg is None:
                # Caught up: commit what was read since the last commit, so the group's
                # offsets reach the end without waiting for COMMIT_EVERY more records.
                if since_commit:
                    since_commit = commit(name, consumer, progress, deadline)
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log(name, "poll error", msg.error())
                continue
            with progress.lock:
                progress.consumed.add((msg.partition(), msg.offset()))
            since_commit += 1
            time.sleep(0.005)  # slow enough that the coordinator dies mid-group
            if since_commit >= COMMIT_EVERY:
                since_commit = commit(name, consumer, progress, deadline)
        commit(name, consumer, progress, deadline)
    finally:
        consumer.close()


def commit(name, consumer, progress, deadline):
    """Commits the consumer's positions, retrying retriable failures; 0 once done."""
    for _ in range(200):
        if deadline.expired():
            return 0
        try:
            offsets = consumer.commit(asynchronous=False)
            if offsets:
                progress.note_commit(name, offsets)
            return 0
        except KafkaException as e:
            err = e.args[0]
            if err.code() == KafkaError._NO_OFFSET:
                return 0
            # During the failover: NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, timeouts, and
            # REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION if the group rebalanced meanwhile
            # (those positions are then someone else's to commit).
            if err.code() in (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                              KafkaError.UNKNOWN_MEMBER_ID):
                return 0
            log(name, "commit retry:", err)
            time.sleep(0.2)
    raise AssertionError("%s: commit never succeeded" % name)


def observe(group, topic, progress, stop):
    """Reads the committed offsets every 200 ms; they must never go backwards."""
    observer = Consumer(member_conf(group, "observer"))
    seen = {}
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    try:
        while not stop.is_set():
            try:
                for tp in observer.committed(tps, timeout=5):
                    if tp.offset < 0:
                        continue
                    before = seen.get(tp.partition, -1)
                    if tp.offset < before:
                        with progress.lock:
                            progress.problems.append(
                                "partition %d committed offset went back from %d to %d"
                                % (tp.partition, before, tp.offset))
                    seen[tp.partition] = max(before, tp.offset)
            except KafkaException as e:
                log("observer:", e)
            time.sleep(0.2)
    finally:
        observer.close()
    return seen


def end_offsets(topic):
    c = Consumer(member_conf("unused-%s" % uuid.uuid4().hex[:8], "watermarks"))
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


def main():
    arm_watchdog(400)
    topic, group, records, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    produce(topic, records)
    ends = end_offsets(topic)
    log("produced", records, "ends", ends)
    progress = Progress()
    stop = threading.Event()
    deadline = Deadline(240)
    members = [threading.Thread(target=run_member,
                                args=("member-%d" % i, group, topic, progress, stop, deadline))
               for i in range(2)]
    observed = {}
    observer = threading.Thread(target=lambda: observed.update(observe(group, topic, progress, stop)))
    for t in members + [observer]:
        t.start()
    marked = False
    while not deadline.expired():
        with progress.lock:
            done = all(progress.committed.get(p, -1) >= ends[p] for p in range(PARTITIONS))
            commits = progress.commits
        if commits >= 4 and not marked:
            open(marker, "w").close()
            marked = True
            log("marker written after", commits, "commits")
        if done and marked:
            break
        time.sleep(0.2)
    stop.set()
    for t in members + [observer]:
        t.join(60)
    with progress.lock:
        missing = [(p, o) for p in range(PARTITIONS) for o in range(ends[p])
                   if (p, o) not in progress.consumed]
        problems = list(progress.problems)
        committed = dict(progress.committed)
    assert marked, "the members never committed"
    assert not problems, problems[:5]
    assert not missing, "%d records never consumed, first %r" % (len(missing), missing[:5])
    assert all(committed.get(p, -1) == ends[p] for p in range(PARTITIONS)), \
        "final commits %r, end offsets %r" % (committed, ends)
    # A newcomer resumes at the committed offsets: nothing left to read.
    newcomer = Consumer(member_conf(group, "newcomer"))
    newcomer.subscribe([topic])
    got = []
    assigned = Deadline(60)
    while not assigned.expired() and len(newcomer.assignment()) < PARTITIONS:
        msg = newcomer.poll(0.2)
        if msg is not None and not msg.error():
            got.append((msg.partition(), msg.offset()))
    quiet = Deadline(3)
    while not quiet.expired():
        msg = newcomer.poll(0.2)
        if msg is not None and not msg.error():
            got.append((msg.partition(), msg.offset()))
    positions = {tp.partition: tp.offset for tp in newcomer.committed(
        [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)}
    assigned_count = len(newcomer.assignment())
    newcomer.close()
    assert assigned_count == PARTITIONS, "the newcomer got %d partitions" % assigned_count
    assert not got, "the newcomer re-read committed records: %r" % got[:5]
    assert positions == ends, "committed %r, end offsets %r" % (positions, ends)
    print("ok: %d records, %d commits, committed offsets monotonic through the failover"
          % (records, progress.commits))


if __name__ == "__main__":
    main()
