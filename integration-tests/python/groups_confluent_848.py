"""KIP-848 consumer groups (group.protocol=consumer) with confluent-kafka (librdkafka).

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 groups_confluent_848.py [a b c d]
(no argument: every check; `c` and `d` also run `a`, whose group they use). Exit status 0 when
every check passed; each prints an "ok:" line, and a failure ends the script with "FAIL:" and why.

The broker assigns (its `uniform` assignor) and tells each member how often to heartbeat
(`groups.consumer_heartbeat_interval_ms`, Kafka's 5 s by default); with the default a rebalance
takes about 5-10 s, so `tests/it/groups.rs` runs the broker with 500 ms.

On one topic of 6 partitions with 20 records in each (the members are those of
groups_confluent.py with group.protocol=consumer):
  (a) 2 members of a group get disjoint assignments covering all 6 partitions, 3 each; a 3rd
      member joins and the 3 have 2 each, disjoint, covering; the first two only gave
      partitions up (KIP-848 revokes before it assigns), none was lost.
  (b) Commits (groups_confluent.py's (c) with consumer-protocol members): a member reads every
      partition, commits a prefix of each synchronously and leaves the group; `committed()`
      returns the offsets, and a new member starts each partition exactly there.
  (c) AdminClient: list_consumer_groups shows (a)'s group as a Stable CONSUMER group (also with
      a types filter, and not with the CLASSIC one); describe_consumer_groups (ConsumerGroupDescribe)
      shows type CONSUMER, the `uniform` assignor and the 3 members with the member ids, client
      ids, assignments and target assignments the consumers see.
  (d) Online migration (Kafka 4's `group.consumer.migration.policy=bidirectional`): a classic
      consumer (group.protocol=classic, cooperative-sticky) joins (a)'s group while it has
      members and gets its share from the broker, the group staying a CONSUMER group; the
      consumer-protocol members leave one by one, and the last one leaving turns the group back
      into a CLASSIC group that the classic member keeps; a second classic member joins, then a
      consumer-protocol member joins the non-empty classic group, which becomes a CONSUMER group
      whose description agrees with every member. At each step the assignments are disjoint,
      cover the topic and are balanced.
"""

import os
import sys

from confluent_kafka import ConsumerGroupState, ConsumerGroupType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import log, unique_topic, wait_until  # noqa: E402
from groups_confluent import (  # noqa: E402
    REBALANCE_TIMEOUT_S,
    CheckFailed,
    Checks,
    Member,
    check,
    close_all,
    name_of,
    ok,
    run,
    wait_settled,
)


def topic_partitions(assignment, topic):
    """The partitions of `topic` in a described member's assignment (None: none)."""
    if assignment is None:
        return set()
    return {tp.partition for tp in assignment.topic_partitions if tp.topic == topic}


