#!/usr/bin/env python3
"""Group-coordinator benchmark of StreamBus on loopback, with raw Kafka-protocol clients.

The script starts and stops its own broker processes and measures, in one run:

  * commits: synchronous OffsetCommit v8 requests (generation -1, empty member id: commits of a
    consumer outside group management, which the coordinator accepts for an empty group), each
    committer with its own group and connection to the group's coordinator, one request in
    flight each, `--commit-partitions` partitions a request; commits/s and p50/p99/max latency
    for each count in `--committers`, on one `--dev` broker and on a 3-broker cluster
    (`__consumer_offsets` with replication factor 3);
  * rebalances: a group of `--members` members, Stable; one more member joins, and the figure is
    the time from its first request to the group being Stable again with every member, for a
    classic group (JoinGroup/SyncGroup/Heartbeat; the leader assigns round-robin;
    group_initial_rebalance_delay_ms=0) and a KIP-848 consumer group (ConsumerGroupHeartbeat;
    Stable as ConsumerGroupDescribe shows it). The extra member leaves after each round;
  * memory: VmRSS of a fresh broker before and after `--memory-groups` groups are created, once
    as groups with `--memory-offsets-per-group` (1) committed offsets each, once as classic
    groups with one member each;
  * failover load: `--load-groups` x `--load-partitions` committed offsets in a one-partition
    `__consumer_offsets`; the broker is restarted (SIGTERM, then started on the same data), and
    the figure is the time from the process start to the shard's `coordinator loaded` log line.

Run it with the project venv's interpreter:

    ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python bench/group_bench.py \\
        --broker-bin $HOME/.cache/streambus-target/release/streambus

The clients are asyncio coroutines in this one Python process speaking the Kafka protocol over
plain sockets, their requests encoded and the answers decoded by kafka-python's protocol classes
(kafka.protocol); confluent-kafka's AdminClient only creates the topics.
Progress goes to stderr; the table goes to stdout, or, with --json, the JSON document goes to
stdout and the table to stderr. Every wait and loop has a bound; brokers are killed on any error
or interrupt, and their logs (kept in the run's temporary directory) are shown.
"""

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, deque

# The helpers (logging, deadlines, CPU and RSS readings, topic creation, machine info, output)
# are kafka_bench.py's, the 3-broker cluster is replication_bench.py's; importing them has no
# side effects.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no bench/__pycache__ in the checkout
import kafka_bench as kb  # noqa: E402  (exits with a clear message if confluent-kafka is missing)
import replication_bench as rb  # noqa: E402
from kafka_bench import BenchError, Deadline, log  # noqa: E402

# The Kafka messages' codec: kafka-python's protocol classes (scripts/python-requirements.txt pins
# the version, 3.0.12); only its kafka.protocol package is used, not its client.
try:
    import kafka
    from kafka.protocol.admin import DescribeGroupsRequest
    from kafka.protocol.api_message import ApiMessage
    from kafka.protocol.consumer import (ConsumerProtocolAssignment, ConsumerProtocolSubscription,
                                         HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                                         OffsetCommitRequest, SyncGroupRequest)
    from kafka.protocol.metadata import CoordinatorType, FindCoordinatorRequest
    from kafka.protocol.schemas import StructField
    from kafka.protocol.schemas.fields.codecs import Int32
except ImportError as e:  # pragma: no cover - depends on the interpreter used
    sys.stderr.write(
        "group_bench: kafka-python 3.0's kafka.protocol is not importable by %s (%s); run this script "
        "with the project venv: ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python\n" % (sys.executable, e))
    sys.exit(2)

STOP_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 30.0
CLIENT_ID = "streambus-group-bench"
OFFSETS_TOPIC = "__consumer_offsets"

# Kafka error codes the clients act on.
NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79
GROUP_ID_NOT_FOUND = 69
FENCED_MEMBER_EPOCH = 110
COORDINATOR_MOVED = (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR)

# Log lines whose arrival times are kept: the steps of a broker start up to a loaded coordinator.
MARKS = ("broker started", "broker registered", "broker active", "becoming coordinator")
LOADED_RE = re.compile(r"coordinator loaded.*topic=(\S+).*partition=(\d+).*records=(\d+)"
                       r".*end_offset=(\d+).*elapsed_ms=(\d+)")


# --------------------------------------------------------------------------------------------
# Kafka wire protocol: kafka-python's message classes (kafka.protocol, generated from Kafka's JSON
# message schemas) build, encode and decode every request and answer; Conn moves the frames.

# The API versions used: each name is a kafka-python request class pinned to that version.
OFFSET_COMMIT = OffsetCommitRequest[8]
FIND_COORDINATOR = FindCoordinatorRequest[1]
JOIN_GROUP = JoinGroupRequest[5]
HEARTBEAT = HeartbeatRequest[3]
LEAVE_GROUP = LeaveGroupRequest[3]
SYNC_GROUP = SyncGroupRequest[3]
DESCRIBE_GROUPS = DescribeGroupsRequest[4]
# CONSUMER_GROUP_HEARTBEAT (v1) and CONSUMER_GROUP_DESCRIBE (v0) are declared with KIP-848 below.


class ProtocolError(BenchError):
    pass


class Conn:
    """One connection, one request at a time (the caller awaits each answer)."""

    def __init__(self, addr):
        self.addr = addr
        self.reader = None
        self.writer = None
        self.correlation = 0
        self.max_rtt = 0.0  # the longest request -> answer time since the caller last reset it

    async def connect(self, timeout_s=REQUEST_TIMEOUT_S):
        host, port = self.addr.rsplit(":", 1)
        async with asyncio.timeout(timeout_s):
            self.reader, self.writer = await asyncio.open_connection(host, int(port))
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def call(self, request, timeout_s=REQUEST_TIMEOUT_S, timed=True):
        """Sends `request` (an instance of one of the versioned request classes above) and returns
        the decoded answer, of the matching response class and version. `timed=False` keeps the
        request out of `max_rtt` (a JoinGroup or SyncGroup waits for the other members by design)."""
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id=CLIENT_ID)
        frame = request.encode(header=True, framed=True)
        t0 = time.perf_counter()
        async with asyncio.timeout(timeout_s):
            self.writer.write(frame)
            await self.writer.drain()
            size, _ = Int32.decode_from(await self.reader.readexactly(4), 0)
            payload = await self.reader.readexactly(size)
        if timed:
            self.max_rtt = max(self.max_rtt, time.perf_counter() - t0)
        response = request.header.get_response_class().decode(payload, header=True)
        if response.header.correlation_id != self.correlation:
            raise ProtocolError("%s: correlation id %d in the answer to request %d (%s v%d)"
                                % (self.addr, response.header.correlation_id, self.correlation,
                                   request.name, request.API_VERSION))
        return response

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ---- FindCoordinator v1


async def find_coordinator(bootstraps, group, deadline):
    """The coordinator's address for `group`, asking each bootstrap broker in turn until one
    answers without error (a new __consumer_offsets is created on the first look-up)."""
    last = "no answer"
    i = 0
    while True:
        addr = bootstraps[i % len(bootstraps)]
        i += 1
        conn = Conn(addr)
        try:
            await conn.connect(5)
            r = await conn.call(FIND_COORDINATOR(key=group, key_type=CoordinatorType.GROUP), 10)
            if r.error_code == NONE:
                return "%s:%d" % (r.host, r.port)
            last = "error %d (%s) from %s" % (r.error_code, r.error_message, addr)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            last = "%s: %r" % (addr, e)
        finally:
            conn.close()
        deadline.check("FindCoordinator %s: %s" % (group, last))
        await asyncio.sleep(0.1)


# ---- OffsetCommit v8


def commit_topics(topic, partitions, offset):
    """The `topics` of an OffsetCommit: one topic's `partitions`, all at `offset`, no leader epoch
    (-1), null metadata. Built once and reused (a committer moves the offsets with set_offset):
    building kafka-python's message objects costs the client about as much CPU as encoding them,
    and the commit figures depend on the client's CPU, which shares two cores with the brokers."""
    topic_class = OffsetCommitRequest.OffsetCommitRequestTopic
    partition_class = topic_class.OffsetCommitRequestPartition
    return [topic_class(name=topic, partitions=[
        partition_class(partition_index=p, committed_offset=offset, committed_leader_epoch=-1,
                        committed_metadata=None)
        for p in partitions])]


def set_offset(topics, offset):
    """Moves every partition of `topics` (of commit_topics) to `offset`."""
    for t in topics:
        for p in t.partitions:
            p.committed_offset = offset


def commit_request(group, topics):
    """Generation -1 and an empty member id: a commit of a consumer outside group management."""
    return OFFSET_COMMIT(group_id=group, generation_id_or_member_epoch=-1, member_id="", topics=topics)


def commit_errors(response):
    """The error codes of an OffsetCommit answer, every partition's, in order."""
    return [p.error_code for t in response.topics for p in t.partitions]


