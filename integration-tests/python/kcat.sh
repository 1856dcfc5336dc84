#!/usr/bin/env bash
# Compatibility of StreamBus with kcat (Debian's package, built on librdkafka 2.0.2, which opens
# with an ApiVersions v3 request). Needs only kcat and coreutils.
#
#   STREAMBUS_BOOTSTRAP=127.0.0.1:9092 integration-tests/python/kcat.sh
#
# Checks: metadata (-L, plain and -J) lists the broker; 100 keyed lines with a header, produced to
# a new topic that the broker auto-creates on kcat's metadata request, come back byte-exact with
# offsets 0..99 (-C -o beginning -e, -f and -J). Every kcat call is bounded by `timeout`.
# Exit status 0 when everything matches.
set -euo pipefail

BOOTSTRAP="${STREAMBUS_BOOTSTRAP:-127.0.0.1:9092}"
KCAT="${KCAT:-kcat}"
COUNT=100
LIMIT=60 # seconds for any one kcat call

log() { printf '[%s] kcat.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

command -v "$KCAT" >/dev/null 2>&1 || fail "$KCAT not found (scripts/bootstrap.sh installs it)"
command -v timeout >/dev/null 2>&1 || fail "timeout (coreutils) not found"

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT

# A unique topic so that runs can share one broker.
topic="kcat-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
log "$("$KCAT" -V 2>&1 | grep -m1 Version); bootstrap $BOOTSTRAP; topic $topic"

kc() { timeout "$LIMIT" "$KCAT" -b "$BOOTSTRAP" -m 15 "$@"; }

# 1. Metadata: the broker list, plain and as JSON.
metadata_ok=0
for attempt in $(seq 1 3); do
    if kc -L >"$work/metadata.txt" 2>"$work/metadata.err"; then
        metadata_ok=1
        break
    fi
    log "metadata attempt $attempt failed: $(tail -n1 "$work/metadata.err")"
    sleep 1
done
[ "$metadata_ok" -eq 1 ] || fail "kcat -L never succeeded"
grep -Eq '^ *[0-9]+ brokers?:' "$work/metadata.txt" || fail "kcat -L shows no broker count: $(cat "$work/metadata.txt")"
grep -Eq '^ *broker -?[0-9]+ at [^ ]+:[0-9]+' "$work/metadata.txt" \
    || fail "kcat -L lists no broker: $(cat "$work/metadata.txt")"
kc -L -J >"$work/metadata.json" || fail "kcat -L -J failed"
grep -Eq '"brokers": *\[ *\{' "$work/metadata.json" || fail "kcat -L -J lists no broker: $(cat "$work/metadata.json")"
log "metadata ok: $(grep -E '^ *broker ' "$work/metadata.txt" | head -n3 | tr -s ' ' | paste -sd';' -)"

# 2. Produce COUNT keyed lines (key:value) with a header to partition 0. The topic does not exist
# yet: the producer's metadata request for it has the broker auto-create it.
for i in $(seq 0 $((COUNT - 1))); do
    printf 'key-%03d:value %d with spaces, punctuation (;,=) and UTF-8 \xc3\xa9\xe2\x82\xac\n' "$i" "$i"
done >"$work/expected.txt"
kc -P -t "$topic" -p 0 -K: -H "origin=kcat" -X message.timeout.ms=30000 <"$work/expected.txt" \
    2>"$work/produce.err" || fail "kcat -P failed: $(cat "$work/produce.err")"
if grep -qi 'delivery failed' "$work/produce.err"; then
    fail "kcat -P reported errors: $(cat "$work/produce.err")"
fi
log "produced $COUNT records"

# 3. Consume them back: key:value lines must match byte for byte, with offsets 0..COUNT-1 and the
# header on every record. -e exits at the end of the partition; -c bounds the count.
kc -C -t "$topic" -p 0 -o beginning -e -c "$COUNT" -q -f '%k:%s\n' >"$work/actual.txt" 2>"$work/consume.err" \
    || fail "kcat -C failed: $(cat "$work/consume.err")"
if ! cmp -s "$work/expected.txt" "$work/actual.txt"; then
    diff "$work/expected.txt" "$work/actual.txt" | head -n 20 >&2 || true
    fail "consumed records differ from the produced ones ($(wc -l <"$work/actual.txt") of $COUNT lines read)"
fi
kc -C -t "$topic" -p 0 -o beginning -e -c "$COUNT" -q -f '%o|%h\n' >"$work/offsets.txt" 2>>"$work/consume.err" \
    || fail "kcat -C (offsets) failed: $(cat "$work/consume.err")"
seq 0 $((COUNT - 1)) | sed 's/$/|origin=kcat/' >"$work/expected-offsets.txt"
if ! cmp -s "$work/expected-offsets.txt" "$work/offsets.txt"; then
    diff "$work/expected-offsets.txt" "$work/offsets.txt" | head -n 20 >&2 || true
    fail "offsets or headers differ from 0..$((COUNT - 1)) with origin=kcat"
fi

# 4. The JSON envelope of the first record.
kc -C -t "$topic" -p 0 -o beginning -c 1 -e -q -J >"$work/first.json" 2>>"$work/consume.err" \
    || fail "kcat -C -J failed: $(cat "$work/consume.err")"
# (kcat prints compact JSON; the patterns allow spaces after the colons all the same.)
for field in "\"topic\": *\"$topic\"" '"partition": *0[,}]' '"offset": *0[,}]' '"key": *"key-000"'; do
    grep -Eq "$field" "$work/first.json" || fail "kcat -J envelope does not match $field: $(cat "$work/first.json")"
done

# 5. The auto-created topic now shows in the metadata.
kc -L -t "$topic" >"$work/topic.txt" || fail "kcat -L -t $topic failed"
grep -q "topic \"$topic\" with [1-9][0-9]* partitions" "$work/topic.txt" \
    || fail "kcat -L -t does not show $topic: $(cat "$work/topic.txt")"

log "all checks passed"
