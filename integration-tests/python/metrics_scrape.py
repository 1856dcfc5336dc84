"""Traffic from confluent-kafka, then the broker's /metrics read with prometheus_client's parser.

  python3 metrics_scrape.py <http host:port> <topic prefix> <topics>
      Scrapes /metrics; creates <topics> topics named <prefix>-<i> (1 partition each) with
      the AdminClient and asks to create the first one again (TOPIC_ALREADY_EXISTS); produces
      one record to each topic (acks=all), consumes the first topic's record and commits it for
      the group <prefix>-reader; scrapes again.
      Both scrapes go through prometheus_client.parser.text_string_to_metric_families, which
      fails on anything that is not valid Prometheus text format. Prints one JSON object:
        families: {family name: {"type": t, "help": bool, "series": n}} of the second scrape
        (a family's series are its distinct label sets, histogram buckets folded);
        before / after: {sample name + sorted labels: value} of the samples the test checks.
      Exit status 0 when the traffic went through and both scrapes parsed.

The Rust test (integration-tests/tests/it/observability.rs) starts the broker and checks the
figures. The broker comes from STREAMBUS_BOOTSTRAP; every wait is bounded.
"""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from common import arm_watchdog, bootstrap_servers, log  # noqa: E402

REQUEST_TIMEOUT_S = 30
CREATE_TIMEOUT_S = 120
FLUSH_TIMEOUT_S = 120
CONSUME_TIMEOUT_S = 30

# The samples reported by value (others are only counted).
REPORTED = (
    "streambus_kafka_requests_total",
    "streambus_kafka_request_errors_total",
    "streambus_kafka_request_duration_seconds_count",
    "streambus_topic_bytes_in_total",
    "streambus_topic_records_in_total",
    "streambus_topic_bytes_out_total",
    "streambus_topic_records_out_total",
    "streambus_log_appended_records_total",
    "streambus_partitions",
    "streambus_partitions_leader",
    "streambus_raft_is_controller",
    "streambus_log_dir_free_bytes",
    "process_resident_memory_bytes",
)


def scrape(http):
    with urllib.request.urlopen("http://%s/metrics" % http, timeout=REQUEST_TIMEOUT_S) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode("utf-8")
    families = {}
    values = {}
    for family in text_string_to_metric_families(text):
        label_sets = set()
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k not in ("le", "quantile")}
            label_sets.add(tuple(sorted(labels.items())))
            if sample.name in REPORTED:
                key = sample.name + json.dumps(sorted(sample.labels.items()))
                values[key] = sample.value
        families[family.name] = {
            "type": family.type,
            "help": bool(family.documentation),
            "series": len(label_sets),
        }
    return content_type, families, values


def main():
    arm_watchdog(300)
    http, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _, _, before = scrape(http)
    bootstrap = bootstrap_servers()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = ["%s-%d" % (prefix, i) for i in range(count)]
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1) for name in names],
        request_timeout=CREATE_TIMEOUT_S,
    )
    for name, future in futures.items():
        future.result(timeout=CREATE_TIMEOUT_S)
    log("created", count, "topics")
    again = admin.create_topics([NewTopic(names[0], num_partitions=1, replication_factor=1)])
    try:
        again[names[0]].result(timeout=REQUEST_TIMEOUT_S)
        log("creating an existing topic did not fail")
        return 1
    except KafkaException as error:
        log("second create refused:", error.args[0].name())
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failures = []

    def delivered(error, _message):
        if error is not None:
            failures.append(error)

    for name in names:
        producer.produce(name, value=b"metrics-%s" % name.encode(), on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(FLUSH_TIMEOUT_S)
    if left or failures:
        log("produce failed:", left, "left,", failures[:3])
        return 1
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "%s-reader" % prefix,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(names[0], 0, 0)])
    message = consumer.poll(CONSUME_TIMEOUT_S)
    if message is None or message.error() is not None:
        log("consume failed:", message and message.error())
        consumer.close()
        return 1
    # A committed offset, so that the group's consumer lag is published.
    consumer.commit(message=message, asynchronous=False)
    consumer.close()
    content_type, families, after = scrape(http)
    print(
        json.dumps(
            {
                "content_type": content_type,
                "families": families,
                "before": before,
                "after": after,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