async def commit_until_ok(bootstraps, group, topic, partitions, offset, deadline):
    """Finds the coordinator and commits once, retrying while the coordinator moves or loads;
    returns the open connection to the coordinator."""
    last = None
    while True:
        addr = await find_coordinator(bootstraps, group, deadline)
        conn = Conn(addr)
        try:
            await conn.connect(5)
            request = commit_request(group, commit_topics(topic, partitions, offset))
            while True:
                codes = commit_errors(await conn.call(request))
                bad = [c for c in codes if c != NONE]
                if not bad:
                    return conn
                last = Counter(bad)
                if any(c not in COORDINATOR_MOVED for c in bad):
                    raise BenchError("OffsetCommit of %s to %s: errors %s" % (group, addr, dict(last)))
                if NOT_COORDINATOR in bad or COORDINATOR_NOT_AVAILABLE in bad:
                    break  # look the coordinator up again
                deadline.check("OffsetCommit of %s: %s" % (group, dict(last)))
                await asyncio.sleep(0.1)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            last = repr(e)
        conn.close()
        deadline.check("OffsetCommit of %s: last %s" % (group, last))
        await asyncio.sleep(0.1)


# ---- Classic groups: JoinGroup v5, SyncGroup v3, Heartbeat v3, LeaveGroup v3, DescribeGroups v4


def subscription(topic):
    """ConsumerProtocolSubscription v0: the topic, no user data."""
    return ConsumerProtocolSubscription(version=0, topics=[topic], user_data=None).encode()


def assignment_bytes(topic, partitions):
    """ConsumerProtocolAssignment v0."""
    return ConsumerProtocolAssignment(version=0, assigned_partitions=[
        ConsumerProtocolAssignment.TopicPartition(topic=topic, partitions=partitions)], user_data=None).encode()


def join_request(group, member_id, session_ms, rebalance_ms, topic):
    """A consumer-protocol JoinGroup with one protocol, round-robin, subscribed to `topic`."""
    return JOIN_GROUP(group_id=group, session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
                      member_id=member_id, protocol_type="consumer", protocols=[
                          JoinGroupRequest.JoinGroupRequestProtocol(name="roundrobin", metadata=subscription(topic))])


def sync_request(group, generation, member_id, assignments):
    """`assignments`: (member id, assignment bytes) pairs, the leader's; empty for the others."""
    return SYNC_GROUP(group_id=group, generation_id=generation, member_id=member_id, assignments=[
        SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a) for m, a in assignments])


def leave_request(group, member_ids):
    return LEAVE_GROUP(group_id=group, members=[LeaveGroupRequest.MemberIdentity(member_id=m) for m in member_ids])


# ---- KIP-848: ConsumerGroupHeartbeat v1, ConsumerGroupDescribe v0
#
# kafka-python 3.0.12 has neither message: no class, and no schema among the JSON files its
# classes are generated from (kafka/protocol/schemas/resources/; only their API keys are in
# kafka.protocol.api_key). So the bench declares their fields here, for the one version of each
# it sends, in wire order and with Kafka's names, and kafka-python's schema codec, the one behind
# its generated classes, encodes and decodes them: no byte is written or read by hand.


def schema_field(name, type_, nullable=False, fields=None):
    """A field in the form of Kafka's JSON message schemas, present in every version declared;
    a nullable one defaults to null."""
    field = {"name": name, "type": type_, "versions": "0+"}
    if nullable:
        field.update(nullableVersions="0+", default="null")
    if fields:
        field["fields"] = fields
    return field


def schema_message(name, api_key, kind, version, fields):
    """A kafka-python message class (`kind` "request" or "response") of the one flexible `version`
    with `fields`, pinned to it. `init=False` keeps kafka-python's metaclass from loading
    `<name>.json` from its resources (there is none); the attributes it would derive from that
    file are set here instead. The response classes register themselves, by API key, where
    Conn.call finds them (request.header.get_response_class)."""
    schema = {"name": name, "apiKey": api_key, "type": kind, "validVersions": str(version),
              "flexibleVersions": "0+", "fields": fields}
    attrs = {"_json": schema, "_struct": StructField(schema), "_class_version": None, "_VERSIONS": {}}
    return type(ApiMessage)(name, (ApiMessage,), attrs, init=False)[version]


def _topic_partitions(*extra):
    """Partitions of topics by topic id: ConsumerGroupHeartbeat's (id, partitions),
    ConsumerGroupDescribe's (id, name, partitions)."""
    return [schema_field("TopicId", "uuid"), *extra, schema_field("Partitions", "[]int32")]


CONSUMER_GROUP_HEARTBEAT = schema_message("ConsumerGroupHeartbeatRequest", 68, "request", 1, [
    schema_field("GroupId", "string"),
    schema_field("MemberId", "string"),
    schema_field("MemberEpoch", "int32"),
    schema_field("InstanceId", "string", nullable=True),
    schema_field("RackId", "string", nullable=True),
    schema_field("RebalanceTimeoutMs", "int32"),
    schema_field("SubscribedTopicNames", "[]string", nullable=True),
    schema_field("SubscribedTopicRegex", "string", nullable=True),
    schema_field("ServerAssignor", "string", nullable=True),
    schema_field("TopicPartitions", "[]TopicPartitions", nullable=True, fields=_topic_partitions()),
])
# The *_RESPONSE names keep the response classes alive: kafka-python's registry of response
# classes, where Conn.call finds them, holds weak references.
CONSUMER_GROUP_HEARTBEAT_RESPONSE = schema_message("ConsumerGroupHeartbeatResponse", 68, "response", 1, [
    schema_field("ThrottleTimeMs", "int32"),
    schema_field("ErrorCode", "int16"),
    schema_field("ErrorMessage", "string", nullable=True),
    schema_field("MemberId", "string", nullable=True),
    schema_field("MemberEpoch", "int32"),
    schema_field("HeartbeatIntervalMs", "int32"),
    schema_field("Assignment", "Assignment", nullable=True, fields=[
        schema_field("TopicPartitions", "[]TopicPartitions", fields=_topic_partitions())]),
])
CONSUMER_GROUP_DESCRIBE = schema_message("ConsumerGroupDescribeRequest", 69, "request", 0, [
    schema_field("GroupIds", "[]string"),
    schema_field("IncludeAuthorizedOperations", "bool"),
])
_DESCRIBED_ASSIGNMENT = [schema_field("TopicPartitions", "[]TopicPartitions",
                                      fields=_topic_partitions(schema_field("TopicName", "string")))]
CONSUMER_GROUP_DESCRIBE_RESPONSE = schema_message("ConsumerGroupDescribeResponse", 69, "response", 0, [
    schema_field("ThrottleTimeMs", "int32"),
    schema_field("Groups", "[]DescribedGroup", fields=[
        schema_field("ErrorCode", "int16"),
        schema_field("ErrorMessage", "string", nullable=True),
        schema_field("GroupId", "string"),
        schema_field("GroupState", "string"),
        schema_field("GroupEpoch", "int32"),
        schema_field("AssignmentEpoch", "int32"),
        schema_field("AssignorName", "string"),
        schema_field("Members", "[]Member", fields=[
            schema_field("MemberId", "string"),
            schema_field("InstanceId", "string", nullable=True),
            schema_field("RackId", "string", nullable=True),
            schema_field("MemberEpoch", "int32"),
            schema_field("ClientId", "string"),
            schema_field("ClientHost", "string"),
            schema_field("SubscribedTopicNames", "[]string"),
            schema_field("SubscribedTopicRegex", "string", nullable=True),
            schema_field("Assignment", "Assignment", fields=_DESCRIBED_ASSIGNMENT),
            schema_field("TargetAssignment", "Assignment", fields=_DESCRIBED_ASSIGNMENT),
        ]),
        schema_field("AuthorizedOperations", "int32"),
    ]),
])


def consumer_heartbeat_request(group, member_id, epoch, rebalance_ms, topics, owned):
    """`topics`: the subscription (None: unchanged); `owned`: {topic id: partitions} (None:
    unchanged since the last heartbeat)."""
    topic_partitions = None
    if owned is not None:
        topic_partitions = [CONSUMER_GROUP_HEARTBEAT.TopicPartitions(topic_id=t, partitions=sorted(p))
                            for t, p in sorted(owned.items())]
    return CONSUMER_GROUP_HEARTBEAT(group_id=group, member_id=member_id, member_epoch=epoch,
                                    rebalance_timeout_ms=rebalance_ms, subscribed_topic_names=topics,
                                    topic_partitions=topic_partitions)


def partitions_by_topic(topic_partitions):
    """{topic id: frozenset of partitions} of a heartbeat's or a describe's topic partitions,
    topics without partitions left out (so that assignments compare as sets)."""
    return {tp.topic_id: frozenset(tp.partitions) for tp in topic_partitions or () if tp.partitions}


def reconciled(member, assignment_epoch):
    """Whether a ConsumerGroupDescribe member is at the group's assignment epoch and owns exactly
    its target assignment."""
    return (member.member_epoch == assignment_epoch
            and partitions_by_topic(member.assignment.topic_partitions)
            == partitions_by_topic(member.target_assignment.topic_partitions))


# --------------------------------------------------------------------------------------------
# Brokers


