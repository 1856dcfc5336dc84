"""confluent-kafka (librdkafka) helpers shared by test_confluent.py and durability.py."""

import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, bootstrap_servers, log, wait_until

# Every client here gives up on a request after this long, so no call blocks indefinitely.
SOCKET_TIMEOUT_MS = 30000


def admin_client():
    return AdminClient({
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "streambus-compat-admin",
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
        # Metadata lookups must never create the topics they ask about (that would hide a
        # failed delete, for one).
        "allow.auto.create.topics": False,
    })


def consumer(extra=None):
    """A consumer for manual assignment only. librdkafka insists on a group.id, but these tests
    never subscribe (so never join a group) and never commit."""
    conf = {
        "bootstrap.servers": bootstrap_servers(),
        "client.id": "streambus-compat-consumer",
        "group.id": "streambus-compat-unused-%s" % uuid.uuid4().hex[:8],
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "allow.auto.create.topics": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
    }
    conf.update(extra or {})
    return Consumer(conf)


def create_topic(admin, name, partitions=1, config=None, exist_ok=False, timeout_s=30):
    """Creates `name` (replication factor 1) and waits until its metadata shows every partition
    with a leader."""
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    try:
        futures[name].result(timeout=timeout_s + 10)
    except KafkaException as e:
        err = e.args[0]
        if not (exist_ok and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise
        partitions = None  # it was there already, with whatever partition count it has
    wait_topic_ready(admin, name, partitions, timeout_s)


def topic_metadata(admin, name, timeout_s=5):
    """The topic's metadata from a request for all topics (a request naming the topic could
    create it where auto-creation is on), or None if the broker does not list it."""
    md = admin.list_topics(timeout=timeout_s)
    return md.topics.get(name)


def wait_topic_ready(admin, name, partitions, timeout_s=30):
    """Waits until the metadata lists `name` with `partitions` partitions (any number, if None),
    each with a leader."""
    def ready():
        t = topic_metadata(admin, name)
        if t is None or t.error is not None or not t.partitions:
            return False
        if partitions is not None and len(t.partitions) != partitions:
            return False
        return all(p.error is None and p.leader >= 0 for p in t.partitions.values())

    wait_until("topic %s with %s partitions, all led" % (name, partitions if partitions is not None else "its"),
               ready, timeout_s)


def consume_partition(topic, partition, count, timeout_s=120, start=OFFSET_BEGINNING, conf=None):
    """Reads exactly `count` messages of one partition from `start` with an assigned (never
    subscribed) consumer. Any error reported for this partition fails; errors that concern the
    whole client (e.g. no group coordinator for the unused group.id) are only logged."""
    c = consumer(conf)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        messages = []
        deadline = Deadline(timeout_s)
        while len(messages) < count:
            if deadline.expired():
                raise AssertionError(
                    "read %d of %d messages from %s [%d] in %ds"
                    % (len(messages), count, topic, partition, timeout_s))
            batch = c.consume(num_messages=min(1000, count - len(messages)),
                              timeout=min(1.0, max(0.05, deadline.remaining())))
            for m in batch:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if m.topic() == topic or err.fatal():
                        raise AssertionError("consumer error on %s [%s]: %s" % (m.topic(), m.partition(), err))
                    log("ignoring client-level consumer error:", err)
                    continue
                messages.append(m)
        return messages
    finally:
        c.close()


def headers_of(msg):
    """A message's headers as a list of (str, bytes-or-None), [] when it has none."""
    return list(msg.headers() or [])
