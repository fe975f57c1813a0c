#!/usr/bin/env bash
# The test command: installs what is missing, starts the services, builds, runs every test.
# Two tiers: the fast one (every test but those marked `#[ignore = "slow: ..."]`), then
# the slow one (model training end to end, minutes each). `scripts/test.sh --fast` runs
# the fast tier alone; other arguments go to `cargo test` and run the fast tier only.
set -euo pipefail
FAST=0
if [ "${1:-}" = "--fast" ]; then
  FAST=1
  shift
fi
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/services.sh"
bash "$ROOT/scripts/clean-test-leftovers.sh"
# transformers cross-checks of the checkpoints we write
export ABSA_PYTHON="${ABSA_PYTHON:-$(bash "$ROOT/scripts/python-env.sh")}"
# the real helm and kubernetes-validate, for the chart's tests (tests/tests/e2e/helm_chart.rs)
eval "$(bash "$ROOT/scripts/chart-tools.sh")"
cd "$ROOT"
# Formatted (rustfmt.toml), the compile-time query data current, lint-clean before
# anything runs.
cargo fmt --all --check
bash "$ROOT/scripts/sqlx-prepare.sh" --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
started=$SECONDS
cargo test --workspace --locked --no-fail-fast "$@"
echo "[test] fast tier: $((SECONDS - started)) s"
if [ "$FAST" = 0 ] && [ "$#" = 0 ]; then
  started=$SECONDS
  # One at a time: the end-to-end tests share one binary, and two model trainings at
  # once on two cores would race the tests' deadlines.
  cargo test --workspace --locked --no-fail-fast -- --ignored --test-threads=1
  echo "[test] slow tier: $((SECONDS - started)) s"
fi
# The GPU run kit, dry (a whole run only, not one filtered by arguments): built against
# the GPU machines' CUDA libtorch, then its sequence run on the CPU (docs/gpu-kit.md).
if [ "$FAST" = 0 ] && [ "$#" = 0 ]; then
  bash "$ROOT/scripts/gpu-kit.sh" build
  OUT="$ABSA_HOME/gpu-kit-cpu" bash "$ROOT/scripts/gpu-kit.sh" run --cpu
fi
echo "[test] all: $SECONDS s"
