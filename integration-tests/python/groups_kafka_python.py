"""Consumer groups (Kafka's classic group protocol) with kafka-python (pure Python, its own
protocol code).

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 groups_kafka_python.py
Exit status 0 when every check passed; each prints an "ok:" line, and a failure ends the script
with "FAIL:" and why. The broker should run with `--set groups.group_initial_rebalance_delay_ms=0`.

On one topic of 6 partitions with 20 records in each:
  (a) 2 members (`KafkaConsumer(group_id=...)`, the default range assignor), each polled in a
      thread of its own (a KafkaConsumer is not thread-safe; nothing but its own thread touches
      it), get disjoint assignments covering all 6 partitions, 3 each; a 3rd joins and the 3 end
      up with 2 each, disjoint, covering.
  (b) Commits: a member reads every partition, commits a different offset per partition
      (`commit(offsets)`, synchronous) and closes; `committed()` returns them and a new member
      starts each partition exactly there.
  (c) KafkaAdminClient on a 2-member group: `list_groups` shows it Stable with protocol type
      `consumer`; `describe_groups` shows Stable, the range protocol, the 2 members with their
      member ids, client ids and the assignments the consumers see; `list_group_offsets` of (b)'s
      group returns the committed offsets.

kafka-python 3.0 renamed the admin calls: list_consumer_groups, describe_consumer_groups and
list_consumer_group_offsets are now list_groups, describe_groups and list_group_offsets, with
dict results.
"""

import logging
import os
import queue
import sys
import threading
import time
import traceback

import kafka
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

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
    wait_until,
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


class Tracker(ConsumerRebalanceListener):
    """The member's partitions as the rebalance callbacks report them (eager protocol: a revoke
    takes everything, an assign gives the whole new set)."""

    def __init__(self, member):
        self.member = member

    def on_partitions_revoked(self, revoked):
        self.member.record("revoke", set())

    def on_partitions_assigned(self, assigned):
        self.member.record("assign", {tp.partition for tp in assigned if tp.topic == self.member.topic})

    def on_partitions_lost(self, lost):
        self.member.record("lost", set())


class Member(threading.Thread):
    """A subscribed KafkaConsumer that only its own thread touches: it polls in a loop and runs
    the functions other threads hand it through call()."""

    def __init__(self, name, group, topic, **extra):
        super().__init__(name=name, daemon=True)
        self.member_name = name
        self.topic = topic
        self.lock = threading.Lock()
        self.assigned = set()
        self.events = []
        self.changed_at = time.monotonic()
        self.first = {}  # partition -> first record read
        self.last_offset = {}  # partition -> offset of the last record read
        self.failure = None
        self.calls = queue.Queue()
        self.stopping = threading.Event()
        self.conf = dict(
            bootstrap_servers=bootstrap_servers(),
            client_id="streambus-groups-%s" % name,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            fetch_max_wait_ms=100,
            request_timeout_ms=TIMEOUT_MS,
            bootstrap_timeout_ms=TIMEOUT_MS,
        )
        self.conf.update(extra)
        self.start()

    def record(self, kind, parts):
        with self.lock:
            self.assigned = set(parts)
            self.events.append((kind, sorted(parts)))
            self.changed_at = time.monotonic()
        log("  %s: %s -> now %s" % (self.member_name, kind, sorted(parts)))

    def snapshot(self):
        with self.lock:
            return set(self.assigned), self.changed_at, list(self.events)

    def run(self):
        consumer = None
        try:
            consumer = KafkaConsumer(**self.conf)
            # The topic's metadata before joining: a leader without it assigns nothing and
            # rejoins at once, and kafka-python 3.0.12 can hang in that quick second rebalance
            # (the broker answers its SyncGroup; the client never applies it; ROADMAP 3.0).
            consumer.partitions_for_topic(self.topic)
            consumer.subscribe([self.topic], listener=Tracker(self))
            while not self.stopping.is_set():
                for tp, records in consumer.poll(timeout_ms=100).items():
                    with self.lock:
                        self.first.setdefault(tp.partition, records[0])
                        self.last_offset[tp.partition] = records[-1].offset
                while True:
                    try:
                        fn, box = self.calls.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        box["result"] = fn(consumer)
                    except Exception as e:  # noqa: BLE001 - handed back to the caller
                        box["error"] = e
                    box["done"].set()
        except Exception:  # noqa: BLE001 - reported by the main thread
            self.failure = traceback.format_exc()
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=False, timeout_ms=TIMEOUT_MS)
                except Exception:  # noqa: BLE001
                    self.failure = self.failure or traceback.format_exc()

    def call(self, fn, what, timeout_s=TIMEOUT_S + 10):
        """Runs fn(consumer) on this member's thread; returns its result or raises its error."""
        box = {"done": threading.Event()}
        self.calls.put((fn, box))
        deadline = Deadline(timeout_s)
        while not box["done"].wait(0.2):
            if not self.is_alive():
                raise CheckFailed("%s: its thread ended before %s: %s" % (self.member_name, what, self.failure))
            if deadline.expired():
                raise CheckFailed("%s: %s did not finish in %ds" % (self.member_name, what, timeout_s))
        if "error" in box:
            raise box["error"]
        return box["result"]

    def close(self):
        self.stopping.set()
        self.join(TIMEOUT_S + 10)
        check(not self.is_alive(), "%s did not close in %ds" % (self.member_name, TIMEOUT_S + 10))


