"""Transactions with aiokafka (asyncio, its own protocol code): a transactional producer,
read_committed and read_uncommitted consumers, fencing and an exactly-once copy.

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 txn_aiokafka.py
Exit status 0 when every check passed; each prints an "ok:" line, and a failure ends the script
with "FAIL:" and why. The broker should run with `--set groups.group_initial_rebalance_delay_ms=0`.

  (a) Commit and abort across 2 topics of 2 partitions: a committed transaction of 40 records
      (10 per partition), then an aborted one of 20, then a committed one of 20. A
      read_committed consumer reads exactly the 60 committed records, in order per partition;
      a read_uncommitted consumer reads all 80 data records. end_offsets of a read_committed
      consumer (ListOffsets latest: the last stable offset) is 23 for every partition once all
      ended.
  (b) Zombie fencing: producer A opens a transaction and writes; producer B's start() initializes
      the same transactional_id, which aborts A's transaction; A's commit fails with
      ProducerFenced (aiokafka's error for INVALID_PRODUCER_EPOCH), and none of A's records is
      read_committed; B's transaction commits.
  (c) Consume-transform-produce: a group consumer (read_committed) reads 30 input records per
      partition and a transactional producer writes each transformed record with
      send_offsets_to_transaction (AddOffsetsToTxn, TxnOffsetCommit), at most 10 input records
      per transaction. Before each transaction the admin client's list_consumer_group_offsets
      returns what the commits so far sent; the second transaction is aborted and the group's
      offsets stay where the first commit left them (asked before it began and after it ended:
      never while it is open), and the consumer seeks back to them. At the end the committed
      offsets are the input's end and the output read read_committed is every input record
      transformed once, in order.
aiokafka speaks InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn
v0 and OffsetFetch v1-v3 (no require_stable). Every await that talks to the broker has a timeout
(asyncio.wait_for).
"""

import asyncio
import logging
import os
import sys
import traceback

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ProducerFenced

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Deadline, arm_watchdog, bootstrap_servers, log, unique_topic  # noqa: E402

TIMEOUT_MS = 30000
TIMEOUT_S = TIMEOUT_MS / 1000
TRANSACTION_TIMEOUT_MS = 30000
QUIET_S = 3.0
PARTITIONS = 2


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def ok(message):
    log("ok:", message)


async def bounded(awaitable, what, timeout_s=TIMEOUT_S + 10):
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise CheckFailed("%s did not finish in %ds" % (what, timeout_s)) from None


async def create_topics(admin, names):
    response = await bounded(
        admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names], timeout_ms=TIMEOUT_MS),
        "create_topics")
    for entry in response.topic_errors:
        check(entry[1] == 0, "create_topics: %s" % (entry,))


async def producer(transactional_id=None):
    """A started producer; with a transactional_id, start() sends InitProducerId for it."""
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(),
        client_id="streambus-txn-%s" % (transactional_id or "input"),
        transactional_id=transactional_id,
        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        acks="all",
        linger_ms=5,
        request_timeout_ms=TIMEOUT_MS,
    )
    try:
        await bounded(p.start(), "producer %s start()" % transactional_id)
    except BaseException:
        await bounded(p.stop(), "producer %s stop()" % transactional_id)
        raise
    return p


async def send_values(p, sends):
    """Sends each (topic, partition, value) and waits until all are acknowledged."""
    futures = [await bounded(p.send(topic, value=value, partition=partition), "send()")
               for topic, partition, value in sends]
    for future in futures:
        await bounded(future, "delivery")


def value(tag, topic, partition, i):
    return "%s-%s-%d-%d" % (tag, topic, partition, i)


async def send(p, topics, tag, per_partition):
    """`per_partition` records to each partition of each topic, values `tag-<topic>-<p>-<i>`."""
    await send_values(p, [(topic, partition, value(tag, topic, partition, i).encode())
                          for topic in topics for partition in range(PARTITIONS) for i in range(per_partition)])


async def read_all(topics, isolation, expected_count):
    """Every record of `topics` (from the start) as `{(topic, partition): [values]}`, reading
    until `expected_count` records arrived and then QUIET_S more seconds with nothing new (or
    TIMEOUT_S passed)."""
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(),
        client_id="streambus-txn-reader",
        group_id=None,
        isolation_level=isolation,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=TIMEOUT_MS,
    )
    await bounded(c.start(), "reader start()")
    got = {}
    count = 0
    try:
        c.assign([TopicPartition(t, p) for t in topics for p in range(PARTITIONS)])
        deadline = Deadline(TIMEOUT_S)
        quiet = None
        while not deadline.expired():
            batches = await bounded(c.getmany(timeout_ms=200), "getmany()")
            if not batches:
                if count >= expected_count:
                    quiet = quiet or Deadline(QUIET_S)
                    if quiet.expired():
                        break
                continue
            for tp, records in batches.items():
                got.setdefault((tp.topic, tp.partition), []).extend(r.value.decode() for r in records)
                count += len(records)
            quiet = None
    finally:
        await bounded(c.stop(), "reader stop()")
    return got


