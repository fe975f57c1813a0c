#!/usr/bin/env bash
# The test command: installs what is missing, starts the services, builds, runs every test.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/services.sh"
bash "$ROOT/scripts/clean-test-leftovers.sh"
# transformers cross-checks of the checkpoints we write
export ABSA_PYTHON="${ABSA_PYTHON:-$(bash "$ROOT/scripts/python-env.sh")}"
cd "$ROOT"
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast "$@"