def close_all(members):
    for m in members:
        m.stopping.set()
    for m in members:
        m.close()


def wait_for(members, what, done, timeout_s=REBALANCE_TIMEOUT_S):
    deadline = Deadline(timeout_s)
    while True:
        for m in members:
            check(m.failure is None, "%s failed: %s" % (m.member_name, m.failure))
        result = done()
        if result:
            return result
        if deadline.expired():
            state = "; ".join("%s owns %s after events %s" % (m.member_name, sorted(a), ev[-6:])
                              for m in members for a, _, ev in [m.snapshot()])
            raise CheckFailed("timed out after %ds waiting for %s: %s" % (timeout_s, what, state))
        time.sleep(0.1)


def wait_settled(members, what):
    """Waits until every member owns partitions, together all of them, and none changed for
    SETTLE_S; checks disjoint, covering, balanced and equal to each consumer's assignment()."""
    def settled():
        now = time.monotonic()
        snaps = {m.member_name: m.snapshot() for m in members}
        if any(not a or now - changed < SETTLE_S for a, changed, _ in snaps.values()):
            return None
        assignments = {name: a for name, (a, _, _) in snaps.items()}
        if set().union(*assignments.values()) != set(range(GROUP_PARTITIONS)):
            return None
        return assignments

    assignments = wait_for(members, what, settled)
    for problem in (assignment_problem(assignments), balance_problem(assignments)):
        check(problem is None, "%s: %s" % (what, problem))
    for m in members:
        own = m.call(lambda c: {tp.partition for tp in c.assignment()}, "assignment()")
        check(own == assignments[m.member_name], "%s: %s's assignment() is %s, its listener saw %s"
              % (what, m.member_name, sorted(own), sorted(assignments[m.member_name])))
    ok("%s: %s (disjoint, all %d partitions)" % (what, format_assignment(assignments), GROUP_PARTITIONS))
    return assignments


def admin_client():
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers(),
        client_id="streambus-groups-kafka-python-admin",
        request_timeout_ms=TIMEOUT_MS,
        bootstrap_timeout_ms=TIMEOUT_MS,
    )