class DevBroker:
    """One `streambus --dev` process on ephemeral loopback ports, with a data directory that
    survives restarts, `--set` overrides and RUST_LOG=info. Its stderr is read by a thread (a
    full pipe would stall the broker), copied to `<workdir>/<name>.log`, and the arrival time of
    each `coordinator loaded` line is kept."""

    def __init__(self, binary, workdir, name, settings=()):
        self.binary = binary
        self.name = name
        self.data_dir = os.path.join(workdir, name)
        self.log_path = os.path.join(workdir, name + ".log")
        self.settings = list(settings)
        self.proc = None
        self.kafka_addr = None
        self.started_at = None
        self.loaded = []  # (time.monotonic() of arrival, topic, partition, records, end, elapsed_ms)
        self.marks = []  # (time.monotonic() of arrival, line) of MARKS, warning and error lines
        self.tail = deque(maxlen=200)
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._registered = threading.Event()
        self._reader = None
        self.starts = 0

    def start(self, timeout_s):
        if self.running():
            raise BenchError("%s is already running (pid %d)" % (self.name, self.proc.pid))
        cmd = [
            self.binary, "--dev",
            "--data-dir", self.data_dir,
            "--kafka-listener", "127.0.0.1:0",
            "--raft-listener", "127.0.0.1:0",
            "--admin-listener", "127.0.0.1:0",
            "--http-listener", "127.0.0.1:0",
        ]
        for s in self.settings:
            cmd += ["--set", s]
        self.starts += 1
        self._started.clear()
        self._registered.clear()
        self.kafka_addr = None
        with self._lock:
            self.loaded = []
            self.marks = []
        log("starting %s (start #%d, log %s):" % (self.name, self.starts, self.log_path), " ".join(cmd))
        env = dict(os.environ, RUST_LOG="info")
        logf = open(self.log_path, "ab")
        logf.write(b"=== group_bench: start #%d: %s\n" % (self.starts, " ".join(cmd).encode()))
        logf.flush()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True, env=env)
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc, logf),
                                        name="%s-stderr" % self.name, daemon=True)
        self._reader.start()
        deadline = Deadline(timeout_s, "%s start (waiting for 'broker started' and 'broker registered')"
                            % self.name)
        while not (self._started.wait(0.05) and self._registered.is_set()):
            if self.proc.poll() is not None:
                raise BenchError("%s exited with status %s before it started; last log lines:\n%s"
                                 % (self.name, self.proc.returncode, self.log_tail()))
            deadline.check("last log lines:\n" + self.log_tail())
        if not self.kafka_addr:
            raise BenchError("'broker started' line without kafka_listener=IP:PORT:\n" + self.log_tail())
        log("%s pid %d, kafka listener %s" % (self.name, self.proc.pid, self.kafka_addr))
        return self.kafka_addr

    def _read_stderr(self, proc, logf):
        try:
            for raw in proc.stderr:
                now = time.monotonic()
                logf.write(raw)
                line = kb.ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
                self.tail.append(line)
                if not self._started.is_set() and "broker started" in line:
                    m = re.search(r"kafka_listener=(\d{1,3}(?:\.\d{1,3}){3}:\d+)", line)
                    if m:
                        self.kafka_addr = m.group(1)
                    self._started.set()
                if not self._registered.is_set() and "broker registered" in line:
                    self._registered.set()
                if any(x in line for x in MARKS) or " WARN " in line or " ERROR " in line:
                    with self._lock:
                        self.marks.append((now, line))
                if "coordinator loaded" in line:
                    m = LOADED_RE.search(line)
                    if m:
                        with self._lock:
                            self.loaded.append((now, m.group(1), int(m.group(2)), int(m.group(3)),
                                                int(m.group(4)), int(m.group(5))))
        finally:
            logf.close()

    def loaded_lines(self, topic, partition):
        with self._lock:
            return [x for x in self.loaded if x[1] == topic and x[2] == partition]

    def first_mark(self, *parts):
        """Arrival time of the first line of this start containing every string in `parts`."""
        with self._lock:
            return next((t for t, line in self.marks if all(p in line for p in parts)), None)

    def marks_since_start(self):
        with self._lock:
            return [[round(t - self.started_at, 3), line] for t, line in self.marks]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        return "\n".join(list(self.tail)[-n:])

    def rss_kib(self):
        return kb.read_status_kib(self.proc.pid, "VmRSS")

    def stop(self, graceful):
        """SIGTERM and a bounded wait when `graceful`, SIGKILL otherwise (or if SIGTERM was not
        enough). Safe to call more than once; keeps the data directory."""
        kb.stop_process(self.proc, self.name, graceful, self.log_tail, self._reader, STOP_TIMEOUT_S)
        self._reader = None

    def remove_data(self):
        shutil.rmtree(self.data_dir, ignore_errors=True)


class CpuMeter:
    """CPU used by some broker processes and by this client process over a window, in percent
    of one core."""

    def __init__(self, pids):
        self.pids = pids
        self.wall = time.perf_counter()
        self.brokers = sum(kb.process_cpu_seconds(p) for p in pids)
        self.client = time.process_time()

    def done(self):
        wall = max(1e-9, time.perf_counter() - self.wall)
        return {
            "broker_cpu_pct": 100.0 * (sum(kb.process_cpu_seconds(p) for p in self.pids) - self.brokers) / wall,
            "client_cpu_pct": 100.0 * (time.process_time() - self.client) / wall,
        }


def run_async(coro, timeout_s, what):
    """Runs one phase's coroutine on a fresh event loop, bounded by `timeout_s`."""

    async def bounded():
        scope = asyncio.timeout(timeout_s)
        try:
            async with scope:
                return await coro
        except TimeoutError as e:
            if scope.expired():
                raise BenchError("%s: no result within %.0f s" % (what, timeout_s)) from e
            raise BenchError("%s: a request got no answer within %.0f s" % (what, REQUEST_TIMEOUT_S)) from e

    return asyncio.run(bounded())


async def cancel_all(tasks):
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def check_tasks(tasks, what):
    """Fails the phase if a client task ended with an exception."""
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            e = t.exception()
            raise BenchError("%s: a client failed: %s" % (
                what, "".join(traceback.format_exception(e)).rstrip()))


# --------------------------------------------------------------------------------------------
# 1. Commits


async def commit_phase(bootstraps, pids, topic, topic_partitions, committers, batch, seconds,
                       warmup_s, ready_timeout_s, label):
    """`committers` coroutines, each with its own group and connection, committing `batch`
    partitions a request, one request in flight each, for `warmup_s` + `seconds`; latencies and
    counts over the last `seconds`."""
    groups = ["bench-commit-%s-%d-%s" % (label, committers, i) for i in range(committers)]
    parts = [[(i * batch + j) % topic_partitions for j in range(batch)] for i in range(committers)]
    deadline = Deadline(ready_timeout_s, "coordinators of %d commit groups" % committers)
    conns = await asyncio.gather(*[commit_until_ok(bootstraps, g, topic, p, 0, deadline)
                                   for g, p in zip(groups, parts)])
    coordinators = sorted({c.addr for c in conns})
    lat = []
    errors = Counter()
    perf = time.perf_counter
    start = perf()
    warm_end = start + warmup_s
    end = warm_end + seconds
    window = {}

    async def meter():
        await asyncio.sleep(max(0.0, warm_end - perf()))
        window["cpu"] = CpuMeter(pids)
        await asyncio.sleep(max(0.0, end - perf()))
        window["usage"] = window["cpu"].done()

    async def committer(i):
        conn = conns[i]
        topics = commit_topics(topic, parts[i], 0)
        request = commit_request(groups[i], topics)
        offset = 0
        done = 0
        while True:
            t0 = perf()
            if t0 >= end:
                return done
            offset += 1
            set_offset(topics, offset)
            r = await conn.call(request)
            t1 = perf()
            codes = commit_errors(r)
            bad = [c for c in codes if c != NONE]
            if bad:
                errors.update(bad)
                if sum(errors.values()) > 100:
                    raise BenchError("more than 100 commit errors: %s" % dict(errors))
                continue
            if t0 >= warm_end and t1 <= end:
                lat.append(t1 - t0)
                done += 1

    tasks = [asyncio.ensure_future(meter())] + [asyncio.ensure_future(committer(i)) for i in range(committers)]
    try:
        results = await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)
        for c in conns:
            c.close()
    commits = sum(results[1:])
    lat.sort()
    out = {
        "committers": committers,
        "partitions_per_commit": batch,
        "coordinators": coordinators,
        "seconds": seconds,
        "commits": commits,
        "commits_s": commits / seconds,
        "offsets_s": commits * batch / seconds,
        "p50_ms": kb.percentile(lat, 0.5) * 1e3,
        "p99_ms": kb.percentile(lat, 0.99) * 1e3,
        "max_ms": (lat[-1] if lat else float("nan")) * 1e3,
        "errors": dict(errors),
    }
    out.update(window.get("usage", {}))
    if commits and "broker_cpu_pct" in out:
        # Broker CPU time per commit: less sensitive to the machine's mood than commits/s.
        out["broker_cpu_us_per_commit"] = out["broker_cpu_pct"] / 100 * seconds / commits * 1e6
    log("  %d committer%s: %.0f commits/s (%.0f offsets/s), p50 %.2f ms, p99 %.2f ms, max %.2f ms; "
        "broker CPU %.0f %%, client CPU %.0f %%; coordinators %s%s"
        % (committers, "" if committers == 1 else "s", out["commits_s"], out["offsets_s"], out["p50_ms"],
           out["p99_ms"], out["max_ms"], out.get("broker_cpu_pct", 0), out.get("client_cpu_pct", 0),
           ", ".join(coordinators), "; errors %s" % dict(errors) if errors else ""))
    return out


