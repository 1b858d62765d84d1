#!/usr/bin/env bash
# bench/chaos.sh - a long run of the chaos test (crates/weft-cli/tests/chaos.rs): a
# 3-node cluster of real weft processes, concurrent SDK clients doing linearizable
# reads, writes and compare-and-set on a few entities, and a nemesis (kill -9 and
# restart, SIGSTOP/SIGCONT, partitions through the test kit's peer proxy: isolate the
# leader, isolate a follower, split 1/2, bridge; remove and re-add a member; transfer
# the leadership). At the end every fault is healed, the replicas must converge (same
# applied index and state hash on every node) within 10 s, and the history of every
# entity must be linearizable.
#
# Prints the test's summary: operations, faults injected (with a timeline), anomalies,
# lost acknowledged writes, convergence time. Exit status 0 when every check passed.
#
# Usage: bench/chaos.sh [--minutes N] [--seed S] [--release] [--out FILE]
#   --minutes N   length of the run (default 1; fractions allowed, at least 10 s)
#   --seed S      seed of the workload and nemesis, decimal or 0x hex (default: random,
#                 printed, so a failing run can be replayed)
#   --release     build the test in release mode (faster nodes, more operations)
#   --out FILE    also keep the whole test output in FILE (default: a temp file, whose
#                 path is printed)
# Needs only cargo. Nodes listen on 127.0.0.11-13 (ports chosen free), clients on
# 127.0.0.1; nothing needs root.
set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

MINUTES=1
SEED=""
PROFILE=()
OUT=""

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="${2:?--minutes needs a value}"; shift 2 ;;
        --minutes=*) MINUTES="${1#*=}"; shift ;;
        --seed) SEED="${2:?--seed needs a value}"; shift 2 ;;
        --seed=*) SEED="${1#*=}"; shift ;;
        --release) PROFILE=(--release); shift ;;
        --out) OUT="${2:?--out needs a file}"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done

if ! SECONDS_RUN=$(awk -v m="$MINUTES" 'BEGIN { if (m !~ /^[0-9]*\.?[0-9]+$/) exit 1; s = int(m * 60 + 0.5); if (s < 10) exit 1; print s }'); then
    echo "--minutes must be a number of minutes, at least 10 s worth (got $MINUTES)" >&2
    exit 2
fi
if [ -z "$SEED" ]; then
    SEED=$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
    SEED="0x$SEED"
fi
case "$SEED" in
    0x[0-9a-fA-F]*|[0-9]*) ;;
    *) echo "--seed must be a decimal or 0x-hex number (got $SEED)" >&2; exit 2 ;;
esac
if [ -z "$OUT" ]; then
    OUT=$(mktemp -t weft-chaos-XXXXXX.log)
fi

echo "chaos: ${SECONDS_RUN} s, seed $SEED${PROFILE:+ (release build)}; full output in $OUT"
cd "$REPO_DIR"
echo "chaos: building the test..."
cargo test "${PROFILE[@]}" -p weft-cli --test chaos --no-run >"$OUT" 2>&1 || {
    tail -n 30 "$OUT" >&2
    echo "chaos: the build failed" >&2
    exit 1
}
started=$(date +%s)
status=0
WEFT_CHAOS_SECONDS="$SECONDS_RUN" WEFT_CHAOS_SEED="$SEED" \
    cargo test "${PROFILE[@]}" -p weft-cli --test chaos -- --nocapture --test-threads 1 \
    >>"$OUT" 2>&1 || status=$?
ended=$(date +%s)

echo
echo "=== chaos summary (seed $SEED, ${SECONDS_RUN} s run, $((ended - started)) s in all) ==="
grep -o '\[chaos\].*' "$OUT" || true
if [ "$status" -eq 0 ]; then
    echo "=== result: PASS ==="
else
    echo "=== result: FAIL (exit $status); the failure: ==="
    # The panic message carries the counter-example or the failed wait with the nodes' logs.
    sed -n '/panicked at/,/^failures:$/p' "$OUT" | head -n 200
    echo "(replay: bench/chaos.sh --minutes $MINUTES --seed $SEED; full output: $OUT)"
fi
exit "$status"
