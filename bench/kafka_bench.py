#!/usr/bin/env python3
"""Produce/consume benchmark of ONE StreamBus broker on loopback, driven by confluent-kafka
(librdkafka).

The script starts and stops its own broker processes (a throughput broker, then a fresh one for
the memory figures) and measures, in one run:

  * raw loopback TCP: a Python sink in a separate process reads one connection to EOF while this
    process writes the same total bytes in 64 KiB chunks (the ceiling of machine + Python);
  * for 1 and 8 partitions: produce throughput (acks=1, linger.ms=5, no compression, no
    idempotence, explicit round-robin partitioning) and consume throughput (assign from the
    beginning, no group membership, no commits);
  * per-message produce latency (produce() call to delivery callback) on 1 partition at ~50 % of
    the measured 1-partition peak, linger.ms=0;
  * broker RSS: fresh, then with 1,000 partitions that each hold one record, 5 s after the
    last produce.

Run it with the project venv's interpreter:

    ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python bench/kafka_bench.py \
        --broker-bin $HOME/.cache/streambus-target/release/streambus

MB means 10^6 bytes; produce/consume MB/s count record values only (no keys, headers or
protocol overhead). Progress goes to stderr; the table goes to stdout, or, with --json, the JSON
document goes to stdout and the table to stderr.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque

try:
    import confluent_kafka
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:  # pragma: no cover - depends on the interpreter used
    sys.stderr.write(
        "kafka_bench: confluent-kafka is not importable by %s; run this script with the project "
        "venv: ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}/bin/python\n" % sys.executable)
    sys.exit(2)

MB = 1_000_000
MIB = 1 << 20
RAW_CHUNK = 64 * 1024
STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
SOCKET_TIMEOUT_MS = 30_000
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")

T0 = time.monotonic()


def log(*parts):
    sys.stderr.write("[%7.1fs] %s\n" % (time.monotonic() - T0, " ".join(str(p) for p in parts)))
    sys.stderr.flush()


class BenchError(Exception):
    pass


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def remaining(self):
        return self.end - time.monotonic()

    def check(self, detail=""):
        if time.monotonic() > self.end:
            raise BenchError("%s: no result within %.0f s%s"
                             % (self.what, self.seconds, (" (" + detail + ")") if detail else ""))


# --------------------------------------------------------------------------------------------
# Broker process


class Broker:
    """One `streambus --dev` process on ephemeral loopback ports, with its own temporary data
    directory. stderr is drained by a thread (a full pipe would stall the broker) and its tail
    kept for error reports."""

    def __init__(self, binary, data_root, name, keep_data=False, extra_args=()):
        self.binary = binary
        self.extra_args = list(extra_args)
        self.data_root = data_root
        self.name = name
        self.keep_data = keep_data
        self.proc = None
        self.data_dir = None
        self.kafka_addr = None
        self.tail = deque(maxlen=200)
        self._started = threading.Event()
        self._registered = threading.Event()
        self._reader = None

    def start(self, timeout_s=STARTUP_TIMEOUT_S):
        self.data_dir = tempfile.mkdtemp(prefix="streambus-bench-%s-" % self.name, dir=self.data_root)
        cmd = [
            self.binary, "--dev",
            "--data-dir", self.data_dir,
            "--kafka-listener", "127.0.0.1:0",
            "--raft-listener", "127.0.0.1:0",
            "--admin-listener", "127.0.0.1:0",
            "--http-listener", "127.0.0.1:0",
        ] + self.extra_args
        log("starting %s broker:" % self.name, " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._reader = threading.Thread(target=self._read_stderr, name="broker-stderr", daemon=True)
        self._reader.start()
        # 'broker started' carries the listener; 'broker registered' (either may come first) means
        # the metadata names a controller, which the AdminClient waits for.
        deadline = Deadline(timeout_s, "%s broker start (waiting for 'broker started' and "
                            "'broker registered')" % self.name)
        while not (self._started.wait(0.05) and self._registered.is_set()):
            if self.proc.poll() is not None:
                raise BenchError("%s broker exited with status %s before it started; last log lines:\n%s"
                                 % (self.name, self.proc.returncode, self.log_tail()))
            deadline.check("last log lines:\n" + self.log_tail())
        if not self.kafka_addr:
            raise BenchError("'broker started' line without kafka_listener=IP:PORT:\n" + self.log_tail())
        log("%s broker pid %d, kafka listener %s" % (self.name, self.proc.pid, self.kafka_addr))
        return self.kafka_addr

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            self.tail.append(line)
            if not self._started.is_set() and "broker started" in line:
                m = re.search(r"kafka_listener=(\d{1,3}(?:\.\d{1,3}){3}:\d+)", line)
                if m:
                    self.kafka_addr = m.group(1)
                self._started.set()
            if not self._registered.is_set() and "broker registered" in line:
                self._registered.set()

    def log_tail(self, n=40):
        return "\n".join(list(self.tail)[-n:])

    def rss_kib(self):
        return read_status_kib(self.proc.pid, "VmRSS")

    def hwm_kib(self):
        return read_status_kib(self.proc.pid, "VmHWM")

    def stop(self, graceful):
        """SIGTERM and a bounded wait when `graceful`, SIGKILL otherwise (or if SIGTERM was not
        enough); then removes the data directory. Safe to call more than once."""
        stop_process(self.proc, "%s broker" % self.name, graceful, self.log_tail, self._reader)
        self._reader = None
        if self.data_dir and not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def stop_process(proc, label, graceful, log_tail, reader, stop_timeout_s=STOP_TIMEOUT_S):
    """Stops a broker process: SIGTERM and a bounded wait when `graceful`, SIGKILL otherwise (or
    if SIGTERM was not enough); then joins its stderr `reader` thread and closes the pipe. Safe to
    call on a process that already exited (or None)."""
    if proc is not None and proc.poll() is None:
        if graceful:
            log("stopping %s (SIGTERM)" % label)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                log("%s ignored SIGTERM for %d s; killing it" % (label, stop_timeout_s))
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log("%s pid %d did not die after SIGKILL" % (label, proc.pid))
        if graceful and proc.returncode not in (0, None):
            log("%s exited with status %s; last log lines:\n%s"
                % (label, proc.returncode, log_tail(15)))
    if reader is not None:
        reader.join(5)
    if proc is not None and proc.stderr is not None:
        proc.stderr.close()


def process_cpu_seconds(pid):
    """User + system CPU seconds a process has used so far (all its threads), from /proc."""
    with open("/proc/%d/stat" % pid, encoding="ascii") as f:
        # Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by the broker and by this client process (Python and librdkafka threads) while
    a phase runs, as percent of one core: tells which side a throughput figure is bound by."""

    def __init__(self, broker_pid):
        self.broker_pid = broker_pid
        self.wall = time.perf_counter()
        self.broker = process_cpu_seconds(broker_pid)
        self.client = time.process_time()

    def done(self):
        wall = max(1e-9, time.perf_counter() - self.wall)
        return {
            "broker_cpu_pct": 100.0 * (process_cpu_seconds(self.broker_pid) - self.broker) / wall,
            "client_cpu_pct": 100.0 * (time.process_time() - self.client) / wall,
        }


