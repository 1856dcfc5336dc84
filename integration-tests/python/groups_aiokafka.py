"""Consumer groups (Kafka's classic group protocol) with aiokafka (asyncio, its own protocol code).

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 groups_aiokafka.py
Exit status 0 when every check passed; each prints an "ok:" line, and a failure ends the script
with "FAIL:" and why. The broker should run with `--set groups.group_initial_rebalance_delay_ms=0`.

On one topic of 6 partitions with 20 records in each (created and filled with aiokafka's admin
client and producer):
  (a) 2 members (AIOKafkaConsumer with a group_id, aiokafka's default round-robin assignor),
      each reading in a task of its own, get disjoint assignments covering all 6 partitions, 3
      each; a 3rd joins and the 3 end up with 2 each, disjoint, covering.
  (b) Commits: a member reads every partition, commits a different offset per partition
      (`await commit(offsets)`) and stops; `committed()` returns them, a new member starts each
      partition exactly there, and the admin client's list_consumer_group_offsets returns them.
Every await that talks to the broker has a timeout (asyncio.wait_for).
"""

import asyncio
import logging
import os
import sys
import time
import traceback

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    GROUP_PARTITIONS,
    RECORDS_PER_PARTITION,
    Deadline,
    arm_watchdog,
    assignment_problem,
    balance_problem,
    bootstrap_servers,
    commit_cutoff,
    format_assignment,
    group_record,
    log,
    unique_topic,
)

TIMEOUT_MS = 30000
TIMEOUT_S = TIMEOUT_MS / 1000
REBALANCE_TIMEOUT_S = 90
SETTLE_S = 3.0
SESSION_TIMEOUT_MS = 10000
HEARTBEAT_INTERVAL_MS = 500


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


class Tracker(ConsumerRebalanceListener):
    """The member's partitions as the rebalance callbacks report them (eager protocol)."""

    def __init__(self, member):
        self.member = member

    async def on_partitions_revoked(self, revoked):
        self.member.record("revoke", set())

    async def on_partitions_assigned(self, assigned):
        self.member.record("assign", {tp.partition for tp in assigned if tp.topic == self.member.topic})


class Member:
    def __init__(self, name, group, topic):
        self.name = name
        self.topic = topic
        self.assigned = set()
        self.events = []
        self.changed_at = time.monotonic()
        self.first = {}  # partition -> first record read
        self.last_offset = {}
        self.task = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(),
            client_id="streambus-groups-%s" % name,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            fetch_max_wait_ms=100,
            request_timeout_ms=TIMEOUT_MS,
        )

    def record(self, kind, parts):
        self.assigned = set(parts)
        self.events.append((kind, sorted(parts)))
        self.changed_at = time.monotonic()
        log("  %s: %s -> now %s" % (self.name, kind, sorted(parts)))

    async def start(self):
        self.consumer.subscribe([self.topic], listener=Tracker(self))
        await bounded(self.consumer.start(), "%s start()" % self.name)
        self.task = asyncio.create_task(self._read())

    async def _read(self):
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                self.first.setdefault(tp.partition, records[0])
                self.last_offset[tp.partition] = records[-1].offset

    def failure(self):
        if self.task is not None and self.task.done() and not self.task.cancelled():
            return self.task.exception() or "reading task ended"
        return None

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await bounded(self.consumer.stop(), "%s stop()" % self.name)


async def stop_all(members):
    for m in members:
        await m.stop()


async def wait_for(members, what, done, timeout_s=REBALANCE_TIMEOUT_S):
    deadline = Deadline(timeout_s)
    while True:
        for m in members:
            failure = m.failure()
            check(failure is None, "%s stopped reading: %r" % (m.name, failure))
        result = done()
        if result:
            return result
        if deadline.expired():
            state = "; ".join("%s owns %s after events %s" % (m.name, sorted(m.assigned), m.events[-6:])
                              for m in members)
            raise CheckFailed("timed out after %ds waiting for %s: %s" % (timeout_s, what, state))
        await asyncio.sleep(0.1)


async def wait_settled(members, what):
    def settled():
        now = time.monotonic()
        if any(not m.assigned or now - m.changed_at < SETTLE_S for m in members):
            return None
        if set().union(*(m.assigned for m in members)) != set(range(GROUP_PARTITIONS)):
            return None
        return {m.name: set(m.assigned) for m in members}

    assignments = await wait_for(members, what, settled)
    for problem in (assignment_problem(assignments), balance_problem(assignments)):
        check(problem is None, "%s: %s" % (what, problem))
    for m in members:
        own = {tp.partition for tp in m.consumer.assignment()}
        check(own == assignments[m.name], "%s: %s's assignment() is %s, its listener saw %s"
              % (what, m.name, sorted(own), sorted(assignments[m.name])))
    ok("%s: %s (disjoint, all %d partitions)" % (what, format_assignment(assignments), GROUP_PARTITIONS))
    return assignments