def idle_cpu(pids, seconds=3.0):
    """The brokers' CPU while nothing is asked of them (metadata heartbeats, timers), in percent
    of one core: the floor under the commit runs' broker CPU."""
    meter = CpuMeter(pids)
    time.sleep(seconds)
    pct = meter.done()["broker_cpu_pct"]
    log("  idle brokers: %.1f %% CPU over %.0f s" % (pct, seconds))
    return pct


def commits_on(bootstraps, pids, args, label):
    async def first_commit():
        # Creates __consumer_offsets, so that the idle reading includes its replicas.
        conn = await commit_until_ok(bootstraps, "bench-commit-first-%s" % label, "bench-commit", [0], 1,
                                     Deadline(args.ready_timeout, "first commit"))
        conn.close()

    run_async(first_commit(), args.timeout, "first commit (%s)" % label)
    time.sleep(2.0)
    idle = idle_cpu(pids)
    results = []
    for n in args.committers:
        results.append(run_async(
            commit_phase(bootstraps, pids, "bench-commit", args.commit_topic_partitions, n,
                         args.commit_partitions, args.commit_seconds, args.commit_warmup_seconds,
                         args.ready_timeout, label),
            args.timeout, "commits (%s, %d committers)" % (label, n)))
    for r in results:
        r["idle_broker_cpu_pct"] = idle
    return results


# --------------------------------------------------------------------------------------------
# 2a. Rebalances: classic


class ClassicTracker:
    def __init__(self):
        self.leader_sizes = {}  # generation -> members in the leader's JoinGroup answer
        self.errors = Counter()
        self.changed = asyncio.Event()

    def note(self):
        self.changed.set()

    def stable(self, members):
        """(generation, time the last member got its assignment) if every member in `members`
        synced the same generation and the leader's join answer of it listed exactly them."""
        gens = {m.synced_gen for m in members}
        if len(gens) != 1:
            return None
        gen = gens.pop()
        if gen is None or self.leader_sizes.get(gen) != len(members):
            return None
        return gen, max(m.t_sync for m in members)

    async def wait_stable(self, members, deadline, what, tasks=()):
        while True:
            check_tasks(tasks, what)
            got = self.stable(members)
            if got is not None:
                return got
            self.changed.clear()
            remaining = deadline.remaining()
            if remaining <= 0:
                gens = Counter(m.synced_gen for m in members)
                deadline.check("%s: synced generations %s, errors %s" % (what, dict(gens), dict(self.errors)))
            try:
                async with asyncio.timeout(min(1.0, max(0.01, remaining))):
                    await self.changed.wait()
            except TimeoutError:
                pass


class ClassicMember:
    """A classic consumer-protocol member: JoinGroup (with KIP-394's MEMBER_ID_REQUIRED round
    trip), SyncGroup (the leader assigns the topic's partitions round-robin over the members in
    member-id order), then a Heartbeat every `heartbeat_s`; rejoins on REBALANCE_IN_PROGRESS."""

    def __init__(self, addr, group, topic, partitions, heartbeat_s, session_ms, rebalance_ms, tracker):
        self.addr = addr
        self.group = group
        self.topic = topic
        self.partitions = partitions
        self.heartbeat_s = heartbeat_s
        self.session_ms = session_ms
        self.rebalance_ms = rebalance_ms
        self.tracker = tracker
        self.member_id = ""
        self.synced_gen = None
        self.t_sync = None
        self.t_join_sent = None  # the last JoinGroup sent
        self.join_sent_for = {}  # generation -> time the JoinGroup answered with it was sent
        self.conn = None

    async def run(self):
        self.conn = conn = await Conn(self.addr).connect()
        tr = self.tracker
        try:
            while True:
                t_join = time.perf_counter()
                self.t_join_sent = t_join
                j = await conn.call(join_request(
                    self.group, self.member_id, self.session_ms, self.rebalance_ms, self.topic),
                    self.rebalance_ms / 1000 + 30, timed=False)
                err = j.error_code
                if err == MEMBER_ID_REQUIRED:
                    self.member_id = j.member_id
                    continue
                if err != NONE:
                    tr.errors["JoinGroup %d" % err] += 1
                    if err == UNKNOWN_MEMBER_ID:
                        self.member_id = ""
                    if err not in (REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION):
                        await asyncio.sleep(0.1)
                    continue
                gen = j.generation_id
                self.join_sent_for[gen] = t_join
                assignments = []
                if j.leader == self.member_id:
                    ids = sorted(m.member_id for m in j.members)
                    tr.leader_sizes[gen] = len(ids)
                    share = {m: [] for m in ids}
                    for p in range(self.partitions):
                        share[ids[p % len(ids)]].append(p)
                    assignments = [(m, assignment_bytes(self.topic, share[m])) for m in ids]
                err = (await conn.call(sync_request(self.group, gen, self.member_id, assignments),
                                       self.rebalance_ms / 1000 + 30, timed=False)).error_code
                if err != NONE:
                    tr.errors["SyncGroup %d" % err] += 1
                    if err == UNKNOWN_MEMBER_ID:
                        self.member_id = ""
                    continue
                self.synced_gen = gen
                self.t_sync = time.perf_counter()
                tr.note()
                while True:
                    await asyncio.sleep(self.heartbeat_s)
                    r = await conn.call(HEARTBEAT(group_id=self.group, generation_id=gen, member_id=self.member_id))
                    err = r.error_code
                    if err == NONE:
                        continue
                    if err != REBALANCE_IN_PROGRESS:
                        tr.errors["Heartbeat %d" % err] += 1
                    if err == UNKNOWN_MEMBER_ID:
                        self.member_id = ""
                    break
        finally:
            conn.close()


async def describe_poll(addr, group, ok, poll_s, deadline, what):
    """Polls DescribeGroups until `ok(described group)`; the time of the first answer that
    satisfies it (the request's send time)."""
    conn = await Conn(addr).connect()
    try:
        while True:
            t = time.perf_counter()
            g = (await conn.call(DESCRIBE_GROUPS(groups=[group]))).groups[0]
            if ok(g):
                return t
            deadline.check("%s: DescribeGroups says %s with %d members" % (what, g.group_state, len(g.members)))
            await asyncio.sleep(poll_s)
    finally:
        conn.close()


async def leave_classic(addr, group, member_ids):
    conn = await Conn(addr).connect()
    try:
        return (await conn.call(leave_request(group, member_ids))).error_code
    finally:
        conn.close()


async def classic_rebalance(bootstraps, args, topic):
    group = "bench-classic-%d" % os.getpid()
    deadline = Deadline(args.ready_timeout, "coordinator of %s" % group)
    addr = await find_coordinator(bootstraps, group, deadline)
    tr = ClassicTracker()
    hb = args.classic_heartbeat_ms / 1000

    def member():
        return ClassicMember(addr, group, topic, args.rebalance_partitions, hb,
                             args.classic_session_ms, args.rebalance_timeout_ms, tr)

    members = [member() for _ in range(args.members)]
    tasks = [asyncio.ensure_future(m.run()) for m in members]
    rounds = []
    lag = LoopLag()
    try:
        t_form = time.perf_counter()
        gen, _ = await tr.wait_stable(members, Deadline(args.timeout, "classic group formation"),
                                      "%d members forming the group" % args.members, tasks)
        log("classic: %d members Stable at generation %d after %.1f s (group_initial_rebalance_delay_ms=0; "
            "errors on the way: %s)" % (args.members, gen, time.perf_counter() - t_form, dict(tr.errors) or "none"))
        for rnd in range(1, args.rebalance_rounds + 1):
            check_tasks(tasks, "classic group")
            # A random moment within one heartbeat interval, after a settling second.
            await asyncio.sleep(1.0 + random.uniform(0, hb))
            tr.errors.clear()
            newcomer = member()
            everyone = members + [newcomer]
            want = len(everyone)
            dl = Deadline(args.timeout, "classic rebalance round %d" % rnd)
            round_start(members, lag)
            t0 = time.perf_counter()
            nt = asyncio.ensure_future(newcomer.run())
            poll = asyncio.ensure_future(describe_poll(
                addr, group, lambda g: g.group_state == "Stable" and len(g.members) == want,
                args.poll_ms / 1000, dl, "classic round %d" % rnd))
            new_gen, t_stable = await tr.wait_stable(everyone, dl, "classic round %d" % rnd, tasks + [nt])
            t_described = await poll
            check_tasks([nt], "classic newcomer")
            last_rejoin = max(m.join_sent_for[new_gen] for m in members)
            r = {
                "generation": new_gen,
                "stable_s": t_stable - t0,
                "described_stable_s": t_described - t0,
                "last_rejoin_s": last_rejoin - t0,
                "rejoin_to_stable_s": t_stable - last_rejoin,
                "errors": dict(tr.errors),
            }
            r.update(round_client_readings(everyone, lag))
            rounds.append(r)
            log("classic round %d: %d -> %d members, generation %d: Stable (every member has its assignment) "
                "%.3f s after the join (DescribeGroups: %.3f s); the last old member rejoined at %.3f s, "
                "%.3f s before Stable; longest heartbeat %.3f s, client event-loop lag up to %.3f s"
                % (rnd, want - 1, want, new_gen, r["stable_s"], r["described_stable_s"], r["last_rejoin_s"],
                   r["rejoin_to_stable_s"], r["heartbeat_rtt_max_s"], r["client_loop_lag_max_s"]))
            # The newcomer leaves; the group goes back to the original members.
            nt.cancel()
            await asyncio.gather(nt, return_exceptions=True)
            err = await leave_classic(addr, group, [newcomer.member_id])
            if err != NONE:
                raise BenchError("LeaveGroup of the newcomer: error %d" % err)
            await tr.wait_stable(members, Deadline(args.timeout, "classic group back to %d" % len(members)),
                                 "back to %d members" % len(members), tasks)
    finally:
        lag.stop()
        await cancel_all(tasks)
        ids = [m.member_id for m in members if m.member_id]
        if ids:
            try:
                await leave_classic(addr, group, ids)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, BenchError) as e:
                log("classic: LeaveGroup of the members failed (ignored): %r" % e)
    return summarize_rounds(rounds, ["stable_s", "described_stable_s", "last_rejoin_s", "rejoin_to_stable_s"])


