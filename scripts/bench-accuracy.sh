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
# OURS_PRECISIONS lists our arithmetic (default "auto": bf16 where the CPU has AMX or
# AVX-512 BF16, else fp32); "bf16 fp32" trains each seed both ways and prints the gap.
# The CPU model and flags are printed first.
#   [ACCURACY_SPLIT=own] [ACCURACY_PADDING=fixed] [PEER_MISSING=skip] [REUSE=1]
#   [OURS_PRECISIONS="bf16 fp32"] scripts/bench-accuracy.sh [SEEDS]
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
OURS_PRECISIONS="${OURS_PRECISIONS:-auto}"
echo "[accuracy] CPU: $CPU; flags: $FLAGS" >&2

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
  for precision in $OURS_PRECISIONS; do
    ours_run "$RUNS/ours-$SPLIT-$precision-$seed" "[accuracy] ours ($precision), seed $seed ($SPLIT split)" \
      --base "$MODEL" "${ours_data[@]}" --test "$DATA/test.jsonl" --lr 5e-5 --seed "$seed" --threads 2 --padding "$PADDING" --precision "$precision"
  done
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

"$PY" - "$RUNS" "$SPLIT" "$CPU; flags: $FLAGS" "$OURS_PRECISIONS" $SEEDS <<'PYEOF'
import json, os, statistics, sys
runs, split, cpu, precisions, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5:]
print(f"CPU: {cpu}")
ours = {p: [json.load(open(f"{runs}/ours-{split}-{p}-{s}.json")) for s in seeds] for p in precisions}
peer = {s: json.load(open(f"{runs}/peer-{s}.json")) for s in seeds if os.path.exists(f"{runs}/peer-{s}.json")}
names = [f"ours {p} ({ours[p][0].get('precision', 'fp32')})" for p in precisions]
print(f"{'seed':<6}" + "".join(f"{n + ' acc / F1 / epochs':>40}" for n in names) + f"{'peer acc / F1 / epochs':>32}")
for i, s in enumerate(seeds):
    line = f"{s:<6}" + "".join(f"{o[i]['test_accuracy']:>22.4f} / {o[i]['test_macro_f1']:.4f} / {o[i]['best_epoch']}/{o[i]['epochs_run']}" for o in ours.values())
    p = peer.get(s)
    line += f"{p['test_accuracy']:>14.4f} / {p['test_macro_f1']:.4f} / {int(p['best_epoch'])}/{int(p['epochs_run'])}" if p else f"{'not run':>32}"
    print(line)
mean = lambda rows, key: statistics.mean(r[key] for r in rows)
for n, (p, rows) in zip(names, ours.items()):
    print(f"mean {n}: accuracy {mean(rows, 'test_accuracy'):.4f}, macro-F1 {mean(rows, 'test_macro_f1'):.4f} over {len(rows)} seeds")
if peer:
    print(f"mean peer: accuracy {mean(peer.values(), 'test_accuracy'):.4f}, macro-F1 {mean(peer.values(), 'test_macro_f1'):.4f} over {len(peer)} seeds")
    for n, rows in zip(names, ours.values()):
        print(f"{n} - peer: accuracy {100 * (mean(rows, 'test_accuracy') - mean(peer.values(), 'test_accuracy')):+.2f} points, "
              f"macro-F1 {100 * (mean(rows, 'test_macro_f1') - mean(peer.values(), 'test_macro_f1')):+.2f} points")
if "bf16" in ours and "fp32" in ours:
    b, f = ours["bf16"], ours["fp32"]
    print(f"bf16 - fp32: accuracy {100 * (mean(b, 'test_accuracy') - mean(f, 'test_accuracy')):+.2f} points, "
          f"macro-F1 {100 * (mean(b, 'test_macro_f1') - mean(f, 'test_macro_f1')):+.2f} points")
PYEOF
