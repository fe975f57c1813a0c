#!/usr/bin/env bash
# The job system's figures against the local Postgres and RabbitMQ:
#   - predictions write rate through copy_predictions (binary COPY), rows/s;
#   - job submit-to-claim latency p50/p99 with the scheduler loop (NOTIFY wake-up) and
#     a consumer claiming jobs as a worker does.
# It runs in its own throwaway database and queue prefix, removed at the end.
#
#   scripts/bench-jobs.sh [absa-jobs-bench options: --rows --batch --jobs --rate --interval]
#
# Results are also appended (one JSON line per run) to $ABSA_HOME/bench-jobs/results.jsonl.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/services.sh"
cd "$ROOT"
cargo build --release --locked -p absa-scheduler --bin absa-jobs-bench >&2
OUT="${BENCH_OUT:-$ABSA_HOME/bench-jobs}"
mkdir -p "$OUT"
echo "[bench-jobs] load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$CARGO_TARGET_DIR/release/absa-jobs-bench" "$@" | tee "$OUT/last.txt"
tail -n1 "$OUT/last.txt" >> "$OUT/results.jsonl"
