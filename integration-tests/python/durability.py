"""Acknowledged-write durability across a broker restart, driven by confluent-kafka.

  python3 durability.py produce <topic> <count> <ack-file> [<records-per-second>]
      Creates <topic> with one partition unless it exists, produces <count> records with
      acks=all (idempotent producer) to partition 0 and appends one line per acknowledged record
      to <ack-file>, as it is acknowledged:  <offset> <value as hex>
      With a rate, records are spread over time (so a caller can inject faults meanwhile); the
      line "producing" goes to stderr when the first record is sent.
      Exit status 0 when every record was acknowledged (no delivery failed: the client retried
      whatever the broker answered), 1 otherwise (the file then still lists exactly the
      acknowledged ones).

  python3 durability.py verify <topic> <ack-file>
      Reads partition 0 of <topic> from the beginning up to its high watermark and checks that
      every acknowledged record of <ack-file> is there, at exactly its acknowledged offset, and
      nowhere else; also that offsets are contiguous. Exit status 0 when all hold, 1 otherwise.

The caller stops and restarts the broker between the two. The broker comes from
STREAMBUS_BOOTSTRAP (host:port); every wait is bounded (see the *_TIMEOUT_S constants).
"""

import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from confluent_kafka import OFFSET_BEGINNING, KafkaException, Producer, TopicPartition  # noqa: E402

from ck import SOCKET_TIMEOUT_MS, admin_client, consume_partition, consumer, create_topic  # noqa: E402
from common import arm_watchdog, bootstrap_servers, log, wait_until  # noqa: E402

BROKER_READY_TIMEOUT_S = 60
FLUSH_TIMEOUT_S = 120
READ_TIMEOUT_S = 180


def usage():
    print(__doc__, file=sys.stderr)
    return 2


def produce(topic, count, ack_path, rate=None):
    admin = admin_client()
    create_topic(admin, topic, partitions=1, exist_ok=True, timeout_s=BROKER_READY_TIMEOUT_S)

    p = Producer({
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "streambus-durability-producer",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
    })
    run = uuid.uuid4().hex[:8]
    state = {"acked": 0, "failed": 0, "first_error": None}

    with open(ack_path, "w", encoding="ascii") as out:
        def on_delivery(err, msg):
            if err is not None:
                state["failed"] += 1
                if state["first_error"] is None:
                    state["first_error"] = err
                return
            out.write("%d %s\n" % (msg.offset(), msg.value().hex()))
            state["acked"] += 1

        started = time.monotonic()
        log("producing")
        for i in range(count):
            if rate:
                # Paced: record i leaves at i/rate seconds (bounded by count/rate in all).
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    p.poll(delay)
            value = b"durability %s record %08d" % (run.encode(), i)
            for _attempt in range(600):
                try:
                    p.produce(topic, value=value, key=b"%08d" % i, partition=0, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.1)
            else:
                log("producer queue stayed full for 60s at record %d" % i)
                break
            if i % 1000 == 999:
                p.poll(0)
        remaining = p.flush(FLUSH_TIMEOUT_S)
        out.flush()
        os.fsync(out.fileno())

    print("produce: %d of %d records acknowledged, %d failed, %d undelivered (first error: %s)"
          % (state["acked"], count, state["failed"], remaining, state["first_error"]))
    return 0 if state["acked"] == count else 1


def read_acks(ack_path):
    acks = {}
    with open(ack_path, encoding="ascii") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            offset_text, value_hex = line.split(" ", 1)
            offset = int(offset_text)
            if offset in acks:
                raise ValueError("%s:%d: offset %d acknowledged twice" % (ack_path, lineno, offset))
            acks[offset] = bytes.fromhex(value_hex)
    return acks


def verify(topic, ack_path):
    acks = read_acks(ack_path)
    tp = TopicPartition(topic, 0)

    c = consumer()
    try:
        # Right after a restart the broker may still be loading: retry until it answers.
        low, high = wait_until(
            "watermarks of %s [0]" % topic,
            lambda: c.get_watermark_offsets(tp, timeout=5, cached=False),
            BROKER_READY_TIMEOUT_S, interval_s=1)
    finally:
        c.close()

    failures = []
    if acks and high <= max(acks):
        failures.append("high watermark %d, but offset %d was acknowledged" % (high, max(acks)))
    if acks and low > min(acks):
        failures.append("log start offset %d, but offset %d was acknowledged" % (low, min(acks)))

    messages = consume_partition(topic, 0, high - low, timeout_s=READ_TIMEOUT_S, start=OFFSET_BEGINNING) \
        if high > low else []
    found = {}
    previous = None
    for m in messages:
        if previous is not None and m.offset() != previous + 1:
            failures.append("offsets jump from %d to %d" % (previous, m.offset()))
        previous = m.offset()
        found[m.offset()] = m.value()
    if messages and messages[0].offset() != low:
        failures.append("first record read at offset %d, log start offset is %d" % (messages[0].offset(), low))

    at_offset_of = {}
    for offset, value in found.items():
        at_offset_of.setdefault(value, []).append(offset)
    missing = wrong = duplicated = 0
    for offset, value in sorted(acks.items()):
        if offset not in found:
            missing += 1
            if missing <= 10:
                failures.append("acknowledged offset %d is missing" % offset)
        elif found[offset] != value:
            wrong += 1
            if wrong <= 10:
                failures.append("offset %d holds %r, acknowledged %r" % (offset, found[offset], value))
        elsewhere = [o for o in at_offset_of.get(value, []) if o != offset]
        if elsewhere:
            duplicated += 1
            if duplicated <= 10:
                failures.append("record acknowledged at offset %d also at %s" % (offset, elsewhere))

    print("verify: %d acknowledged, partition holds offsets %d..%d (%d read); %d missing, %d wrong, %d duplicated"
          % (len(acks), low, high - 1, len(messages), missing, wrong, duplicated))
    for f in failures:
        print("verify: FAIL " + f)
    return 1 if failures else 0


def main(argv):
    arm_watchdog(300)
    try:
        if len(argv) in (5, 6) and argv[1] == "produce":
            rate = float(argv[5]) if len(argv) == 6 else None
            return produce(argv[2], int(argv[3]), argv[4], rate)
        if len(argv) == 4 and argv[1] == "verify":
            return verify(argv[2], argv[3])
    except (KafkaException, AssertionError, OSError, ValueError) as e:
        print("%s: error: %s" % (argv[1], e), file=sys.stderr)
        return 1
    return usage()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
