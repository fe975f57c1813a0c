#!/usr/bin/env bash
# The GPU run kit: everything a short loan of a GPU machine needs, prepared here.
#
#   scripts/gpu-kit.sh build        here: the trainer's binaries linked against the CUDA
#                                   libtorch 2.11 of the PyPI torch wheel (the GPU machines'
#                                   torch), stripped and packed, plus all-MiniLM-L6-v2 in bf16,
#                                   laptops and its XLM-R token lengths, into .gpu-kit/ (git-
#                                   ignored; it travels as a carried path, < 64 MiB)
#   scripts/gpu-kit.sh run          there: every check below, one JSON line each in
#                                   $OUT/gpu-kit.jsonl and the log in $OUT/gpu-kit.log
#   scripts/gpu-kit.sh run --cpu    here: the same sequence on the CPU with the default
#                                   build, small data and tiny shapes (the test command runs
#                                   it, so the kit cannot rot before the day it is needed)
#
# Checks (each line: check, pass, figures):
#   epoch        one epoch of laptops fine-tuning from the bf16-rounded MiniLM on the device
#                and on the CPU: test accuracy within 1.5 points
#   forward      the fine-tuned model's logits under bf16 autocast against fp32 on the
#                device: argmax agreement >= 0.98, largest difference <= 0.1
#   ranks        6 fp32 steps with dropout off as 1 process, 2 ranks sharing the device over
#                Gloo (fully sharded) and 1 rank over NCCL: every parameter's change within
#                1e-3 (relative L2) of the single process's
#   speed        xlm-roberta-base and -large shapes, batch 16 at length 100 and at the laptops
#                lengths (dynamic padding): ours and HF Trainer (bf16=True): samples/s, peak
#                GPU memory, MFU
#   score        the scorer's model through libtorch on the device: instances/s
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KIT="$ROOT/.gpu-kit"
TORCH_VERSION=2.11.0
# The NVIDIA wheels whose headers ATen's CUDA headers (under ProcessGroupNCCL.hpp) include
# (the runtime's, crt/ and CCCL's under it, cuBLAS, cuSPARSE, cuSOLVER, NCCL), at the
# versions torch 2.11's own requirements pin (cuda-toolkit 13.0.2, NCCL 2.28.9).
CUDA_HEADER_WHEELS="nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3 nvidia-cusparse==12.6.3.3 nvidia-cusolver==12.0.4.66 nvidia-nccl-cu13==2.28.9"
log() { echo "[gpu-kit] $*" >&2; }