def expected(topics, tags_counts):
    out = {}
    for topic in topics:
        for partition in range(PARTITIONS):
            values = []
            for tag, n in tags_counts:
                values.extend(value(tag, topic, partition, i) for i in range(n))
            out[(topic, partition)] = values
    return out


async def check_a(topics):
    p = await producer(unique_topic("aiot-a"))
    try:
        await bounded(p.begin_transaction(), "begin_transaction()")
        await send(p, topics, "c1", 10)
        await bounded(p.commit_transaction(), "commit_transaction()")
        await bounded(p.begin_transaction(), "begin_transaction()")
        await send(p, topics, "ab", 5)
        await bounded(p.abort_transaction(), "abort_transaction()")
        await bounded(p.begin_transaction(), "begin_transaction()")
        await send(p, topics, "c2", 5)
        await bounded(p.commit_transaction(), "commit_transaction()")
    finally:
        await bounded(p.stop(), "producer stop()")
    ok("commit, abort, commit across %d topics" % len(topics))

    committed = await read_all(topics, "read_committed", 60)
    want = expected(topics, [("c1", 10), ("c2", 5)])
    check(committed == want, "read_committed read %s, expected %s" % (committed, want))
    ok("read_committed reads exactly the 60 committed records, in order per partition")

    everything = await read_all(topics, "read_uncommitted", 80)
    want_all = expected(topics, [("c1", 10), ("ab", 5), ("c2", 5)])
    check(everything == want_all, "read_uncommitted read %s, expected %s" % (everything, want_all))
    ok("read_uncommitted reads all 80 records, the aborted ones included")

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(), client_id="streambus-txn-offsets",
                         isolation_level="read_committed", request_timeout_ms=TIMEOUT_MS)
    await bounded(c.start(), "consumer start()")
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends = await bounded(c.end_offsets(tps), "end_offsets()")
        # Records, markers (3 transactions): 20 + 3 = 23 per partition.
        check(all(ends[tp] == 23 for tp in tps), "end offsets %s, expected 23 each" % ends)
    finally:
        await bounded(c.stop(), "consumer stop()")
    ok("every partition ends past its 3 markers (offset 23, read_committed ListOffsets)")


async def check_b(topics):
    txn_id = unique_topic("aiot-zombie")
    a = await producer(txn_id)
    b = None
    try:
        await bounded(a.begin_transaction(), "A begin_transaction()")
        await send(a, topics, "zombie", 3)
        log("A wrote its records; B initializes the same transactional_id")
        b = await producer(txn_id)  # fences A and aborts its transaction
        error = None
        try:
            await bounded(a.commit_transaction(), "A's commit_transaction()")
        except Exception as e:  # noqa: BLE001 - checked below
            error = e
        check(error is not None, "the fenced producer committed")
        check(isinstance(error, ProducerFenced),
              "the fenced producer's commit failed with %r, not as fenced" % (error,))
        ok("the old instance's commit fails: %r" % error)
        await bounded(b.begin_transaction(), "B begin_transaction()")
        await send(b, topics, "live", 2)
        await bounded(b.commit_transaction(), "B commit_transaction()")
    finally:
        await bounded(a.stop(), "A stop()")
        if b is not None:
            await bounded(b.stop(), "B stop()")
    committed = await read_all(topics, "read_committed", 2 * PARTITIONS * len(topics))
    want = expected(topics, [("live", 2)])
    check(committed == want, "after fencing, read_committed read %s, expected %s" % (committed, want))
    ok("none of the zombie's records is read_committed; the new instance's commit is")


