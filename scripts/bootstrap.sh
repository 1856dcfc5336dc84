#!/usr/bin/env bash
# Installs what building and testing StreamBus needs on a fresh Debian machine, and nothing that
# is already there: running it again is a no-op. Called by `make run` and `make test`.
set -euo pipefail

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

main() {
    ensure_build_packages
    ensure_cargo
    ensure_nextest
    # Third-party Kafka client prerequisites (the Python virtualenv, kcat) belong here, added
    # by the issue that introduces the compatibility tests.
    log "ready"
}

main "$@"
