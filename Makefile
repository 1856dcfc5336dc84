# StreamBus developer and CI entry points. `make run` starts a single-node dev broker;
# `make test` runs lint and the whole test suite. Both install missing prerequisites first.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

# One persistent build cache outside the clone: RocksDB takes ~20 CPU-minutes to compile from
# source, so every checkout and CI run shares the artifacts.
CARGO_TARGET_DIR ?= $(HOME)/.cache/streambus-target
export CARGO_TARGET_DIR

CARGO ?= cargo

.PHONY: bootstrap build run test test-suite doc-test lint fmt chaos bench bench-kafka bench-replication bench-client bench-groups bench-txn bench-ab bench-metrics dist clean-cache

bootstrap:
	scripts/bootstrap.sh

build: bootstrap
	$(CARGO) build --workspace

run: bootstrap
	$(CARGO) build --release -p streambus-broker
	$(CARGO_TARGET_DIR)/release/streambus --dev

# Steps run in this order even under `make -j`; doc tests (which nextest does not run) come
# before the main suite so that the runner's summary is the last thing printed.
test: bootstrap
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory doc-test
	$(MAKE) --no-print-directory test-suite

doc-test:
	$(CARGO) test --workspace --doc

test-suite:
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

# Seeded fault schedules for CHAOS_MINUTES (default 10); not part of `make test`.
chaos: bootstrap
	scripts/chaos.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: bootstrap
	# One invocation: built separately, the two crates' benches resolve different features for
	# zstd-sys (kafka-protocol is only in the storage graph) and each compiled its own RocksDB.
	$(CARGO) bench -p streambus-storage -p streambus-raft
	$(MAKE) --no-print-directory bench-kafka
	$(MAKE) --no-print-directory bench-replication
	$(MAKE) --no-print-directory bench-client
	$(MAKE) --no-print-directory bench-groups
	$(MAKE) --no-print-directory bench-txn

# Produce/consume through a release broker on loopback with librdkafka (confluent-kafka), next to
# raw loopback TCP measured in the same run; see bench/README.md.
bench-kafka: bootstrap
	$(CARGO) build --release -p streambus-broker
	$${STREAMBUS_VENV:-$(HOME)/.cache/streambus-venv}/bin/python bench/kafka_bench.py --broker-bin $(CARGO_TARGET_DIR)/release/streambus

# acks=1 on one release broker vs acks=all on a 3-broker cluster (RF=3, min.insync.replicas=2),
# and the time to fail over when the partition leader is SIGKILLed; see bench/README.md.
bench-replication: bootstrap
	$(CARGO) build --release -p streambus-broker
	$${STREAMBUS_VENV:-$(HOME)/.cache/streambus-venv}/bin/python bench/replication_bench.py --broker-bin $(CARGO_TARGET_DIR)/release/streambus

# `sbctl perf produce` next to librdkafka (confluent-kafka) against one release broker, in the
# same run; see bench/README.md.
bench-client: bootstrap
	$(CARGO) build --release -p streambus-broker -p streambus-client
	$${STREAMBUS_VENV:-$(HOME)/.cache/streambus-venv}/bin/python bench/client_bench.py --broker-bin $(CARGO_TARGET_DIR)/release/streambus --sbctl-bin $(CARGO_TARGET_DIR)/release/sbctl

# The group coordinator with raw-protocol clients: offset commits on one broker and on a 3-broker
# cluster, rebalance time of a 100-member classic and KIP-848 group, RSS of 10,000 groups, and the
# load time of 1,000,000 committed offsets after a restart; see bench/README.md.
bench-groups: bootstrap
	$(CARGO) build --release -p streambus-broker
	$${STREAMBUS_VENV:-$(HOME)/.cache/streambus-venv}/bin/python bench/group_bench.py --broker-bin $(CARGO_TARGET_DIR)/release/streambus

# Transactions through a release broker (and a 3-broker cluster) with librdkafka: overhead
# against idempotent produce, small transactions per second, end-to-end latency.
bench-txn: bootstrap
	$(CARGO) build --release -p streambus-broker -p streambus-client --bins
	$${STREAMBUS_VENV:-$(HOME)/.cache/streambus-venv}/bin/python bench/txn_bench.py --broker-bin $(CARGO_TARGET_DIR)/release/streambus --sbctl-bin $(CARGO_TARGET_DIR)/release/sbctl

# Build A (the baseline) against build B (default: this tree's release broker, built here) in
# alternating rounds: produce and fetch throughput, produce latency, and each build's own
# round-to-round spread; see bench/README.md for building A from an older commit.
#   make bench-ab A=/tmp/streambus-old [B=/path/to/streambus] [AB_ARGS='--rounds 5']
B ?= $(CARGO_TARGET_DIR)/release/streambus
ifneq ($(filter bench-ab,$(MAKECMDGOALS)),)
ifeq ($(strip $(A)),)
$(error usage: make bench-ab A=/path/to/old/streambus [B=/path/to/streambus] [AB_ARGS='--rounds 5'])
endif
endif
bench-ab: bootstrap
	if [ "$(B)" = "$(CARGO_TARGET_DIR)/release/streambus" ]; then $(CARGO) build --release -p streambus-broker; fi
	$${STREAMBUS_VENV:-$(HOME)/.cache/streambus-venv}/bin/python bench/ab_compare.py --a "$(A)" --b "$(B)" $(AB_ARGS)

# The cost of recording metrics: this tree's release broker with metrics off (a) against the same
# binary with them on (b), in alternating rounds of bench-ab's phases; see bench/README.md.
bench-metrics: bootstrap
	$(CARGO) build --release -p streambus-broker
	$${STREAMBUS_VENV:-$(HOME)/.cache/streambus-venv}/bin/python bench/ab_compare.py --a $(CARGO_TARGET_DIR)/release/streambus --a-args '--set metrics.enabled=false' --b $(CARGO_TARGET_DIR)/release/streambus $(AB_ARGS)

# The distribution tarball: stripped release binaries, example configs, the systemd unit and the
# monitoring files, plus a separate tarball of their debug info; prints both sizes.
dist: bootstrap
	$(CARGO) build --release -p streambus-broker -p streambus-client --bins
	scripts/dist.sh $(CARGO_TARGET_DIR)/release dist

# Removes the shared build cache; the next build compiles RocksDB again.
clean-cache:
	if [ -n "$(CARGO_TARGET_DIR)" ] && [ "$(CARGO_TARGET_DIR)" != "/" ]; then rm -rf -- "$(CARGO_TARGET_DIR)"; fi
