"""An exactly-once copier (confluent-kafka / librdkafka) for the transactional chaos test:
reads <in-topic> from its group's committed offsets, writes each record to the same partition
of <out-topic> and commits its position with the records, <per-txn> records per transaction,
until its committed position reaches the end of every input partition.

Usage: txn_chaos_copy.py <in-topic> <out-topic> <transactional-id> <group> <per-txn>

The Rust test (`transactions::a_transactional_copy_survives_random_sigkills`) SIGKILLs brokers
and this process at random and starts it again with the same transactional id: the new
instance's init_transactions fences the dead one and aborts what it left open, and reading
the committed offsets (librdkafka asks with require_stable under read_committed) resumes where
the last commit left off. Any error this script cannot ride out makes it exit non-zero; the test
starts it again. Exit 0 means everything is copied.
"""

import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from common import Deadline, arm_watchdog, bootstrap_servers, log

TIMEOUT_S = 60


def main():
    in_topic, out_topic, transactional_id, group, per_txn = sys.argv[1:6]
    per_txn = int(per_txn)
    arm_watchdog(600)
    consumer = Consumer({
        "bootstrap.servers": bootstrap_servers(),
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
    })
    producer = Producer({
        "bootstrap.servers": bootstrap_servers(),
        "transactional.id": transactional_id,
        "transaction.timeout.ms": 30000,
        "socket.timeout.ms": 10000,
        "linger.ms": 5,
    })
    producer.init_transactions(TIMEOUT_S)
    metadata = consumer.list_topics(in_topic, timeout=TIMEOUT_S)
    partitions = sorted(metadata.topics[in_topic].partitions)
    wanted = [TopicPartition(in_topic, p) for p in partitions]
    committed = consumer.committed(wanted, timeout=TIMEOUT_S)
    position = {}
    for tp in committed:
        if tp.error:
            raise KafkaException(tp.error)
        position[tp.partition] = max(tp.offset, 0)
    ends = {}
    for p in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(in_topic, p), timeout=TIMEOUT_S)
        ends[p] = high
    log("resuming at", position, "input ends at", ends)
    consumer.assign([TopicPartition(in_topic, p, position[p]) for p in partitions])
    transactions = 0
    deadline = Deadline(540)
    while any(position[p] < ends[p] for p in partitions):
        if deadline.expired():
            log("FAIL: copy not finished in time")
            sys.exit(1)
        messages = consumer.consume(num_messages=per_txn, timeout=1.0)
        messages = [m for m in messages if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        next_position = dict(position)
        for message in messages:
            producer.produce(out_topic, value=message.value(), partition=message.partition())
            next_position[message.partition()] = message.offset() + 1
        offsets = [TopicPartition(in_topic, p, o) for p, o in next_position.items()]
        try:
            producer.send_offsets_to_transaction(
                offsets, consumer.consumer_group_metadata(), TIMEOUT_S
            )
            producer.commit_transaction(TIMEOUT_S)
        except KafkaException as e:
            error = e.args[0]
            if error.fatal() or not error.txn_requires_abort():
                raise
            # An abortable error: the transaction is aborted and read again from its start.
            log("transaction failed (%s): aborting it and copying it again" % error)
            producer.abort_transaction(TIMEOUT_S)
            consumer.assign([TopicPartition(in_topic, p, position[p]) for p in partitions])
            continue
        position = next_position
        transactions += 1
    log("ok: copied up to", position, "in", transactions, "transactions")
    print("done")
    consumer.close()


if __name__ == "__main__":
    main()
