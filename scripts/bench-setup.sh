# Sourced by the benchmarks that run our trainer beside ../shared/peers on laptops:
# the environment, the peer's Python, the reference data, a release build of the
# trainer (or the binary BENCH_TRAINER names: a saved build, so a rebuild during a
# long run changes nothing), and a runs folder ($ABSA_BENCH_DIR, else $ABSA_HOME/$1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
PY="$(bash "$ROOT/scripts/python-env.sh")"
DATA="$ABSA_SHARED/data/semeval14_laptops"
MODEL="$ABSA_SHARED/models/all-minilm-l6-v2"
PEERS="$ABSA_SHARED/peers"
[ -d "$DATA" ] && [ -d "$MODEL" ] && [ -d "$PEERS" ] || { echo "reference data not found under $ABSA_SHARED (set ABSA_SHARED)" >&2; exit 1; }
# The CPU every figure is measured on: its model and the flags that decide the kernels.
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs"
FLAGS="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_int8)$' | tr '\n' ' ')"
RUNS="${ABSA_BENCH_DIR:-$ABSA_HOME/$1}"
mkdir -p "$RUNS"
cd "$ROOT"
if [ -n "${BENCH_TRAINER:-}" ]; then
  TRAINER="$BENCH_TRAINER"
else
  cargo build --release --locked -p absa-trainer-worker --bin absa-trainer >&2
  TRAINER="$CARGO_TARGET_DIR/release/absa-trainer"
fi

# ours_run OUT LABEL TRAINER-ARGS...: our trainer's JSON summary into OUT.json (written
# beside, then moved into place; its log in OUT.log), or, with REUSE=1, the OUT.json an
# earlier run left.
ours_run() {
  local out="$1" label="$2"; shift 2
  if [ "${REUSE:-0}" = 1 ] && [ -s "$out.json" ]; then
    echo "$label: kept from an earlier run" >&2
    return 0
  fi
  echo "$label" >&2
  rm -rf "$out"
  "$TRAINER" train --out "$out" "$@" > "$out.json.tmp" 2> "$out.log"
  mv "$out.json.tmp" "$out.json"
}
