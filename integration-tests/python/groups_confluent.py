"""Consumer groups (Kafka's classic group protocol) with confluent-kafka (librdkafka).

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 groups_confluent.py [a b c d e f]
(no argument: every check; `e` also runs `c` and `d`, whose groups it uses). Exit status 0 when
every check passed; each prints an "ok:" line, and a failure ends the script with "FAIL:" and why.

The broker should run with `--set groups.group_initial_rebalance_delay_ms=0`, or every first join
of a group waits Kafka's default 3 s (the waits here allow for that, only slower).

On one topic of 6 partitions with 20 records in each:
  (a) `range` (eager): 2 members of a group get disjoint assignments covering all 6 partitions,
      3 each; a 3rd member joins and, after the rebalance, the 3 have 2 each, disjoint, covering.
  (b) The same with `cooperative-sticky` (incremental rebalancing): every member tracks its set
      through on_assign/on_revoke, calling incremental_assign/incremental_unassign as librdkafka
      requires; when the 3rd member joins, the first two only give partitions up (each keeps a
      subset of what it had), none is lost.
  (c) Commits: a member reads every partition, stores the offsets of a prefix of each (a
      different length per partition), commits them synchronously and closes; `committed()`
      returns them, and a new member of the group starts each partition exactly there.
  (d) AdminClient: list_consumer_groups shows a 2-member group as Stable (also with a states
      filter), describe_consumer_groups shows its 2 members with the member ids, client ids and
      assignments the consumers themselves see.
  (e) AdminClient offsets: list_consumer_group_offsets of (c)'s group (now empty) returns the
      committed offsets; alter_consumer_group_offsets changes them and a new member starts there;
      deleting (d)'s group while its members are up fails with NON_EMPTY_GROUP and leaves it
      intact; deleting the empty group succeeds and it is gone from the listing and its offsets.
  (f) Static membership (group.instance.id): a static member closes (librdkafka sends no
      LeaveGroup for a static member on close) and restarts with the same instance id within
      session.timeout.ms: it gets the same partitions back and the other member sees no
      revoke, assign or lost partitions, i.e. no rebalance.

Every consumer sets group.protocol=classic explicitly: librdkafka documents that its default
will become `consumer` (KIP-848) in a later release.
"""

