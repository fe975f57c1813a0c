#!/usr/bin/env bash
# The main job: brings up the services, builds the binaries, applies migrations and
# runs each binary's check against the real services.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/services.sh"
cd "$ROOT"
cargo build --workspace --release --locked --bins
bin="$CARGO_TARGET_DIR/release"
echo "== absa-api migrate";      "$bin/absa-api" migrate
echo "== absa-api check";        "$bin/absa-api" check
echo "== absa-scheduler check";  "$bin/absa-scheduler" check
echo "== absa-trainer check";    "$bin/absa-trainer" check
echo "== absa-scorer check";     "$bin/absa-scorer" check
