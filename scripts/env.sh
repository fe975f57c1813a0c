# Sourced by the other scripts: native libraries, a cached build folder, test addresses.
# Installs what is missing (idempotent), so a fresh machine needs nothing by hand.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ABSA_HOME="${ABSA_HOME:-$HOME/.cache/absa}"
eval "$(bash "$ROOT/scripts/native.sh")"
# One build folder outside the clone: CI's fresh clones reuse compiled dependencies,
# and torch-sys sees the same LIBTORCH every time (so it does not rebuild).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ABSA_HOME/target}"
export ABSA_SHARED="${ABSA_SHARED:-$(cd "$ROOT/.." && pwd)/shared}"