async def create_topic_with_records(admin):
    topic = unique_topic("aiog")
    response = await bounded(admin.create_topics([NewTopic(topic, GROUP_PARTITIONS, 1)], timeout_ms=TIMEOUT_MS),
                             "create_topics")
    for entry in response.topic_errors:
        check(entry[1] == 0, "create_topics %s: %s" % (topic, entry))
    p = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(), client_id="streambus-groups-aiokafka-producer",
                         acks="all", linger_ms=5, request_timeout_ms=TIMEOUT_MS)
    await bounded(p.start(), "producer start()")
    try:
        async def partitions_ready():
            deadline = Deadline(TIMEOUT_S)
            while True:
                parts = await p.partitions_for(topic)
                if parts is not None and len(parts) == GROUP_PARTITIONS:
                    return
                check(not deadline.expired(), "%s has partitions %s, expected %d" % (topic, parts, GROUP_PARTITIONS))
                await asyncio.sleep(0.2)
        await bounded(partitions_ready(), "metadata of %s" % topic)
        futures = {}
        for part in range(GROUP_PARTITIONS):
            for i in range(RECORDS_PER_PARTITION):
                key, value = group_record(part, i)
                futures[(part, i)] = await bounded(p.send(topic, value=value, key=key, partition=part), "send()")
        for (part, i), f in sorted(futures.items()):
            md = await bounded(f, "delivery of record %d of partition %d" % (i, part))
            check(md.offset == i, "record %d of partition %d acknowledged at offset %d" % (i, part, md.offset))
    finally:
        await bounded(p.stop(), "producer stop()")
    ok("topic %s: %d partitions with %d records each" % (topic, GROUP_PARTITIONS, RECORDS_PER_PARTITION))
    return topic


async def check_two_then_three_members(topic):
    group = unique_topic("aiog-grow")
    members = []
    try:
        for i in (1, 2):
            m = Member("grow-%d" % i, group, topic)
            members.append(m)
            await m.start()
        await wait_settled(members, "2 members")
        m = Member("grow-3", group, topic)
        members.append(m)
        await m.start()
        await wait_settled(members, "3rd member added")
    finally:
        await stop_all(members)


async def committed_offsets(member, topic):
    return {p: await bounded(member.consumer.committed(TopicPartition(topic, p)), "committed()")
            for p in range(GROUP_PARTITIONS)}


async def check_commit_and_resume(admin, topic):
    group = unique_topic("aiog-commit")
    cutoffs = {p: commit_cutoff(p) for p in range(GROUP_PARTITIONS)}
    c1 = Member("commit-1", group, topic)
    try:
        await c1.start()
        await wait_for([c1], "commit-1 to read past offsets %s" % cutoffs,
                       lambda: all(c1.last_offset.get(p, -1) >= off for p, off in cutoffs.items()))
        await bounded(c1.consumer.commit({TopicPartition(topic, p): off for p, off in cutoffs.items()}), "commit()")
        ok("commit(offsets) of %s" % cutoffs)
        got = await committed_offsets(c1, topic)
        check(got == cutoffs, "committed() returned %s, expected %s" % (got, cutoffs))
        ok("committed() returns the committed offsets")
    finally:
        await c1.stop()

    c2 = Member("commit-2", group, topic)
    try:
        await c2.start()
        await wait_for([c2], "commit-2 to read every partition", lambda: len(c2.first) == GROUP_PARTITIONS)
        got = {p: r.offset for p, r in c2.first.items()}
        check(got == cutoffs, "the new member started at %s, expected the committed %s" % (got, cutoffs))
        for p, r in c2.first.items():
            key, value = group_record(p, cutoffs[p])
            check((r.key, r.value) == (key, value), "partition %d offset %d holds %r/%r, expected %r/%r"
                  % (p, r.offset, r.key, r.value, key, value))
        got = await committed_offsets(c2, topic)
        check(got == cutoffs, "commit-2: committed() returned %s, expected %s" % (got, cutoffs))
        ok("a new member of the group resumes every partition at the committed offset")
    finally:
        await c2.stop()

    result = await bounded(admin.list_consumer_group_offsets(group), "list_consumer_group_offsets")
    got = {tp.partition: om.offset for tp, om in result.items() if tp.topic == topic}
    check(got == cutoffs, "list_consumer_group_offsets returned %s, expected %s" % (got, cutoffs))
    ok("the admin client's list_consumer_group_offsets returns the committed offsets")


async def run_checks():
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(), client_id="streambus-groups-aiokafka-admin",
                                request_timeout_ms=TIMEOUT_MS)
    await bounded(admin.start(), "admin start()", 60)
    try:
        topic = await create_topic_with_records(admin)
        log("(a) 2 then 3 members")
        await check_two_then_three_members(topic)
        log("(b) commit and resume")
        await check_commit_and_resume(admin, topic)
    finally:
        await bounded(admin.close(), "admin close()")


def main():
    arm_watchdog(540)
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
