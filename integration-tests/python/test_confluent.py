"""Compatibility of StreamBus with confluent-kafka-python (librdkafka, bundled in the wheel).

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 test_confluent.py  (exit status 0 = all passed)

Only manual partition assignment is used on the consuming side: the broker has no group
coordinator, so no consumer here ever subscribes, joins a group or commits an offset.
"""

import os
import sys
import unittest
import warnings

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import libversion as librdkafka_version
from confluent_kafka import version as client_version
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ck import (  # noqa: E402
    SOCKET_TIMEOUT_MS,
    admin_client,
    consume_partition,
    consumer,
    create_topic,
    headers_of,
    topic_metadata,
    wait_topic_ready,
)
from common import (  # noqa: E402
    Deadline,
    arm_watchdog,
    bootstrap_servers,
    first_mismatch,
    log,
    record_key,
    record_value,
    unique_topic,
    wait_until,
)

FLUSH_TIMEOUT_S = 90
ADMIN_TIMEOUT_S = 30


def producer(**overrides):
    conf = {
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "streambus-compat-producer",
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
    }
    conf.update({k.replace("_", "."): v for k, v in overrides.items()})
    return Producer(conf)


class Deliveries:
    """Collects delivery reports: index -> (error or None, partition, offset)."""

    def __init__(self):
        self.reports = {}

    def callback(self, index):
        def on_delivery(err, msg):
            self.reports[index] = (err, msg.partition(), msg.offset())
        return on_delivery


def produce_all(p, topic, records, partition=0, timestamps=None):
    """Produces records [(key, value, headers)] to one partition and waits (bounded) for every
    delivery report. Returns the Deliveries."""
    d = Deliveries()
    for i, (key, value, headers) in enumerate(records):
        kwargs = {"key": key, "value": value, "partition": partition, "on_delivery": d.callback(i)}
        if headers:
            kwargs["headers"] = headers
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        for _attempt in range(600):
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.1)  # local queue full: serve delivery reports, then try again
        else:
            raise AssertionError("producer queue stayed full for 60s at record %d" % i)
        if i % 1000 == 999:
            p.poll(0)
    remaining = p.flush(FLUSH_TIMEOUT_S)
    if remaining != 0:
        raise AssertionError("%d messages still undelivered after %ds" % (remaining, FLUSH_TIMEOUT_S))
    if len(d.reports) != len(records):
        raise AssertionError("%d delivery reports for %d records" % (len(d.reports), len(records)))
    return d


def assert_all_delivered_in_order(testcase, d, n, partition=0, base=0):
    for i in range(n):
        err, part, off = d.reports[i]
        testcase.assertIsNone(err, "record %d failed: %s" % (i, err))
        testcase.assertEqual(part, partition, "record %d delivered to partition %s" % (i, part))
        testcase.assertEqual(off, base + i, "record %d acknowledged at offset %s" % (i, off))


def assert_messages_match(testcase, messages, records, topic, partition=0, base=0):
    testcase.assertEqual(len(messages), len(records))
    for i, (m, (key, value, headers)) in enumerate(zip(messages, records)):
        where = "%s [%d] record %d" % (topic, partition, i)
        testcase.assertEqual(m.topic(), topic, where)
        testcase.assertEqual(m.partition(), partition, where)
        testcase.assertEqual(m.offset(), base + i, "%s: offsets must be contiguous from %d" % (where, base))
        if m.key() != key:
            testcase.fail("%s key: %s" % (where, first_mismatch(key, m.key())))
        if m.value() != value:
            testcase.fail("%s value: %s" % (where, first_mismatch(value, m.value())))
        testcase.assertEqual(headers_of(m), list(headers or []), "%s headers" % where)


def big_test_records(n):
    """n keyed records with headers, and a few edge cases: duplicate header keys, a null header
    value, records without headers, an empty key, an empty value and a null value (tombstone)."""
    records = []
    for i in range(n):
        key = record_key(i) if i % 1000 != 997 else b""
        if i % 1000 == 999:
            value = None
        elif i % 1000 == 998:
            value = b""
        else:
            value = record_value(i)
        headers = [("idx", b"%d" % i), ("bin", bytes([i % 256, 0, 255])), ("dup", b"first"), ("dup", b"second")]
        if i % 100 == 0:
            headers.append(("null", None))
        if i % 1000 == 500:
            headers = []
        records.append((key, value, headers))
    return records


class ProduceConsumeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin = admin_client()

    def test_a_idempotent_keyed_records_with_headers_round_trip(self):
        n = 10000
        topic = unique_topic("ck-roundtrip")
        create_topic(self.admin, topic, partitions=3)
        records = big_test_records(n)

        p = producer(enable_idempotence=True)
        d = produce_all(p, topic, records, partition=0)
        assert_all_delivered_in_order(self, d, n)

        messages = consume_partition(topic, 0, n, timeout_s=180)
        assert_messages_match(self, messages, records, topic)
        for m in messages[:10]:
            ts_type, ts = m.timestamp()
            self.assertEqual(ts_type, TIMESTAMP_CREATE_TIME, "timestamp type of offset %d" % m.offset())
            self.assertGreater(ts, 0)

        c = consumer()
        try:
            low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
            self.assertEqual((low, high), (0, n), "watermarks of partition 0 after %d records" % n)
            for other in (1, 2):
                low, high = c.get_watermark_offsets(TopicPartition(topic, other), timeout=10, cached=False)
                self.assertEqual((low, high), (0, 0), "partition %d must stay empty" % other)
        finally:
            c.close()

    def test_b_every_compression_codec_round_trips(self):
        for codec in ("gzip", "snappy", "lz4", "zstd"):
            with self.subTest(codec=codec):
                topic = unique_topic("ck-codec-%s" % codec)
                create_topic(self.admin, topic, partitions=1)
                # Compressible values (a repeated text) so the batches really shrink, plus binary.
                records = [
                    (record_key(i),
                     (b"%s record %d. " % (codec.encode(), i)) * (1 + i % 20) + record_value(i),
                     [("codec", codec.encode()), ("i", b"%d" % i)])
                    for i in range(200)
                ]
                # linger.ms so that many records share (compressed) batches.
                p = producer(compression_type=codec, linger_ms=50, enable_idempotence=False)
                d = produce_all(p, topic, records)
                assert_all_delivered_in_order(self, d, len(records))
                messages = consume_partition(topic, 0, len(records), timeout_s=60)
                assert_messages_match(self, messages, records, topic)


class MessageSizeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin = admin_client()

    def _produce_one(self, p, topic, value, key=b"k"):
        d = Deliveries()
        p.produce(topic, value=value, key=key, partition=0, on_delivery=d.callback(0))
        remaining = p.flush(FLUSH_TIMEOUT_S)
        self.assertEqual(remaining, 0, "record still undelivered after %ds" % FLUSH_TIMEOUT_S)
        self.assertIn(0, d.reports, "no delivery report")
        return d.reports[0]

    def test_c1_record_of_900kb_is_accepted(self):
        topic = unique_topic("ck-900kb")
        create_topic(self.admin, topic, partitions=1)
        value = os.urandom(900 * 1024)
        p = producer(message_max_bytes=2000000, enable_idempotence=True)
        err, _, offset = self._produce_one(p, topic, value)
        self.assertIsNone(err, "900 KB record rejected: %s" % err)
        self.assertEqual(offset, 0)
        [m] = consume_partition(topic, 0, 1, timeout_s=60)
        self.assertEqual(m.offset(), 0)
        if m.value() != value:
            self.fail("900 KB record read back differently: %s" % first_mismatch(value, m.value()))

    def _assert_too_large_rejected(self, p, topic):
        err, _, _ = self._produce_one(p, topic, os.urandom(200000), key=b"too-large")
        self.assertIsNotNone(err, "a 200,000-byte record was accepted by a topic with max.message.bytes=100000")
        self.assertEqual(err.code(), KafkaError.MSG_SIZE_TOO_LARGE,
                         "expected MESSAGE_TOO_LARGE from the broker, got %s" % err)

    def test_c2_record_over_topic_max_message_bytes_is_rejected(self):
        # Plain (non-idempotent) producer: the rejection must leave it fully usable.
        topic = unique_topic("ck-too-large")
        create_topic(self.admin, topic, partitions=1, config={"max.message.bytes": "100000"})
        p = producer(message_max_bytes=2000000, enable_idempotence=False)
        self._assert_too_large_rejected(p, topic)
        err, _, offset = self._produce_one(p, topic, b"small record after the rejected one")
        self.assertIsNone(err, "normal record after a rejected one failed: %s" % err)
        self.assertEqual(offset, 0, "the rejected record must not have taken an offset")
        [m] = consume_partition(topic, 0, 1, timeout_s=60)
        self.assertEqual(m.value(), b"small record after the rejected one")

    def test_c3_idempotent_producer_after_message_too_large(self):
        # librdkafka's idempotent producer bumps its epoch after a permanent error like this one
        # and then carries on; if it cannot, a new producer must still be able to write.
        topic = unique_topic("ck-too-large-idem")
        create_topic(self.admin, topic, partitions=1, config={"max.message.bytes": "100000"})
        p = producer(message_max_bytes=2000000, enable_idempotence=True)
        self._assert_too_large_rejected(p, topic)
        err, _, offset = self._produce_one(p, topic, b"after, same producer")
        expected = [b"after, same producer"]
        if err is not None:
            log("WARNING: the idempotent producer could not continue after MESSAGE_TOO_LARGE (%s); "
                "retrying with a new producer" % err)
            p2 = producer(enable_idempotence=True)
            err, _, offset = self._produce_one(p2, topic, b"after, new producer")
            self.assertIsNone(err, "a new producer cannot write after MESSAGE_TOO_LARGE: %s" % err)
            expected = [b"after, new producer"]
        self.assertEqual(offset, 0, "the rejected record must not have taken an offset")
        messages = consume_partition(topic, 0, 1, timeout_s=60)
        self.assertEqual([m.value() for m in messages], expected)