def create_topic_with_records(admin):
    topic = unique_topic("kpg")
    admin.create_topics(
        {topic: {"num_partitions": GROUP_PARTITIONS, "replication_factor": 1}}, timeout_ms=TIMEOUT_MS)
    admin.wait_for_topics([topic], timeout_ms=TIMEOUT_MS)
    p = KafkaProducer(bootstrap_servers=bootstrap_servers(), client_id="streambus-groups-kafka-python-producer",
                      acks="all", linger_ms=5, request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS,
                      delivery_timeout_ms=2 * TIMEOUT_MS, bootstrap_timeout_ms=TIMEOUT_MS)
    try:
        futures = {}
        for part in range(GROUP_PARTITIONS):
            for i in range(RECORDS_PER_PARTITION):
                key, value = group_record(part, i)
                futures[(part, i)] = p.send(topic, key=key, value=value, partition=part)
        p.flush(timeout=90)
        for (part, i), f in sorted(futures.items()):
            md = f.get(timeout=TIMEOUT_S)
            check(md.offset == i, "record %d of partition %d acknowledged at offset %d" % (i, part, md.offset))
    finally:
        p.close(timeout=TIMEOUT_S)
    ok("topic %s: %d partitions with %d records each" % (topic, GROUP_PARTITIONS, RECORDS_PER_PARTITION))
    return topic


