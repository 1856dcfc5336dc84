"""A transactional producer rides through the loss of its transaction coordinator
(confluent-kafka / librdkafka).

Usage: txn_failover.py <topic> <transactional-id> <transactions> <marker-file>

The topic exists (created by the Rust test `transactions.rs`, 3 partitions, replicated). This
script runs <transactions> transactions of 10 records each (values `t<n>-<i>`, spread over the
partitions), and writes <marker-file> after the fifth commit: the test then SIGKILLs the
coordinator of the transactional id (and later restarts it). A transaction whose commit fails
with an abortable error is aborted and written again; librdkafka retries the rest by itself.
The script checks, with a read_committed consumer at the end:
- every value of every transaction is there exactly once (nothing lost, nothing duplicated);
- per partition, transactions appear in the order they were committed;
- nothing is left open: the last stable offset reaches the high watermark on every partition.
"""

import sys
import time

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from common import Deadline, arm_watchdog, bootstrap_servers, log

PARTITIONS = 3
PER_TRANSACTION = 10
TIMEOUT_S = 120


def fail(message):
    log("FAIL: %s" % message)
    sys.exit(1)


def run_transactions(topic, transactional_id, count, marker):
    producer = Producer({
        "bootstrap.servers": bootstrap_servers(),
        "transactional.id": transactional_id,
        "transaction.timeout.ms": 60000,
        "socket.timeout.ms": 10000,
        "linger.ms": 5,
    })
    producer.init_transactions(TIMEOUT_S)
    committed = 0
    aborted = 0
    deadline = Deadline(300)
    while committed < count:
        if deadline.expired():
            fail("only %d of %d transactions committed in 300 s" % (committed, count))
        try:
            producer.begin_transaction()
            for i in range(PER_TRANSACTION):
                value = ("t%d-%d" % (committed, i)).encode()
                producer.produce(topic, value=value, partition=i % PARTITIONS)
            producer.commit_transaction(TIMEOUT_S)
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                fail("fatal transaction error: %s" % err)
            log("transaction %d failed (%s): aborting and writing it again" % (committed, err))
            aborted += 1
            try:
                producer.abort_transaction(TIMEOUT_S)
            except KafkaException as abort_error:
                if abort_error.args[0].fatal():
                    fail("fatal error while aborting: %s" % abort_error)
                time.sleep(0.5)
            continue
        committed += 1
        if committed == 5:
            open(marker, "w").close()
            log("5 transactions committed: the coordinator may go")
    log("ok: %d transactions committed (%d aborted and written again)" % (committed, aborted))


def read_committed(topic, expected):
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers(),
        "group.id": "txn-failover-reader",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
    })
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    values = {p: [] for p in range(PARTITIONS)}
    at_end = set()
    deadline = Deadline(TIMEOUT_S)
    count = 0
    try:
        while not deadline.expired():
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    at_end.add(msg.partition())
                    if count >= expected and len(at_end) == PARTITIONS:
                        break
                    continue
                fail("consumer error: %s" % msg.error())
            at_end.discard(msg.partition())
            values[msg.partition()].append(msg.value().decode())
            count += 1
    finally:
        consumer.close()
    return values


def check_nothing_open(topic):
    """The last stable offset is the high watermark on every partition: no transaction is
    left open (ListOffsets latest, read_committed against read_uncommitted)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers()})
    wanted = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}
    ends = {}
    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        futures = admin.list_offsets(wanted, isolation_level=level, request_timeout=30)
        ends[level] = {tp.partition: f.result(timeout=TIMEOUT_S).offset for tp, f in futures.items()}
    stable, high = ends[IsolationLevel.READ_COMMITTED], ends[IsolationLevel.READ_UNCOMMITTED]
    if stable != high:
        fail("last stable offsets %s behind high watermarks %s: a transaction is left open"
             % (stable, high))
    log("ok: last stable offset = high watermark on every partition %s" % high)


def main():
    arm_watchdog(600)
    topic, transactional_id, count, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    run_transactions(topic, transactional_id, count, marker)
    values = read_committed(topic, count * PER_TRANSACTION)
    seen = [v for p in range(PARTITIONS) for v in values[p]]
    want = {"t%d-%d" % (t, i) for t in range(count) for i in range(PER_TRANSACTION)}
    duplicated = len(seen) - len(set(seen))
    missing = want - set(seen)
    extra = set(seen) - want
    if duplicated or missing or extra:
        fail("read_committed: %d duplicated, missing %s, unexpected %s"
             % (duplicated, sorted(missing)[:10], sorted(extra)[:10]))
    for p in range(PARTITIONS):
        order = [int(v.split("-")[0][1:]) for v in values[p]]
        if order != sorted(order):
            fail("partition %d: transactions out of order: %s" % (p, order))
    log("ok: %d records read_committed exactly once, in commit order per partition" % len(seen))
    check_nothing_open(topic)


if __name__ == "__main__":
    main()
