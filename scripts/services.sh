#!/usr/bin/env bash
# Brings up what the tests and the demo need: PostgreSQL and RabbitMQ (installed from
# Debian packages when absent, started when down), the project's role and database;
# headless Chromium for the dashboard's end-to-end test.
# Idempotent.
set -euo pipefail
log() { echo "[services] $*" >&2; }

DB_NAME="${ABSA_DB_NAME:-absa}"
DB_USER="${ABSA_DB_USER:-absa}"
DB_PASSWORD="${ABSA_DB_PASSWORD:-absa}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # wait_port PORT NAME SECONDS
  for _ in $(seq "$3"); do port_open "$1" && return 0; sleep 1; done
  log "$2 did not open port $1 within $3 s"; return 1
}
apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The README's quickstarts (run by tests/tests/e2e/quickstarts.rs) use curl, jq and psql.
for tool in curl jq; do
  command -v "$tool" >/dev/null || { log "installing $tool"; apt_install "$tool"; }
done

# --- PostgreSQL
if ! command -v pg_ctlcluster >/dev/null; then
  log "installing PostgreSQL from Debian packages"; apt_install postgresql
fi
if ! port_open 5432; then
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL 60
fi
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_admin() { as_postgres psql -v ON_ERROR_STOP=1 -qtAX -d postgres "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" != 1 ]; then
  log "creating role $DB_USER"
  psql_admin -c "CREATE ROLE \"$DB_USER\" LOGIN CREATEDB PASSWORD '$DB_PASSWORD'"
fi
# Least privilege: the service role makes no roles itself (BI logins go through the
# functions provision-postgres.sql installs), also where an older set-up gave it CREATEROLE.
psql_admin -c "ALTER ROLE \"$DB_USER\" NOCREATEROLE"
# The tests' BI logins are other roles: dropping a test database WITH (FORCE) must be
# able to end their sessions.
psql_admin -c "GRANT pg_signal_backend TO \"$DB_USER\""
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
  log "creating database $DB_NAME"
  psql_admin -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\""
fi
# BI logins reach no database but the service's: pg_hba.conf is the only place Postgres
# can refuse a role per database (every role may CONNECT where PUBLIC may). Locally the
# other databases are postgres and template1; a production cluster allows +absa_bi on
# the service's database and rejects it on all others (docs/deploying.md).
hba="$(as_postgres psql -qtAX -d postgres -c "SHOW hba_file")"
if ! grep -q "absa: BI logins" "$hba"; then
  log "pg_hba.conf: BI logins reach only the service's databases"
  { printf '# absa: BI logins reach only the service'"'"'s databases (scripts/services.sh)\n'
    printf 'local postgres,template1 +absa_bi reject\nhost postgres,template1 +absa_bi all reject\n'
    cat "$hba"; } > "$hba.absa" && cat "$hba.absa" > "$hba" && rm -f "$hba.absa"
  psql_admin -c "SELECT pg_reload_conf()" >/dev/null
fi
# The superuser's part (scripts/provision-postgres.sql): in template1, so every database
# created from now on has it, and in the service's existing databases.
provision() { as_postgres psql -v ON_ERROR_STOP=1 -qtAX -v service_role="$DB_USER" -d "$1" -f - <"$(dirname "$0")/provision-postgres.sql" >/dev/null; }
provision template1
for db in $(psql_admin -c "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn AND datdba = (SELECT oid FROM pg_roles WHERE rolname = '$DB_USER')"); do
  provision "$db"
done

# --- RabbitMQ
if ! command -v rabbitmq-server >/dev/null; then
  log "installing RabbitMQ from Debian packages"; apt_install rabbitmq-server
fi
if ! port_open 5672; then
  log "starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_port 5672 RabbitMQ 120
fi
log "PostgreSQL and RabbitMQ are up"

# --- Chromium (headless, for the dashboard's end-to-end test)
if [ ! -x /usr/bin/chromium ]; then
  log "installing Chromium from Debian packages"; apt_install chromium
fi
