#!/usr/bin/env bash
# The main job: the service end to end on this machine, driven through its HTTP API
# with the `absa` CLI. Brings up Postgres and RabbitMQ, builds the binaries, starts
# the API, the scheduler, a trainer worker and a scorer worker; an admin key is
# bootstrapped, an MLOps key uploads laptops train and fine-tunes all-MiniLM-L6-v2,
# promoting the version to `production`; an analyst key uploads the laptops test texts
# (labels held back) as a corpus, scores it with `production`, exports the predictions,
# and the demo prints the accuracy against the held-back labels and a BI query run as
# a read-only BI login.
#   scripts/demo.sh            (DEMO_EPOCHS=3 DEMO_LR=5e-5 DEMO_PORT=18080 by default)
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/services.sh"
cd "$ROOT"
cargo build --workspace --release --locked --bins
bin="$CARGO_TARGET_DIR/release"
DATA="$ABSA_SHARED/data/semeval14_laptops"
[ -f "$DATA/train.jsonl" ] && [ -d "$ABSA_SHARED/models/all-minilm-l6-v2" ] \
  || { echo "reference data not found under $ABSA_SHARED (set ABSA_SHARED to the shared folder)" >&2; exit 1; }
EPOCHS="${DEMO_EPOCHS:-3}"
LR="${DEMO_LR:-5e-5}"
PORT="${DEMO_PORT:-18080}"

# A database, queue names and port of its own, so the demo never touches other work.
export ABSA_DATABASE__URL="postgres://absa:absa@127.0.0.1:5432/absa_demo"
export ABSA_AMQP__PREFIX="absa_demo"
export ABSA_MODELS_DIR="$ABSA_SHARED/models"
export ABSA_HTTP__BIND="127.0.0.1:$PORT"
export ABSA_API_URL="http://127.0.0.1:$PORT"
DEMO="$ABSA_HOME/demo"
export ABSA_WORKER__WORK_DIR="$DEMO/work" ABSA_WORKER__CACHE_DIR="$DEMO/cache"
rm -rf "$DEMO/work" "$DEMO/cache"
mkdir -p "$DEMO/logs"
psql -X -q "postgres://absa:absa@127.0.0.1:5432/absa" -c "DROP DATABASE IF EXISTS absa_demo WITH (FORCE)" -c "CREATE DATABASE absa_demo"
psql -X -q "postgres://absa:absa@127.0.0.1:5432/absa" -c "SELECT absa_drop_bi_login('bi_absa_demo')" >/dev/null
echo "== checks"
"$bin/absa-api" migrate
for b in absa-scheduler absa-trainer absa-scorer; do "$bin/$b" check | sed "s/^/$b: /"; done

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bin/absa-api" serve 2>"$DEMO/logs/api.log" & pids+=($!)
"$bin/absa-scheduler" run 2>"$DEMO/logs/scheduler.log" & pids+=($!)
"$bin/absa-trainer" work 2>"$DEMO/logs/trainer.log" & pids+=($!)
"$bin/absa-scorer" work 2>"$DEMO/logs/scorer.log" & pids+=($!)
for _ in $(seq 100); do curl -fs "$ABSA_API_URL/readyz" >/dev/null && break; sleep 0.1; done
echo "== services: api on $ABSA_API_URL, scheduler, trainer worker, scorer worker (logs in $DEMO/logs)"

absa() { "$bin/absa" "$@"; }
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
ADMIN=$("$bin/absa-api" create-key --team demo)
MLOPS=$(ABSA_API_KEY=$ADMIN absa -o json keys create --name demo-mlops --role mlops | field key)
ANALYST=$(ABSA_API_KEY=$ADMIN absa -o json keys create --name demo-analyst --role analyst | field key)
echo "== keys: admin (bootstrapped with absa-api create-key), mlops and analyst (absa keys create)"

echo "== mlops: absa datasets upload train.jsonl --name laptops-train"
export ABSA_API_KEY=$MLOPS
absa datasets upload "$DATA/train.jsonl" --name laptops-train

echo "== mlops: absa jobs train all-MiniLM-L6-v2, $EPOCHS epochs, lr $LR (validation split from train), promote to production if better"
started=$(date +%s)
TRAIN_JOB=$(absa -o json jobs train --dataset laptops-train --base-model all-minilm-l6-v2 --lr "$LR" --epochs "$EPOCHS" --promote production | field id)
absa jobs watch "$TRAIN_JOB"
echo "   done in $(( $(date +%s) - started )) s"
absa jobs metrics "$TRAIN_JOB"
absa aliases list

echo "== analyst: absa corpora upload (laptops test texts, labels held back)"
export ABSA_API_KEY=$ANALYST
python3 - "$DATA/test.jsonl" "$DEMO/corpus.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for i, line in enumerate(l for l in f if l.strip()):
        r = json.loads(line)
        out.write(json.dumps({"id": f"laptops-test-{i}", "text": r["text"], "aspect": r["aspect"], "start": r["start"], "end": r["end"]}) + "\n")
PY
absa corpora upload "$DEMO/corpus.jsonl" --name laptops-test

echo "== analyst: absa jobs score with the production alias, shards of 200"
started=$(date +%s)
SCORE_JOB=$(absa -o json jobs score --corpus laptops-test --alias production --shard-size 200 | field id)
absa jobs watch "$SCORE_JOB"
echo "   done in $(( $(date +%s) - started )) s"
absa jobs export "$SCORE_JOB" "$DEMO/predictions.csv"

echo "== accuracy against the held-back labels"
python3 - "$DATA/test.jsonl" "$DEMO/predictions.csv" <<'PY'
import csv, json, sys
gold = [json.loads(l)["label"] for l in open(sys.argv[1]) if l.strip()]
rows = list(csv.DictReader(open(sys.argv[2])))
right = sum(gold[int(r["external_id"].rsplit("-", 1)[1])] == r["label"] for r in rows)
print(f"   {len(rows)} predictions, accuracy {right / len(rows):.4f}")
PY

echo "== a BI query, run as a read-only BI login of the team (it sees only the BI views)"
echo demo-bi-password | ABSA_API_KEY=$ADMIN absa bi-logins create bi_absa_demo >/dev/null
psql -X "postgres://bi_absa_demo:demo-bi-password@127.0.0.1:5432/absa_demo" -c "
  SELECT aspect, count(*) AS mentions,
         count(*) FILTER (WHERE label = 'positive') AS positive,
         count(*) FILTER (WHERE label = 'negative') AS negative,
         count(*) FILTER (WHERE label = 'neutral') AS neutral,
         round(avg(confidence)::numeric, 3) AS mean_confidence
  FROM bi_sentiment GROUP BY aspect ORDER BY mentions DESC LIMIT 8"
psql -X -q "postgres://bi_absa_demo:demo-bi-password@127.0.0.1:5432/absa_demo" -c "SELECT count(*) FROM predictions" 2>&1 | sed 's/^/   base table as the BI login: /' || true
