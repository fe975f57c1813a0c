#!/usr/bin/env bash
# Restarts the local PostgreSQL cluster (the one scripts/services.sh starts), for tests
# of what survives a database restart.
#
#   scripts/postgres-restart.sh [--down SECONDS]
#
# `pg_ctlcluster ... stop -m fast` (every session is disconnected at once, running
# transactions roll back), stays down SECONDS (default 0), starts it again and returns
# once port 5432 accepts connections. Every client of the server sees the restart,
# other tests included.
set -euo pipefail
log() { echo "[postgres-restart] $*" >&2; }

down=0
while [ $# -gt 0 ]; do
  case "$1" in
    --down) down="$2"; shift ;;
    *) echo "usage: $0 [--down SECONDS]" >&2; exit 2 ;;
  esac
  shift
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/5432") 2>/dev/null; }
version="$(ls /etc/postgresql | sort -V | tail -n1)"
start=$(date +%s%N)
log "stopping PostgreSQL $version"
pg_ctlcluster --skip-systemctl-redirect "$version" main stop -m fast
if port_open; then log "port 5432 still open after stopping"; exit 1; fi
sleep "$down"
log "starting PostgreSQL $version"
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 120); do port_open && break; sleep 0.5; done
port_open || { log "PostgreSQL did not open port 5432 again"; exit 1; }
log "back after $(( ($(date +%s%N) - start) / 1000000 )) ms"
