"""Transactions with confluent-kafka (librdkafka): a transactional producer, read_committed and
read_uncommitted consumers, and the coordinator's fencing and timeout.

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 txn_confluent.py
Exit status 0 when every check passed; each prints an "ok:" line, and a failure ends the script
with "FAIL:" and why.

  (a) Commit and abort across 2 topics of 2 partitions: a committed transaction of 40 records
      (10 per partition), then an aborted one of 20, then a committed one of 20. A
      read_committed consumer reads exactly the 60 committed records, in order per partition;
      a read_uncommitted consumer reads all 80 data records. ListOffsets latest under
      read_committed (the last stable offset) equals the high watermark once all ended.
  (b) Zombie fencing: producer A opens a transaction and writes; producer B initializes the same
      transactional.id, which aborts A's transaction; A's commit fails as fenced, and none of
      A's records is ever read_committed; B's transaction commits.
  (c) Timeout: a transaction left open past its transaction.timeout.ms is aborted by the
      coordinator: a read_committed consumer, blocked at its first record until then, reads the
      committed records written after it and none of it.
  (d) Consume-transform-produce: a group consumer reads 30 input records per partition and a
      transactional producer writes each transformed record with send_offsets_to_transaction
      (AddOffsetsToTxn, TxnOffsetCommit), 10 input records per transaction. The group's
      committed offsets move only with a commit: after an aborted transaction they stay where
      the last commit left them, and at the end they are the input's end; the output read
      read_committed is every input record transformed once, in order.
"""

import os
import sys
import time

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import arm_watchdog, bootstrap_servers, log, unique_topic  # noqa: E402

TIMEOUT_S = 60
PARTITIONS = 2


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def ok(message):
    log("ok: %s" % message)


def admin():
    return AdminClient({"bootstrap.servers": bootstrap_servers()})


def create_topics(names):
    client = admin()  # kept alive until the futures are done
    futures = client.create_topics(
        [NewTopic(name, num_partitions=PARTITIONS, replication_factor=1) for name in names]
    )
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)


def producer(transactional_id, **extra):
    conf = {
        "bootstrap.servers": bootstrap_servers(),
        "transactional.id": transactional_id,
        "linger.ms": 5,
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(TIMEOUT_S)
    return p


def send(p, topics, tag, per_partition):
    """`per_partition` records to each partition of each topic, values `tag-<topic>-<p>-<i>`."""
    for topic in topics:
        for partition in range(PARTITIONS):
            for i in range(per_partition):
                value = ("%s-%s-%d-%d" % (tag, topic, partition, i)).encode()
                p.produce(topic, value=value, partition=partition)
    p.flush(TIMEOUT_S)


def read_all(topics, isolation, expected_count, quiet_s=3.0):
    """Every record of `topics` (from the start) as `{(topic, partition): [values]}`, reading
    until `expected_count` records arrived and then `quiet_s` more seconds with nothing new."""
    c = Consumer({
        "bootstrap.servers": bootstrap_servers(),
        "group.id": unique_topic("txn-reader"),
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    })
    c.assign([TopicPartition(t, p, 0) for t in topics for p in range(PARTITIONS)])
    got = {}
    count = 0
    try:
        deadline = time.monotonic() + TIMEOUT_S
        quiet_until = None
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                if count >= expected_count:
                    quiet_until = quiet_until or time.monotonic() + quiet_s
                    if time.monotonic() >= quiet_until:
                        break
                continue
            if msg.error():
                raise CheckFailed("consumer error: %s" % msg.error())
            got.setdefault((msg.topic(), msg.partition()), []).append(msg.value().decode())
            count += 1
            quiet_until = None
    finally:
        c.close()
    return got


def expected(topics, tags_counts):
    out = {}
    for topic in topics:
        for partition in range(PARTITIONS):
            values = []
            for tag, n in tags_counts:
                values.extend("%s-%s-%d-%d" % (tag, topic, partition, i) for i in range(n))
            out[(topic, partition)] = values
    return out


def check_a(topics):
    p = producer(unique_topic("txn-a"))
    p.begin_transaction()
    send(p, topics, "c1", 10)
    p.commit_transaction(TIMEOUT_S)
    p.begin_transaction()
    send(p, topics, "ab", 5)
    p.abort_transaction(TIMEOUT_S)
    p.begin_transaction()
    send(p, topics, "c2", 5)
    p.commit_transaction(TIMEOUT_S)
    ok("commit, abort, commit across %d topics" % len(topics))

    committed = read_all(topics, "read_committed", 60)
    want = expected(topics, [("c1", 10), ("c2", 5)])
    check(committed == want, "read_committed read %s, expected %s" % (committed, want))
    ok("read_committed reads exactly the 60 committed records, in order per partition")

    everything = read_all(topics, "read_uncommitted", 80)
    want_all = expected(topics, [("c1", 10), ("ab", 5), ("c2", 5)])
    check(everything == want_all, "read_uncommitted read %s, expected %s" % (everything, want_all))
    ok("read_uncommitted reads all 80 records, the aborted ones included")

    c = Consumer({
        "bootstrap.servers": bootstrap_servers(),
        "group.id": unique_topic("txn-offsets"),
        "isolation.level": "read_committed",
    })
    try:
        for topic in topics:
            for partition in range(PARTITIONS):
                low, high = c.get_watermark_offsets(TopicPartition(topic, partition), TIMEOUT_S)
                # Records, markers (3 transactions): 20 + 3 = 23 per partition.
                check(high == 23, "%s-%d: end offset %d, expected 23" % (topic, partition, high))
    finally:
        c.close()
    ok("every partition ends past its 3 markers (offset 23)")


def check_b(topics):
    txn_id = unique_topic("txn-zombie")
    a = producer(txn_id)
    a.begin_transaction()
    send(a, topics, "zombie", 3)
    b = producer(txn_id)  # fences A and aborts its transaction
    try:
        a.commit_transaction(TIMEOUT_S)
        raise CheckFailed("the fenced producer committed")
    except KafkaException as e:
        err = e.args[0]
        check(err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                             KafkaError.INVALID_PRODUCER_EPOCH),
              "the fenced producer's commit failed with %s, not as fenced" % err)
        ok("the old instance's commit fails: %s" % err)
    b.begin_transaction()
    send(b, topics, "live", 2)
    b.commit_transaction(TIMEOUT_S)
    committed = read_all(topics, "read_committed", 2 * PARTITIONS * len(topics))
    want = expected(topics, [("live", 2)])
    check(committed == want, "after fencing, read_committed read %s, expected %s" % (committed, want))
    ok("none of the zombie's records is read_committed; the new instance's commit is")


