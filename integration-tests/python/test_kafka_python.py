"""Compatibility of StreamBus with kafka-python (a pure-Python client with its own protocol code).

Run: STREAMBUS_BOOTSTRAP=127.0.0.1:9092 python3 test_kafka_python.py  (exit status 0 = all passed)

Consumers use manual assignment with group_id=None: the broker has no group coordinator, so no
consumer here ever joins a group or commits.
"""

import logging
import os
import sys
import unittest

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kafka_codec
from kafka.admin import ConfigResource
from kafka.errors import KafkaError, TopicAlreadyExistsError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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

TIMEOUT_MS = 30000
TIMEOUT_S = TIMEOUT_MS / 1000
FLUSH_TIMEOUT_S = 120
CODECS = ("gzip", "snappy", "lz4", "zstd")


def admin_client():
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers(),
        client_id="streambus-compat-kafka-python-admin",
        request_timeout_ms=TIMEOUT_MS,
        bootstrap_timeout_ms=TIMEOUT_MS,
    )


def producer(**overrides):
    conf = dict(
        bootstrap_servers=bootstrap_servers(),
        client_id="streambus-compat-kafka-python-producer",
        linger_ms=5,
        request_timeout_ms=TIMEOUT_MS,
        max_block_ms=TIMEOUT_MS,
        delivery_timeout_ms=2 * TIMEOUT_MS,
        bootstrap_timeout_ms=TIMEOUT_MS,
    )
    conf.update(overrides)
    return KafkaProducer(**conf)


def consumer():
    return KafkaConsumer(
        bootstrap_servers=bootstrap_servers(),
        client_id="streambus-compat-kafka-python-consumer",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        fetch_max_wait_ms=100,
        request_timeout_ms=TIMEOUT_MS,
        bootstrap_timeout_ms=TIMEOUT_MS,
    )


def create_topic(admin, name, partitions=1, configs=None):
    admin.create_topics(
        {name: {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}},
        timeout_ms=TIMEOUT_MS,
    )
    admin.wait_for_topics([name], timeout_ms=TIMEOUT_MS)


def partition_count(admin, name):
    [topic] = admin.describe_topics([name])
    if topic.get("error_code", 0) != 0:
        return None
    return len(topic.get("partitions") or [])


def produce_all(p, topic, records, partition=0, timestamps=None):
    """Sends [(key, value, headers)] to one partition, flushes (bounded) and returns the
    RecordMetadata of each record in order."""
    futures = []
    for i, (key, value, headers) in enumerate(records):
        futures.append(p.send(topic, value=value, key=key, headers=list(headers), partition=partition,
                              timestamp_ms=None if timestamps is None else timestamps[i]))
    p.flush(timeout=FLUSH_TIMEOUT_S)
    return [f.get(timeout=TIMEOUT_S) for f in futures]


def consume_all(topic, partition, count, timeout_s=180):
    """Reads exactly `count` records of one partition from its beginning."""
    c = consumer()
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out = []
        deadline = Deadline(timeout_s)
        while len(out) < count:
            if deadline.expired():
                raise AssertionError("read %d of %d records from %s [%d] in %ds"
                                     % (len(out), count, topic, partition, timeout_s))
            polled = c.poll(timeout_ms=int(min(1000, max(50, deadline.remaining() * 1000))),
                            max_records=min(1000, count - len(out)))
            for got_tp, batch in polled.items():
                if got_tp != tp:
                    raise AssertionError("records from unassigned partition %s" % (got_tp,))
                out.extend(batch)
        return out
    finally:
        c.close()


def sample_records(n, tag):
    records = []
    for i in range(n):
        key = record_key(i) if i % 1000 != 997 else b""
        if i % 1000 == 999:
            value = None  # tombstone
        elif i % 1000 == 998:
            value = b""
        else:
            value = record_value(i, tag)
        headers = [("idx", b"%d" % i), ("bin", bytes([i % 256, 0, 255])), ("dup", b"first"), ("dup", b"second")]
        if i % 1000 == 500:
            headers = []
        records.append((key, value, headers))
    return records


class KafkaPythonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin = admin_client()

    @classmethod
    def tearDownClass(cls):
        cls.admin.close()

    def assert_records(self, got, records, topic, partition=0):
        self.assertEqual(len(got), len(records))
        for i, (r, (key, value, headers)) in enumerate(zip(got, records)):
            where = "%s [%d] record %d" % (topic, partition, i)
            self.assertEqual((r.topic, r.partition), (topic, partition), where)
            self.assertEqual(r.offset, i, "%s: offsets must be contiguous from 0" % where)
            if r.key != key:
                self.fail("%s key: %s" % (where, first_mismatch(key, r.key)))
            if r.value != value:
                self.fail("%s value: %s" % (where, first_mismatch(value, r.value)))
            self.assertEqual(list(r.headers or []), headers, "%s headers" % where)

    def test_1_admin_topic_lifecycle(self):
        topic = unique_topic("kp-admin")
        create_topic(self.admin, topic, partitions=3, configs={"retention.ms": "3600000"})
        self.assertIn(topic, self.admin.list_topics())
        self.assertEqual(partition_count(self.admin, topic), 3)

        described = self.admin.describe_configs([ConfigResource("TOPIC", topic)], config_filter="all")
        configs = described["topic"][topic]
        self.assertEqual(configs["retention.ms"]["value"], "3600000")
        self.assertEqual(configs["retention.ms"]["config_source"], "DYNAMIC_TOPIC_CONFIG")
        self.assertIn("segment.bytes", configs, "describe_configs must report unset keys too")
        self.assertNotEqual(configs["segment.bytes"]["config_source"], "DYNAMIC_TOPIC_CONFIG")

        for incremental, value in ((False, "7200000"), (True, "86400000")):
            with self.subTest(incremental=incremental):
                result = self.admin.alter_configs(
                    [ConfigResource("TOPIC", topic, configs={"retention.ms": value})], incremental=incremental)
                self.assertEqual(result, {"topic": {topic: "OK"}})

                def updated(value=value):
                    d = self.admin.describe_configs([ConfigResource("TOPIC", topic, configs=["retention.ms"])])
                    return d["topic"][topic].get("retention.ms", {}).get("value") == value
                wait_until("retention.ms of %s = %s" % (topic, value), updated, TIMEOUT_S, interval_s=0.5)

        self.admin.create_partitions({topic: 5}, timeout_ms=TIMEOUT_MS)
        wait_until("%s to have 5 partitions" % topic, lambda: partition_count(self.admin, topic) == 5, TIMEOUT_S)
        self.admin.wait_for_topics([topic], timeout_ms=TIMEOUT_MS)

        with self.assertRaises(TopicAlreadyExistsError):
            self.admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}}, timeout_ms=TIMEOUT_MS)

        self.admin.delete_topics([topic], timeout_ms=TIMEOUT_MS)
        wait_until("%s to disappear from list_topics" % topic, lambda: topic not in self.admin.list_topics(),
                   TIMEOUT_S)

    def test_2_keyed_records_with_headers_round_trip(self):
        n = 10000
        for acks in (1, "all"):
            with self.subTest(acks=acks):
                topic = unique_topic("kp-roundtrip")
                create_topic(self.admin, topic, partitions=1)
                records = sample_records(n, tag=b"acks=%s" % str(acks).encode())
                p = producer(acks=acks)
                try:
                    metadata = produce_all(p, topic, records)
                finally:
                    p.close(timeout=TIMEOUT_S)
                self.assertEqual([(m.partition, m.offset) for m in metadata], [(0, i) for i in range(n)],
                                 "acknowledged offsets must be 0..%d in order" % (n - 1))
                got = consume_all(topic, 0, n)
                self.assert_records(got, records, topic)

    def test_3_every_compression_codec_round_trips(self):
        available = {"gzip": kafka_codec.has_gzip(), "snappy": kafka_codec.has_snappy(),
                     "lz4": kafka_codec.has_lz4(), "zstd": kafka_codec.has_zstd()}
        self.assertTrue(all(available.values()),
                        "codec libraries missing from the venv (see scripts/python-requirements.txt): %s"
                        % sorted(k for k, v in available.items() if not v))
        for codec in CODECS:
            with self.subTest(codec=codec):
                topic = unique_topic("kp-codec-%s" % codec)
                create_topic(self.admin, topic, partitions=1)
                records = [
                    (record_key(i),
                     (b"%s record %d. " % (codec.encode(), i)) * (1 + i % 20) + record_value(i),
                     [("codec", codec.encode())])
                    for i in range(200)
                ]
                p = producer(acks="all", compression_type=codec, linger_ms=50)
                try:
                    metadata = produce_all(p, topic, records)
                finally:
                    p.close(timeout=TIMEOUT_S)
                self.assertEqual([m.offset for m in metadata], list(range(len(records))))
                self.assert_records(consume_all(topic, 0, len(records), timeout_s=60), records, topic)

    def test_4_list_offsets(self):
        topic = unique_topic("kp-offsets")
        create_topic(self.admin, topic, partitions=1)
        timestamps = [1000, 2000, 3000, 4000, 5000]
        records = [(record_key(i), b"ts-record-%d" % i, []) for i in range(len(timestamps))]
        p = producer(acks="all")
        try:
            metadata = produce_all(p, topic, records, timestamps=timestamps)
        finally:
            p.close(timeout=TIMEOUT_S)
        self.assertEqual([m.offset for m in metadata], [0, 1, 2, 3, 4])

        got = consume_all(topic, 0, len(records), timeout_s=60)
        self.assertEqual([(r.timestamp, r.timestamp_type) for r in got], [(ts, 0) for ts in timestamps],
                         "records must keep their CreateTime timestamps")

        tp = TopicPartition(topic, 0)
        c = consumer()
        try:
            self.assertEqual(c.beginning_offsets([tp], timeout_ms=TIMEOUT_MS), {tp: 0})
            self.assertEqual(c.end_offsets([tp], timeout_ms=TIMEOUT_MS), {tp: 5})
            for ts, expected in ((0, 0), (1000, 0), (1500, 1), (2000, 1), (4999, 4), (5000, 4)):
                with self.subTest(timestamp=ts):
                    found = c.offsets_for_times({tp: ts}, timeout_ms=TIMEOUT_MS)[tp]
                    self.assertIsNotNone(found, "offsets_for_times(%d) found nothing" % ts)
                    self.assertEqual(found.offset, expected, "offsets_for_times(%d)" % ts)
                    self.assertEqual(found.timestamp, timestamps[expected], "offsets_for_times(%d) timestamp" % ts)
            self.assertIsNone(c.offsets_for_times({tp: 5001}, timeout_ms=TIMEOUT_MS)[tp],
                              "no record at or after 5001 ms")
        finally:
            c.close()


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
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