def read_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError("no %s in /proc/%d/status" % (field, pid))


# --------------------------------------------------------------------------------------------
# Raw loopback TCP baseline

SINK_CODE = r"""
import socket, struct, sys, time
bufsize, timeout = int(sys.argv[1]), float(sys.argv[2])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.bind(("127.0.0.1", 0))
ls.listen(1)
ls.settimeout(timeout)
sys.stdout.write("%d\n" % ls.getsockname()[1])
sys.stdout.flush()
conn, _ = ls.accept()
conn.settimeout(timeout)
buf = memoryview(bytearray(bufsize))
total = 0
deadline = time.monotonic() + timeout
while True:
    n = conn.recv_into(buf)
    if n == 0:
        break
    total += n
    if time.monotonic() > deadline:
        sys.exit(3)
conn.sendall(struct.pack(">Q", total))
conn.close()
"""


def raw_tcp_once(total_bytes, timeout_s):
    """One transfer of `total_bytes` to a sink process; returns seconds from the first write to
    the sink's acknowledgement (sent after it read EOF)."""
    sink = subprocess.Popen([sys.executable, "-c", SINK_CODE, str(RAW_CHUNK), str(timeout_s)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port_line = sink.stdout.readline()  # the sink's own accept timeout bounds this
        if not port_line.strip():
            raise BenchError("raw TCP sink did not start: %s" % sink.stderr.read().decode(errors="replace"))
        port = int(port_line)
        chunk = random.Random(1).randbytes(RAW_CHUNK)
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            deadline = Deadline(timeout_s, "raw TCP transfer")
            full, rest = divmod(total_bytes, RAW_CHUNK)
            start = time.perf_counter()
            for i in range(full):
                s.sendall(chunk)
                if (i & 255) == 0:
                    deadline.check()
            if rest:
                s.sendall(chunk[:rest])
            s.shutdown(socket.SHUT_WR)
            ack = b""
            while len(ack) < 8:
                part = s.recv(8 - len(ack))
                if not part:
                    raise BenchError("raw TCP sink closed without acknowledging")
                ack += part
            elapsed = time.perf_counter() - start
        received = struct.unpack(">Q", ack)[0]
        if received != total_bytes:
            raise BenchError("raw TCP sink read %d of %d bytes" % (received, total_bytes))
        sink.wait(timeout_s)
        return elapsed
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(10)
        sink.stdout.close()
        sink.stderr.close()


def raw_file_append(total_bytes, data_root):
    """Appends `total_bytes` in 64 KiB writes to a new file where the broker keeps its data,
    without fsync: the page-cache write cost every produced byte pays too. The file is kept
    until all trials ran (as a log keeps its data), then removed."""
    chunk = os.urandom(RAW_CHUNK)
    fd, path = tempfile.mkstemp(prefix="streambus-bench-raw-", dir=data_root)
    try:
        start = time.perf_counter()
        left = total_bytes
        while left > 0:
            left -= os.write(fd, chunk[:min(left, RAW_CHUNK)])
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    return {"mb_s": total_bytes / elapsed / MB, "seconds": elapsed}


def raw_tcp_baseline(total_bytes, trials, timeout_s):
    runs = []
    for _ in range(trials):
        secs = raw_tcp_once(total_bytes, timeout_s)
        runs.append(total_bytes / secs / MB)
    result = {
        "bytes": total_bytes,
        "chunk_bytes": RAW_CHUNK,
        "trials_mb_s": [round(r, 1) for r in runs],
        "mb_s": statistics.median(runs),
        "note": "Python sink process + Python sender, 64 KiB writes; the ceiling of machine + Python",
    }
    log("raw TCP: %.0f MB/s (median of %s)" % (result["mb_s"], result["trials_mb_s"]))
    return result


# --------------------------------------------------------------------------------------------
# Kafka clients


class ClientErrors:
    """error_cb for every client: client-level errors (e.g. no group coordinator for the unused
    group.id) are counted, logged a few times, and fatal ones fail the run."""

    def __init__(self):
        self.count = 0
        self.fatal = None

    def __call__(self, err):
        self.count += 1
        if err.fatal():
            self.fatal = err
        if self.count <= 5:
            log("client error (ignored unless fatal):", err)


def base_conf(bootstrap, errors, client_id):
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
        "allow.auto.create.topics": False,
        "error_cb": errors,
        "log_level": 4,
    }


def create_topics(bootstrap, names, partitions, timeout_s):
    errors = ClientErrors()
    admin = AdminClient(base_conf(bootstrap, errors, "streambus-bench-admin"))
    new = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, fut in futures.items():
        fut.result(timeout=timeout_s + 10)
    # Wait until the metadata shows every partition with a leader.
    deadline = Deadline(timeout_s, "topics %s.. ready" % names[0])
    while True:
        md = admin.list_topics(timeout=min(10, max(1, deadline.remaining())))
        pending = 0
        for n in names:
            t = md.topics.get(n)
            if t is None or t.error is not None or len(t.partitions) != partitions:
                pending += 1
            elif not all(p.error is None and p.leader >= 0 for p in t.partitions.values()):
                pending += 1
        if pending == 0:
            return
        deadline.check("%d of %d topics not led yet" % (pending, len(names)))
        time.sleep(0.2)


def payload_pool(record_bytes, seed, count=64):
    rng = random.Random(seed)
    return [rng.randbytes(record_bytes) for _ in range(count)]


def produce_throughput(bootstrap, topic, partitions, records, payloads, timeout_s, acks=1):
    """`records` values to `topic`, round-robin over its partitions; `acks` is the producer's
    acks setting (replication_bench.py passes "all")."""
    errors = ClientErrors()
    state = {"ok": 0, "failed": 0, "first_error": None}

    def on_delivery(err, _msg):
        if err is None:
            state["ok"] += 1
        else:
            state["failed"] += 1
            if state["first_error"] is None:
                state["first_error"] = err

    conf = base_conf(bootstrap, errors, "streambus-bench-producer")
    conf.update({
        "acks": acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "enable.idempotence": False,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "on_delivery": on_delivery,
    })
    p = Producer(conf)
    p.list_topics(topic, timeout=10)  # connection + metadata before the clock starts
    deadline = Deadline(timeout_s, "produce %d records to %s" % (records, topic))
    npay = len(payloads)
    produce = p.produce
    start = time.perf_counter()
    for i in range(records):
        value = payloads[i % npay]
        part = i % partitions
        while True:
            try:
                produce(topic, value, partition=part)
                break
            except BufferError:
                p.poll(0.005)
                deadline.check("local queue full")
        if (i & 1023) == 0:
            p.poll(0)
            if (i & 65535) == 0:
                deadline.check("%d produced" % i)
    left = p.flush(max(1.0, deadline.remaining()))
    elapsed = time.perf_counter() - start
    if left:
        raise BenchError("%d records still undelivered after flush (timeout %d s)" % (left, timeout_s))
    if state["failed"] or state["ok"] != records:
        raise BenchError("produce to %s: %d delivered, %d failed (first error: %s)"
                         % (topic, state["ok"], state["failed"], state["first_error"]))
    if errors.fatal:
        raise BenchError("fatal producer error: %s" % errors.fatal)
    nbytes = records * len(payloads[0])
    return {"seconds": elapsed, "records_s": records / elapsed, "mb_s": nbytes / elapsed / MB}


def encode_batch(payloads, first, count):
    """One uncompressed v2 record batch of `count` records (kafka-python's builder: CRC and
    varints by the library), without a producer id."""
    from kafka.record.default_records import DefaultRecordBatchBuilder
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=2**31 - 1)
    for i in range(count):
        builder.append(i, 1_000_000 + i, None, payloads[(first + i) % len(payloads)], [])
    return bytes(builder.build())


