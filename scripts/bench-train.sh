#!/usr/bin/env bash
# Training throughput, side by side: our engine and the reference HF Trainer script
# (../shared/peers/hf_finetune.py), one epoch each of all-MiniLM-L6-v2 on laptops with
# the same hyperparameters (lr 5e-5, batch 16, warmup 100, seed 42), in both padding
# modes: every row padded to 100 (the reference recipe) and dynamic padding with
# length grouping. Runs wait for a quiet machine (1-min load < 1.5), as the peer does.
#   [BENCH_ROUNDS=N] [BENCH_MODES="fixed dynamic"] scripts/bench-train.sh [EPOCHS]
set -euo pipefail
EPOCHS="${1:-1}"
source "$(dirname "$0")/bench-setup.sh" bench-train

wait_quiet() {
  for _ in $(seq 60); do
    awk '{exit !($1 < 1.5)}' /proc/loadavg && return 0
    echo "[bench] load $(cut -d' ' -f1 /proc/loadavg) >= 1.5, waiting" >&2; sleep 15
  done
}

# BENCH_ROUNDS=N repeats each pair N times, ours and the peer alternating, so that a
# shared VM's drift (steal time) falls on both; the summary gives every round and means.
ROUNDS="${BENCH_ROUNDS:-1}"
MODES="${BENCH_MODES:-fixed dynamic}"
for mode in $MODES; do
  for round in $(seq "$ROUNDS"); do
    wait_quiet
    echo "[bench] ours, $mode padding, round $round (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    rm -rf "$RUNS/ours-$mode"
    "$TRAINER" train --base "$MODEL" --train "$DATA/train.jsonl" --test "$DATA/test.jsonl" --out "$RUNS/ours-$mode" \
      --epochs "$EPOCHS" --lr 5e-5 --seed 42 --threads 2 --padding "$mode" > "$RUNS/ours-$mode-$round.json"
    peer_flag=""; [ "$mode" = dynamic ] && peer_flag="--dynamic-padding"
    echo "[bench] peer hf_finetune.py, $mode padding, round $round" >&2
    (cd "$PEERS" && "$PY" hf_finetune.py --model "$MODEL" --epochs "$EPOCHS" --lr 5e-5 --seed 42 --threads 2 \
       --output-dir "$RUNS/peer-$mode" $peer_flag) 2>"$RUNS/peer-$mode.log" | tail -n 1 > "$RUNS/peer-$mode-$round.json"
  done
done

"$PY" - "$RUNS" "$ROUNDS" $MODES <<'PYEOF'
import json, sys
runs, rounds, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'padding':<10}{'round':>6}{'ours samples/s':>16}{'peer samples/s':>16}{'ratio':>8}{'ours test acc/F1':>20}{'peer test acc/F1':>20}")
for mode in modes:
    total_o = total_p = 0.0
    for r in range(1, rounds + 1):
        ours = json.load(open(f"{runs}/ours-{mode}-{r}.json"))
        peer = json.load(open(f"{runs}/peer-{mode}-{r}.json"))
        o, p = ours["train_samples_per_second"], peer["own_train_samples_per_second_median"]
        total_o, total_p = total_o + o, total_p + p
        print(f"{mode:<10}{r:>6}{o:>16.1f}{p:>16.1f}{o / p:>7.2f}x"
              f"{ours['test_accuracy']:>12.3f} / {ours['test_macro_f1']:.3f}{peer['test_accuracy']:>12.3f} / {peer['test_macro_f1']:.3f}")
    if rounds > 1:
        print(f"{mode:<10}{'mean':>6}{total_o / rounds:>16.1f}{total_p / rounds:>16.1f}{total_o / total_p:>7.2f}x")
print("samples/s: training rows / wall time of the training part of each epoch (median for the peer)")
PYEOF