class LoopLag:
    """How late a 10 ms sleep of this process's event loop wakes, at worst, since the last
    reset: when it is large, the clients (not the broker) were starved of CPU and the
    rebalance figure of that round carries their delay."""

    def __init__(self):
        self.max_lag = 0.0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            self.max_lag = max(self.max_lag, time.perf_counter() - t - 0.01)

    def take(self):
        lag, self.max_lag = self.max_lag, 0.0
        return lag

    def stop(self):
        self.task.cancel()


def round_start(members, lag):
    """Resets the per-round client readings: the loop lag and each member's longest request."""
    lag.take()
    for m in members:
        if m.conn is not None:
            m.conn.max_rtt = 0.0


def round_client_readings(members, lag):
    return {
        "client_loop_lag_max_s": lag.take(),
        "heartbeat_rtt_max_s": max((m.conn.max_rtt for m in members if m.conn is not None), default=0.0),
    }


def summarize_rounds(rounds, keys):
    return {"rounds": rounds, "median": {k: statistics.median(r[k] for r in rounds) for k in keys}}


# --------------------------------------------------------------------------------------------
# 2b. Rebalances: KIP-848 consumer group


class ConsumerMember848:
    """A KIP-848 member: heartbeats every interval the coordinator gives; when an answer carries
    a new assignment it adopts it (revocation needs no work here) and heartbeats at once with
    the partitions it now owns, as the Java consumer acknowledges a reconciliation."""

    def __init__(self, addr, group, topic, rebalance_ms, errors):
        self.addr = addr
        self.group = group
        self.topic = topic
        self.rebalance_ms = rebalance_ms
        self.errors = errors
        self.member_id = str(uuid.uuid4())
        self.epoch = 0
        self.owned = {}
        self.heartbeats = 0
        self.conn = None
        # (answer time, member epoch, partitions owned after it) of the latest heartbeats.
        self.history = deque(maxlen=256)

    async def run(self, first_delay_s=0.0):
        self.conn = conn = await Conn(self.addr).connect()
        try:
            if first_delay_s > 0:
                await asyncio.sleep(first_delay_s)
            send_owned = True
            joining = True
            while True:
                h = await conn.call(consumer_heartbeat_request(
                    self.group, self.member_id, self.epoch, self.rebalance_ms if joining else -1,
                    [self.topic] if joining else None, self.owned if send_owned else None))
                self.heartbeats += 1
                err = h.error_code
                if err in (UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH):
                    self.errors["ConsumerGroupHeartbeat %d" % err] += 1
                    self.epoch, self.owned, send_owned, joining = 0, {}, True, True
                    continue
                if err != NONE:
                    self.errors["ConsumerGroupHeartbeat %d" % err] += 1
                    await asyncio.sleep(0.1)
                    continue
                self.epoch = h.member_epoch
                joining = send_owned = False
                assignment = None if h.assignment is None else partitions_by_topic(h.assignment.topic_partitions)
                changed = assignment is not None and assignment != self.owned
                if changed:
                    self.owned = assignment
                self.history.append((time.perf_counter(), self.epoch, sum(len(p) for p in self.owned.values())))
                if changed:
                    send_owned = True
                    continue  # acknowledge at once
                await asyncio.sleep(h.heartbeat_interval_ms / 1000)
        finally:
            conn.close()

    async def leave(self):
        conn = await Conn(self.addr).connect()
        try:
            h = await conn.call(consumer_heartbeat_request(self.group, self.member_id, -1, -1, None, None))
            return h.error_code
        finally:
            conn.close()


async def consumer_describe_poll(addr, group, want, poll_s, deadline, what, tasks=()):
    """Polls ConsumerGroupDescribe until the group is Stable with `want` members, every one at
    the assignment epoch with its target assignment; (send time of that request, the group)."""
    conn = await Conn(addr).connect()
    try:
        while True:
            check_tasks(tasks, what)
            t = time.perf_counter()
            g = (await conn.call(CONSUMER_GROUP_DESCRIBE(group_ids=[group]))).groups[0]
            if g.error_code == GROUP_ID_NOT_FOUND:  # no member has joined yet
                deadline.check("%s: the group does not exist yet" % what)
                await asyncio.sleep(poll_s)
                continue
            if g.error_code != NONE:
                raise BenchError("%s: ConsumerGroupDescribe error %d (%s)" % (what, g.error_code, g.error_message))
            ms = g.members or []
            if g.group_state == "Stable" and len(ms) == want and all(reconciled(m, g.assignment_epoch) for m in ms):
                return t, g
            deadline.check("%s: %s, %d members, group epoch %d, assignment epoch %d"
                           % (what, g.group_state, len(ms), g.group_epoch, g.assignment_epoch))
            await asyncio.sleep(poll_s)
    finally:
        conn.close()


async def consumer_rebalance(bootstraps, args, topic):
    group = "bench-consumer-%d" % os.getpid()
    deadline = Deadline(args.ready_timeout, "coordinator of %s" % group)
    addr = await find_coordinator(bootstraps, group, deadline)
    errors = Counter()
    hb = args.consumer_heartbeat_ms / 1000
    poll_s = args.poll_ms / 1000

    def member():
        return ConsumerMember848(addr, group, topic, args.rebalance_timeout_ms, errors)

    members = [member() for _ in range(args.members)]
    # Consumers start at different moments: the first heartbeats are spread over one interval.
    tasks = [asyncio.ensure_future(m.run(random.uniform(0, hb))) for m in members]
    rounds = []
    lag = LoopLag()
    try:
        t_form = time.perf_counter()
        _, g = await consumer_describe_poll(addr, group, args.members, poll_s,
                                            Deadline(args.timeout, "consumer group formation"),
                                            "%d members forming the group" % args.members, tasks)
        check_tasks(tasks, "consumer group")
        log("KIP-848: %d members Stable at epoch %d after %.1f s (errors on the way: %s)"
            % (args.members, g.assignment_epoch, time.perf_counter() - t_form, dict(errors) or "none"))
        for rnd in range(1, args.rebalance_rounds + 1):
            check_tasks(tasks, "consumer group")
            await asyncio.sleep(1.0 + random.uniform(0, hb))
            errors.clear()
            newcomer = member()
            want = args.members + 1
            dl = Deadline(args.timeout, "KIP-848 rebalance round %d" % rnd)
            beats_before = sum(m.heartbeats for m in members)
            round_start(members, lag)
            t0 = time.perf_counter()
            nt = asyncio.ensure_future(newcomer.run())
            t_stable, g = await consumer_describe_poll(addr, group, want, poll_s, dl, "KIP-848 round %d" % rnd,
                                                       tasks + [nt])
            check_tasks([nt], "KIP-848 newcomer")
            moved = sum(len(p) for p in partitions_by_topic(next(
                m for m in g.members if m.member_id == newcomer.member_id).assignment.topic_partitions).values())
            epoch = g.assignment_epoch

            def first(member, ok):
                return min((t for t, e, n in member.history if t >= t0 and ok(e, n)), default=float("nan"))

            r = {
                "assignment_epoch": epoch,
                "stable_s": t_stable - t0,
                "partitions_to_newcomer": moved,
                "heartbeats_of_old_members": sum(m.heartbeats for m in members) - beats_before,
                # When the last old member was answered at the new epoch (its heartbeat phase).
                "last_old_member_at_epoch_s": max(first(m, lambda e, n: e >= epoch) for m in members) - t0,
                # When the newcomer was answered with its whole assignment, and its heartbeats until then.
                "newcomer_assigned_s": first(newcomer, lambda e, n: n >= moved) - t0,
                "newcomer_heartbeats": sum(1 for t, e, n in newcomer.history
                                           if t <= first(newcomer, lambda e, n: n >= moved)),
                "errors": dict(errors),
            }
            r.update(round_client_readings(members + [newcomer], lag))
            rounds.append(r)
            log("KIP-848 round %d: %d -> %d members, assignment epoch %d: Stable %.3f s after the join "
                "(%d partitions moved to the newcomer; the last old member answered at the new epoch at %.3f s, "
                "the newcomer given all its partitions at %.3f s, in its heartbeat #%d; %d heartbeats of the old "
                "members meanwhile; longest heartbeat %.3f s, client event-loop lag up to %.3f s)"
                % (rnd, want - 1, want, epoch, r["stable_s"], moved, r["last_old_member_at_epoch_s"],
                   r["newcomer_assigned_s"], r["newcomer_heartbeats"], r["heartbeats_of_old_members"],
                   r["heartbeat_rtt_max_s"], r["client_loop_lag_max_s"]))
            nt.cancel()
            await asyncio.gather(nt, return_exceptions=True)
            err = await newcomer.leave()
            if err != NONE:
                raise BenchError("the KIP-848 newcomer's leave heartbeat: error %d" % err)
            await consumer_describe_poll(addr, group, args.members, poll_s,
                                         Deadline(args.timeout, "consumer group back to %d" % args.members),
                                         "back to %d members" % args.members, tasks)
    finally:
        lag.stop()
        await cancel_all(tasks)
        leaves = [m.leave() for m in members]
        results = await asyncio.gather(*leaves, return_exceptions=True)
        failed = [x for x in results if isinstance(x, BaseException) or x != NONE]
        if failed:
            log("KIP-848: %d members could not leave (ignored): %r" % (len(failed), failed[:3]))
    return summarize_rounds(rounds, ["stable_s", "last_old_member_at_epoch_s", "newcomer_assigned_s"])


