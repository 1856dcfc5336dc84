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
  (d) Protocol conversion: a classic consumer (group.protocol=classic) joining (a)'s group while
      it has members gets INCONSISTENT_GROUP_PROTOCOL as an error from poll() and no partitions;
      once the consumer-protocol members have left, the group is empty and a classic consumer
      joining converts it: it gets all 6 partitions and describe shows a CLASSIC group.
"""

import os
import sys

from confluent_kafka import ConsumerGroupState, ConsumerGroupType, KafkaError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import GROUP_PARTITIONS, log, unique_topic, wait_until  # noqa: E402
from groups_confluent import (  # noqa: E402
    REBALANCE_TIMEOUT_S,
    CheckFailed,
    Checks,
    Member,
    check,
    close_all,
    name_of,
    ok,
    pump,
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

    def d_protocol_conversion(self):
        group, members = self.live_group, self.live_members
        classic = self.member("classic-1", group, protocol="classic")
        try:
            def refused():
                err = classic.last_error
                return err is not None and err.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL

            pump([classic] + members,
                 "a classic member of the consumer group %s to get INCONSISTENT_GROUP_PROTOCOL" % group,
                 refused)
            check(not classic.assigned, "the refused classic member owns %s" % sorted(classic.assigned))
            ok("a classic consumer joining the non-empty consumer group: %s on poll" % classic.last_error)
        finally:
            classic.close()
        desc = self.describe(group)
        check(desc.type == ConsumerGroupType.CONSUMER and len(desc.members) == len(members),
              "after the refused classic join: type %s, %d members" % (desc.type, len(desc.members)))

        # The consumer-protocol members leave (close sends the leave heartbeat): the group is
        # empty, and a classic member converts it.
        close_all(members)
        self.live_members = []
        wait_until("%s to be empty" % group,
                   lambda: self.describe(group).state == ConsumerGroupState.EMPTY, REBALANCE_TIMEOUT_S)
        classic = self.member("classic-2", group, protocol="classic")
        self.live_members = [classic]
        pump([classic], "the classic member to get every partition of the converted group",
             lambda: classic.assigned == set(range(GROUP_PARTITIONS)))
        desc = self.describe(group)
        check(desc.type == ConsumerGroupType.CLASSIC, "describe after conversion: type %s" % desc.type)
        check([d.member_id for d in desc.members] == [classic.consumer.memberid()],
              "describe after conversion: members %s" % [d.member_id for d in desc.members])
        ok("the empty consumer group became a classic group: its classic member owns all %d partitions"
           % GROUP_PARTITIONS)
        close_all([classic])
        self.live_members = []
        log("(d) done")


CHECKS = [
    ("a", "a_two_then_three_members", []),
    ("b", "b_commit_and_resume", []),
    ("c", "c_admin_list_and_describe", ["a"]),
    ("d", "d_protocol_conversion", ["a"]),
]

if __name__ == "__main__":
    try:
        sys.exit(run(Checks848, CHECKS))
    except CheckFailed as e:
        log("FAIL: %s" % e)
        sys.exit(1)