async def committed_offsets(admin, group, topic):
    """The group's committed offsets of `topic` as {partition: offset} (-1: none)."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    result = await bounded(admin.list_consumer_group_offsets(group, partitions=tps),
                           "list_consumer_group_offsets")
    return {p: result[TopicPartition(topic, p)].offset if TopicPartition(topic, p) in result else -1
            for p in range(PARTITIONS)}


async def wait_committed(admin, group, topic, want):
    """Waits (bounded) until the group's committed offsets are `want`: OffsetFetch below v7
    cannot ask for stable offsets, so a commit that just ended may not show for a moment."""
    deadline = Deadline(TIMEOUT_S)
    while True:
        got = await committed_offsets(admin, group, topic)
        if got == want:
            return got
        check(not deadline.expired(), "the group's committed offsets stayed %s, expected %s" % (got, want))
        await asyncio.sleep(0.1)


async def check_c(admin, source, sink):
    per_partition = 30
    p = await producer()
    try:
        await send_values(p, [(source, part, b"in-%d-%d" % (part, i))
                              for part in range(PARTITIONS) for i in range(per_partition)])
    finally:
        await bounded(p.stop(), "input producer stop()")

    group = unique_topic("aiot-ctp")
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap_servers(),
        client_id="streambus-txn-ctp",
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=TIMEOUT_MS,
    )
    await bounded(consumer.start(), "consumer start()")
    copier = None
    committed = {part: -1 for part in range(PARTITIONS)}
    rounds = 0
    copied = 0
    aborted = False
    try:
        copier = await producer(unique_topic("aiot-copier"))
        deadline = Deadline(2 * TIMEOUT_S)
        while copied < per_partition * PARTITIONS and not deadline.expired():
            batches = await bounded(consumer.getmany(timeout_ms=1000, max_records=10), "getmany()")
            if not batches:
                continue
            # Asked before the transaction begins, never while it is open.
            before = await wait_committed(admin, group, source, committed)
            abort = not aborted and rounds == 1
            await bounded(copier.begin_transaction(), "begin_transaction()")
            await send_values(copier, [(sink, tp.partition, b"out-" + r.value)
                                       for tp, records in batches.items() for r in records])
            offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
            await bounded(copier.send_offsets_to_transaction(offsets, group), "send_offsets_to_transaction()")
            if abort:
                await bounded(copier.abort_transaction(), "abort_transaction()")
                aborted = True
                after = await committed_offsets(admin, group, source)
                check(after == before, "an aborted transaction moved the offsets: %s -> %s" % (before, after))
                ok("an aborted transaction (offsets %s) leaves the group's offsets at %s"
                   % ({tp.partition: o for tp, o in offsets.items()}, after))
                # Read the aborted input again from the last committed offsets.
                for tp in consumer.assignment():
                    consumer.seek(tp, max(after[tp.partition], 0))
                continue
            await bounded(copier.commit_transaction(), "commit_transaction()")
            committed.update({tp.partition: o for tp, o in offsets.items()})
            rounds += 1
            copied += sum(len(records) for records in batches.values())
        check(copied == per_partition * PARTITIONS, "copied %d records in %d transactions" % (copied, rounds))
        check(aborted, "no transaction was aborted")
    finally:
        await bounded(consumer.stop(), "consumer stop()")
        if copier is not None:
            await bounded(copier.stop(), "copier stop()")
    offsets = await wait_committed(admin, group, source, {part: per_partition for part in range(PARTITIONS)})
    ok("%d transactions each committed their offsets with their records: %s" % (rounds, offsets))
    out = await read_all([sink], "read_committed", per_partition * PARTITIONS)
    want = {(sink, part): ["out-in-%d-%d" % (part, i) for i in range(per_partition)] for part in range(PARTITIONS)}
    check(out == want, "the copy read_committed is %s, expected %s" % (out, want))
    ok("the output is every input record transformed exactly once, in order")


async def run_checks():
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(), client_id="streambus-txn-aiokafka-admin",
                                request_timeout_ms=TIMEOUT_MS)
    await bounded(admin.start(), "admin start()", 60)
    try:
        first = [unique_topic("aiot-one"), unique_topic("aiot-two")]
        second = [unique_topic("aiot-zmb")]
        source, sink = unique_topic("aiot-src"), unique_topic("aiot-dst")
        await create_topics(admin, first + second + [source, sink])
        log("(a) commit, abort, commit")
        await check_a(first)
        log("(b) zombie fencing")
        await check_b(second)
        log("(c) consume-transform-produce")
        await check_c(admin, source, sink)
    finally:
        await bounded(admin.close(), "admin close()")


def main():
    arm_watchdog(170)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log("aiokafka %s, bootstrap %s" % (aiokafka.__version__, bootstrap_servers()))
    try:
        asyncio.run(run_checks())
    except Exception as e:  # noqa: BLE001 - any failure fails the script
        traceback.print_exc()
        log("FAIL: %s" % e)
        return 1
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