# --------------------------------------------------------------------------------------------
# 3 and 4. Many groups


async def commit_many(addr, groups, topic, partitions, connections, offset=1):
    """Commits `partitions` of `topic` at `offset` for every group in `groups` (generation -1),
    over `connections` connections, one request in flight each; returns seconds."""
    queue = deque(groups)
    errors = Counter()
    topics = commit_topics(topic, partitions, offset)  # the same for every group

    async def worker():
        conn = await Conn(addr).connect()
        try:
            while queue:
                group = queue.popleft()
                codes = commit_errors(await conn.call(commit_request(group, topics)))
                bad = [c for c in codes if c != NONE]
                if bad:
                    errors.update(bad)
                    raise BenchError("OffsetCommit of %s: errors %s" % (group, dict(Counter(bad))))
        finally:
            conn.close()

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(connections)]
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)
    return time.perf_counter() - start


async def single_member_groups(addr, groups, topic, connections, session_ms, rebalance_ms):
    """A classic group with one member for every group id: join (twice, KIP-394), sync as
    leader; the member then stays silent (its session outlasts the measurement)."""
    queue = deque(groups)

    async def worker():
        conn = await Conn(addr).connect()
        try:
            while queue:
                group = queue.popleft()
                member_id = ""
                for _ in range(5):
                    j = await conn.call(join_request(group, member_id, session_ms, rebalance_ms, topic))
                    if j.error_code == MEMBER_ID_REQUIRED:
                        member_id = j.member_id
                        continue
                    break
                if j.error_code != NONE or j.leader != member_id:
                    raise BenchError("JoinGroup of %s: error %d, leader %r" % (group, j.error_code, j.leader))
                err = (await conn.call(sync_request(
                    group, j.generation_id, member_id, [(member_id, assignment_bytes(topic, [0]))]))).error_code
                if err != NONE:
                    raise BenchError("SyncGroup of %s: error %d" % (group, err))
        finally:
            conn.close()

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(connections)]
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_all(tasks)
    return time.perf_counter() - start


def memory_phase(args, workdir, brokers, kind):
    """A fresh broker; warm-up groups; VmRSS; `--memory-groups` groups of `kind` (`offsets`:
    one committed offset each; `classic`: one member each); VmRSS again."""
    b = DevBroker(args.broker_bin, workdir, "memory-%s" % kind, ["groups.group_initial_rebalance_delay_ms=0"])
    brokers.append(b)
    addr = b.start(args.ready_timeout)
    topic = "bench-memory"
    per_group = args.memory_offsets_per_group if kind == "offsets" else 1
    kb.create_topics(addr, [topic], per_group, args.ready_timeout)
    n = args.memory_groups
    warm = ["warm-%s-%d" % (kind, i) for i in range(args.memory_warmup_groups)]
    groups = ["bench-%s-%06d" % (kind, i) for i in range(n)]

    async def create(ids):
        if kind == "offsets":
            return await commit_many(addr, ids, topic, list(range(per_group)), args.load_connections)
        return await single_member_groups(addr, ids, topic, args.load_connections,
                                          args.memory_session_ms, args.rebalance_timeout_ms)

    async def warm_up():
        # Creates __consumer_offsets and loads every shard before the first reading.
        await find_coordinator([addr], warm[0], Deadline(args.ready_timeout, "coordinator of %s" % warm[0]))
        conn = await commit_until_ok([addr], warm[0], topic, [0], 1,
                                     Deadline(args.ready_timeout, "first commit"))
        conn.close()
        return await create(warm)

    run_async(warm_up(), args.timeout, "memory warm-up (%s)" % kind)
    time.sleep(args.settle_seconds)
    before = b.rss_kib()
    seconds = run_async(create(groups), args.timeout, "%d %s groups" % (n, kind))
    time.sleep(args.settle_seconds)
    after = b.rss_kib()
    out = {
        "kind": kind,
        "groups": n,
        "offsets_per_group": per_group if kind == "offsets" else 0,
        "warmup_groups": len(warm),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "delta_kib": after - before,
        "bytes_per_group": (after - before) * 1024 / n,
        "create_seconds": seconds,
        "groups_s": n / seconds,
    }
    log("memory (%s): VmRSS %d KiB -> %d KiB with %d groups: %+d KiB, %.0f B a group (created in %.1f s, %.0f/s)"
        % (kind, before, after, n, after - before, out["bytes_per_group"], seconds, out["groups_s"]))
    b.stop(graceful=True)
    brokers.remove(b)
    if not args.keep_data:
        b.remove_data()
    return out


def load_phase(args, workdir, brokers):
    """`--load-groups` x `--load-partitions` committed offsets in one __consumer_offsets
    partition; restart; time to the shard's `coordinator loaded` line."""
    b = DevBroker(args.broker_bin, workdir, "load", ["groups.offsets_topic_num_partitions=1"])
    brokers.append(b)
    addr = b.start(args.ready_timeout)
    topic = "bench-load"
    kb.create_topics(addr, [topic], args.load_partitions, args.timeout)
    groups = ["bench-load-%05d" % i for i in range(args.load_groups)]
    partitions = list(range(args.load_partitions))
    total = len(groups) * len(partitions)

    async def fill():
        conn = await commit_until_ok([addr], "bench-load-warm", topic, [0], 1,
                                     Deadline(args.ready_timeout, "first commit"))
        conn.close()
        return await commit_many(addr, groups, topic, partitions, args.load_connections, offset=42)

    log("failover load: committing %d offsets (%d groups x %d partitions, %d connections)"
        % (total, len(groups), len(partitions), args.load_connections))
    commit_s = run_async(fill(), args.timeout, "committing %d offsets" % total)
    log("  committed in %.1f s (%.0f offsets/s)" % (commit_s, total / commit_s))
    t_stop = time.monotonic()
    b.stop(graceful=True)
    stop_s = time.monotonic() - t_stop
    if b.proc.returncode != 0:
        raise BenchError("the load broker exited with status %s on SIGTERM" % b.proc.returncode)
    b.start(args.ready_timeout)
    deadline = Deadline(args.timeout, "'coordinator loaded' of %s partition 0 after the restart" % OFFSETS_TOPIC)
    while not b.loaded_lines(OFFSETS_TOPIC, 0):
        if not b.running():
            raise BenchError("the load broker exited after its restart; last log lines:\n" + b.log_tail())
        deadline.check("last log lines:\n" + b.log_tail(10))
        time.sleep(0.02)
    t_line, _, _, records, end_offset, elapsed_ms = b.loaded_lines(OFFSETS_TOPIC, 0)[0]
    if records < total:
        raise BenchError("the coordinator loaded %d records, fewer than the %d offsets committed" % (records, total))
    time.sleep(1.0)  # lines logged just after it (the reconciler's 'broker active' may come later)
    since_start = {}
    for key, parts in (("broker_started", ("broker started",)), ("broker_registered", ("broker registered",)),
                       ("broker_active", ("broker active",)),
                       ("becoming_coordinator", ("becoming coordinator", OFFSETS_TOPIC, "partition=0 "))):
        t = b.first_mark(*parts)
        since_start[key] = None if t is None else t - b.started_at
    rss = b.rss_kib()
    out = {
        "groups": len(groups),
        "partitions": len(partitions),
        "offsets": total,
        "commit_seconds": commit_s,
        "commit_offsets_s": total / commit_s,
        "records_loaded": records,
        "end_offset": end_offset,
        "process_start_to_loaded_s": t_line - b.started_at,
        "process_start_to_s": since_start,
        "shard_load_ms": elapsed_ms,
        "sigterm_to_exit_s": stop_s,
        # The restart's log lines that mark its steps, with their arrival times since the start.
        "restart_marks": b.marks_since_start(),
        "rss_after_load_kib": rss,
    }
    log("failover load: %d records loaded; process start -> 'coordinator loaded' %.2f s (the shard's own "
        "elapsed_ms=%d); VmRSS %d KiB; from the process start: %s" % (
            records, out["process_start_to_loaded_s"], elapsed_ms, rss, steps(since_start)))
    b.stop(graceful=True)
    brokers.remove(b)
    if not args.keep_data:
        b.remove_data()
    return out


