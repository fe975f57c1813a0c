#!/usr/bin/env bash
# The main job: the service end to end on this machine. Brings up Postgres and
# RabbitMQ, builds the binaries, starts the scheduler, a trainer worker and a scorer
# worker, loads laptops train as a dataset, fine-tunes all-MiniLM-L6-v2 through a
# training job, loads the laptops test texts (labels held back) as a corpus, scores it
# through a scoring job, and prints the accuracy against the held-back labels and a
# sample query of the kind BI tools run.
#   scripts/demo.sh            (DEMO_EPOCHS=3 DEMO_LR=5e-5 by default)
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

# A database and queue names of its own, so the demo never touches other work.
export ABSA_DATABASE__URL="postgres://absa:absa@127.0.0.1:5432/absa_demo"
export ABSA_AMQP__PREFIX="absa_demo"
export ABSA_MODELS_DIR="$ABSA_SHARED/models"
DEMO="$ABSA_HOME/demo"
export ABSA_WORKER__WORK_DIR="$DEMO/work" ABSA_WORKER__CACHE_DIR="$DEMO/cache"
mkdir -p "$DEMO/logs"
psql_demo() { psql -X -q -v ON_ERROR_STOP=1 "$ABSA_DATABASE__URL" "$@"; }
psql -X -q "postgres://absa:absa@127.0.0.1:5432/absa" -c "DROP DATABASE IF EXISTS absa_demo WITH (FORCE)" -c "CREATE DATABASE absa_demo"
echo "== checks"
"$bin/absa-api" migrate
for b in absa-scheduler absa-trainer absa-scorer; do "$bin/$b" check | sed "s/^/$b: /"; done

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$bin/absa-scheduler" run 2>"$DEMO/logs/scheduler.log" & pids+=($!)
"$bin/absa-trainer" work 2>"$DEMO/logs/trainer.log" & pids+=($!)
"$bin/absa-scorer" work 2>"$DEMO/logs/scorer.log" & pids+=($!)
echo "== services: scheduler, trainer worker, scorer worker running (logs in $DEMO/logs)"

# JSONL -> CSV for COPY (the HTTP upload API will do this; here straight into Postgres).
python3 - "$DATA" "$DEMO" <<'PY'
import csv, json, sys
data, out = sys.argv[1], sys.argv[2]
rows = lambda f: [json.loads(l) for l in open(f"{data}/{f}") if l.strip()]
with open(f"{out}/train.csv", "w", newline="") as f:
    w = csv.writer(f)
    for i, r in enumerate(rows("train.jsonl"), 1):
        w.writerow([i, r["text"], r["aspect"], r["start"], r["end"], r["label"]])
with open(f"{out}/corpus.csv", "w", newline="") as f, open(f"{out}/labels.csv", "w", newline="") as g:
    w, lw = csv.writer(f), csv.writer(g)
    for i, r in enumerate(rows("test.jsonl")):
        w.writerow([i, f"laptops-test-{i}", r["text"], r["aspect"], r["start"], r["end"]])
        lw.writerow([i, r["label"]])
PY
psql_demo <<SQL
INSERT INTO teams (id, name) VALUES ('00000000-0000-0000-0000-00000000de00'::uuid, 'demo');
INSERT INTO datasets (id, team_id, name) VALUES ('00000000-0000-0000-0000-0000000da7a0', '00000000-0000-0000-0000-00000000de00', 'laptops-train');
CREATE TEMP TABLE t (line int, text text, aspect text, s int, e int, label text);
\copy t FROM '$DEMO/train.csv' CSV
INSERT INTO dataset_rows (dataset_id, line, text, aspect, span_start, span_end, label)
  SELECT '00000000-0000-0000-0000-0000000da7a0', line, text, aspect, s, e, label FROM t;
INSERT INTO corpora (id, team_id, name) VALUES ('00000000-0000-0000-0000-0000000c0a90', '00000000-0000-0000-0000-00000000de00', 'laptops-test');
CREATE TEMP TABLE d (seq bigint, external_id text, text text, aspect text, s int, e int);
\copy d FROM '$DEMO/corpus.csv' CSV
INSERT INTO documents (corpus_id, seq, external_id, text, aspect, span_start, span_end)
  SELECT '00000000-0000-0000-0000-0000000c0a90', seq, external_id, text, aspect, s, e FROM d;