def produce_request_frame(correlation_id, topic, partition, batch, acks):
    """A length-prefixed Produce v3 request carrying `batch` (request header v1). The envelope
    is a few fixed fields; the records inside are the library-built batch."""
    client = b"streambus-bench-pipelined"
    name = topic.encode()
    body = (struct.pack(">hhih", 0, 3, correlation_id, len(client)) + client
            + struct.pack(">hhi", -1, acks, 30_000)                     # transactional id, acks, timeout
            + struct.pack(">ih", 1, len(name)) + name                    # one topic
            + struct.pack(">iii", 1, partition, len(batch)))             # one partition, records size
    return struct.pack(">i", len(body) + len(batch)) + body, batch


def read_produce_response(sock, buf):
    """Reads one Produce v3 response (one topic, one partition); returns (correlation id, error)."""
    def exact(n):
        while len(buf) < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise BenchError("broker closed the pipelined producer's connection")
            buf.extend(chunk)
        out = bytes(buf[:n])
        del buf[:n]
        return out
    size = struct.unpack(">i", exact(4))[0]
    frame = exact(size)
    correlation_id = struct.unpack(">i", frame[:4])[0]
    name_len = struct.unpack(">h", frame[8:10])[0]
    at = 10 + name_len + 4 + 4  # topic name, partitions count, partition index
    error = struct.unpack(">h", frame[at:at + 2])[0]
    return correlation_id, error