import os
import sys
import time
import traceback

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Consumer
from confluent_kafka import libversion as librdkafka_version
from confluent_kafka import version as client_version

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ck import SOCKET_TIMEOUT_MS, admin_client, create_topic  # noqa: E402
from common import (  # noqa: E402
    GROUP_PARTITIONS,
    RECORDS_PER_PARTITION,
    Deadline,
    altered_offset,
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

ADMIN_TIMEOUT_S = 30
# Bound on one rebalance (a join, a member added, a restart); generous for a 2-core CI machine.
REBALANCE_TIMEOUT_S = 90
# An assignment counts as settled once no member's set changed for this long (several
# heartbeat intervals, so a rebalance still in progress would have shown).
SETTLE_S = 3.0
SESSION_TIMEOUT_MS = 10000
STATIC_SESSION_TIMEOUT_MS = 45000
HEARTBEAT_INTERVAL_MS = 500


class CheckFailed(Exception):
    pass


def name_of(enum_value):
    return getattr(enum_value, "name", enum_value)


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def ok(message):
    log("ok:", message)


class Member:
    """One subscribed consumer of a group, polled by the caller (never from another thread). It
    tracks its own partitions through the rebalance callbacks and what it read per partition.

    `protocol` is librdkafka's group.protocol: `classic`, or `consumer` (KIP-848, used by
    groups_confluent_848.py), where the broker assigns (no client-side `strategy`, session
    timeout or heartbeat interval: librdkafka refuses them) and partitions come and go
    incrementally, as with cooperative-sticky."""

    def __init__(self, name, group, topic, strategy="range", extra=None, protocol="classic"):
        self.name = name
        self.topic = topic
        self.cooperative = strategy == "cooperative-sticky" or protocol == "consumer"
        self.assigned = set()
        self.events = []  # (kind, sorted partitions), kind in assign / revoke / lost
        self.changed_at = time.monotonic()
        self.first = {}  # partition -> first message read
        self.last_offset = {}  # partition -> offset of the last message read
        self.callback_errors = []
        self.last_error = None  # the last (non-fatal) error poll() returned
        self.store_below = None  # partition -> offset: store offsets of messages below it
        conf = {
            "bootstrap.servers": bootstrap_servers(),
            "client.id": "streambus-groups-%s" % name,
            "group.id": group,
            "group.protocol": protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "allow.auto.create.topics": False,
            "fetch.wait.max.ms": 100,
            "socket.timeout.ms": SOCKET_TIMEOUT_MS,
        }
        if protocol == "classic":
            conf.update({
                "partition.assignment.strategy": strategy,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            })
        conf.update(extra or {})
        self.consumer = Consumer(conf)
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.closed = False

    def _parts(self, partitions):
        return {tp.partition for tp in partitions if tp.topic == self.topic}

    def _record(self, kind, parts):
        self.events.append((kind, sorted(parts)))
        self.changed_at = time.monotonic()
        log("  %s: %s %s -> now %s" % (self.name, kind, sorted(parts), sorted(self.assigned)))

    # Exceptions must not escape a rebalance callback (librdkafka would be left half-way), so
    # problems are collected in callback_errors and checked by the caller.
    def _on_assign(self, consumer, partitions):
        try:
            parts = self._parts(partitions)
            if self.cooperative:
                self.assigned |= parts
                consumer.incremental_assign(partitions)
            else:
                self.assigned = parts
                consumer.assign(partitions)
            self._record("assign", parts)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            self.callback_errors.append("%s on_assign: %r" % (self.name, e))

    def _take_back(self, kind, consumer, partitions):
        try:
            parts = self._parts(partitions)
            if self.cooperative:
                self.assigned -= parts
                consumer.incremental_unassign(partitions)
            else:
                self.assigned = set()
                consumer.unassign()
            self._record(kind, parts)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            self.callback_errors.append("%s on_%s: %r" % (self.name, kind, e))

    def _on_revoke(self, consumer, partitions):
        self._take_back("revoke", consumer, partitions)

    def _on_lost(self, consumer, partitions):
        self._take_back("lost", consumer, partitions)

    def poll(self, timeout_s):
        msg = self.consumer.poll(timeout_s)
        if msg is None:
            return
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise CheckFailed("%s: fatal consumer error %s" % (self.name, err))
            log("  %s: consumer error (not fatal): %s" % (self.name, err))
            self.last_error = err
            return
        p = msg.partition()
        self.first.setdefault(p, msg)
        self.last_offset[p] = msg.offset()
        if self.store_below is not None and msg.offset() < self.store_below[p]:
            self.consumer.store_offsets(message=msg)

    def assignment_from_client(self):
        return {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}

    def close(self):
        if not self.closed:
            self.closed = True
            self.consumer.close()


def describe_members(members):
    return "; ".join("%s owns %s after events %s%s" % (
        m.name, sorted(m.assigned), m.events[-6:],
        "" if m.last_error is None else " (last consumer error: %s)" % m.last_error) for m in members)


def pump(members, what, done, timeout_s=REBALANCE_TIMEOUT_S):
    """Polls every member in turn (serving their rebalance callbacks) until done() returns a
    truthy value, which is returned; fails after timeout_s, showing each member's state."""
    deadline = Deadline(timeout_s)
    while True:
        for m in members:
            m.poll(0.05)
        for m in members:
            check(not m.callback_errors, "rebalance callback problem: %s" % m.callback_errors)
        result = done()
        if result:
            return result
        if deadline.expired():
            raise CheckFailed("timed out after %ds waiting for %s: %s"
                              % (timeout_s, what, describe_members(members)))


def keep_polling(members, seconds):
    """Polls the members for `seconds` (serving their callbacks), whatever happens."""
    deadline = Deadline(seconds)
    while not deadline.expired():
        for m in members:
            m.poll(0.05)


def wait_settled(members, what):
    """Waits until every member owns partitions, together all of the topic's, and no member's
    set changed for SETTLE_S; then checks that the sets are disjoint, cover the topic, are
    balanced and agree with each consumer's own assignment(). Returns {name: set}."""
    def settled():
        now = time.monotonic()
        if any(not m.assigned or now - m.changed_at < SETTLE_S for m in members):
            return None
        if set().union(*(m.assigned for m in members)) != set(range(GROUP_PARTITIONS)):
            return None
        return {m.name: set(m.assigned) for m in members}

    assignments = pump(members, what, settled)
    problem = assignment_problem(assignments)
    check(problem is None, "%s: %s" % (what, problem))
    problem = balance_problem(assignments)
    check(problem is None, "%s: %s" % (what, problem))
    for m in members:
        from_client = m.assignment_from_client()
        check(from_client == m.assigned,
              "%s: %s's assignment() is %s but its callbacks left it %s"
              % (what, m.name, sorted(from_client), sorted(m.assigned)))
    ok("%s: %s (disjoint, all %d partitions)" % (what, format_assignment(assignments), GROUP_PARTITIONS))
    return assignments


def producer():
    return Producer({
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "streambus-groups-producer",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
    })


def create_topic_with_records(admin, prefix):
    """A new topic of GROUP_PARTITIONS partitions with RECORDS_PER_PARTITION records in each,
    record i of every partition at offset i."""
    topic = unique_topic(prefix)
    create_topic(admin, topic, partitions=GROUP_PARTITIONS)
    p = producer()
    reports = {}
    for part in range(GROUP_PARTITIONS):
        for i in range(RECORDS_PER_PARTITION):
            key, value = group_record(part, i)

            def on_delivery(err, msg, where=(part, i)):
                reports[where] = (err, msg.offset())
            p.produce(topic, key=key, value=value, partition=part, on_delivery=on_delivery)
    remaining = p.flush(90)
    check(remaining == 0, "%d records still undelivered after 90s" % remaining)
    for (part, i), (err, offset) in sorted(reports.items()):
        check(err is None and offset == i,
              "record %d of partition %d: error %s, offset %s" % (i, part, err, offset))
    check(len(reports) == GROUP_PARTITIONS * RECORDS_PER_PARTITION, "missing delivery reports")
    ok("topic %s: %d partitions with %d records each" % (topic, GROUP_PARTITIONS, RECORDS_PER_PARTITION))
    return topic


def close_all(members):
    for m in members:
        m.close()


class Checks:
    # The group protocol of the members the checks make (groups_confluent_848.py: `consumer`).
    protocol = "classic"

    def __init__(self):
        self.admin = admin_client()
        self.topic = create_topic_with_records(self.admin, "ckg")
        self.commit_group = None  # (c): its group, empty once (c) is over
        self.live_group = None  # (d): its group, with members still up
        self.live_members = []

    # -- (a), (b) ---------------------------------------------------------------------------

    def grow_group(self, label, strategy):
        group = unique_topic("ckg-%s" % label)
        m1 = Member("%s-1" % label, group, self.topic, strategy)
        m2 = Member("%s-2" % label, group, self.topic, strategy)
        members = [m1, m2]
        try:
            before = wait_settled(members, "%s, 2 members" % strategy)
            m3 = Member("%s-3" % label, group, self.topic, strategy)
            members.append(m3)
            after = wait_settled(members, "%s, 3rd member added" % strategy)
            for m in members:
                lost = [e for e in m.events if e[0] == "lost"]
                check(not lost, "%s lost partitions (session expiry?): %s" % (m.name, lost))
            return before, after
        finally:
            close_all(members)

    def a_range(self):
        self.grow_group("range", "range")

    def b_cooperative_sticky(self):
        before, after = self.grow_group("coop", "cooperative-sticky")
        for name in before:
            check(after[name] <= before[name],
                  "cooperative-sticky: %s went from %s to %s when a member joined; an existing member "
                  "should only give partitions up" % (name, sorted(before[name]), sorted(after[name])))
        ok("cooperative-sticky: the first two members kept subsets of their partitions")

    # -- (c) --------------------------------------------------------------------------------

    def c_commit_and_resume(self):
        group = unique_topic("ckg-commit")
        cutoffs = {p: commit_cutoff(p) for p in range(GROUP_PARTITIONS)}
        c1 = Member("commit-1", group, self.topic, extra={"enable.auto.offset.store": False},
                    protocol=self.protocol)
        c1.store_below = cutoffs
        try:
            pump([c1], "commit-1 to read past offset %s of every partition" % cutoffs,
                 lambda: all(c1.last_offset.get(p, -1) >= cutoffs[p] for p in cutoffs))
            committed = c1.consumer.commit(asynchronous=False)
            got = {}
            for tp in committed:
                check(tp.error is None, "commit of %s [%d] failed: %s" % (tp.topic, tp.partition, tp.error))
                got[tp.partition] = tp.offset
            check(got == cutoffs, "commit(asynchronous=False) committed %s, expected %s" % (got, cutoffs))
            ok("commit(asynchronous=False) committed %s" % got)
            tps = [TopicPartition(self.topic, p) for p in range(GROUP_PARTITIONS)]
            fetched = {tp.partition: tp.offset for tp in c1.consumer.committed(tps, timeout=ADMIN_TIMEOUT_S)}
            check(fetched == cutoffs, "committed() returned %s, expected %s" % (fetched, cutoffs))
            ok("committed() returns the committed offsets")
        finally:
            c1.close()
        self.resume_at(group, cutoffs, "commit-2")
        self.commit_group = group

    def resume_at(self, group, expected, name):
        """A new member of `group` reads every partition from exactly `expected` ({p: offset})."""
        m = Member(name, group, self.topic, protocol=self.protocol)
        try:
            pump([m], "%s to read a record of every partition" % name,
                 lambda: len(m.first) == GROUP_PARTITIONS)
            firsts = {p: msg.offset() for p, msg in m.first.items()}
            check(firsts == expected,
                  "a new member of %s started at offsets %s, expected the committed %s" % (group, firsts, expected))
            for p, msg in m.first.items():
                key, value = group_record(p, expected[p])
                check((msg.key(), msg.value()) == (key, value),
                      "partition %d offset %d holds %r/%r, expected %r/%r"
                      % (p, msg.offset(), msg.key(), msg.value(), key, value))
            tps = [TopicPartition(self.topic, p) for p in range(GROUP_PARTITIONS)]
            fetched = {tp.partition: tp.offset for tp in m.consumer.committed(tps, timeout=ADMIN_TIMEOUT_S)}
            check(fetched == expected, "%s: committed() returned %s, expected %s" % (name, fetched, expected))
            ok("a new member of the group resumes every partition at the committed offset")
        finally:
            m.close()

    # -- (d) --------------------------------------------------------------------------------

    def list_groups(self, **kwargs):
        result = self.admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S, **kwargs) \
            .result(timeout=ADMIN_TIMEOUT_S + 10)
        check(not result.errors, "list_consumer_groups errors: %s" % result.errors)
        return {g.group_id: g for g in result.valid}

    def describe(self, group):
        futures = self.admin.describe_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S)
        return futures[group].result(timeout=ADMIN_TIMEOUT_S + 10)

    def d_admin_list_and_describe(self):
        group = unique_topic("ckg-admin")
        members = [Member("admin-1", group, self.topic), Member("admin-2", group, self.topic)]
        self.live_group, self.live_members = group, members
        assignments = wait_settled(members, "group for the admin checks, 2 members")

        listing = self.list_groups().get(group)
        check(listing is not None, "list_consumer_groups does not show %s" % group)
        check(listing.state == ConsumerGroupState.STABLE,
              "list_consumer_groups shows %s in state %s, expected STABLE" % (group, listing.state))
        check(not listing.is_simple_consumer_group, "%s listed as a simple consumer group" % group)
        check(listing.type in (None, ConsumerGroupType.CLASSIC, ConsumerGroupType.UNKNOWN),
              "%s listed with type %s, expected CLASSIC (or UNKNOWN below ListGroups v5)" % (group, listing.type))
        ok("list_consumer_groups: %s is %s (type %s)" % (group, name_of(listing.state), name_of(listing.type)))
        check(group in self.list_groups(states={ConsumerGroupState.STABLE}),
              "list_consumer_groups(states={STABLE}) leaves out %s" % group)
        check(group not in self.list_groups(states={ConsumerGroupState.EMPTY}),
              "list_consumer_groups(states={EMPTY}) includes the stable group %s" % group)
        ok("list_consumer_groups with a states filter")

        desc = self.describe(group)
        check(desc.group_id == group, "described %s, asked for %s" % (desc.group_id, group))
        check(desc.state == ConsumerGroupState.STABLE, "describe: state %s, expected STABLE" % desc.state)
        check(not desc.is_simple_consumer_group, "describe: a simple consumer group")
        check(desc.partition_assignor == "range", "describe: assignor %r, expected 'range'" % desc.partition_assignor)
        check(desc.coordinator is not None and desc.coordinator.id >= 0, "describe: coordinator %s" % desc.coordinator)
        by_id = {d.member_id: d for d in desc.members}
        check(len(desc.members) == 2 and len(by_id) == 2,
              "describe: %d members %s, expected 2" % (len(desc.members), sorted(by_id)))
        for m in members:
            member_id = m.consumer.memberid()
            d = by_id.get(member_id)
            check(d is not None, "describe lists members %s, not %s's %r" % (sorted(by_id), m.name, member_id))
            check(d.client_id == "streambus-groups-%s" % m.name,
                  "describe: member %s has client id %r" % (member_id, d.client_id))
            check(d.group_instance_id is None, "describe: %s has instance id %r" % (m.name, d.group_instance_id))
            check(d.host, "describe: %s has no host" % m.name)
            described = {tp.partition for tp in d.assignment.topic_partitions if tp.topic == self.topic}
            others = [tp for tp in d.assignment.topic_partitions if tp.topic != self.topic]
            check(not others, "describe: %s is assigned other topics' partitions %s" % (m.name, others))
            check(described == assignments[m.name],
                  "describe: %s is assigned %s, the consumer has %s"
                  % (m.name, sorted(described), sorted(assignments[m.name])))
        ok("describe_consumer_groups: Stable, range, members and assignments as the consumers see them")

    # -- (e) --------------------------------------------------------------------------------

    def group_offsets(self, group, partitions=None):
        request = ConsumerGroupTopicPartitions(
            group, None if partitions is None else [TopicPartition(self.topic, p) for p in partitions])
        futures = self.admin.list_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S)
        result = futures[group].result(timeout=ADMIN_TIMEOUT_S + 10)
        offsets = {}
        for tp in result.topic_partitions:
            check(tp.error is None, "list_consumer_group_offsets %s [%d]: %s" % (tp.topic, tp.partition, tp.error))
            if tp.topic == self.topic:
                offsets[tp.partition] = tp.offset
        return offsets

    def wait_state(self, group, state):
        wait_until("%s to be %s" % (group, state.name),
                   lambda: self.describe(group).state == state, ADMIN_TIMEOUT_S, interval_s=0.5)

    def e_admin_offsets_and_delete(self):
        group = self.commit_group
        cutoffs = {p: commit_cutoff(p) for p in range(GROUP_PARTITIONS)}
        self.wait_state(group, ConsumerGroupState.EMPTY)
        ok("%s is EMPTY once its members closed" % group)
        got = self.group_offsets(group)
        check(got == cutoffs, "list_consumer_group_offsets (all partitions) returned %s, expected %s" % (got, cutoffs))
        got = self.group_offsets(group, range(GROUP_PARTITIONS))
        check(got == cutoffs,
              "list_consumer_group_offsets (6 partitions named) returned %s, expected %s" % (got, cutoffs))
        ok("list_consumer_group_offsets returns the committed offsets")

        altered = {p: altered_offset(p) for p in range(GROUP_PARTITIONS)}
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(self.topic, p, off) for p, off in altered.items()])
        futures = self.admin.alter_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S)
        result = futures[group].result(timeout=ADMIN_TIMEOUT_S + 10)
        for tp in result.topic_partitions:
            check(tp.error is None, "alter_consumer_group_offsets %s [%d]: %s" % (tp.topic, tp.partition, tp.error))
        got = self.group_offsets(group)
        check(got == altered, "after alter_consumer_group_offsets the group has %s, expected %s" % (got, altered))
        ok("alter_consumer_group_offsets on the empty group")
        self.resume_at(group, altered, "altered-1")

        live = self.live_group
        futures = self.admin.delete_consumer_groups([live], request_timeout=ADMIN_TIMEOUT_S)
        try:
            futures[live].result(timeout=ADMIN_TIMEOUT_S + 10)
            raise CheckFailed("deleting %s, which has 2 members, succeeded" % live)
        except KafkaException as e:
            code = e.args[0].code()
            check(code == KafkaError.NON_EMPTY_GROUP,
                  "deleting the non-empty %s failed with %s, expected NON_EMPTY_GROUP" % (live, e.args[0]))
        keep_polling(self.live_members, 1.0)
        desc = self.describe(live)
        check(desc.state == ConsumerGroupState.STABLE and len(desc.members) == 2,
              "after the refused delete, %s is %s with %d members" % (live, desc.state, len(desc.members)))
        ok("delete_consumer_groups of a group with members fails with NON_EMPTY_GROUP and leaves it as it was")
        close_all(self.live_members)

        self.wait_state(group, ConsumerGroupState.EMPTY)
        futures = self.admin.delete_consumer_groups([group], request_timeout=ADMIN_TIMEOUT_S)
        futures[group].result(timeout=ADMIN_TIMEOUT_S + 10)
        wait_until("%s to leave list_consumer_groups" % group,
                   lambda: group not in self.list_groups(), ADMIN_TIMEOUT_S, interval_s=0.5)
        try:
            left = {p: off for p, off in self.group_offsets(group, range(GROUP_PARTITIONS)).items() if off >= 0}
        except KafkaException as e:
            check(e.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND,
                  "offsets of the deleted group: %s" % e.args[0])
            left = {}
        check(not left, "the deleted group %s still has offsets %s" % (group, left))
        ok("delete_consumer_groups of the empty group: gone from the listing, no offsets left")

    # -- (f) --------------------------------------------------------------------------------

    def f_static_membership(self):
        group = unique_topic("ckg-static")
        suffix = group.rsplit("-", 1)[1]

        def static(name):
            return Member(name, group, self.topic, extra={
                "group.instance.id": "%s-%s" % (name, suffix),
                "session.timeout.ms": STATIC_SESSION_TIMEOUT_MS,
            })

        # b joins alone first, so that it leads the group and a is a follower.
        b = static("static-b")
        members = [b]
        try:
            wait_settled([b], "static member b alone")
            a = static("static-a")
            members.append(a)
            assignments = wait_settled([b, a], "static members a and b")
            b_events = list(b.events)
            a.close()
            closed_at = time.monotonic()
            log("  static-a closed (no LeaveGroup for a static member)")
            # Polling b for a moment: a LeaveGroup (or a coordinator treating the close as one)
            # would start a rebalance, which b would see as a revoke.
            keep_polling([b], 2.0)
            a2 = static("static-a")
            members.append(a2)

            def a2_back():
                now = time.monotonic()
                return a2.assigned and now - a2.changed_at >= SETTLE_S
            pump([b, a2], "static-a to rejoin and get partitions", a2_back)
            rejoined_after = time.monotonic() - closed_at
            check(rejoined_after < STATIC_SESSION_TIMEOUT_MS / 1000.0,
                  "static-a took %.1fs to rejoin, more than session.timeout.ms" % rejoined_after)
            check(a2.assigned == assignments["static-a"],
                  "restarted static-a got %s, it had %s" % (sorted(a2.assigned), sorted(assignments["static-a"])))
            check(a2.events == [("assign", sorted(assignments["static-a"]))],
                  "restarted static-a went through %s" % a2.events)
            keep_polling([b, a2], 3.0)
            check(b.events == b_events,
                  "static-b saw a rebalance while static-a restarted: events %s after %s"
                  % (b.events[len(b_events):], b_events))
            check(b.assigned == assignments["static-b"], "static-b now owns %s" % sorted(b.assigned))
            ok("static member restarted within session.timeout.ms: same partitions %s, no rebalance "
               "(the other member saw no revoke/assign)" % sorted(a2.assigned))

            desc = self.describe(group)
            check(desc.state == ConsumerGroupState.STABLE, "describe: %s" % desc.state)
            by_instance = {d.group_instance_id: d for d in desc.members}
            check(sorted(by_instance) == sorted(["static-a-%s" % suffix, "static-b-%s" % suffix]),
                  "describe: members' instance ids %s" % sorted(map(str, by_instance)))
            check(by_instance["static-a-%s" % suffix].member_id == a2.consumer.memberid(),
                  "describe: static-a's member id %r, the restarted consumer's is %r"
                  % (by_instance["static-a-%s" % suffix].member_id, a2.consumer.memberid()))
            ok("describe_consumer_groups: 2 static members, static-a under its new member id")
        finally:
            close_all(members)


