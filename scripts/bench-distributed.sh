#!/usr/bin/env bash
# Several processes on one host, side by side: one epoch of all-MiniLM-L6-v2 on laptops
# (dynamic padding with length grouping, lr 5e-5, global batch 16, seed 42) trained
#   ours: 1 process x 2 threads, 2 ranks x 1 thread (c10d Gloo: no_shard, full_shard);
#   peer: ../shared/peers/hf_finetune.py under HF Trainer, 1 process x 2 threads, and
#         2 processes x 1 thread through `accelerate launch` (DDP over Gloo, 8 rows per
#         process: the same global batch).
# Prints samples/s (training rows / wall time of the epoch's training part), test
# accuracy and each process's peak RSS, with the CPU model and flags it ran on.
#   [BENCH_ROUNDS=N] scripts/bench-distributed.sh
set -euo pipefail
source "$(dirname "$0")/bench-setup.sh" bench-distributed
ROUNDS="${BENCH_ROUNDS:-1}"

echo "[bench] CPU: $CPU" >&2
echo "[bench] flags: $FLAGS" >&2

wait_quiet() {
  for _ in $(seq 60); do
    awk '{exit !($1 < 1.5)}' /proc/loadavg && return 0
    echo "[bench] load $(cut -d' ' -f1 /proc/loadavg) >= 1.5, waiting" >&2; sleep 15
  done
}

COMMON=(--base "$MODEL" --train "$DATA/train.jsonl" --test "$DATA/test.jsonl" --epochs 1 --lr 5e-5 --seed 42 --device cpu)
PEER=(hf_finetune.py --model "$MODEL" --epochs 1 --lr 5e-5 --seed 42 --dynamic-padding --wait-load 0)
for round in $(seq "$ROUNDS"); do
  wait_quiet
  echo "[bench] round $round: ours, 1 process x 2 threads" >&2
  rm -rf "$RUNS/ours-1x2"
  "$TRAINER" train "${COMMON[@]}" --out "$RUNS/ours-1x2" --threads 2 > "$RUNS/ours-1x2-$round.json"
  for sharding in no-shard full-shard; do
    wait_quiet
    echo "[bench] round $round: ours, 2 ranks x 1 thread, $sharding" >&2
    rm -rf "$RUNS/ours-2x1-$sharding"
    "$TRAINER" launch --nproc-per-node 2 --master-port 29517 -- train "${COMMON[@]}" --out "$RUNS/ours-2x1-$sharding" --threads 1 \
      --sharding "$sharding" | tail -n 1 > "$RUNS/ours-2x1-$sharding-$round.json"
  done
  wait_quiet
  echo "[bench] round $round: peer, 1 process x 2 threads" >&2
  (cd "$PEERS" && "$PY" "${PEER[@]}" --threads 2 --output-dir "$RUNS/peer-1x2") 2>"$RUNS/peer-1x2.log" | tail -n 1 > "$RUNS/peer-1x2-$round.json"
  wait_quiet
  echo "[bench] round $round: peer, 2 processes x 1 thread (accelerate launch, DDP over Gloo)" >&2
  # accelerate's multi-process launcher (torch.distributed.run); the Trainer, on the CPU
  # (use_cpu), joins a Gloo group: DistributedDataParallel. (--cpu alone starts one process.)
  (cd "$PEERS" && CUDA_VISIBLE_DEVICES="" "$(dirname "$PY")/accelerate" launch --multi_gpu --num_processes 2 --num_machines 1 \
     --mixed_precision no --dynamo_backend no --main_process_port 29518 "${PEER[@]}" --threads 1 --batch-size 8 --output-dir "$RUNS/peer-2x1") \
     2>"$RUNS/peer-2x1.log" | grep '^{"script"' > "$RUNS/peer-2x1-$round.json"
done

"$PY" - "$RUNS" "$ROUNDS" <<'PYEOF'
import json, sys
runs, rounds = sys.argv[1], int(sys.argv[2])
def lines(path):
    return [json.loads(l) for l in open(path) if l.strip()]
rows = {}
for r in range(1, rounds + 1):
    for name, label in [("ours-1x2", "ours, 1 process x 2 threads"), ("ours-2x1-no-shard", "ours, 2 ranks x 1 thread, no_shard (DDP)"),
                        ("ours-2x1-full-shard", "ours, 2 ranks x 1 thread, full_shard")]:
        s = lines(f"{runs}/{name}-{r}.json")[-1]
        peaks = s.get("rank_training_peak_rss_mib") or [s["peak_rss_mib"]]
        rows.setdefault(label, []).append((s["train_samples_per_second"], s["test_accuracy"], peaks))
    for name, label in [("peer-1x2", "peer HF Trainer, 1 process x 2 threads"), ("peer-2x1", "peer HF Trainer + accelerate, 2 processes x 1 thread")]:
        results = lines(f"{runs}/{name}-{r}.json")
        s = results[-1]
        peaks = [x["peak_rss_mib"] for x in results]
        rows.setdefault(label, []).append((s["own_train_samples_per_second_median"], s["test_accuracy"], peaks))
print(f"{'run':<56}{'samples/s':>10}{'test acc':>10}  peak RSS per process (MiB)")
for label, values in rows.items():
    for sps, acc, peaks in values:
        print(f"{label:<56}{sps:>10.1f}{acc:>10.4f}  {' / '.join(f'{p:.0f}' for p in peaks)}")
    if len(values) > 1:
        print(f"{label + ' (mean)':<56}{sum(v[0] for v in values) / len(values):>10.1f}")
print("samples/s: training rows / wall time of the training part of the epoch (the peer: its median epoch)")
print("ours' peak RSS: each rank's peak while the first epoch trained; the peer's: its script's peak RSS")
PYEOF
