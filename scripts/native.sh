#!/usr/bin/env bash
# Installs the native libraries the trainer (libtorch) and scorer (ONNX Runtime) load,
# from PyPI wheels, into one fixed folder so torch-sys never sees LIBTORCH move.
# Idempotent: a library already in place is left alone. Prints the env to export.
set -euo pipefail

ABSA_HOME="${ABSA_HOME:-$HOME/.cache/absa}"
TORCH_VERSION=2.11.0          # tch 0.24 expects exactly this libtorch (the GPU machines' torch)
CUDART_VERSION=13.0.96        # libtorch_cpu.so NEEDs libcudart.so.13 ...
CUPTI_VERSION=13.0.85         # ... and libcupti.so.13, even on CPU
ORT_VERSION=1.31.1            # ort 2.0.0-rc.15 targets ONNX Runtime 1.31
LIBTORCH="$ABSA_HOME/libtorch-$TORCH_VERSION"
ORT_DIR="$ABSA_HOME/onnxruntime-$ORT_VERSION"
PY="${PYTHON:-python3}"

log() { echo "[native] $*" >&2; }

WHEELS="$ABSA_HOME/wheels"     # kept: the GPU run kit takes libtorch_cuda from the same wheel
wheel() { # wheel WHEEL_SPEC: the path of that wheel, downloaded (no dependencies) once
  local spec="$1" name="${1%%==*}" version="${1##*==}" found
  found="$(ls "$WHEELS/${name//-/_}-$version-"*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$found" ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$spec" >&2
    found="$(ls "$WHEELS/${name//-/_}-$version-"*.whl | head -n1)"
  fi
  echo "$found"
}
fetch() { # fetch WHEEL_SPEC DEST: unzip one wheel (cached in $WHEELS) into DEST
  local whl
  whl="$(wheel "$1")"
  mkdir -p "$2"
  (cd "$2" && "$PY" -m zipfile -e "$whl" .)
}

mkdir -p "$ABSA_HOME"

# c10d's Gloo backend is inside libtorch_cpu.so, but the wheel lacks Gloo's headers,
# which ProcessGroupGloo.hpp includes (the trainer's csrc/distributed.cpp needs them).
if [ ! -f /usr/include/gloo/config.h ]; then
  log "installing Gloo's headers (Debian's libgloo-dev)"
  [ "$(id -u)" = 0 ] || { log "libgloo-dev is missing: run 'apt-get install libgloo-dev' as root"; exit 1; }
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgloo-dev >/dev/null
fi

# tcmalloc: the trainer runs on it where the machine has it (trainer/src/allocator.rs).
if [ ! -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] && [ "$(uname -m)" = x86_64 ] && command -v apt-get > /dev/null; then
  if [ "$(id -u)" = 0 ]; then
    log "installing tcmalloc (Debian's libtcmalloc-minimal4)"
    # Optional: without it the trainer runs on glibc's malloc, slower but the same.
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; } \
      || log "could not install libtcmalloc-minimal4: the trainer will use glibc's malloc"
  else
    log "libtcmalloc-minimal4 is missing: the trainer will use glibc's malloc (slower; 'apt-get install libtcmalloc-minimal4' as root)"
  fi
fi

if [ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ]; then
  log "assembling libtorch $TORCH_VERSION (CPU) in $LIBTORCH (~540 MB download)"
  stage="$ABSA_HOME/stage-torch"; rm -rf "$stage" "$LIBTORCH"
  fetch "torch==$TORCH_VERSION" "$stage/torch"
  fetch "nvidia-cuda-runtime==$CUDART_VERSION" "$stage/cudart"
  fetch "nvidia-cuda-cupti==$CUPTI_VERSION" "$stage/cupti"
  mkdir -p "$LIBTORCH.tmp/lib"
  mv "$stage/torch/torch/include" "$LIBTORCH.tmp/include"
  for f in libtorch_cpu.so libc10.so libtorch.so; do mv "$stage/torch/torch/lib/$f" "$LIBTORCH.tmp/lib/"; done
  find "$stage/torch/torch/lib" "$stage/torch/torch.libs" -name 'libgomp*.so*' -exec cp {} "$LIBTORCH.tmp/lib/" \; 2>/dev/null || true
  find "$stage/cudart" -name 'libcudart.so.13*' -exec cp {} "$LIBTORCH.tmp/lib/libcudart.so.13" \;
  find "$stage/cupti" -name 'libcupti.so.13*' -exec cp {} "$LIBTORCH.tmp/lib/libcupti.so.13" \;
  # libtorch_cpu.so may NEED a hashed libgomp name from torch.libs; keep every name it asks for.
  echo "$TORCH_VERSION" > "$LIBTORCH.tmp/build-version"
  rm -rf "$stage"
  mv "$LIBTORCH.tmp" "$LIBTORCH"
fi

if [ ! -f "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ]; then
  log "installing ONNX Runtime $ORT_VERSION in $ORT_DIR"
  stage="$ABSA_HOME/stage-ort"; rm -rf "$stage"
  fetch "onnxruntime==$ORT_VERSION" "$stage"
  mkdir -p "$ORT_DIR"
  cp "$stage"/onnxruntime/capi/libonnxruntime.so.* "$ORT_DIR/"
  rm -rf "$stage"
fi

cat <<ENV
export LIBTORCH="$LIBTORCH"
export LIBTORCH_BYPASS_VERSION_CHECK=0
export LD_LIBRARY_PATH="$LIBTORCH/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export ORT_DYLIB_PATH="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
ENV