def produce_pipelined(bootstrap, topic, partitions, records, payloads, timeout_s,
                      batch_records=1000, in_flight=8):
    """Produce at the protocol level, without a client library's per-record work: pre-encoded
    batches of `batch_records` records (the same bytes resent; the broker assigns offsets), up
    to `in_flight` requests pipelined on one connection, acks=1. What the broker can take when
    the client costs almost nothing."""
    batches = [encode_batch(payloads, p * batch_records, batch_records) for p in range(partitions)]
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_MS / 1000)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = Deadline(timeout_s, "pipelined produce of %d records to %s" % (records, topic))
    requests = -(-records // batch_records)
    buf = bytearray()
    sent = answered = 0
    try:
        start = time.perf_counter()
        while answered < requests:
            while sent < requests and sent - answered < in_flight:
                head, batch = produce_request_frame(sent, topic, sent % partitions,
                                                    batches[sent % partitions], 1)
                sock.sendall(head)
                sock.sendall(batch)
                sent += 1
            correlation_id, error = read_produce_response(sock, buf)
            if correlation_id != answered or error != 0:
                raise BenchError("pipelined produce: response %d (expected %d), error %d"
                                 % (correlation_id, answered, error))
            answered += 1
            if (answered & 255) == 0:
                deadline.check("%d of %d requests answered" % (answered, requests))
        elapsed = time.perf_counter() - start
    finally:
        sock.close()
    total = requests * batch_records
    nbytes = total * len(payloads[0])
    return {"seconds": elapsed, "records": total, "records_s": total / elapsed,
            "mb_s": nbytes / elapsed / MB, "batch_records": batch_records, "in_flight": in_flight}


def consume_throughput(bootstrap, topic, partitions, records, timeout_s):
    errors = ClientErrors()
    conf = base_conf(bootstrap, errors, "streambus-bench-consumer")
    conf.update({
        "group.id": "streambus-bench-unused-%d" % os.getpid(),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
    })
    c = Consumer(conf)
    try:
        c.list_topics(topic, timeout=10)  # connection + metadata before the clock starts
        deadline = Deadline(timeout_s, "consume %d records from %s" % (records, topic))
        count = 0
        nbytes = 0
        start = time.perf_counter()
        last = start
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while count < records:
            deadline.check("%d of %d consumed" % (count, records))
            # consume() returns when it has num_messages or at the timeout: never ask for more
            # than are left, or the last call would idle until the timeout.
            batch = c.consume(num_messages=min(10_000, records - count),
                              timeout=min(1.0, max(0.05, deadline.remaining())))
            for m in batch:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if m.topic() == topic or err.fatal():
                        raise BenchError("consumer error on %s [%s]: %s" % (m.topic(), m.partition(), err))
                    continue
                count += 1
                nbytes += len(m.value())
            if batch:
                last = time.perf_counter()
        if count != records:
            raise BenchError("consumed %d records, expected %d" % (count, records))
        elapsed = last - start
        return {"seconds": elapsed, "records_s": count / elapsed, "mb_s": nbytes / elapsed / MB}
    finally:
        c.close()


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[k]


def produce_latency(bootstrap, topic, rate, seconds, payloads, tick_s=0.010):
    """Produces at `rate` records/s for `seconds`, `rate * tick_s` records per tick, and records
    produce() -> delivery callback latencies."""
    errors = ClientErrors()
    lat = []
    state = {"failed": 0, "first_error": None}
    perf = time.perf_counter

    def delivered(err, _msg, t0):
        if err is None:
            lat.append(perf() - t0)
        else:
            state["failed"] += 1
            if state["first_error"] is None:
                state["first_error"] = err

    conf = base_conf(bootstrap, errors, "streambus-bench-latency")
    conf.update({
        "acks": 1,
        "linger.ms": 0,
        "batch.size": 1_000_000,
        "compression.type": "none",
        "enable.idempotence": False,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    })
    p = Producer(conf)
    p.list_topics(topic, timeout=10)
    total = max(1, int(rate * seconds))
    npay = len(payloads)
    deadline = Deadline(seconds + 60, "latency run")
    sent = 0
    start = perf()
    tick = 0
    while sent < total:
        deadline.check("%d of %d sent" % (sent, total))
        tick += 1
        due = min(total, int(tick * tick_s * rate))
        while sent < due:
            t0 = perf()
            try:
                p.produce(topic, payloads[sent % npay], partition=0,
                          on_delivery=lambda err, msg, t0=t0: delivered(err, msg, t0))
            except BufferError:
                p.poll(0.001)
                deadline.check("local queue full")
                continue
            sent += 1
            if (sent & 127) == 0:
                p.poll(0)
        next_tick = start + tick * tick_s
        while True:  # serve delivery callbacks until the next tick
            wait = next_tick - perf()
            if wait <= 0:
                break
            p.poll(wait)
    send_elapsed = perf() - start
    left = p.flush(30)
    if left:
        raise BenchError("latency run: %d records undelivered after flush" % left)
    if state["failed"]:
        raise BenchError("latency run: %d failed deliveries (first: %s)" % (state["failed"], state["first_error"]))
    lat.sort()
    return {
        "target_records_s": rate,
        "achieved_records_s": sent / send_elapsed,
        "seconds": send_elapsed,
        "records": sent,
        "p50_ms": percentile(lat, 0.50) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
        "max_ms": lat[-1] * 1e3 if lat else float("nan"),
    }


def produce_one_each(bootstrap, topics, partitions, payload, timeout_s):
    errors = ClientErrors()
    state = {"ok": 0, "failed": 0, "first_error": None}

    def on_delivery(err, _msg):
        if err is None:
            state["ok"] += 1
        else:
            state["failed"] += 1
            state["first_error"] = state["first_error"] or err

    conf = base_conf(bootstrap, errors, "streambus-bench-rss")
    conf.update({"acks": 1, "linger.ms": 5, "enable.idempotence": False, "on_delivery": on_delivery})
    p = Producer(conf)
    n = 0
    for t in topics:
        for part in range(partitions):
            p.produce(t, payload, partition=part)
            n += 1
        p.poll(0)
    left = p.flush(timeout_s)
    if left or state["failed"] or state["ok"] != n:
        raise BenchError("one record per partition: %d delivered, %d failed, %d undelivered (first error: %s)"
                         % (state["ok"], state["failed"], left, state["first_error"]))
    return n


# --------------------------------------------------------------------------------------------
# Orchestration


def machine_info(broker_bin):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        version = subprocess.run([broker_bin, "--version"], capture_output=True, timeout=10,
                                 text=True).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        version = "unknown"
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "broker_bin": broker_bin,
        "broker_version": version,
    }