def check_c(topics):
    stuck = producer(unique_topic("txn-stuck"),
                     **{"transaction.timeout.ms": 3000, "socket.timeout.ms": 3000})
    stuck.begin_transaction()
    send(stuck, topics, "hang", 1)
    log("left a transaction open; a second producer commits after it")
    later = producer(unique_topic("txn-later"))
    later.begin_transaction()
    send(later, topics, "after", 2)
    later.commit_transaction(TIMEOUT_S)
    committed = read_all(topics, "read_committed", 2 * PARTITIONS * len(topics))
    want = expected(topics, [("after", 2)])
    check(committed == want, "read_committed read %s, expected %s" % (committed, want))
    ok("the timed-out transaction was aborted; the records after it are read_committed")


def committed_offsets(group, topic):
    c = Consumer({"bootstrap.servers": bootstrap_servers(), "group.id": group})
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
        return {tp.partition: tp.offset for tp in parts}
    finally:
        c.close()


def check_d(source, sink):
    p = Producer({"bootstrap.servers": bootstrap_servers(), "linger.ms": 5})
    for partition in range(PARTITIONS):
        for i in range(30):
            p.produce(source, value=b"in-%d-%d" % (partition, i), partition=partition)
    p.flush(TIMEOUT_S)
    group = unique_topic("txn-ctp")
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers(),
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([source])
    copier = producer(unique_topic("txn-copier"))
    rounds = 0
    copied = 0
    aborted_once = False
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while copied < 30 * PARTITIONS and time.monotonic() < deadline:
            msgs = consumer.consume(10, 1.0)
            msgs = [m for m in msgs if m.error() is None]
            if not msgs:
                continue
            # Asked before the transaction: while it is open, a read_committed consumer's
            # committed() waits (OffsetFetch require_stable: UNSTABLE_OFFSET_COMMIT).
            before = None if aborted_once else committed_offsets(group, source)
            copier.begin_transaction()
            for m in msgs:
                copier.produce(sink, value=b"out-" + m.value(), partition=m.partition())
            positions = consumer.position(consumer.assignment())
            copier.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TIMEOUT_S)
            if not aborted_once:
                copier.abort_transaction(TIMEOUT_S)
                aborted_once = True
                after = committed_offsets(group, source)
                check(after == before, "an aborted transaction moved the offsets: %s -> %s" % (before, after))
                ok("an aborted transaction leaves the group's offsets at %s" % after)
                # Read the aborted input again from the last committed offsets.
                for tp in positions:
                    committed = after.get(tp.partition, -1001)
                    consumer.seek(TopicPartition(source, tp.partition, max(committed, 0)))
                continue
            copier.commit_transaction(TIMEOUT_S)
            rounds += 1
            copied += len(msgs)
        check(copied == 30 * PARTITIONS, "copied %d records in %d transactions" % (copied, rounds))
    finally:
        consumer.close()
    offsets = committed_offsets(group, source)
    check(offsets == {p: 30 for p in range(PARTITIONS)}, "the group committed %s, expected 30 each" % offsets)
    ok("%d transactions each committed their offsets with their records: %s" % (rounds, offsets))
    out = read_all([sink], "read_committed", 30 * PARTITIONS)
    want = {(sink, part): ["out-in-%d-%d" % (part, i) for i in range(30)] for part in range(PARTITIONS)}
    check(out == want, "the copy read_committed is %s, expected %s" % (out, want))
    ok("the output is every input record transformed exactly once, in order")


def main():
    arm_watchdog(300)
    first = [unique_topic("txn-one"), unique_topic("txn-two")]
    second = [unique_topic("txn-zmb")]
    third = [unique_topic("txn-tmo")]
    source, sink = unique_topic("txn-src"), unique_topic("txn-dst")
    create_topics(first + second + third + [source, sink])
    check_a(first)
    check_b(second)
    check_c(third)
    check_d(source, sink)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckFailed, AssertionError, KafkaException) as e:
        log("FAIL: %s" % e)
        sys.exit(1)