CREATE TABLE demo_held_back_labels (seq bigint PRIMARY KEY, label text);
\copy demo_held_back_labels FROM '$DEMO/labels.csv' CSV
SQL
echo "== loaded: $(psql_demo -tA -c "SELECT count(*) FROM dataset_rows") labelled rows, $(psql_demo -tA -c "SELECT count(*) FROM documents") documents"

# Submitting = a job row plus a notification, as jobs::submit does.
submit() {
  psql_demo -tA -c "WITH j AS (INSERT INTO jobs (id, team_id, kind, parameters) VALUES (gen_random_uuid(), '00000000-0000-0000-0000-00000000de00', '$1', '$2'::jsonb) RETURNING id, kind)
                   SELECT id FROM j, pg_notify('absa_jobs', j.kind)" | head -1
}
wait_job() {
  local job="$1" state progress line last=""
  while true; do
    IFS='|' read -r state progress < <(psql_demo -tA -c "SELECT state, round(progress::numeric, 2) FROM jobs WHERE id = '$job'")
    line="   $state $(awk "BEGIN{print $progress*100}")%"
    [ "$line" != "$last" ] && echo "$line" && last="$line"
    case "$state" in
      succeeded) return 0 ;;
      failed|cancelled) psql_demo -c "SELECT last_error FROM jobs WHERE id = '$job'"; return 1 ;;
    esac
    sleep 2
  done
}

echo "== training job: all-MiniLM-L6-v2 on laptops train, $EPOCHS epochs, lr $LR (validation split from train)"
started=$(date +%s)
train_job=$(submit train "{\"dataset_id\": \"00000000-0000-0000-0000-0000000da7a0\", \"base_model\": \"all-minilm-l6-v2\", \"hyperparameters\": {\"epochs\": $EPOCHS, \"learning_rate\": $LR}}")
wait_job "$train_job"
echo "   done in $(( $(date +%s) - started )) s"
psql_demo -c "SELECT epoch, round(train_loss::numeric, 4) AS train_loss, round(validation_loss::numeric, 4) AS val_loss,
                     round(accuracy::numeric, 4) AS val_accuracy, round(macro_f1::numeric, 4) AS val_macro_f1
              FROM training_metrics WHERE job_id = '$train_job' ORDER BY epoch"
version=$(psql_demo -tA -c "SELECT id FROM model_versions WHERE training_job_id = '$train_job'")
echo "   model version $version; ONNX export and checkpoint stored as artifacts:"
psql_demo -c "SELECT kind, pg_size_pretty(size_bytes) AS size, left(sha256, 12) AS sha256 FROM artifacts WHERE job_id = '$train_job' ORDER BY kind"

echo "== scoring job: the laptops test texts (labels held back), shards of 200"
started=$(date +%s)
score_job=$(submit score "{\"corpus_id\": \"00000000-0000-0000-0000-0000000c0a90\", \"model_version_id\": \"$version\", \"shard_size\": 200}")
wait_job "$score_job"
echo "   done in $(( $(date +%s) - started )) s: $(psql_demo -tA -c "SELECT count(*) FROM predictions WHERE job_id = '$score_job'") predictions"
echo "== accuracy against the held-back labels"
psql_demo -c "SELECT count(*) AS scored, round(avg((p.label = l.label)::int)::numeric, 4) AS accuracy
              FROM predictions p JOIN demo_held_back_labels l USING (seq) WHERE p.job_id = '$score_job'"
echo "== a BI query: sentiment per aspect (most mentioned aspects)"
psql_demo -c "SELECT aspect, count(*) AS mentions,
                     count(*) FILTER (WHERE label = 'positive') AS positive,
                     count(*) FILTER (WHERE label = 'negative') AS negative,
                     count(*) FILTER (WHERE label = 'neutral') AS neutral,
                     round(avg(confidence)::numeric, 3) AS mean_confidence
              FROM predictions WHERE job_id = '$score_job'
              GROUP BY aspect ORDER BY mentions DESC LIMIT 8"
