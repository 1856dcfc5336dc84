#!/usr/bin/env bash
# Installs what building and testing StreamBus needs on a fresh Debian machine, and nothing that
# is already there: running it again is a no-op. Called by `make run` and `make test`.
#
# Usage: scripts/bootstrap.sh [all|clients]
#   all      (default) the Rust toolchain prerequisites and the third-party Kafka clients
#   clients  only the third-party Kafka clients the compatibility tests drive: Debian's kcat,
#            a Python virtualenv with the exact pins of scripts/python-requirements.txt, at
#            ${STREAMBUS_VENV:-$HOME/.cache/streambus-venv} (run its bin/python), and the npm
#            packages of integration-tests/node/package-lock.json (kafkajs) in
#            integration-tests/node/node_modules.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run as root on CI machines; elsewhere fall back to sudo for the package manager only.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_updated=0

# Installs the given Debian packages that are not installed yet; refreshes the package index
# once per run, and only when something is actually missing.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -q
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

ensure_build_packages() {
    # The rocksdb crate compiles RocksDB's C++ sources (a C/C++ toolchain) and generates its
    # bindings with bindgen at build time, which loads libclang.
    apt_install build-essential libclang-dev
}

ensure_test_tools() {
    # fincore (util-linux-extra) shows what the page-cache drop-behind leaves cached, in the
    # storage tests.
    apt_install util-linux-extra
}

# promtool (Debian's prometheus package), which checks deploy/prometheus/ in the tests. Only the
# one binary is taken from the package, unpacked into ~/.cache/streambus-tools: installing the
# package would also install and start a Prometheus server.
ensure_promtool() {
    local dir="${STREAMBUS_TOOLS:-$HOME/.cache/streambus-tools}"
    if [ -x "$dir/promtool" ] && "$dir/promtool" --version >/dev/null 2>&1; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "no promtool in $dir and no apt-get to fetch it"
    local work
    work="$(mktemp -d)"
    log "fetching promtool from Debian's prometheus package"
    if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); then
        if [ "$apt_updated" -eq 0 ]; then
            as_root apt-get update -q
            apt_updated=1
        fi
        (cd "$work" && apt-get download -q prometheus) || die "cannot download the prometheus package"
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
    mkdir -p "$dir"
    install -m 0755 "$work/x/usr/bin/promtool" "$dir/promtool.tmp"
    mv -f "$dir/promtool.tmp" "$dir/promtool"
    rm -rf -- "$work"
    "$dir/promtool" --version >/dev/null 2>&1 || die "$dir/promtool does not run"
}

ensure_cargo() {
    command -v cargo >/dev/null 2>&1 \
        || die "cargo not found: install Rust with rustup (https://rustup.rs) and re-run"
    log "$(cargo --version)"
}

ensure_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then
        return 0
    fi
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
}

ensure_kcat() {
    # Debian's kcat (librdkafka 2.0.2) drives the broker from the shell in integration-tests/python/kcat.sh.
    apt_install kcat
}

# Prints the path of a Python 3 interpreter that can create virtualenvs, installing Debian's
# python3 and python3-venv only when no interpreter on PATH has working venv and ensurepip modules.
venv_capable_python() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            command -v "$py"
            return 0
        fi
    done
    apt_install python3 python3-venv >&2
    /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 \
        || die "python3 -m venv still unusable after installing python3-venv"
    echo /usr/bin/python3
}

# The virtualenv with the third-party Python Kafka clients (confluent-kafka, kafka-python and its
# codecs, aiokafka) at exactly the versions of scripts/python-requirements.txt. A stamp file inside
# the venv holds the hash of the requirements it was built from, so a re-run is a no-op until that
# file changes; then (or when its interpreter no longer starts) the venv is rebuilt from scratch.
ensure_python_venv() {
    local venv="${STREAMBUS_VENV:-$HOME/.cache/streambus-venv}"
    local requirements="$script_dir/python-requirements.txt"
    local stamp="$venv/.streambus-requirements.sha256"
    local want py

    [ -f "$requirements" ] || die "missing $requirements"
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"

    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        return 0
    fi
    if [ -e "$venv" ]; then
        # Never delete a directory this script did not make.
        [ -f "$venv/pyvenv.cfg" ] \
            || die "$venv exists but is not a virtualenv: remove it or point STREAMBUS_VENV elsewhere"
        log "rebuilding virtualenv $venv (requirements changed, or an earlier install did not finish)"
        rm -rf -- "$venv"
    fi

    py="$(venv_capable_python)"
    log "creating Python virtualenv $venv with $("$py" --version 2>&1)"
    mkdir -p -- "$(dirname -- "$venv")"
    "$py" -m venv "$venv"
    log "installing $requirements into $venv"
    "$venv/bin/python" -m pip install --no-input --disable-pip-version-check -q -r "$requirements"
    # Fails (and leaves no stamp, so the next run starts over) if a pinned client cannot be imported.
    "$venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka, lz4.frame, snappy, zstandard, crc32c, prometheus_client, grpc, grpc_reflection' \
        || die "the Kafka client packages in $venv do not import"
    printf '%s\n' "$want" >"$stamp"
}

# The Node.js Kafka client (kafkajs) for integration-tests/node/groups.js: `npm ci` of
# integration-tests/node/package-lock.json into integration-tests/node/node_modules (not in git).
# Like the venv, a stamp inside node_modules holds the hash of package.json and package-lock.json
# it was installed from, so a re-run is a no-op until either changes. Node.js and npm come with the
# machine; Debian's are installed only when either is missing.
ensure_node_modules() {
    local dir
    dir="$(cd "$script_dir/.." && pwd)/integration-tests/node"
    local stamp="$dir/node_modules/.streambus-lock.sha256"
    local want

    [ -f "$dir/package.json" ] && [ -f "$dir/package-lock.json" ] \
        || die "missing $dir/package.json or package-lock.json"
    want="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -d' ' -f1)"

    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dir/node_modules/kafkajs/package.json" ]; then
        return 0
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    log "installing the npm packages of $dir/package-lock.json with node $(node --version), npm $(npm --version)"
    # npm ci starts from an empty node_modules (so no stamp survives a failed install) and installs
    # exactly the lock file's versions; it fails if package.json and the lock file disagree.
    (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    (cd "$dir" && node -e 'require("kafkajs")') \
        || die "kafkajs in $dir/node_modules does not load"
    printf '%s\n' "$want" >"$stamp"
}

ensure_kafka_clients() {
    ensure_kcat
    ensure_python_venv
    ensure_node_modules
}

main() {
    case "${1:-all}" in
        all)
            ensure_build_packages
            ensure_cargo
            ensure_nextest
            ensure_test_tools
            ensure_promtool
            ensure_kafka_clients
            ;;
        clients)
            ensure_kafka_clients
            ;;
        *)
            die "unknown component '$1' (expected: all, clients)"
            ;;
    esac
    log "ready"
}

main "$@"