def run(args, brokers):
    payloads = payload_pool(args.record_bytes, args.seed)
    total_bytes = args.records * args.record_bytes
    out = {
        "machine": machine_info(args.broker_bin),
        "params": {
            "records": args.records,
            "record_bytes": args.record_bytes,
            "seed": args.seed,
            "latency_seconds": args.latency_seconds,
            "latency_rate": args.latency_rate,
            "rss_topics": args.rss_topics,
            "rss_partitions_per_topic": args.rss_partitions_per_topic,
        },
    }

    # Before any broker or Kafka client exists, so nothing else competes for the CPUs.
    log("raw loopback TCP, %d bytes x %d trials" % (total_bytes, args.raw_trials))
    out["raw_tcp"] = raw_tcp_baseline(total_bytes, args.raw_trials, args.timeout)
    log("raw file append, %d bytes" % total_bytes)
    out["raw_file"] = raw_file_append(total_bytes, args.data_root)

    broker = Broker(args.broker_bin, args.data_root, "throughput", args.keep_data)
    brokers.append(broker)
    bootstrap = broker.start()
    out["throughput"] = {}
    for partitions in (1, 8):
        topic = "bench-p%d" % partitions
        create_topics(bootstrap, [topic], partitions, 60)
        log("produce %d x %d B to %s" % (args.records, args.record_bytes, topic))
        meter = CpuMeter(broker.proc.pid)
        prod = produce_throughput(bootstrap, topic, partitions, args.records, payloads, args.timeout)
        prod.update(meter.done())
        prod["ratio_to_raw_tcp"] = prod["mb_s"] / out["raw_tcp"]["mb_s"]
        log("  produce: %.0f records/s, %.1f MB/s in %.2f s (CPU: broker %.0f%%, client %.0f%%)"
            % (prod["records_s"], prod["mb_s"], prod["seconds"], prod["broker_cpu_pct"],
               prod["client_cpu_pct"]))
        log("consume %s" % topic)
        meter = CpuMeter(broker.proc.pid)
        cons = consume_throughput(bootstrap, topic, partitions, args.records, args.timeout)
        cons.update(meter.done())
        log("  consume: %.0f records/s, %.1f MB/s in %.2f s (CPU: broker %.0f%%, client %.0f%%)"
            % (cons["records_s"], cons["mb_s"], cons["seconds"], cons["broker_cpu_pct"],
               cons["client_cpu_pct"]))
        topic_raw = "bench-pipelined-p%d" % partitions
        create_topics(bootstrap, [topic_raw], partitions, 60)
        log("pipelined produce (pre-encoded batches) %d x %d B to %s"
            % (args.records, args.record_bytes, topic_raw))
        meter = CpuMeter(broker.proc.pid)
        piped = produce_pipelined(bootstrap, topic_raw, partitions, args.records, payloads,
                                  args.timeout)
        piped.update(meter.done())
        log("  pipelined produce: %.0f records/s, %.1f MB/s in %.2f s (CPU: broker %.0f%%, client %.0f%%)"
            % (piped["records_s"], piped["mb_s"], piped["seconds"], piped["broker_cpu_pct"],
               piped["client_cpu_pct"]))
        out["throughput"][str(partitions)] = {"produce": prod, "consume": cons,
                                              "produce_pipelined": piped}

    peak = out["throughput"]["1"]["produce"]["records_s"]
    create_topics(bootstrap, ["bench-latency"], 1, 60)
    rate = args.latency_rate or peak * 0.5
    log("latency: %.0f records/s (%s) for %.0f s"
        % (rate, "--latency-rate" if args.latency_rate else "half of the 1-partition peak", args.latency_seconds))
    out["latency"] = produce_latency(bootstrap, "bench-latency", rate, args.latency_seconds, payloads)
    log("  p50 %.2f ms, p99 %.2f ms, achieved %.0f records/s"
        % (out["latency"]["p50_ms"], out["latency"]["p99_ms"], out["latency"]["achieved_records_s"]))
    out["rss_after_throughput_mib"] = broker.rss_kib() / 1024
    broker.stop(graceful=True)

    fresh = Broker(args.broker_bin, args.data_root, "rss", args.keep_data)
    brokers.append(fresh)
    bootstrap = fresh.start()
    time.sleep(args.settle_seconds)
    idle_kib = fresh.rss_kib()
    total_partitions = args.rss_topics * args.rss_partitions_per_topic
    names = ["rss-%03d" % i for i in range(args.rss_topics)]
    log("creating %d topics x %d partitions" % (args.rss_topics, args.rss_partitions_per_topic))
    t = time.perf_counter()
    create_topics(bootstrap, names, args.rss_partitions_per_topic, args.timeout)
    create_s = time.perf_counter() - t
    t = time.perf_counter()
    produced = produce_one_each(bootstrap, names, args.rss_partitions_per_topic, payloads[0], args.timeout)
    first_produce_s = time.perf_counter() - t
    time.sleep(args.settle_seconds)
    loaded_kib = fresh.rss_kib()
    out["rss"] = {
        "idle_mib": idle_kib / 1024,
        "partitions": total_partitions,
        "records_produced": produced,
        "create_seconds": create_s,
        "first_produce_seconds": first_produce_s,
        "loaded_mib": loaded_kib / 1024,
        "loaded_hwm_mib": fresh.hwm_kib() / 1024,
        "per_partition_kib": (loaded_kib - idle_kib) / total_partitions,
        "settle_seconds": args.settle_seconds,
    }
    log("RSS: fresh %.1f MiB, %d partitions %.1f MiB" % (idle_kib / 1024, total_partitions, loaded_kib / 1024))
    fresh.stop(graceful=True)
    return out