class ListOffsetsTest(unittest.TestCase):
    TIMESTAMPS = [1000, 2000, 3000, 4000, 5000]

    @classmethod
    def setUpClass(cls):
        cls.admin = admin_client()
        cls.topic = unique_topic("ck-offsets")
        create_topic(cls.admin, cls.topic, partitions=1)
        records = [(record_key(i), b"ts-record-%d" % i, None) for i in range(len(cls.TIMESTAMPS))]
        p = producer(enable_idempotence=True)
        d = produce_all(p, cls.topic, records, timestamps=cls.TIMESTAMPS)
        for i in range(len(records)):
            err, _, offset = d.reports[i]
            if err is not None or offset != i:
                raise AssertionError("record %d: %s at offset %s" % (i, err, offset))
        cls.tp = TopicPartition(cls.topic, 0)

    def test_d1_records_keep_their_create_times(self):
        messages = consume_partition(self.topic, 0, len(self.TIMESTAMPS), timeout_s=60)
        self.assertEqual([m.timestamp() for m in messages],
                         [(TIMESTAMP_CREATE_TIME, ts) for ts in self.TIMESTAMPS])

    def test_d2_watermarks(self):
        c = consumer()
        try:
            self.assertEqual(c.get_watermark_offsets(self.tp, timeout=10, cached=False),
                             (0, len(self.TIMESTAMPS)))
        finally:
            c.close()

    def test_d3_offsets_for_times(self):
        n = len(self.TIMESTAMPS)
        cases = [
            (-2, 0, "earliest (-2)"),
            (-1, n, "latest (-1)"),
            (0, 0, "before the first record"),
            (1000, 0, "exactly the first record's time"),
            (1500, 1, "between the first and second records"),
            (2000, 1, "exactly the second record's time"),
            (4999, 4, "just before the last record"),
            (5000, 4, "exactly the last record's time"),
            (5001, -1, "after the last record (no such offset)"),
        ]
        c = consumer()
        try:
            for ts, expected, what in cases:
                with self.subTest(timestamp=ts):
                    [res] = c.offsets_for_times([TopicPartition(self.topic, 0, ts)], timeout=10)
                    self.assertIsNone(res.error, "%s: %s" % (what, res.error))
                    self.assertEqual(res.offset, expected, "offsets_for_times(%d), %s" % (ts, what))
        finally:
            c.close()

    def test_d4_admin_list_offsets(self):
        n = len(self.TIMESTAMPS)
        cases = [
            (OffsetSpec.earliest(), 0, "earliest"),
            (OffsetSpec.latest(), n, "latest"),
            (OffsetSpec.for_timestamp(1500), 1, "for_timestamp(1500)"),
            (OffsetSpec.for_timestamp(3000), 2, "for_timestamp(3000)"),
        ]
        for spec, expected, what in cases:
            with self.subTest(spec=what):
                futures = self.admin.list_offsets({TopicPartition(self.topic, 0): spec},
                                                  request_timeout=ADMIN_TIMEOUT_S)
                [future] = futures.values()
                info = future.result(timeout=ADMIN_TIMEOUT_S + 10)
                self.assertEqual(info.offset, expected, what)
                if what.startswith("for_timestamp"):
                    self.assertEqual(info.timestamp, self.TIMESTAMPS[expected], "%s: timestamp" % what)


def config_source(entry):
    """A described config entry's source as a ConfigSource (the C layer may hand over an int)."""
    return entry.source if isinstance(entry.source, ConfigSource) else ConfigSource(entry.source)


class AdminTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin = admin_client()

    def describe(self, topic):
        resource = ConfigResource(ResourceType.TOPIC, topic)
        futures = self.admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
        [future] = futures.values()
        return future.result(timeout=ADMIN_TIMEOUT_S + 10)

    def wait_config(self, topic, key, predicate, what):
        """Polls describe_configs until the entry for key satisfies predicate (config changes may
        take a moment to be visible); returns the entry."""
        def check():
            entry = self.describe(topic).get(key)
            return entry if entry is not None and predicate(entry) else None
        return wait_until("%s of %s %s" % (key, topic, what), check, ADMIN_TIMEOUT_S, interval_s=0.5)

    def test_e1_topic_lifecycle(self):
        topic = unique_topic("ck-admin")
        create_topic(self.admin, topic, partitions=3, config={"retention.ms": "3600000"})

        configs = self.describe(topic)
        retention = configs.get("retention.ms")
        self.assertIsNotNone(retention, "describe_configs has no retention.ms: %s" % sorted(configs))
        self.assertEqual(retention.value, "3600000")
        self.assertEqual(config_source(retention), ConfigSource.DYNAMIC_TOPIC_CONFIG,
                         "retention.ms was set at creation, so it is a topic config")
        self.assertFalse(retention.is_default)
        segment = configs.get("segment.bytes")
        self.assertIsNotNone(segment, "describe_configs must report unset keys too (segment.bytes)")
        self.assertIsNotNone(segment.value, "segment.bytes has no value")
        self.assertGreater(int(segment.value), 0)
        self.assertNotEqual(config_source(segment), ConfigSource.DYNAMIC_TOPIC_CONFIG,
                            "segment.bytes was never set on the topic")

        # AlterConfigs (deprecated in the client, replaced wholesale on the broker).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            futures = self.admin.alter_configs(
                [ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "7200000"})],
                request_timeout=ADMIN_TIMEOUT_S)
        [future] = futures.values()
        future.result(timeout=ADMIN_TIMEOUT_S + 10)
        self.wait_config(topic, "retention.ms", lambda e: e.value == "7200000", "= 7200000 after alter_configs")

        # IncrementalAlterConfigs: SET, then DELETE back to the default.
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
        ])
        [future] = self.admin.incremental_alter_configs([resource], request_timeout=ADMIN_TIMEOUT_S).values()
        future.result(timeout=ADMIN_TIMEOUT_S + 10)
        self.wait_config(topic, "retention.ms", lambda e: e.value == "86400000",
                         "= 86400000 after incremental SET")

        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ])
        [future] = self.admin.incremental_alter_configs([resource], request_timeout=ADMIN_TIMEOUT_S).values()
        future.result(timeout=ADMIN_TIMEOUT_S + 10)
        self.wait_config(topic, "retention.ms",
                         lambda e: config_source(e) != ConfigSource.DYNAMIC_TOPIC_CONFIG and e.value != "86400000",
                         "back to its default after incremental DELETE")

        # CreatePartitions 3 -> 5.
        futures = self.admin.create_partitions([NewPartitions(topic, 5)],
                                               operation_timeout=ADMIN_TIMEOUT_S,
                                               request_timeout=ADMIN_TIMEOUT_S)
        futures[topic].result(timeout=ADMIN_TIMEOUT_S + 10)
        wait_topic_ready(self.admin, topic, 5, ADMIN_TIMEOUT_S)
        self.assertEqual(sorted(topic_metadata(self.admin, topic).partitions), [0, 1, 2, 3, 4])

        # DeleteTopics, then the topic is gone from the metadata.
        futures = self.admin.delete_topics([topic], operation_timeout=ADMIN_TIMEOUT_S,
                                           request_timeout=ADMIN_TIMEOUT_S)
        futures[topic].result(timeout=ADMIN_TIMEOUT_S + 10)
        wait_until("%s to disappear from list_topics" % topic,
                   lambda: topic not in self.admin.list_topics(timeout=5).topics, ADMIN_TIMEOUT_S)

    def test_e2_creating_an_existing_topic_fails(self):
        topic = unique_topic("ck-exists")
        create_topic(self.admin, topic, partitions=1)
        futures = self.admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                           operation_timeout=ADMIN_TIMEOUT_S,
                                           request_timeout=ADMIN_TIMEOUT_S)
        with self.assertRaises(KafkaException) as ctx:
            futures[topic].result(timeout=ADMIN_TIMEOUT_S + 10)
        self.assertEqual(ctx.exception.args[0].code(), KafkaError.TOPIC_ALREADY_EXISTS,
                         "expected TOPIC_ALREADY_EXISTS, got %s" % ctx.exception.args[0])

    def test_e3_describe_configs_of_missing_topic_fails(self):
        topic = unique_topic("ck-missing")
        with self.assertRaises(KafkaException):
            self.describe(topic)
        self.assertNotIn(topic, self.admin.list_topics(timeout=10).topics,
                         "describing a missing topic must not create it")


def main():
    arm_watchdog(540)
    version = client_version()  # a str in recent releases, a (str, int) tuple in older ones
    log("confluent-kafka %s, librdkafka %s, bootstrap %s"
        % (version[0] if isinstance(version, tuple) else version, librdkafka_version()[0], bootstrap_servers()))
    deadline = Deadline(60)
    admin = admin_client()
    wait_until("the broker at %s to answer metadata requests" % bootstrap_servers(),
               lambda: admin.list_topics(timeout=5) is not None, deadline.remaining())
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
