#!/usr/bin/env bash
# Seeded fault schedules (integration-tests/tests/it/schedules.rs), one after another for
# CHAOS_MINUTES (default 10), CHAOS_ROUNDS faults each (default 8). One line per schedule: its
# seed, the faults applied, what was acknowledged. Stops at the first failing schedule and
# prints it; `STREAMBUS_SCHEDULE_SEED=<seed>` replays that schedule's faults.
set -euo pipefail

minutes="${CHAOS_MINUTES:-10}"
export STREAMBUS_SCHEDULE_ROUNDS="${CHAOS_ROUNDS:-8}"
deadline=$(($(date +%s) + minutes * 60))
runs=0
while [ "$(date +%s)" -lt "$deadline" ]; do
    runs=$((runs + 1))
    if ! out=$(cargo nextest run --workspace \
        -E 'test(seeded_schedules)' --no-capture 2>&1); then
        printf '%s\n' "$out" | tail -n 80
        echo "chaos: schedule $runs FAILED (its seed is above)"
        exit 1
    fi
    printf '%s\n' "$out" | grep '^seed ' | cut -c1-400
done
echo "chaos: $runs schedules passed in ${minutes} min"