def table(r):
    raw = r["raw_tcp"]["mb_s"]
    lines = []
    m = r["machine"]
    lines.append("StreamBus Kafka benchmark: %s (%s)" % (m["broker_bin"], m["broker_version"]))
    lines.append("machine: %d CPUs, %s, kernel %s; client: confluent-kafka %s / librdkafka %s, Python %s"
                 % (m["cpus"], m["cpu"], m["kernel"], m["confluent_kafka"], m["librdkafka"], m["python"]))
    p = r["params"]
    lines.append("records: %d x %d B (MB = 10^6 B of record values), acks=1, no compression, no idempotence"
                 % (p["records"], p["record_bytes"]))
    lines.append("")
    lines.append("%-34s %12s %14s %10s %11s %11s" % ("", "MB/s", "records/s", "vs raw TCP",
                                                      "broker CPU", "client CPU"))
    lines.append("%-34s %12.1f %14s %10s" % ("raw loopback TCP (Python sink)", raw, "-", "1.00"))
    lines.append("%-34s %12.1f %14s %10.2f" % ("raw file append (page cache)", r["raw_file"]["mb_s"],
                                             "-", r["raw_file"]["mb_s"] / raw))
    for parts in ("1", "8"):
        t = r["throughput"][parts]
        for phase in ("produce", "produce_pipelined", "consume"):
            f = t[phase]
            label = {"produce": "produce", "consume": "consume",
                     "produce_pipelined": "produce, pre-encoded batches"}[phase]
            lines.append("%-34s %12.1f %14.0f %10.2f %10.0f%% %10.0f%%" % (
                "%s, %s p." % (label, parts) if phase == "produce_pipelined"
                else "%s, %s partition%s" % (label, parts, "" if parts == "1" else "s"),
                f["mb_s"], f["records_s"], f["mb_s"] / raw, f["broker_cpu_pct"],
                f["client_cpu_pct"]))
    lat = r["latency"]
    lines.append("")
    lines.append("produce latency, 1 partition, linger.ms=0, %.0f records/s target (%.0f achieved, %d records):"
                 % (lat["target_records_s"], lat["achieved_records_s"], lat["records"]))
    lines.append("  p50 %.2f ms   p99 %.2f ms   max %.2f ms" % (lat["p50_ms"], lat["p99_ms"], lat["max_ms"]))
    rss = r["rss"]
    lines.append("")
    lines.append("broker RSS: fresh %.1f MiB; %d partitions x 1 record, %.0f s later: %.1f MiB (%.1f KiB/partition)"
                 % (rss["idle_mib"], rss["partitions"], rss["settle_seconds"], rss["loaded_mib"],
                    rss["per_partition_kib"]))
    lines.append("  (CreateTopics until all led: %.2f s; one record to each partition, first produce to last "
                 "delivery: %.2f s; throughput broker after its runs: %.1f MiB)"
                 % (rss["create_seconds"], rss["first_produce_seconds"], r["rss_after_throughput_mib"]))
    lines.append("")
    lines.append("raw TCP: %s; trials %s MB/s" % (r["raw_tcp"]["note"], r["raw_tcp"]["trials_mb_s"]))
    return "\n".join(lines)


