#!/usr/bin/env bash
# Runs a 3-broker StreamBus cluster on loopback for development and for the end-to-end test in
# integration-tests/tests/it/deploy.rs. Brokers run detached, so the cluster outlives this
# script; `stop` ends exactly the processes `start` recorded. See `usage` for the interface.
set -euo pipefail

readonly BROKER_IDS=(1 2 3)
# Base ports of broker 1; broker i adds 100*(i-1), and every port adds the offset.
readonly KAFKA_BASE=9092 RAFT_BASE=9093 ADMIN_BASE=9094 HTTP_BASE=9644
readonly HIGHEST_BASE=$((HTTP_BASE + 200))
# The broker logs this once it has joined the metadata quorum (streambus_raft::lifecycle).
readonly ACTIVE_LINE="broker active"
readonly STOP_TIMEOUT=30
readonly LOG_TAIL_LINES=40

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<'EOF'
Usage: deploy/local-cluster.sh start|stop|status

Runs a 3-broker StreamBus cluster (node ids 1, 2, 3) on 127.0.0.1.

  start    start the brokers in the background, wait until each has joined the metadata
           quorum, then print the bootstrap servers as the last line of output
  stop     SIGTERM the brokers this script started (SIGKILL after 30 s)
  status   one line per broker; exit 0 if all three run, 3 otherwise

Environment:
  STREAMBUS_BIN                  broker binary (default:
                                 ${CARGO_TARGET_DIR:-$HOME/.cache/streambus-target}/release/streambus,
                                 built with `cargo build --release` when missing)
  STREAMBUS_CLUSTER_DIR          where data, logs and pid files go (default ./.local-cluster)
  STREAMBUS_CLUSTER_PORT_OFFSET  added to every port (default 0)
  STREAMBUS_CLUSTER_TIMEOUT      seconds `start` waits for the brokers (default 90)
  STREAMBUS_BROKER_ARGS          extra arguments for every broker, split on whitespace,
                                 e.g. "--set topics.num_partitions=3"

Ports of broker i (plus the offset): Kafka 9092, raft 9093, admin 9094, HTTP 9644, each
+100*(i-1). Broker i keeps its data in <dir>/broker-i/data and logs to
<dir>/broker-i/streambus.log (the previous run's log is kept as streambus.log.1).

A new cluster (no broker data yet) gets a new cluster id (`streambus --new-cluster-id`); a
restarted one keeps the id its data directories record. Brokers of another cluster on the
same ports (one still stopping) are thereby refused, never joined.
EOF
}

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- settings --------------------------------------------------------------------------------

port_offset="${STREAMBUS_CLUSTER_PORT_OFFSET:-0}"
[[ $port_offset =~ ^[0-9]{1,5}$ ]] ||
    die "STREAMBUS_CLUSTER_PORT_OFFSET must be a non-negative integer, got '$port_offset'"
