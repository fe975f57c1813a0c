#!/usr/bin/env bash
# Accuracy, side by side: our engine and the reference HF Trainer script
# (../shared/peers/hf_finetune.py) fine-tune all-MiniLM-L6-v2 on laptops with the
# peer's hyperparameters (lr 5e-5, batch 16, warmup 100, up to 8 epochs, patience 3 on
# validation loss) for each seed, and print test accuracy and macro-F1 per seed and
# their means.
# Both sides train and select on the same rows: the peer's 10% validation split (its
# own stratified_split, numpy-seeded with 42) is written out and given to ours as
# --train/--validation files; ACCURACY_SPLIT=own lets ours split by itself (a split of
# the same size, other rows: one split is shared by every seed, so its luck is too).
# Both sides batch the same way: by default dynamic padding with length-grouped
# batches (the peer's --dynamic-padding, HF's group_by_length: engine against engine,
# about 6 minutes a peer seed on 2 cores); ACCURACY_PADDING=fixed pads every row to
# 100 in shuffled batches (the recipe's way, about 20 minutes a peer seed). A peer
# result already under $ABSA_HOME/bench-accuracy-<padding>, or for fixed padding in
# ../shared/peers/results (finetune_lr5e-5_seed{S}.json), is reused; a missing one is
# run, unless PEER_MISSING=skip: then the peer's mean is over the seeds it has.
# REUSE=1 also keeps our result for a seed that is already there (an interrupted run).
#   [ACCURACY_SPLIT=own] [ACCURACY_PADDING=fixed] [PEER_MISSING=skip] [REUSE=1] scripts/bench-accuracy.sh [SEEDS]
#   SEEDS default "42 43 44"
set -euo pipefail
SEEDS="${1:-42 43 44}"
PADDING="${ACCURACY_PADDING:-dynamic}"
SPLIT="${ACCURACY_SPLIT:-peer}"
case "$PADDING" in
  dynamic) PEER_PADDING_FLAG=--dynamic-padding ;;
  fixed) PEER_PADDING_FLAG= ;;
  *) echo "ACCURACY_PADDING must be dynamic or fixed, not $PADDING" >&2; exit 2 ;;
esac
source "$(dirname "$0")/bench-setup.sh" "bench-accuracy-$PADDING"

case "$SPLIT" in
  peer)
    mkdir -p "$RUNS/peer-split"
    (cd "$PEERS" && "$PY" - "$DATA/train.jsonl" "$RUNS/peer-split" <<'PYEOF'
import json, sys
import numpy as np
import absa_common as ac
from hf_finetune import stratified_split
rows = ac.read_jsonl(sys.argv[1])
train, validation = stratified_split(np.array([ac.LABEL2ID[r["label"]] for r in rows]), 0.1, 42)
for name, idx in (("train", train), ("validation", validation)):
    with open(f"{sys.argv[2]}/{name}.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in idx)
PYEOF
    )
    ours_data=(--train "$RUNS/peer-split/train.jsonl" --validation "$RUNS/peer-split/validation.jsonl") ;;
  own) ours_data=(--train "$DATA/train.jsonl") ;;
  *) echo "ACCURACY_SPLIT must be peer or own, not $SPLIT" >&2; exit 2 ;;
esac

for seed in $SEEDS; do
  ours="$RUNS/ours-$SPLIT-$seed"
  if [ "${REUSE:-0}" = 1 ] && [ -s "$ours.json" ]; then
    echo "[accuracy] ours, seed $seed: kept from an earlier run" >&2
  else
    echo "[accuracy] ours, seed $seed ($SPLIT split)" >&2
    rm -rf "$ours"
    "$TRAINER" train --base "$MODEL" "${ours_data[@]}" --test "$DATA/test.jsonl" --out "$ours" \
      --lr 5e-5 --seed "$seed" --threads 2 --padding "$PADDING" > "$ours.json.tmp"
    mv "$ours.json.tmp" "$ours.json"
  fi
  stored="$PEERS/results/finetune_lr5e-5_seed$seed.json"
  if [ "$PADDING" = fixed ] && [ -f "$stored" ]; then
    cp "$stored" "$RUNS/peer-$seed.json"
  elif [ "${PEER_MISSING:-run}" = skip ]; then
    rm -f "$RUNS/peer-$seed.json"
  elif [ ! -s "$RUNS/peer-$seed.json" ]; then
    echo "[accuracy] peer hf_finetune.py, seed $seed (no stored result)" >&2
    (cd "$PEERS" && "$PY" hf_finetune.py --model "$MODEL" --lr 5e-5 --seed "$seed" --threads 2 --wait-load 0 $PEER_PADDING_FLAG \
       --output-dir "$RUNS/peer-$seed") 2>"$RUNS/peer-$seed.log" | tail -n 1 > "$RUNS/peer-$seed.json.tmp"
    mv "$RUNS/peer-$seed.json.tmp" "$RUNS/peer-$seed.json"
  fi
done

"$PY" - "$RUNS" "$SPLIT" $SEEDS <<'PYEOF'
import json, os, statistics, sys
runs, split, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"{'seed':<6}{'ours test acc':>14}{'ours F1':>9}{'ours epochs':>12}{'peer test acc':>15}{'peer F1':>9}{'peer epochs':>12}")
ours_rows, peer_rows = [], []
for s in seeds:
    o = json.load(open(f"{runs}/ours-{split}-{s}.json"))
    ours_rows.append((o["test_accuracy"], o["test_macro_f1"]))
    line = f"{s:<6}{o['test_accuracy']:>14.4f}{o['test_macro_f1']:>9.4f}{o['best_epoch']:>7}/{o['epochs_run']:<4}"
    path = f"{runs}/peer-{s}.json"
    if os.path.exists(path):
        p = json.load(open(path))
        peer_rows.append((p["test_accuracy"], p["test_macro_f1"]))
        line += f"{p['test_accuracy']:>15.4f}{p['test_macro_f1']:>9.4f}{int(p['best_epoch']):>7}/{int(p['epochs_run']):<4}"
    else:
        line += f"{'not run':>15}"
    print(line)
mean = lambda rows, i: statistics.mean(r[i] for r in rows)
print(f"{'mean':<6}{mean(ours_rows, 0):>14.4f}{mean(ours_rows, 1):>9.4f}{'':>12}{mean(peer_rows, 0):>15.4f}{mean(peer_rows, 1):>9.4f}"
      f"   (ours over {len(ours_rows)} seeds, peer over {len(peer_rows)})")
print(f"ours - peer: accuracy {100 * (mean(ours_rows, 0) - mean(peer_rows, 0)):+.2f} points, "
      f"macro-F1 {100 * (mean(ours_rows, 1) - mean(peer_rows, 1)):+.2f} points")
PYEOF
