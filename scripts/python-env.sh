#!/usr/bin/env bash
# Creates (once) the Python environment with torch and transformers that the
# cross-checks against Hugging Face and the reference benchmarks use, and prints its
# interpreter's path. Idempotent: an environment that imports everything is kept.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ABSA_HOME="${ABSA_HOME:-$HOME/.cache/absa}"
VENV="$ABSA_HOME/peer-venv"
if ! "$VENV/bin/python" -c "import torch, transformers, safetensors, onnxruntime" 2>/dev/null; then
  echo "[python] creating $VENV (torch, transformers; ~2.7 GB download)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/scripts/requirements-python.txt" >&2
fi
echo "$VENV/bin/python"
