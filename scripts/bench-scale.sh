#!/usr/bin/env bash
# Scoring at scale through the whole service (API, scheduler, trainer, scorer workers,
# Postgres, RabbitMQ): a 1,000,000-document corpus scored by one worker, then by two;
# prints instances/s, peak RSS per worker and the speed-up (see absa-scale-bench).
#
#   scripts/bench-scale.sh [--documents N] [--single N] [--threads T] [--precision fp32|int8] [--shard-size S]
#
# Release builds; results also appended (one JSON line per run) to
# $ABSA_HOME/bench-scale/results.jsonl.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/services.sh"
cd "$ROOT"
cargo build --release --locked -p absa-api -p absa-scheduler -p absa-trainer-worker -p absa-scorer-worker -p absa-e2e --bins >&2
OUT="${BENCH_OUT:-$ABSA_HOME/bench-scale}"
mkdir -p "$OUT"
echo "[bench-scale] load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$CARGO_TARGET_DIR/release/absa-scale-bench" "$@" | tee "$OUT/last.txt"
tail -n1 "$OUT/last.txt" >> "$OUT/results.jsonl"