build() {
  source "$ROOT/scripts/env.sh"
  local py="${PYTHON:-python3}" cuda="$ABSA_HOME/libtorch-$TORCH_VERSION-cuda"
  if [ ! -f "$cuda/lib/libtorch_cuda.so" ] || [ ! -f "$cuda/cuda-include/nccl.h" ] || [ ! -f "$cuda/cuda-include/crt/host_config.h" ]; then
    log "assembling a CUDA libtorch $TORCH_VERSION to link against, in $cuda (from the cached torch wheel)"
    rm -rf "$cuda.tmp"; mkdir -p "$cuda.tmp/lib" "$cuda.tmp/cuda-include"
    local whl; whl="$(ls "$ABSA_HOME/wheels/torch-$TORCH_VERSION-"*.whl | head -n1)"
    "$py" - "$whl" "$cuda.tmp" <<'PY'
import sys, zipfile, os, shutil
whl, dest = sys.argv[1], sys.argv[2]
keep = {"libtorch_cpu.so", "libtorch_cuda.so", "libc10.so", "libc10_cuda.so", "libtorch.so", "libtorch_nvshmem.so", "libgomp.so.1"}
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("torch/lib/") and base in keep:
            with z.open(n) as src, open(os.path.join(dest, "lib", base), "wb") as out:
                shutil.copyfileobj(src, out)
        elif n.startswith("torch/include/") and not n.endswith("/"):
            path = os.path.join(dest, "include", n[len("torch/include/"):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with z.open(n) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out)
PY
    mkdir -p "$ABSA_HOME/wheels"
    for spec in $CUDA_HEADER_WHEELS; do
      local name="${spec%%==*}" version="${spec##*==}" found
      found="$(ls "$ABSA_HOME/wheels/${name//-/_}-$version-"*.whl 2>/dev/null | head -n1 || true)"
      if [ -z "$found" ]; then
        "$py" -m pip download -q --no-deps --only-binary=:all: -d "$ABSA_HOME/wheels" "$spec" >&2
        found="$(ls "$ABSA_HOME/wheels/${name//-/_}-$version-"*.whl | head -n1)"
      fi
      # Headers only: every component's include/ folder merged into one.
      "$py" - "$found" "$cuda.tmp/cuda-include" <<'PY'
import sys, zipfile, os, shutil
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if "/include/" in n and not n.endswith("/"):
            path = os.path.join(dest, n.split("/include/", 1)[1])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with z.open(n) as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out)
PY
    done
    rm -rf "$cuda"; mv "$cuda.tmp" "$cuda"
  fi

  log "building the trainer's binaries against $cuda (target $ABSA_HOME/target-gpu-kit)"
  local cpu_target="$CARGO_TARGET_DIR"
  (
    export LIBTORCH="$cuda" CARGO_TARGET_DIR="$ABSA_HOME/target-gpu-kit" ABSA_CUDA_INCLUDE="$cuda/cuda-include"
    export LD_LIBRARY_PATH="$cuda/lib:${LD_LIBRARY_PATH:-}"
    cd "$ROOT" && cargo build --release --locked -p absa-trainer-worker -p absa-trainer --bin absa-trainer --bin absa-gpu-bench --bin absa-gpu-kit >&2
  )
  rm -rf "$KIT"; mkdir -p "$KIT/bin" "$KIT/laptops"
  for b in absa-trainer absa-gpu-bench absa-gpu-kit; do
    strip -o "$KIT/bin/$b" "$ABSA_HOME/target-gpu-kit/release/$b"
  done
  grep -q "libtorch_cuda.so" <(readelf -d "$KIT/bin/absa-trainer") || { log "absa-trainer does not link libtorch_cuda.so"; exit 1; }
  # Compressed for the trip (about a quarter); `run` unpacks them with Python's tarfile.
  tar -C "$KIT" -cJf "$KIT/bin.tar.xz" bin && rm -rf "$KIT/bin"

  # The data, prepared with the CPU build: MiniLM's 91 MB of fp32 weights do not fit the
  # 64 MiB that travel, bf16 does (both devices then start from the same rounded weights).
  (cd "$ROOT" && CARGO_TARGET_DIR="$cpu_target" cargo build --locked -p absa-trainer --bin absa-gpu-kit >&2)
  local tool="$cpu_target/debug/absa-gpu-kit" data="$ABSA_SHARED/data/semeval14_laptops"
  [ -d "$data" ] || { log "reference data not found under $ABSA_SHARED (set ABSA_SHARED)"; exit 1; }
  "$tool" round --model "$ABSA_SHARED/models/all-minilm-l6-v2" --out "$KIT/minilm-bf16" >&2
  cp "$data/train.jsonl" "$data/test.jsonl" "$KIT/laptops/"
  "$tool" lengths --tokenizer "$ABSA_SHARED/models/xlmr-tokenizer" --data "$data/train.jsonl" > "$KIT/laptops/xlmr-lengths.txt"
  local bytes; bytes="$(du -sb "$KIT" | cut -f1)"
  echo "[gpu-kit] what travels ($KIT): $(numfmt --to=iec-i "$bytes")B in all"
  (cd "$KIT" && find . -type f -printf '  %s\t%p\n' | sort -k2 | numfmt --field=1 --to=iec-i --suffix=B)
  [ "$bytes" -lt $((60 << 20)) ] || { log "the kit is over 60 MiB: it would not travel with the working tree"; exit 1; }
}

# One JSON line per check in $RESULTS: {"check", "pass", ...figures}.
record() { # record NAME PASS JSON
  python3 -c 'import json,sys; d=json.loads(sys.argv[3]) if sys.argv[3] else {}; d.pop("check", None); d={"check":sys.argv[1],"pass":sys.argv[2]=="true",**d}; print(json.dumps(d))' "$1" "$2" "$3" | tee -a "$RESULTS"
}
last_json() { grep '^{' "$1" | tail -n1; }
jq_py() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print($1)" "$2"; } # jq_py EXPR JSON

run() {
  local cpu=false
  [ "${1:-}" = "--cpu" ] && cpu=true
  OUT="${OUT:-$ROOT/.gpu-kit-out}"; mkdir -p "$OUT"
  RESULTS="$OUT/gpu-kit.jsonl"; : > "$RESULTS"
  exec > >(tee "$OUT/gpu-kit.log") 2>&1
  WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
  local work="$WORK"
  local bin dev model laptops lengths threads peer_py
  if $cpu; then
    source "$ROOT/scripts/env.sh"
    (cd "$ROOT" && cargo build --locked -p absa-trainer-worker -p absa-trainer --bin absa-trainer --bin absa-gpu-bench --bin absa-gpu-kit)
    bin="$CARGO_TARGET_DIR/debug"; dev=cpu
    # The peer needs torch and transformers: here the project's Python environment.
    peer_py="$(bash "$ROOT/scripts/python-env.sh")"
    [ -d "$KIT/minilm-bf16" ] || { log "no kit data: run scripts/gpu-kit.sh build first"; exit 1; }
    # Small: the sequence, not the figures, is what the CPU run checks.
    head -n 96 "$KIT/laptops/train.jsonl" > "$work/train.jsonl"; head -n 64 "$KIT/laptops/test.jsonl" > "$work/test.jsonl"
    laptops="$work"; threads=2
  else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$KIT/bin.tar.xz" "$work"
    bin="$work/bin"; dev=cuda; laptops="$KIT/laptops"; threads="$(nproc)"; peer_py=python3
    local torch_lib nvidia_libs
    torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
    nvidia_libs="$(python3 -c 'import os, glob, torch; site = os.path.dirname(os.path.dirname(torch.__file__)); print(":".join(sorted(set(os.path.dirname(p) for p in glob.glob(os.path.join(site, "nvidia", "**", "lib*.so*"), recursive=True)))))')"
    export LD_LIBRARY_PATH="$torch_lib:$nvidia_libs:${LD_LIBRARY_PATH:-}"
    log "torch libraries: $torch_lib"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  model="$KIT/minilm-bf16"; lengths="$KIT/laptops/xlmr-lengths.txt"
  log "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) CPUs; binaries: $bin; device: $dev"

  # 1. One epoch on the device and on the CPU, from the same bf16-rounded weights.
  local common=(--base "$model" --train "$laptops/train.jsonl" --test "$laptops/test.jsonl" --epochs 1 --lr 5e-5 --seed 42 --batch-threads 1)
  "$bin/absa-trainer" train "${common[@]}" --device "$dev" --out "$work/device" > "$work/device.log"
  "$bin/absa-trainer" train "${common[@]}" --device cpu --precision fp32 --threads "$threads" --out "$work/cpu" > "$work/cpu.log"
  local a b
  a="$(last_json "$work/device.log")"; b="$(last_json "$work/cpu.log")"
  local figures; figures="$(python3 -c '
import json, sys
d, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"device_test_accuracy": d["test_accuracy"], "cpu_test_accuracy": c["test_accuracy"], "points_apart": round(100 * abs(d["test_accuracy"] - c["test_accuracy"]), 2),
                  "device_samples_per_second": d["train_samples_per_second"], "cpu_samples_per_second": c["train_samples_per_second"]}))' "$a" "$b")"
  record epoch "$(jq_py 'str(d["points_apart"] <= 1.5).lower()' "$figures")" "$figures"

  # 2. bf16 autocast against fp32, on the fine-tuned model.
  local f; f="$("$bin/absa-gpu-kit" forward --model "$work/device/checkpoint-best" --data "$laptops/test.jsonl" --device "$dev" | tail -n1)"
  record forward "$(jq_py 'str(d["argmax_agreement"] >= 0.98 and d["max_abs_logit_difference"] <= 0.1).lower()' "$f")" "$f"

  # 3. Ranks: 1 process, 2 ranks sharing the device over Gloo (fully sharded), 1 rank over NCCL.
  mkdir -p "$work/base0"
  for x in "$model"/*; do [ "$(basename "$x")" = config.json ] || ln -s "$x" "$work/base0/"; done
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["hidden_dropout_prob"]=0.0; c["attention_probs_dropout_prob"]=0.0; json.dump(c, open(sys.argv[2], "w"))' "$model/config.json" "$work/base0/config.json"
  head -n 48 "$laptops/train.jsonl" > "$work/r-train.jsonl"; tail -n 16 "$laptops/test.jsonl" > "$work/r-val.jsonl"
  local steps=(--base "$work/base0" --train "$work/r-train.jsonl" --validation "$work/r-val.jsonl" --epochs 1 --batch-size 8 --lr 5e-5 --warmup-steps 2 --patience 10 --precision fp32 --device "$dev" --threads 1)
  "$bin/absa-trainer" train "${steps[@]}" --batch-threads 1 --out "$work/one" > /dev/null
  "$bin/absa-trainer" launch --nproc-per-node 2 --master-port 29531 -- train "${steps[@]}" --backend gloo --sharding full-shard --out "$work/gloo2" > /dev/null
  local g n=""
  g="$("$bin/absa-gpu-kit" compare "$work/gloo2/checkpoint-best" "$work/one/checkpoint-best" "$work/base0" | tail -n1)"
  if ! $cpu; then
    "$bin/absa-trainer" launch --nproc-per-node 1 --master-port 29532 -- train "${steps[@]}" --backend nccl --out "$work/nccl1" > /dev/null
    n="$("$bin/absa-gpu-kit" compare "$work/nccl1/checkpoint-best" "$work/one/checkpoint-best" "$work/base0" | tail -n1)"
  fi
  figures="$(python3 -c '
import json, sys
g = json.loads(sys.argv[1]); n = json.loads(sys.argv[2]) if sys.argv[2] else None
print(json.dumps({"gloo_2_ranks_full_shard": g, "nccl_1_rank": n}))' "$g" "$n")"
  record ranks "$(jq_py 'str(d["gloo_2_ranks_full_shard"]["relative_l2_of_change"] < 1e-3 and (d["nccl_1_rank"] is None or d["nccl_1_rank"]["relative_l2_of_change"] < 1e-3)).lower()' "$figures")" "$figures"

  # 4. Speed, ours and HF Trainer side by side on the same shapes.
  local shapes="base large" bench_steps=20 peer_device=cuda
  $cpu && { shapes=tiny; bench_steps=3; peer_device=cpu; }
  for shape in $shapes; do
    for padding in fixed dynamic; do
      local extra=()
      [ "$padding" = dynamic ] && extra=(--lengths "$lengths")
      local ours peer
      ours="$("$bin/absa-gpu-bench" --shape "$shape" --device "$dev" --batch 16 --seq-len 100 --steps "$bench_steps" "${extra[@]}" | tail -n1)"
      peer="$("$peer_py" "$ROOT/scripts/gpu-kit/hf_speed.py" --shape "$shape" --device "$peer_device" --batch 16 --seq-len 100 --steps "$bench_steps" "${extra[@]}" | tail -n1)"
      figures="$(python3 -c '
import json, sys
o, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"shape": sys.argv[3], "padding": sys.argv[4], "ours": o, "hf_trainer": p, "ours_over_hf": o["samples_per_second"] / p["samples_per_second"]}))' "$ours" "$peer" "$shape" "$padding")"
      record "speed-$shape-$padding" true "$figures"
    done
  done

  # 5. The scorer's model through libtorch on the device.
  local n_score=20000
  $cpu && n_score=500
  f="$("$bin/absa-gpu-kit" score --model "$work/device/checkpoint-best" --data "$laptops/test.jsonl" --device "$dev" --n "$n_score" | tail -n1)"
  record score true "$f"

  local failed; failed="$(grep -c '"pass": false' "$RESULTS" || true)"
  log "$(wc -l < "$RESULTS") checks, $failed failed: $RESULTS"
  [ "$failed" = 0 ]
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/gpu-kit.sh build | run [--cpu]" >&2; exit 2 ;;
esac
