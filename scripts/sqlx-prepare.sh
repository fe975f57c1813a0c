#!/usr/bin/env bash
# Writes .sqlx/, the query descriptions that let `sqlx::query!` check queries against
# the schema at compile time without a database (env.sh sets SQLX_OFFLINE=true, and the
# Dockerfiles build from .sqlx too). Run it after changing a checked query or adding a
# migration, and commit .sqlx with the change.
#   bash scripts/sqlx-prepare.sh           rewrite .sqlx
#   bash scripts/sqlx-prepare.sh --check   fail if .sqlx is not what the queries and the
#                                          migrations make now (scripts/test.sh runs it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"

# The crates whose sources hold `sqlx::query!`-family macros.
CRATES=(absa-store)

admin="${ABSA_TEST_DATABASE_URL:-postgres://absa:absa@127.0.0.1:5432/absa}"
db="absa_sqlx_prepare_$$"
url="${admin%/*}/$db"
cleanup() { psql -q "$admin" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; [ -n "${out:-}" ] && [ "$out" != "$ROOT/.sqlx" ] && rm -rf "$out"; }
trap cleanup EXIT
psql -q -v ON_ERROR_STOP=1 "$admin" -c "CREATE DATABASE $db" >/dev/null
# The schema the service migrates to (each migration in its own transaction, as sqlx does).
for up in migrations/*.up.sql; do
    psql -q -1 -v ON_ERROR_STOP=1 "$url" -f "$up" >/dev/null
done

if [ "${1:-}" = "--check" ]; then
    out="$(mktemp -d)"
else
    out="$ROOT/.sqlx"
    mkdir -p "$out"
    rm -f "$out"/query-*.json
fi
# The macros write a description for each query they check online; touching the
# sources makes cargo expand them again (it does not watch these variables).
for crate in "${CRATES[@]}"; do
    dir="$(cargo metadata --no-deps --format-version 1 | python3 -c "import json,sys; print([p['manifest_path'] for p in json.load(sys.stdin)['packages'] if p['name']=='$crate'][0].rsplit('/',1)[0])")"
    find "$dir/src" -name '*.rs' -exec touch {} +
done
packages=()
for crate in "${CRATES[@]}"; do packages+=(-p "$crate"); done
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="$url" cargo check -q "${packages[@]}" --lib

if [ "${1:-}" = "--check" ]; then
    if ! diff -r -q "$ROOT/.sqlx" "$out" >/dev/null 2>&1; then
        diff -r "$ROOT/.sqlx" "$out" | head -40 >&2 || true
        echo "[sqlx] .sqlx is out of date: run bash scripts/sqlx-prepare.sh and commit .sqlx" >&2
        exit 1
    fi
    echo "[sqlx] .sqlx matches the queries and the migrations"
else
    echo "[sqlx] wrote $(ls "$out" | wc -l) query descriptions to .sqlx"
fi
