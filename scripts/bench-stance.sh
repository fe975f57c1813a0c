#!/usr/bin/env bash
# Stance toward targets the text may never name, side by side: our trainer (text and
# target as the encoder's sentence pair, TD-BERT max-pooling over the target's tokens,
# and the same model pooling [CLS] instead) and the reference HF Trainer script
# (../shared/peers/hf_stance.py: sequence-pair classification over the pooled [CLS])
# fine-tune all-MiniLM-L6-v2 on ../shared/data/semeval16_stance with the same recipe
# (lr 5e-5, batch 16, warmup 100, up to 8 epochs, best epoch and early stopping
# (patience 3) on validation loss, the given validation split, max length 128) for each
# seed, and print test accuracy, macro-F1 and F_avg (mean F1 of against and favor) per
# seed and their means.
# A peer result already under the runs folder is reused (the peer takes ~16 minutes a
# seed on 2 cores); SIDES=peer runs the peer only, SIDES=ours ours only (the table then
# shows what the folder has). REUSE=1 also keeps our results already there.
#   [SIDES=both|ours|peer] [REUSE=1] scripts/bench-stance.sh [SEEDS]     SEEDS default "42 43 44"
set -euo pipefail
SEEDS="${1:-42 43 44}"
SIDES="${SIDES:-both}"
source "$(dirname "$0")/bench-setup.sh" bench-stance
STANCE="$ABSA_SHARED/data/semeval16_stance"
[ -f "$STANCE/train.jsonl" ] || { echo "stance data not found under $STANCE (set ABSA_SHARED)" >&2; exit 1; }
data=(--train "$STANCE/train.jsonl" --validation "$STANCE/validation.jsonl" --test "$STANCE/test.jsonl")
echo "[stance] CPU: $CPU" >&2
echo "[stance] flags: $FLAGS" >&2

for seed in $SEEDS; do
  if [ "$SIDES" != peer ]; then
    for pooling in max cls; do
      ours_run "$RUNS/ours-$pooling-$seed" "[stance] ours ($pooling pooling), seed $seed" \
        --base "$MODEL" "${data[@]}" --input text_target_pair --pooling "$pooling" --lr 5e-5 --seed "$seed" --max-length 128 --threads 2
    done
  fi
  if [ "$SIDES" != ours ] && [ ! -s "$RUNS/peer-$seed.json" ]; then
    echo "[stance] peer hf_stance.py, seed $seed" >&2
    (cd "$PEERS" && "$PY" hf_stance.py "${data[@]}" --model "$MODEL" --seed "$seed" --threads 2 \
       --output-dir "$RUNS/peer-$seed") 2> "$RUNS/peer-$seed.log" | tail -n 1 > "$RUNS/peer-$seed.json.tmp"
    mv "$RUNS/peer-$seed.json.tmp" "$RUNS/peer-$seed.json"
    rm -rf "$RUNS/peer-$seed"
  fi
done

"$PY" - "$RUNS" $SEEDS <<'PYEOF'
import json, os, statistics, sys
runs, seeds = sys.argv[1], sys.argv[2:]
sides = [("ours, target max-pool", "ours-max-{}.json"), ("ours, [CLS]", "ours-cls-{}.json"), ("peer HF pair [CLS]", "peer-{}.json")]
print(f"{'side':<24}{'seed':>6}{'test acc':>10}{'macro-F1':>10}{'F_avg':>8}{'epochs':>8}")
means = {}
for name, pattern in sides:
    rows = []
    for s in seeds:
        path = os.path.join(runs, pattern.format(s))
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            print(f"{name:<24}{s:>6}{'not run':>10}")
            continue
        r = json.load(open(path))
        rows.append((r["test_accuracy"], r["test_macro_f1"], r["test_f_avg"]))
        print(f"{name:<24}{s:>6}{r['test_accuracy']:>10.4f}{r['test_macro_f1']:>10.4f}{r['test_f_avg']:>8.4f}{float(r['epochs_run']):>8.0f}")
    if rows:
        means[name] = [statistics.mean(r[i] for r in rows) for i in range(3)]
        print(f"{name:<24}{'mean':>6}{means[name][0]:>10.4f}{means[name][1]:>10.4f}{means[name][2]:>8.4f}   over {len(rows)} seeds")
peer = means.get("peer HF pair [CLS]")
for name in ("ours, target max-pool", "ours, [CLS]"):
    if peer and name in means:
        gap = 100 * (means[name][2] - peer[2])
        verdict = "above the peer" if gap >= 0 else "below the peer by less than 1 point" if gap >= -1.0 else "MORE THAN 1 POINT BELOW the peer"
        print(f"{name} - peer: F_avg {gap:+.2f} points, accuracy {100 * (means[name][0] - peer[0]):+.2f}, macro-F1 {100 * (means[name][1] - peer[1]):+.2f} ({verdict})")
PYEOF