def check_common_args(ap, args):
    """Checks shared by this script and replication_bench.py: an executable broker binary, and
    positive record counts and sizes."""
    args.broker_bin = os.path.abspath(os.path.expanduser(args.broker_bin))
    if not (os.path.isfile(args.broker_bin) and os.access(args.broker_bin, os.X_OK)):
        ap.error("broker binary %s is missing or not executable" % args.broker_bin)
    if args.records < 1 or args.record_bytes < 1:
        ap.error("--records and --record-bytes must be positive")


def parse_args(argv):
    home = os.path.expanduser("~")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--broker-bin", default=os.path.join(home, ".cache/streambus-target/release/streambus"),
                    help="streambus binary to benchmark")
    ap.add_argument("--record-bytes", type=int, default=1024, help="value size of every record")
    ap.add_argument("--records", type=int, default=1_000_000, help="records per throughput run")
    ap.add_argument("--json", action="store_true", help="JSON on stdout (the table goes to stderr)")
    ap.add_argument("--latency-seconds", type=float, default=10.0, help="length of the latency run")
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="records/s of the latency run (default: half the 1-partition produce peak)")
    ap.add_argument("--rss-topics", type=int, default=10, help="topics for the RSS measurement")
    ap.add_argument("--rss-partitions-per-topic", type=int, default=100,
                    help="partitions per topic for the RSS measurement")
    ap.add_argument("--settle-seconds", type=float, default=5.0,
                    help="wait before each RSS reading")
    ap.add_argument("--raw-trials", type=int, default=3, help="raw TCP transfers (median reported)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="bound, in seconds, on each produce/consume/raw-TCP/topic-creation phase")
    ap.add_argument("--seed", type=int, default=42, help="seed of the record payloads")
    ap.add_argument("--data-root", default=None,
                    help="parent of the brokers' temporary data directories (default: the system temp dir)")
    ap.add_argument("--keep-data", action="store_true", help="keep the brokers' data directories")
    args = ap.parse_args(argv)
    check_common_args(ap, args)
    return args


def emit(result, text, as_json):
    """The table on stdout, or JSON on stdout with the table on stderr."""
    if as_json:
        sys.stderr.write(text + "\n")
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text + "\n")


def run_with_brokers(args, run_fn, table_fn):
    """Runs `run_fn(args, brokers)`, which starts brokers into `brokers`; on any failure or
    interrupt reports it with the brokers' logs and kills them, otherwise stops them with
    SIGTERM and prints `table_fn(result)` (see `emit`). Returns the exit status."""

    def on_term(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    brokers = []
    ok = False
    try:
        result = run_fn(args, brokers)
        ok = True
    except Exception as e:  # every failure: report, show the brokers' logs, kill them
        if isinstance(e, BenchError):
            log("FAILED:", e)
        else:
            log("FAILED:", "".join(traceback.format_exception(e)).rstrip())
        for b in brokers:
            if b.proc is not None:
                state = "running" if b.proc.poll() is None else "exited with %s" % b.proc.returncode
                log("%s broker (%s); last log lines:\n%s" % (b.name, state, b.log_tail()))
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for b in brokers:
            b.stop(graceful=ok)
    emit(result, table_fn(result), args.json)
    return 0


def main(argv=None):
    return run_with_brokers(parse_args(argv), run, table)


if __name__ == "__main__":
    sys.exit(main())
