#!/usr/bin/env bash
# Restarts the local RabbitMQ broker (the one scripts/services.sh runs with
# `rabbitmq-server -detached`), for tests of what survives a broker restart.
#
#   scripts/rabbitmq-restart.sh [--full] [--down SECONDS]
#
# Default: `rabbitmqctl stop_app` then `start_app`: the broker closes every client
# connection and stops listening, the Erlang node stays up (a restart in ~2-5 s).
# --full: stops the whole node (`rabbitmqctl stop`) and starts it again as
# services.sh does (slower). --down N: stay down N seconds before starting again.
# Durable queues and persistent messages survive both. Returns once port 5672 accepts
# connections again. Every client of the broker sees the restart, other tests included.
set -euo pipefail
log() { echo "[rabbitmq-restart] $*" >&2; }

full=0
down=0
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --down) down="$2"; shift ;;
    *) echo "usage: $0 [--full] [--down SECONDS]" >&2; exit 2 ;;
  esac
  shift
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/5672") 2>/dev/null; }

start=$(date +%s%N)
if [ "$full" = 1 ]; then
  log "stopping the node"
  rabbitmqctl -q stop
  for _ in $(seq 60); do port_open || break; sleep 0.5; done
else
  log "stopping the broker application"
  rabbitmqctl -q stop_app
fi
if port_open; then log "port 5672 still open after stopping"; exit 1; fi
sleep "$down"
if [ "$full" = 1 ]; then
  log "starting the node"
  rabbitmq-server -detached
else
  log "starting the broker application"
  rabbitmqctl -q start_app
fi
for _ in $(seq 240); do port_open && break; sleep 0.5; done
port_open || { log "RabbitMQ did not open port 5672 again"; exit 1; }
rabbitmqctl -q await_startup
log "back after $(( ($(date +%s%N) - start) / 1000000 )) ms"
