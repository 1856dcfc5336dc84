"""Shared helpers for the third-party client compatibility scripts in this directory.

Every script here is run as `python3 <file>` (normally with the interpreter of the virtualenv that
scripts/bootstrap.sh builds), so this module is found through the script's own directory on
sys.path, whatever the current directory is.
"""

import faulthandler
import os
import sys
import time
import uuid

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def bootstrap_servers():
    """The broker to test, from STREAMBUS_BOOTSTRAP (host:port)."""
    return os.environ.get("STREAMBUS_BOOTSTRAP", DEFAULT_BOOTSTRAP)


def unique_topic(prefix):
    """A topic name no other run or script uses, so scripts can share one broker."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def arm_watchdog(default_seconds):
    """Kills this process (exit code 1, with every thread's traceback on stderr) if it is still
    running after STREAMBUS_TEST_TIMEOUT_S seconds (or `default_seconds`): a last line of defence
    on top of the explicit timeout that every wait in these scripts has."""
    seconds = float(os.environ.get("STREAMBUS_TEST_TIMEOUT_S", default_seconds))
    faulthandler.dump_traceback_later(seconds, exit=True)
    return seconds


def log(*parts):
    print("[%s]" % time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


class Deadline:
    """A point in time `seconds` from now."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end


def wait_until(what, predicate, timeout_s, interval_s=0.2):
    """Calls predicate() until it returns a truthy value (which is returned) or timeout_s passes
    (AssertionError naming `what` and the last exception predicate raised, if any)."""
    deadline = Deadline(timeout_s)
    last_error = None
    attempts = 0
    while True:
        attempts += 1
        try:
            result = predicate()
            if result:
                return result
            last_error = None
        except Exception as e:  # noqa: BLE001 - reported below if it never recovers
            last_error = e
        if deadline.expired():
            detail = " (last error: %r)" % (last_error,) if last_error is not None else ""
            raise AssertionError(
                "timed out after %.0fs and %d attempts waiting for %s%s"
                % (timeout_s, attempts, what, detail)
            )
        time.sleep(min(interval_s, max(0.01, deadline.remaining())))


def record_key(i):
    return b"key-%06d" % i


def record_value(i, tag=b""):
    """A deterministic value of varying length (0 to ~300 bytes) with every byte value in it,
    including NUL, so byte-exactness is tested and not just ASCII."""
    body = bytes((i * 7 + j) % 256 for j in range((i * 37) % 300))
    return b"value-%06d-" % i + tag + b"|" + body


def first_mismatch(expected, actual):
    """A short description of where two byte strings first differ, for assertion messages."""
    if expected is None or actual is None:
        return "expected %r, got %r" % (
            None if expected is None else "%d bytes" % len(expected),
            None if actual is None else "%d bytes" % len(actual),
        )
    for idx, (a, b) in enumerate(zip(expected, actual)):
        if a != b:
            return "first difference at byte %d (expected %d, got %d); lengths %d/%d" % (
                idx, a, b, len(expected), len(actual))
    return "lengths differ: expected %d, got %d" % (len(expected), len(actual))


# --- Consumer groups (the groups_*.py scripts) ---------------------------------------------------

# Every group script uses a topic of this many partitions with RECORDS_PER_PARTITION records in
# each, so that 2 members get 3 partitions each and 3 members 2 each.
GROUP_PARTITIONS = 6
RECORDS_PER_PARTITION = 20


def commit_cutoff(partition):
    """The offset committed for `partition` in the commit checks: a different one per partition
    (3..8), none at either end of the partition, so that resuming from the beginning, from the end
    or from another partition's offset all show."""
    return 3 + partition


def altered_offset(partition):
    """The offset an admin client sets for `partition` in the alter-offsets checks (10..15)."""
    return 10 + partition


def group_record(partition, i):
    """(key, value) of record `i` of `partition` in the group scripts' topics: the value names
    both, so a record read back shows where it was written."""
    return b"p%d-k%03d" % (partition, i), b"partition %d record %d" % (partition, i)


def format_assignment(assignments):
    """{member: iterable of partitions} as 'a=[0, 1] b=[2]' for messages."""
    return " ".join("%s=%s" % (name, sorted(parts)) for name, parts in sorted(assignments.items()))


def assignment_problem(assignments, partitions=GROUP_PARTITIONS):
    """None if the members' partition sets ({member: set}) are pairwise disjoint and together
    cover 0..partitions-1 exactly; otherwise what is wrong with them."""
    owners = {}
    for name, parts in sorted(assignments.items()):
        for p in parts:
            owners.setdefault(p, []).append(name)
    shared = {p: names for p, names in owners.items() if len(names) > 1}
    if shared:
        return "partitions owned by more than one member: %s (%s)" % (
            ", ".join("%d by %s" % (p, "+".join(n)) for p, n in sorted(shared.items())),
            format_assignment(assignments))
    missing = sorted(set(range(partitions)) - set(owners))
    extra = sorted(set(owners) - set(range(partitions)))
    if missing or extra:
        return "assignment does not cover partitions 0..%d: missing %s, unknown %s (%s)" % (
            partitions - 1, missing, extra, format_assignment(assignments))
    return None


def balance_problem(assignments, partitions=GROUP_PARTITIONS):
    """None if every member has partitions/len(members) partitions (the topics here divide
    evenly), otherwise what is wrong."""
    want = partitions // max(1, len(assignments))
    uneven = {name: len(parts) for name, parts in assignments.items() if len(parts) != want}
    if uneven:
        return "expected %d partitions per member, got %s (%s)" % (
            want, uneven, format_assignment(assignments))
    return None