STEPS = ("broker_started", "broker_registered", "broker_active", "becoming_coordinator")


def steps(since_start):
    """The start-up steps in the order they happen (JSON output sorts the keys)."""
    def at(k):
        return "-" if since_start.get(k) is None else "%.2f s" % since_start[k]

    return ", ".join("%s %s" % (k.replace("_", " "), at(k)) for k in STEPS)


# --------------------------------------------------------------------------------------------
# Orchestration


def run(args, workdir, brokers, clusters):
    out = {
        "machine": kb.machine_info(args.broker_bin),
        "params": {k: v for k, v in vars(args).items() if k not in ("json", "keep_data", "data_root")},
    }
    out["machine"]["kafka_python"] = kafka.__version__  # the clients' codec
    # Neighbours share the machine: the load average says how busy it was around the run.
    out["machine"]["loadavg_start"] = loadavg()
    phases = args.phases

    if "commits" in phases or "rebalance" in phases:
        b = DevBroker(args.broker_bin, workdir, "single", [
            "groups.group_initial_rebalance_delay_ms=0",
            "groups.consumer_heartbeat_interval_ms=%d" % args.consumer_heartbeat_ms,
        ])
        brokers.append(b)
        addr = b.start(args.ready_timeout)
        if "commits" in phases:
            kb.create_topics(addr, ["bench-commit"], args.commit_topic_partitions, args.ready_timeout)
            log("commits, 1 broker (--dev): %s partitions a commit, %.0f s each (after %g s warm-up)"
                % (args.commit_partitions, args.commit_seconds, args.commit_warmup_seconds))
            out["commits_single"] = commits_on([addr], [b.proc.pid], args, "single")
        if "rebalance" in phases:
            topic = "bench-rebalance"
            kb.create_topics(addr, [topic], args.rebalance_partitions, args.ready_timeout)
            log("rebalance, classic: %d members, heartbeat every %d ms, %d partitions, round-robin"
                % (args.members, args.classic_heartbeat_ms, args.rebalance_partitions))
            out["rebalance_classic"] = run_async(classic_rebalance([addr], args, topic),
                                                 args.timeout * (args.rebalance_rounds + 1), "classic rebalance")
            log("rebalance, KIP-848: %d members, groups.consumer_heartbeat_interval_ms=%d, %d partitions, "
                "uniform assignor" % (args.members, args.consumer_heartbeat_ms, args.rebalance_partitions))
            out["rebalance_consumer"] = run_async(consumer_rebalance([addr], args, topic),
                                                  args.timeout * (args.rebalance_rounds + 1), "KIP-848 rebalance")
        b.stop(graceful=True)
        brokers.remove(b)
        if not args.keep_data:
            b.remove_data()

    if "memory" in phases:
        out["memory"] = [memory_phase(args, workdir, brokers, kind) for kind in ("offsets", "classic")]

    if "load" in phases:
        out["load"] = load_phase(args, workdir, brokers)

    if "cluster" in phases:
        cluster = rb.Cluster(args.broker_bin, workdir)
        clusters.append(cluster)
        for m in cluster.members:
            m.cmd += ["--set", "groups.offsets_topic_replication_factor=3"]
        bootstrap = cluster.start(args.ready_timeout)
        kb.create_topics(bootstrap, ["bench-commit"], args.commit_topic_partitions, args.ready_timeout)
        log("commits, 3 brokers, %s with replication factor 3" % OFFSETS_TOPIC)
        out["commits_cluster"] = commits_on(bootstrap.split(","), [m.proc.pid for m in cluster.members],
                                            args, "cluster")
        cluster.stop(graceful=True)
    out["machine"]["loadavg_end"] = loadavg()
    return out


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def table(r):
    m = r["machine"]
    p = r["params"]
    lines = []
    lines.append("StreamBus group-coordinator benchmark: %s (%s)" % (m["broker_bin"], m["broker_version"]))
    lines.append("machine: %d CPUs, %s, kernel %s; raw-protocol asyncio clients in one Python %s process "
                 "sharing those CPUs" % (m["cpus"], m["cpu"], m["kernel"], m["python"]))
    lines.append("load average (1, 5, 15 min) at the start: %s; at the end: %s"
                 % (m.get("loadavg_start"), m.get("loadavg_end")))

    def commit_rows(title, rows):
        lines.append("")
        lines.append(title)
        lines.append("  %-11s %10s %10s %9s %9s %9s %8s %8s %12s  %s" % (
            "committers", "commits/s", "offsets/s", "p50 ms", "p99 ms", "max ms", "broker%", "client%",
            "broker us/c", "errors"))
        if rows:
            lines.append("  (idle brokers before these runs: %.1f %% CPU; broker us/c = broker CPU time per commit)"
                         % rows[0]["idle_broker_cpu_pct"])
        base = rows[0]["commits_s"] if rows else 1
        for x in rows:
            lines.append("  %-11d %10.0f %10.0f %9.2f %9.2f %9.2f %8.0f %8.0f %12.0f  %s%s" % (
                x["committers"], x["commits_s"], x["offsets_s"], x["p50_ms"], x["p99_ms"], x["max_ms"],
                x.get("broker_cpu_pct", float("nan")), x.get("client_cpu_pct", float("nan")),
                x.get("broker_cpu_us_per_commit", float("nan")),
                x["errors"] or "-", "" if x is rows[0] else "  (%.2f x %d committer%s)" % (
                    x["commits_s"] / base, rows[0]["committers"], "" if rows[0]["committers"] == 1 else "s")))

    intro = ("OffsetCommit v8, generation -1, %d partitions a commit, one request in flight a committer, "
             "a group a committer; %g s measured after %g s warm-up"
             % (p["commit_partitions"], p["commit_seconds"], p["commit_warmup_seconds"]))
    if "commits_single" in r:
        commit_rows("commits, 1 broker (--dev): " + intro, r["commits_single"])
    if "commits_cluster" in r:
        commit_rows("commits, 3 brokers, __consumer_offsets RF 3 (broker% = the three brokers together): "
                    + intro, r["commits_cluster"])
        if "commits_single" in r:
            for s, c in zip(r["commits_single"], r["commits_cluster"]):
                lines.append("  cluster / single, %d committer%s: commits/s %.2f, p50 %.2f" % (
                    s["committers"], "" if s["committers"] == 1 else "s", c["commits_s"] / s["commits_s"],
                    c["p50_ms"] / s["p50_ms"]))

    def client_rows(rounds):
        lines.append("  %-50s %8s   %s" % ("longest heartbeat request (s)", "",
                                           " ".join("%.3f" % x["heartbeat_rtt_max_s"] for x in rounds)))
        lines.append("  %-50s %8s   %s" % ("client event-loop lag, worst (s)", "",
                                           " ".join("%.3f" % x["client_loop_lag_max_s"] for x in rounds)))

    if "rebalance_classic" in r:
        c = r["rebalance_classic"]
        lines.append("")
        lines.append("rebalance, classic: %d members + 1 joining, heartbeat every %d ms, "
                     "group_initial_rebalance_delay_ms=0, %d partitions round-robin (median of %d rounds; "
                     "each round's values in seconds)"
                     % (p["members"], p["classic_heartbeat_ms"], p["rebalance_partitions"], len(c["rounds"])))
        lines.append("  %-50s %8s   %s" % ("", "median", "rounds"))
        for key, label in (("stable_s", "join -> every member synced (Stable)"),
                           ("described_stable_s", "join -> DescribeGroups Stable (%d ms polls)" % p["poll_ms"]),
                           ("last_rejoin_s", "join -> last old member rejoined (heartbeat)"),
                           ("rejoin_to_stable_s", "last rejoin -> Stable (coordinator)")):
            lines.append("  %-50s %8.3f   %s" % (label, c["median"][key],
                                                 " ".join("%.3f" % x[key] for x in c["rounds"])))
        client_rows(c["rounds"])
    if "rebalance_consumer" in r:
        c = r["rebalance_consumer"]
        lines.append("")
        lines.append("rebalance, KIP-848: %d members + 1 joining, groups.consumer_heartbeat_interval_ms=%d, "
                     "%d partitions, uniform assignor (median of %d rounds)"
                     % (p["members"], p["consumer_heartbeat_ms"], p["rebalance_partitions"], len(c["rounds"])))
        lines.append("  %-50s %8s   %s" % ("", "median", "rounds"))
        for key, label in (("stable_s", "join -> ConsumerGroupDescribe Stable (%d ms polls)" % p["poll_ms"]),
                           ("last_old_member_at_epoch_s", "join -> last old member at the new epoch"),
                           ("newcomer_assigned_s", "join -> newcomer has all its partitions")):
            lines.append("  %-50s %8.3f   %s" % (label, c["median"][key],
                                                 " ".join("%.3f" % x[key] for x in c["rounds"])))
        lines.append("  %-50s %8s   %s" % ("newcomer heartbeats until then", "",
                                           " ".join(str(x["newcomer_heartbeats"]) for x in c["rounds"])))
        client_rows(c["rounds"])
        lines.append("  %-50s %8s   %s" % ("partitions moved to the newcomer", "",
                                           " ".join(str(x["partitions_to_newcomer"]) for x in c["rounds"])))
    if "memory" in r:
        lines.append("")
        lines.append("memory: VmRSS of a fresh broker (%d warm-up groups first), %.0f s after the last request"
                     % (p["memory_warmup_groups"], p["settle_seconds"]))
        lines.append("  %-40s %12s %12s %10s %10s" % ("", "before KiB", "after KiB", "delta KiB", "B/group"))
        for x in r["memory"]:
            if x["kind"] == "offsets":
                k = x.get("offsets_per_group", 1)
                label = "%d groups, %d committed offset%s each" % (x["groups"], k, "" if k == 1 else "s")
            else:
                label = "%d classic groups, 1 member each" % x["groups"]
            lines.append("  %-40s %12d %12d %10d %10.0f" % (label, x["rss_before_kib"], x["rss_after_kib"],
                                                            x["delta_kib"], x["bytes_per_group"]))
    if "load" in r:
        x = r["load"]
        lines.append("")
        lines.append("failover load: %d committed offsets (%d groups x %d partitions) in one %s partition"
                     % (x["offsets"], x["groups"], x["partitions"], OFFSETS_TOPIC))
        lines.append("  committed in %.1f s (%.0f offsets/s, %d connections, one group of %d partitions a request)"
                     % (x["commit_seconds"], x["commit_offsets_s"], p["load_connections"], x["partitions"]))
        lines.append("  restart: process start -> 'coordinator loaded' (records=%d): %.2f s; "
                     "the shard's elapsed_ms: %d; VmRSS after the load %d KiB"
                     % (x["records_loaded"], x["process_start_to_loaded_s"], x["shard_load_ms"],
                        x["rss_after_load_kib"]))
        lines.append("  the steps before it, from the process start: " + steps(x["process_start_to_s"]))
        lines.append("  (the SIGTERM before the restart took %.1f s to end the broker)" % x["sigterm_to_exit_s"])
    return "\n".join(lines)


