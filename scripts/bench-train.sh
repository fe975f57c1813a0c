#!/usr/bin/env bash
# Training throughput, side by side: our engine and the reference HF Trainer script
# (../shared/peers/hf_finetune.py), one epoch each of all-MiniLM-L6-v2 on laptops with
# the same hyperparameters (lr 5e-5, batch 16, warmup 100, seed 42), in both padding
# modes: every row padded to 100 (the reference recipe) and dynamic padding with
# length grouping. Ours runs in each of OURS_PRECISIONS (default "auto": bf16 where the
# CPU has AMX or AVX-512 BF16, else fp32); the peer in fp32 and, where the CPU has bf16
# instructions, also with --bf16 (HF's bf16=True), and ours is compared with the
# peer's fastest mode on this machine. Prints the CPU model and flags first. Runs wait
# for a quiet machine (1-min load < 1.5), as the peer does.
#   [BENCH_ROUNDS=N] [BENCH_MODES="fixed dynamic"] [OURS_PRECISIONS="auto fp32"]
#   [PEER_PRECISIONS="fp32 bf16"] scripts/bench-train.sh [EPOCHS]
set -euo pipefail
EPOCHS="${1:-1}"
source "$(dirname "$0")/bench-setup.sh" bench-train

wait_quiet() {
  for _ in $(seq 60); do
    awk '{exit !($1 < 1.5)}' /proc/loadavg && return 0
    echo "[bench] load $(cut -d' ' -f1 /proc/loadavg) >= 1.5, waiting" >&2; sleep 15
  done
}

echo "[bench] CPU: $CPU; flags: $FLAGS" >&2
default_peer="fp32"
case " $FLAGS " in *" amx_bf16 "*|*" avx512_bf16 "*) default_peer="fp32 bf16" ;; esac
OURS_PRECISIONS="${OURS_PRECISIONS:-auto}"
PEER_PRECISIONS="${PEER_PRECISIONS:-$default_peer}"

# BENCH_ROUNDS=N repeats each pair N times, ours and the peer alternating, so that a
# shared VM's drift (steal time) falls on both; the summary gives every round and means.
ROUNDS="${BENCH_ROUNDS:-1}"
MODES="${BENCH_MODES:-fixed dynamic}"
for mode in $MODES; do
  for round in $(seq "$ROUNDS"); do
    for precision in $OURS_PRECISIONS; do
      wait_quiet
      echo "[bench] ours ($precision), $mode padding, round $round (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
      rm -rf "$RUNS/ours-$mode-$precision"
      "$TRAINER" train --base "$MODEL" --train "$DATA/train.jsonl" --test "$DATA/test.jsonl" --out "$RUNS/ours-$mode-$precision" \
        --epochs "$EPOCHS" --lr 5e-5 --seed 42 --threads 2 --padding "$mode" --precision "$precision" > "$RUNS/ours-$mode-$precision-$round.json"
    done
    for precision in $PEER_PRECISIONS; do
      peer_flags=()
      [ "$mode" = dynamic ] && peer_flags+=(--dynamic-padding)
      [ "$precision" = bf16 ] && peer_flags+=(--bf16)
      echo "[bench] peer hf_finetune.py ($precision), $mode padding, round $round" >&2
      (cd "$PEERS" && "$PY" hf_finetune.py --model "$MODEL" --epochs "$EPOCHS" --lr 5e-5 --seed 42 --threads 2 \
         --output-dir "$RUNS/peer-$mode-$precision" "${peer_flags[@]}") 2>"$RUNS/peer-$mode-$precision.log" | tail -n 1 > "$RUNS/peer-$mode-$precision-$round.json"
    done
  done
done

"$PY" - "$RUNS" "$ROUNDS" "$CPU" "$FLAGS" "$OURS_PRECISIONS" "$PEER_PRECISIONS" $MODES <<'PYEOF'
import json, statistics, sys
runs, rounds, cpu, flags, ours_p, peer_p, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5].split(), sys.argv[6].split(), sys.argv[7:]
print(f"CPU: {cpu}; flags: {flags}")
for mode in modes:
    ours = {p: [json.load(open(f"{runs}/ours-{mode}-{p}-{r}.json")) for r in range(1, rounds + 1)] for p in ours_p}
    peer = {p: [json.load(open(f"{runs}/peer-{mode}-{p}-{r}.json")) for r in range(1, rounds + 1)] for p in peer_p}
    print(f"\n{mode} padding: samples/s per round ({rounds}), then the mean; test accuracy / macro-F1 of round 1")
    mean = {}
    for name, results, key in [*(("ours " + p + " (ran " + results[0].get("precision", "fp32") + ", " + results[0].get("malloc", "glibc") + ")", results, "train_samples_per_second") for p, results in ours.items()),
                               *(("peer " + p, results, "own_train_samples_per_second_median") for p, results in peer.items())]:
        figures = [r[key] for r in results]
        mean[name] = statistics.mean(figures)
        print(f"  {name:<34}{' '.join(f'{x:7.1f}' for x in figures)}   mean {mean[name]:7.1f}   "
              f"{results[0]['test_accuracy']:.3f} / {results[0]['test_macro_f1']:.3f}")
    fastest = max((n for n in mean if n.startswith("peer")), key=mean.get)
    for name in (n for n in mean if n.startswith("ours")):
        print(f"  {name} / {fastest} (the peer's fastest here): {mean[name] / mean[fastest]:.2f}x")
print("samples/s: training rows / wall time of the training part of each epoch (median for the peer)")
PYEOF