class Checks848(Checks):
    protocol = "consumer"

    def member(self, name, group, protocol="consumer"):
        return Member(name, group, self.topic, protocol=protocol)

    # -- (a) --------------------------------------------------------------------------------

    def a_two_then_three_members(self):
        group = unique_topic("ck848-grow")
        members = [self.member("kip848-1", group), self.member("kip848-2", group)]
        self.live_group, self.live_members = group, members
        before = wait_settled(members, "consumer protocol, 2 members")
        members.append(self.member("kip848-3", group))
        after = wait_settled(members, "consumer protocol, 3rd member added")
        for m in members:
            lost = [e for e in m.events if e[0] == "lost"]
            check(not lost, "%s lost partitions (session expiry or fencing?): %s" % (m.name, lost))
        for name in before:
            check(after[name] <= before[name],
                  "%s went from %s to %s when a member joined; an existing member should only "
                  "give partitions up" % (name, sorted(before[name]), sorted(after[name])))
        ok("the first two members kept subsets of their partitions")
        self.assignments = after

    # -- (b) --------------------------------------------------------------------------------

    def b_commit_and_resume(self):
        self.c_commit_and_resume()

    # -- (c) --------------------------------------------------------------------------------

    def c_admin_list_and_describe(self):
        group, members = self.live_group, self.live_members
        listing = self.list_groups().get(group)
        check(listing is not None, "list_consumer_groups does not show %s" % group)
        check(listing.state == ConsumerGroupState.STABLE,
              "list_consumer_groups shows %s in state %s, expected STABLE" % (group, listing.state))
        check(listing.type == ConsumerGroupType.CONSUMER,
              "list_consumer_groups shows %s with type %s, expected CONSUMER" % (group, listing.type))
        check(not listing.is_simple_consumer_group, "%s listed as a simple consumer group" % group)
        ok("list_consumer_groups: %s is %s, type %s" % (group, name_of(listing.state), name_of(listing.type)))
        check(group in self.list_groups(types={ConsumerGroupType.CONSUMER}),
              "list_consumer_groups(types={CONSUMER}) leaves out %s" % group)
        check(group not in self.list_groups(types={ConsumerGroupType.CLASSIC}),
              "list_consumer_groups(types={CLASSIC}) includes the consumer group %s" % group)
        ok("list_consumer_groups with a types filter")

        # The consumers see their assignment before the coordinator has seen every member's
        # acknowledgement: describe until the group is Stable.
        def stable():
            described = self.describe(group)
            return described if described.state == ConsumerGroupState.STABLE else None

        desc = wait_until("describe_consumer_groups to show %s Stable" % group, stable, REBALANCE_TIMEOUT_S)
        check(desc.group_id == group, "described %s, asked for %s" % (desc.group_id, group))
        check(desc.type == ConsumerGroupType.CONSUMER, "describe: type %s, expected CONSUMER" % desc.type)
        check(not desc.is_simple_consumer_group, "describe: a simple consumer group")
        check(desc.partition_assignor == "uniform",
              "describe: assignor %r, expected the broker's default 'uniform'" % desc.partition_assignor)
        check(desc.coordinator is not None and desc.coordinator.id >= 0, "describe: coordinator %s" % desc.coordinator)
        by_id = {d.member_id: d for d in desc.members}
        check(len(desc.members) == len(members) and len(by_id) == len(members),
              "describe: members %s, expected %d" % (sorted(by_id), len(members)))
        for m in members:
            member_id = m.consumer.memberid()
            d = by_id.get(member_id)
            check(d is not None, "describe lists members %s, not %s's %r" % (sorted(by_id), m.name, member_id))
            check(d.client_id == "streambus-groups-%s" % m.name,
                  "describe: member %s has client id %r" % (member_id, d.client_id))
            check(d.group_instance_id is None, "describe: %s has instance id %r" % (m.name, d.group_instance_id))
            check(d.host, "describe: %s has no host" % m.name)
            assigned = topic_partitions(d.assignment, self.topic)
            target = topic_partitions(d.target_assignment, self.topic)
            check(assigned == m.assigned,
                  "describe: %s is assigned %s, the consumer has %s" % (m.name, sorted(assigned), sorted(m.assigned)))
            check(target == assigned,
                  "describe: %s's target %s differs from its assignment %s in a Stable group"
                  % (m.name, sorted(target), sorted(assigned)))
        ok("describe_consumer_groups: CONSUMER, Stable, uniform, members with their assignments")

    # -- (d) --------------------------------------------------------------------------------

    def classic(self, name, group):
        # Kafka's advice for a migrating group: the classic members rebalance cooperatively.
        return Member(name, group, self.topic, strategy="cooperative-sticky", protocol="classic")

    def wait_type(self, group, group_type):
        return wait_until("%s to be a %s group" % (group, name_of(group_type)),
                          lambda: self.describe(group).type == group_type, REBALANCE_TIMEOUT_S)

    def d_online_migration(self):
        group, members = self.live_group, self.live_members
        # One consumer-protocol member leaves, so that the group stays at 3 members (6
        # partitions share evenly).
        members.pop().close()
        wait_settled(members, "2 consumer-protocol members")

        # A classic member joins the consumer group: it stays a CONSUMER group, and the classic
        # member gets its share from the broker's assignor.
        classic1 = self.classic("classic-1", group)
        self.live_members = members + [classic1]
        wait_settled(self.live_members, "a classic member inside the consumer group")
        desc = self.describe(group)
        check(desc.type == ConsumerGroupType.CONSUMER and len(desc.members) == 3,
              "with a classic member: type %s, %d members" % (name_of(desc.type), len(desc.members)))
        ok("a classic consumer joined the non-empty consumer group (online migration)")

        # The consumer-protocol members leave one by one; the last one leaving turns the group
        # back into a CLASSIC group, which the classic member keeps consuming from.
        members[0].close()
        wait_settled([members[1], classic1], "one consumer-protocol and one classic member")
        members[1].close()
        self.live_members = [classic1]
        self.wait_type(group, ConsumerGroupType.CLASSIC)
        wait_settled([classic1], "the classic member alone in the downgraded group")
        ok("the last consumer-protocol member left: the group is CLASSIC again")

        # A second classic member joins the classic group, then a consumer-protocol member joins
        # it while it has members: the group becomes a CONSUMER group again (upgrade).
        classic2 = self.classic("classic-2", group)
        self.live_members = [classic1, classic2]
        wait_settled(self.live_members, "2 classic members")
        upgrader = self.member("kip848-4", group)
        self.live_members = [classic1, classic2, upgrader]
        wait_settled(self.live_members, "a consumer-protocol member upgraded the classic group")
        desc = self.describe(group)
        check(desc.type == ConsumerGroupType.CONSUMER and len(desc.members) == 3,
              "after the upgrade: type %s, %d members" % (name_of(desc.type), len(desc.members)))
        described = {d.member_id: topic_partitions(d.assignment, self.topic) for d in desc.members}
        for m in self.live_members:
            check(described.get(m.consumer.memberid()) == m.assigned,
                  "describe: %s owns %s, the consumer has %s"
                  % (m.name, sorted(described.get(m.consumer.memberid(), [])), sorted(m.assigned)))
        ok("the non-empty classic group became a CONSUMER group; describe agrees with every member")
        close_all(self.live_members)
        self.live_members = []
        log("(d) done")


CHECKS = [
    ("a", "a_two_then_three_members", []),
    ("b", "b_commit_and_resume", []),
    ("c", "c_admin_list_and_describe", ["a"]),
    ("d", "d_online_migration", ["a"]),
]

if __name__ == "__main__":
    try:
        sys.exit(run(Checks848, CHECKS))
    except CheckFailed as e:
        log("FAIL: %s" % e)
        sys.exit(1)
