#!/usr/bin/env bash
# Creates (once) the Python environment with torch and transformers that the
# cross-checks against Hugging Face and the reference benchmarks use, and prints its
# interpreter's path. Idempotent: an environment that imports everything is kept.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ABSA_HOME="${ABSA_HOME:-$HOME/.cache/absa}"
VENV="$ABSA_HOME/peer-venv"
if ! "$VENV/bin/python" -c "import torch, transformers, safetensors, onnxruntime, openapi_python_client" 2>/dev/null; then
  echo "[python] creating or completing $VENV (torch, transformers; ~2.7 GB download the first time)" >&2
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/scripts/requirements-python.txt" >&2
fi
echo "$VENV/bin/python"