CHECKS = [
    ("a", "a_range", []),
    ("b", "b_cooperative_sticky", []),
    ("c", "c_commit_and_resume", []),
    ("d", "d_admin_list_and_describe", []),
    ("e", "e_admin_offsets_and_delete", ["c", "d"]),
    ("f", "f_static_membership", []),
]


def run(make_checks, checks):
    """Runs the checks of `checks` ([(letter, method of make_checks(), [letters it needs])])
    named on the command line (all without arguments): 0 when they all pass, 1 at the first
    failure, 2 for an unknown letter. Shared with groups_confluent_848.py."""
    arm_watchdog(540)
    version = client_version()
    log("confluent-kafka %s, librdkafka %s, bootstrap %s"
        % (version[0] if isinstance(version, tuple) else version, librdkafka_version()[0], bootstrap_servers()))
    wanted = set(sys.argv[1:]) or {letter for letter, _, _ in checks}
    unknown = wanted - {letter for letter, _, _ in checks}
    if unknown:
        print("unknown checks %s; expected some of %s"
              % (sorted(unknown), " ".join(letter for letter, _, _ in checks)), file=sys.stderr)
        return 2
    for letter, _, deps in checks:
        if letter in wanted:
            wanted.update(deps)
    admin = admin_client()
    wait_until("the broker at %s to answer metadata requests" % bootstrap_servers(),
               lambda: admin.list_topics(timeout=5) is not None, 60)
    try:
        state = make_checks()
    except Exception as e:  # noqa: BLE001 - any failure of the set-up fails the script
        traceback.print_exc()
        log("FAIL: set-up: %s" % e)
        return 1
    try:
        for letter, method, _ in checks:
            if letter not in wanted:
                continue
            log("(%s) %s" % (letter, method))
            try:
                getattr(state, method)()
            except Exception as e:  # noqa: BLE001 - reported as this check's failure
                traceback.print_exc()
                log("FAIL: (%s) %s: %s" % (letter, method, e))
                return 1
    finally:
        close_all(state.live_members)
    log("all %d checks passed" % len(wanted))
    return 0


def main():
    return run(Checks, CHECKS)


if __name__ == "__main__":
    sys.exit(main())