class Checks:
    def __init__(self):
        self.admin = admin_client()
        self.topic = create_topic_with_records(self.admin)
        self.commit_group = None

    def a_two_then_three_members(self):
        group = unique_topic("kpg-grow")
        members = [Member("grow-1", group, self.topic), Member("grow-2", group, self.topic)]
        try:
            wait_settled(members, "2 members")
            members.append(Member("grow-3", group, self.topic))
            wait_settled(members, "3rd member added")
            for m in members:
                lost = [e for e in m.snapshot()[2] if e[0] == "lost"]
                check(not lost, "%s lost its partitions: %s" % (m.member_name, lost))
        finally:
            close_all(members)

    def committed_offsets(self, member):
        def fetch(c):
            return {p: c.committed(TopicPartition(self.topic, p), timeout_ms=TIMEOUT_MS)
                    for p in range(GROUP_PARTITIONS)}
        return member.call(fetch, "committed()")

    def b_commit_and_resume(self):
        group = unique_topic("kpg-commit")
        cutoffs = {p: commit_cutoff(p) for p in range(GROUP_PARTITIONS)}
        c1 = Member("commit-1", group, self.topic)
        try:
            def read_past_cutoffs():
                with c1.lock:
                    return all(c1.last_offset.get(p, -1) >= off for p, off in cutoffs.items())
            wait_for([c1], "commit-1 to read past offsets %s" % cutoffs, read_past_cutoffs)
            offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(off, "", -1) for p, off in cutoffs.items()}
            c1.call(lambda c: c.commit(offsets, timeout_ms=TIMEOUT_MS), "commit()")
            ok("commit(offsets) of %s" % cutoffs)
            got = self.committed_offsets(c1)
            check(got == cutoffs, "committed() returned %s, expected %s" % (got, cutoffs))
            ok("committed() returns the committed offsets")
        finally:
            c1.close()

        c2 = Member("commit-2", group, self.topic)
        try:
            def read_all():
                with c2.lock:
                    return len(c2.first) == GROUP_PARTITIONS
            wait_for([c2], "commit-2 to read every partition", read_all)
            with c2.lock:
                firsts = dict(c2.first)
            got = {p: r.offset for p, r in firsts.items()}
            check(got == cutoffs, "the new member started at %s, expected the committed %s" % (got, cutoffs))
            for p, r in firsts.items():
                key, value = group_record(p, cutoffs[p])
                check((r.key, r.value) == (key, value), "partition %d offset %d holds %r/%r, expected %r/%r"
                      % (p, r.offset, r.key, r.value, key, value))
            got = self.committed_offsets(c2)
            check(got == cutoffs, "commit-2: committed() returned %s, expected %s" % (got, cutoffs))
            ok("a new member of the group resumes every partition at the committed offset")
        finally:
            c2.close()
        self.commit_group = group

    def c_admin(self):
        group = unique_topic("kpg-admin")
        members = [Member("admin-1", group, self.topic), Member("admin-2", group, self.topic)]
        try:
            assignments = wait_settled(members, "group for the admin checks, 2 members")

            listed = {g["group_id"]: g for g in self.admin.list_groups()}
            check(group in listed, "list_groups does not show %s (it shows %s)" % (group, sorted(listed)))
            entry = listed[group]
            check(entry.get("protocol_type") == "consumer", "list_groups: %s" % entry)
            check(entry.get("group_state") == "Stable", "list_groups: %s, expected group_state Stable" % entry)
            ok("list_groups: %s is Stable, protocol type consumer" % group)

            described = self.admin.describe_groups([group])
            check(set(described) == {group}, "describe_groups answered for %s" % sorted(described))
            d = described[group]
            check(d["error"] is None, "describe_groups: %s" % d["error"])
            check(d["group_state"] == "Stable", "describe_groups: state %r" % d["group_state"])
            check(d["protocol_type"] == "consumer", "describe_groups: protocol type %r" % d["protocol_type"])
            check(d["protocol_data"] == "range", "describe_groups: protocol %r, expected range" % d["protocol_data"])
            by_id = {m["member_id"]: m for m in d["members"]}
            check(len(d["members"]) == 2 and len(by_id) == 2, "describe_groups: members %s" % sorted(by_id))
            for m in members:
                member_id = m.call(lambda c: c.group_metadata().member_id, "group_metadata()")
                desc = by_id.get(member_id)
                check(desc is not None,
                      "describe_groups lists %s, not %s's %r" % (sorted(by_id), m.member_name, member_id))
                check(desc["client_id"] == "streambus-groups-%s" % m.member_name, "describe_groups: %s" % desc)
                assignment = desc["member_assignment"]
                check(isinstance(assignment, dict), "describe_groups: undecodable assignment %r" % (assignment,))
                parts = set()
                for entry in assignment["assigned_partitions"]:
                    check(entry["topic"] == self.topic, "describe_groups: %s assigned topic %r"
                          % (m.member_name, entry["topic"]))
                    parts.update(entry["partitions"])
                check(parts == assignments[m.member_name], "describe_groups: %s assigned %s, the consumer has %s"
                      % (m.member_name, sorted(parts), sorted(assignments[m.member_name])))
                subscription = desc["member_metadata"]
                check(isinstance(subscription, dict) and subscription.get("topics") == [self.topic],
                      "describe_groups: %s subscription %r" % (m.member_name, subscription))
            ok("describe_groups: Stable, range, members and assignments as the consumers see them")
        finally:
            close_all(members)

        if self.commit_group is not None:
            cutoffs = {p: commit_cutoff(p) for p in range(GROUP_PARTITIONS)}
            result = self.admin.list_group_offsets(self.commit_group)
            check(set(result) == {self.commit_group}, "list_group_offsets answered for %s" % sorted(result))
            got = {tp.partition: om.offset for tp, om in result[self.commit_group].items() if tp.topic == self.topic}
            check(got == cutoffs, "list_group_offsets returned %s, expected %s" % (got, cutoffs))
            ok("list_group_offsets returns the committed offsets")


CHECKS = [("a", "a_two_then_three_members"), ("b", "b_commit_and_resume"), ("c", "c_admin")]


def main():
    arm_watchdog(540)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log("kafka-python %s, bootstrap %s" % (kafka.__version__, bootstrap_servers()))

    def broker_answers():
        try:
            a = admin_client()
        except KafkaError:
            return False
        a.close()
        return True

    wait_until("the broker at %s to accept an admin client" % bootstrap_servers(), broker_answers, 60, interval_s=1)
    try:
        checks = Checks()
        for letter, method in CHECKS:
            log("(%s) %s" % (letter, method))
            getattr(checks, method)()
    except Exception as e:  # noqa: BLE001 - any failure fails the script
        traceback.print_exc()
        log("FAIL: %s" % e)
        return 1
    log("all %d checks passed" % len(CHECKS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
