#!/usr/bin/env bash
# Removes what earlier test runs that were killed or failed left behind: their
# throwaway databases (absa_<kind>_<32 hex>, each holding model artifacts of hundreds
# of MB) and their folders under the temp directory (also absa-<what>-<pid> of a
# process that is gone). A database still in use by a
# running test is skipped (DROP DATABASE without FORCE refuses it). Prints free disk.
set -euo pipefail
log() { echo "[clean] $*" >&2; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_admin() { as_postgres psql -qtAX -d postgres "$@"; }

pattern='^absa_[a-z]+_[0-9a-f]{32}$'
dropped=0
for db in $(psql_admin -c "SELECT datname FROM pg_database WHERE datname ~ '$pattern'"); do
  if psql_admin -c "DROP DATABASE \"$db\"" 2>/dev/null; then dropped=$((dropped + 1)); fi
done
tmp="${TMPDIR:-/tmp}"
removed=0
for dir in "$tmp"/absa_*_*; do
  name="$(basename "$dir")"
  [[ -d "$dir" && "$name" =~ $pattern ]] || continue
  # A folder whose database is still there belongs to a running test.
  [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" = 1 ] && continue
  rm -rf "$dir" && removed=$((removed + 1))
done
# The trainer's and scorer's tests name their folders absa-<what>-<pid>: a model each,
# up to gigabytes (the sharded-memory test's XLM-R-large-shaped one is 2.1 GB).
for dir in "$tmp"/absa-*-[0-9]*; do
  [ -d "$dir" ] || continue
  pid="${dir##*-}"
  [[ "$pid" =~ ^[0-9]+$ ]] || continue
  [ -d "/proc/$pid" ] && continue
  rm -rf "$dir" && removed=$((removed + 1))
done
log "dropped $dropped leftover test databases, removed $removed leftover folders; $(df -h --output=avail "$tmp" | tail -n1 | tr -d ' ') free under $tmp"