PHASES = ("commits", "rebalance", "memory", "load", "cluster")


def parse_args(argv):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.expanduser("~"), ".cache/streambus-target")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--broker-bin", default=os.path.join(target, "release/streambus"),
                    help="streambus binary to benchmark")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="comma-separated subset of %s" % ",".join(PHASES))
    ap.add_argument("--json", action="store_true", help="JSON on stdout (the table goes to stderr)")
    g = ap.add_argument_group("commits")
    g.add_argument("--committers", default="1,8", help="comma-separated committer counts, one run each")
    g.add_argument("--commit-partitions", type=int, default=4, help="partitions in each commit")
    g.add_argument("--commit-topic-partitions", type=int, default=32, help="partitions of the committed topic")
    g.add_argument("--commit-seconds", type=float, default=10.0, help="measured time of each commit run")
    g.add_argument("--commit-warmup-seconds", type=float, default=1.0, help="unmeasured start of each commit run")
    g = ap.add_argument_group("rebalances")
    g.add_argument("--members", type=int, default=100, help="members of the group before one more joins")
    g.add_argument("--rebalance-rounds", type=int, default=5, help="joins measured (median reported)")
    g.add_argument("--rebalance-partitions", type=int, default=1000, help="partitions of the subscribed topic")
    g.add_argument("--classic-heartbeat-ms", type=int, default=500, help="classic members' heartbeat interval")
    g.add_argument("--classic-session-ms", type=int, default=30_000, help="classic members' session timeout")
    g.add_argument("--consumer-heartbeat-ms", type=int, default=500,
                   help="groups.consumer_heartbeat_interval_ms of the broker (KIP-848 members follow it)")
    g.add_argument("--rebalance-timeout-ms", type=int, default=60_000, help="members' rebalance timeout")
    g.add_argument("--poll-ms", type=int, default=20, help="interval of the Describe polls")
    g = ap.add_argument_group("memory and failover load")
    g.add_argument("--memory-groups", type=int, default=10_000, help="groups created for the RSS reading")
    g.add_argument("--memory-offsets-per-group", type=int, default=1,
                   help="committed offsets of each group in the offsets reading (partitions 0..N-1 of one topic)")
    g.add_argument("--memory-warmup-groups", type=int, default=200, help="groups created before the first RSS reading")
    g.add_argument("--memory-session-ms", type=int, default=600_000,
                   help="session timeout of the one-member classic groups (they never heartbeat)")
    g.add_argument("--settle-seconds", type=float, default=5.0, help="wait before each RSS reading")
    g.add_argument("--load-groups", type=int, default=1000, help="groups of the failover load")
    g.add_argument("--load-partitions", type=int, default=1000,
                   help="partitions of the committed topic (each group commits all of them)")
    g.add_argument("--load-connections", type=int, default=4, help="connections committing in parallel")
    ap.add_argument("--timeout", type=float, default=600.0, help="bound, in seconds, on each phase")
    ap.add_argument("--ready-timeout", type=float, default=60.0,
                    help="bound, in seconds, on each broker start, topic creation and coordinator look-up")
    ap.add_argument("--seed", type=int, default=42, help="seed of the random join moments")
    ap.add_argument("--data-root", default=None,
                    help="parent of the run's temporary directory (default: the system temp dir)")
    ap.add_argument("--keep-data", action="store_true", help="keep the temporary directory and the brokers' data")
    args = ap.parse_args(argv)
    args.broker_bin = os.path.abspath(os.path.expanduser(args.broker_bin))
    if not (os.path.isfile(args.broker_bin) and os.access(args.broker_bin, os.X_OK)):
        ap.error("broker binary %s is missing or not executable" % args.broker_bin)
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    unknown = [x for x in args.phases if x not in PHASES]
    if unknown or not args.phases:
        ap.error("--phases: unknown %s (choose from %s)" % (unknown, ",".join(PHASES)))
    try:
        args.committers = [int(x) for x in args.committers.split(",")]
    except ValueError:
        ap.error("--committers must be comma-separated integers")
    positive = ("commit_partitions", "commit_topic_partitions", "members", "rebalance_rounds",
                "rebalance_partitions", "classic_heartbeat_ms", "consumer_heartbeat_ms", "memory_groups",
                "memory_warmup_groups", "memory_offsets_per_group", "load_groups", "load_partitions",
                "load_connections", "poll_ms")
    bad = [k for k in positive if getattr(args, k) < 1] + (["committers"] if min(args.committers) < 1 else [])
    if bad:
        ap.error("must be positive: %s" % ", ".join("--" + k.replace("_", "-") for k in bad))
    if args.commit_seconds <= 0 or args.timeout <= 0 or args.ready_timeout <= 0:
        ap.error("--commit-seconds, --timeout and --ready-timeout must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    random.seed(args.seed)

    def on_term(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    workdir = tempfile.mkdtemp(prefix="streambus-group-bench-", dir=args.data_root)
    log("temporary directory %s" % workdir)
    brokers = []
    clusters = []
    ok = False
    status = 1
    try:
        result = run(args, workdir, brokers, clusters)
        ok = True
    except Exception as e:  # every failure: report, show the brokers' logs, kill them
        if isinstance(e, BenchError):
            log("FAILED:", e)
        else:
            log("FAILED:", "".join(traceback.format_exception(e)).rstrip())
        for b in brokers:
            if b.proc is not None:
                state = "running" if b.proc.poll() is None else "exited with %s" % b.proc.returncode
                log("%s (%s), log %s; last lines:\n%s" % (b.name, state, b.log_path, b.log_tail()))
        for c in clusters:
            c.report_logs()
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        for b in brokers:
            b.stop(graceful=ok)
        for c in clusters:
            c.stop(graceful=ok)
        if args.keep_data:
            log("kept %s" % workdir)
        elif ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            # Keep the logs for the post-mortem, not the brokers' data.
            for name in os.listdir(workdir):
                path = os.path.join(workdir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
            log("broker logs kept in %s" % workdir)
    if not ok:
        return status
    kb.emit(result, table(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
