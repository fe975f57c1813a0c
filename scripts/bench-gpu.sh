#!/usr/bin/env bash
# Training steps of xlm-roberta-base- and -large-shaped random-weight TD-BERT models on
# one GPU in bf16 (autocast, fp32 master weights, AdamW), batch 16, length 100: prints
# samples/s, peak GPU memory (nvidia-smi) and MFU, next to the device plan's estimate.
#
# Needs a CUDA build of libtorch 2.11 (the PyPI torch==2.11.0 wheel's, laid out as in
# docker/trainer.Dockerfile) at ABSA_LIBTORCH_CUDA, and nvidia-smi. It builds into its
# own target folder so the CPU build's cache is left alone.
#   ABSA_LIBTORCH_CUDA=/opt/libtorch scripts/bench-gpu.sh
#   BENCH_DEVICE=cpu BENCH_SHAPES=tiny scripts/bench-gpu.sh     (a check without a GPU)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
if [ -n "${ABSA_LIBTORCH_CUDA:-}" ]; then
  export LIBTORCH="$ABSA_LIBTORCH_CUDA" LD_LIBRARY_PATH="$ABSA_LIBTORCH_CUDA/lib:${LD_LIBRARY_PATH:-}" CARGO_TARGET_DIR="$ABSA_HOME/target-cuda"
elif [ "${BENCH_DEVICE:-cuda}" = cuda ]; then
  echo "set ABSA_LIBTORCH_CUDA to a CUDA libtorch 2.11 (the default one, $LIBTORCH, is a CPU build)" >&2
  exit 1
fi
cargo build --release --locked -p absa-trainer --bin absa-gpu-bench
for shape in ${BENCH_SHAPES:-base large}; do
  echo "== xlm-roberta-$shape shape"
  "$CARGO_TARGET_DIR/release/absa-gpu-bench" --shape "$shape" --device "${BENCH_DEVICE:-cuda}" \
    --precision "${BENCH_PRECISION:-bf16}" --batch "${BENCH_BATCH:-16}" --seq-len "${BENCH_SEQ_LEN:-100}" --steps "${BENCH_STEPS:-30}"
done