# Base 10 even with leading zeros, which bash would otherwise read as octal.
port_offset=$((10#$port_offset))
((HIGHEST_BASE + port_offset <= 65535)) ||
    die "STREAMBUS_CLUSTER_PORT_OFFSET=$port_offset puts ports above 65535"

cluster_timeout="${STREAMBUS_CLUSTER_TIMEOUT:-90}"
[[ $cluster_timeout =~ ^[0-9]{1,6}$ ]] ||
    die "STREAMBUS_CLUSTER_TIMEOUT must be a whole number of seconds, got '$cluster_timeout'"
cluster_timeout=$((10#$cluster_timeout))

cluster_dir_setting="${STREAMBUS_CLUSTER_DIR:-./.local-cluster}"
cluster_dir=""

# Sets cluster_dir to the absolute form of the setting. The same path must come out of every
# subcommand: `stop` recognises its brokers by the data dir on their command line.
resolve_cluster_dir() {
    if [[ -d $cluster_dir_setting ]]; then
        cluster_dir="$(cd "$cluster_dir_setting" && pwd -P)"
    elif [[ $cluster_dir_setting == /* ]]; then
        cluster_dir="$cluster_dir_setting"
    else
        cluster_dir="$PWD/$cluster_dir_setting"
    fi
}

port() { # base id
    echo $(($1 + 100 * ($2 - 1) + port_offset))
}

data_dir() { echo "$cluster_dir/broker-$1/data"; }
log_file() { echo "$cluster_dir/broker-$1/streambus.log"; }
pid_file() { echo "$cluster_dir/broker-$1/streambus.pid"; }
kafka_addr() { echo "127.0.0.1:$(port "$KAFKA_BASE" "$1")"; }
http_addr() { echo "127.0.0.1:$(port "$HTTP_BASE" "$1")"; }
admin_addr() { echo "127.0.0.1:$(port "$ADMIN_BASE" "$1")"; }

bootstrap_servers() {
    local id addrs=()
    for id in "${BROKER_IDS[@]}"; do
        addrs+=("$(kafka_addr "$id")")
    done
    local IFS=,
    echo "${addrs[*]}"
}

# --- processes -------------------------------------------------------------------------------

# Prints the pid of broker `id` if its pid file names a live streambus process running on this
# cluster's data dir. Pids are reused, so a live pid alone proves nothing; a zombie has an empty
# cmdline and counts as stopped.
running_pid() {
    local id=$1 file pid args
    file="$(pid_file "$id")"
    [[ -f $file ]] || return 1
    pid="$(<"$file")"
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    args="$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ $args == *streambus* ]] || return 1
    grep -Fxq -- "$(data_dir "$id")" <<<"$args" || return 1
    echo "$pid"
}

# SIGTERMs the given brokers, waits for them, SIGKILLs the ones still running, removes their pid
# files. Returns 1 if one survives even SIGKILL.
stop_brokers() {
    local id pid waiting deadline failed=0 signalled=()
    for id in "$@"; do
        if pid="$(running_pid "$id")"; then
            kill -TERM "$pid" 2>/dev/null || true
            signalled+=("$id")
            echo "broker $id: sent SIGTERM to pid $pid"
        else
            rm -f "$(pid_file "$id")"
        fi
    done

    # All at once rather than one by one, so stopping takes one timeout at most, not three.
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        waiting=0
        for id in "${signalled[@]}"; do
            if running_pid "$id" >/dev/null; then
                waiting=1
            fi
        done
        if ((waiting == 0 || SECONDS >= deadline)); then
            break
        fi
        sleep 0.2
    done

    for id in "${signalled[@]}"; do
        # Checked again right before the signal: the pid may have exited and been reused.
        if pid="$(running_pid "$id")"; then
            log "broker $id (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while running_pid "$id" >/dev/null && ((SECONDS < deadline)); do
                sleep 0.2
            done
            if running_pid "$id" >/dev/null; then
                log "broker $id (pid $pid) survived SIGKILL; keeping its pid file"
                failed=1
                continue
            fi
        fi
        rm -f "$(pid_file "$id")"
        echo "broker $id: stopped"
    done
    return "$failed"
}

# --- start -----------------------------------------------------------------------------------

# Sets broker_bin, building the release binary when the default one is missing.
broker_bin=""
find_binary() {
    if [[ -n ${STREAMBUS_BIN:-} ]]; then
        [[ -f $STREAMBUS_BIN && -x $STREAMBUS_BIN ]] || die "STREAMBUS_BIN=$STREAMBUS_BIN is not an executable file"
        broker_bin="$STREAMBUS_BIN"
        return
    fi
    local target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/streambus-target}"
    broker_bin="$target_dir/release/streambus"
    if [[ ! -f $broker_bin || ! -x $broker_bin ]]; then
        command -v cargo >/dev/null 2>&1 ||
            die "$broker_bin is missing and cargo is not installed to build it (or set STREAMBUS_BIN)"
        log "building $broker_bin (cargo build --release -p streambus-broker)"
        # Build output goes to stderr: stdout's last line is the bootstrap list.
        (cd "$repo_root" && CARGO_TARGET_DIR="$target_dir" cargo build --release -p streambus-broker) >&2 ||
            die "cargo build failed"
        [[ -x $broker_bin ]] || die "cargo build did not produce $broker_bin"
    fi
}

# Arguments of `env` that drop every STREAMBUS_* variable: the broker reads that whole prefix as
# config keys and refuses unknown ones, so this script's own settings would stop it from
# starting. Broker config goes through STREAMBUS_BROKER_ARGS instead.
broker_env=()
scrub_environment() {
    local name
    while IFS= read -r name; do
        if [[ $name == STREAMBUS_* ]]; then
            broker_env+=(-u "$name")
        fi
    done < <(compgen -e)
}

started=()

# Prints the cluster id for this run: the one the brokers' data directories record (the
# cluster is restarting), or a new one (a new cluster). Never a fixed id: a cluster started on
# the ports of a previous one must not accept that one's brokers as its own.
cluster_id() {
    local id file recorded
    for id in "${BROKER_IDS[@]}"; do
        file="$(data_dir "$id")/meta.properties"
        if [[ -f $file ]]; then
            recorded="$(sed -n 's/^cluster\.id=//p' "$file" | head -n 1)"
            [[ -n $recorded ]] || die "$file records no cluster.id"
            echo "$recorded"
            return
        fi
    done
    "$broker_bin" --new-cluster-id || die "$broker_bin --new-cluster-id failed"
}

# Starts broker `id` detached (own session, SIGHUP ignored) and waits for its pid file, which
# the launching shell writes for itself right before it becomes the broker.
launch() {
    local id=$1 voters=$2 cluster=$3 file log_path extra=()
    file="$(pid_file "$id")"
    log_path="$(log_file "$id")"
    read -r -a extra <<<"${STREAMBUS_BROKER_ARGS:-}"
    mkdir -p "$(data_dir "$id")"
    rm -f "$file"
    if [[ -f $log_path ]]; then
        mv -f "$log_path" "$log_path.1"
    fi
    # shellcheck disable=SC2016 # $$, $1 and $@ belong to the inner shell.
    env "${broker_env[@]}" setsid nohup bash -c \
        'echo "$$" >"$1.tmp" && mv -f "$1.tmp" "$1" && shift && exec "$@"' \
        streambus-launch "$file" \
        "$broker_bin" \
        --node-id "$id" \
        --cluster-id "$cluster" \
        --data-dir "$(data_dir "$id")" \
        --kafka-listener "127.0.0.1:$(port "$KAFKA_BASE" "$id")" \
        --raft-listener "127.0.0.1:$(port "$RAFT_BASE" "$id")" \
        --admin-listener "127.0.0.1:$(port "$ADMIN_BASE" "$id")" \
        --http-listener "127.0.0.1:$(port "$HTTP_BASE" "$id")" \
        --set "metadata.quorum_voters=$voters" \
        "${extra[@]}" \
        </dev/null >"$log_path" 2>&1 &
    started+=("$id")

    local tries
    for ((tries = 0; tries < 100; tries++)); do
        if [[ -s $file ]]; then
            return 0
        fi
        sleep 0.1
    done
    fail_start "$id" "wrote no pid file within 10 s"
}

# Reports why broker `id` failed, stops every broker this run started, exits 1.
fail_start() {
    local id=$1 reason=$2
    trap - INT TERM
    log "broker $id $reason; last lines of $(log_file "$id"):"
    tail -n "$LOG_TAIL_LINES" "$(log_file "$id")" >&2 2>/dev/null || true
    log "stopping the brokers started by this run"
    stop_brokers "${started[@]}" >&2 || true
    exit 1
}

on_interrupt() {
    trap - INT TERM
    log "interrupted; stopping the brokers started by this run"
    stop_brokers "${started[@]}" >&2 || true
    exit 130
}

cmd_start() {
    find_binary
    mkdir -p "$cluster_dir_setting"
    resolve_cluster_dir

    local id pid voters=()
    for id in "${BROKER_IDS[@]}"; do
        if pid="$(running_pid "$id")"; then
            log "broker $id is already running (pid $pid, $(data_dir "$id")); run '$0 stop' first"
            exit 1
        fi
        voters+=("$id@127.0.0.1:$(port "$RAFT_BASE" "$id")")
    done
    local voter_list
    voter_list="$(
        IFS=,
        echo "${voters[*]}"
    )"

    local cluster
    cluster="$(cluster_id)"
    log "cluster id $cluster"

    scrub_environment
    # The brokers run in their own session, so Ctrl-C would not reach them: clean up here.
    trap on_interrupt INT TERM
    for id in "${BROKER_IDS[@]}"; do
        launch "$id" "$voter_list" "$cluster"
    done

    local deadline=$((SECONDS + cluster_timeout)) pending=("${BROKER_IDS[@]}") still
    while ((${#pending[@]} > 0)); do
        still=()
        for id in "${pending[@]}"; do
            if grep -Fq "$ACTIVE_LINE" "$(log_file "$id")" 2>/dev/null; then
                continue
            fi
            running_pid "$id" >/dev/null || fail_start "$id" "exited before registering"
            still+=("$id")
        done
        pending=("${still[@]}")
        if ((${#pending[@]} > 0 && SECONDS >= deadline)); then
            fail_start "${pending[0]}" "did not register within ${cluster_timeout}s"
        fi
        if ((${#pending[@]} > 0)); then
            sleep 0.5
        fi
    done
    # A broker may register and then die (e.g. a port taken by another process).
    for id in "${BROKER_IDS[@]}"; do
        running_pid "$id" >/dev/null || fail_start "$id" "exited after registering"
    done
    trap - INT TERM

    echo "StreamBus cluster of ${#BROKER_IDS[@]} brokers running in $cluster_dir"
    for id in "${BROKER_IDS[@]}"; do
        echo "  broker $id: pid $(running_pid "$id"), kafka $(kafka_addr "$id"), metrics http://$(http_addr "$id")/metrics, readiness http://$(http_addr "$id")/readyz, admin gRPC $(admin_addr "$id"), log $(log_file "$id")"
    done
    echo "Stop it with: $0 stop (same STREAMBUS_CLUSTER_DIR). Bootstrap servers:"
    bootstrap_servers
}

# --- stop, status ----------------------------------------------------------------------------

cmd_stop() {
    resolve_cluster_dir
    local id ours=()
    for id in "${BROKER_IDS[@]}"; do
        if running_pid "$id" >/dev/null; then
            ours+=("$id")
        else
            # Stale: the broker exited on its own (or the pid now belongs to another process).
            rm -f "$(pid_file "$id")"
        fi
    done
    if ((${#ours[@]} == 0)); then
        echo "no broker running in $cluster_dir"
        exit 0
    fi
    stop_brokers "${ours[@]}" || exit 1
}

cmd_status() {
    resolve_cluster_dir
    local id pid state active all_running=1
    for id in "${BROKER_IDS[@]}"; do
        if pid="$(running_pid "$id")"; then
            state=running
        else
            pid=-
            state=stopped
            all_running=0
        fi
        active=no
        if grep -Fq "$ACTIVE_LINE" "$(log_file "$id")" 2>/dev/null; then
            active=yes
        fi
        echo "broker=$id pid=$pid state=$state kafka=$(kafka_addr "$id") active=$active http=$(http_addr "$id") admin=$(admin_addr "$id")"
    done
    if ((all_running)); then
        exit 0
    fi
    exit 3
}

main() {
    if (($# != 1)); then
        usage >&2
        exit 2
    fi
    case $1 in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *)
        log "unknown subcommand '$1'"
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
