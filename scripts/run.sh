#!/usr/bin/env bash
# Runs the whole pipeline on this machine: installs what is missing, starts Kafka and
# PostgreSQL, applies migrations, builds and (re)starts the gateway and the worker in
# the background, and prints a curl command that sends a first batch.
#
# Usage: scripts/run.sh          start (or restart) everything
#        scripts/run.sh stop     stop the gateway and the worker (then `scripts/stack.sh down`)
#
# Environment: INGEST_GATEWAY_PORT (8080), INGEST_GATEWAY_ADMIN_PORT (9080),
# INGEST_WORKER_PORT (9091), INGEST_BIN_DIR (run the ingest-gateway, ingest-worker and
# ingestctl found there, e.g. target/debug, instead of building target/release), plus
# every variable of scripts/stack.sh and of the binaries (see README).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

GATEWAY_PORT="${INGEST_GATEWAY_PORT:-8080}"
GATEWAY_ADMIN_PORT="${INGEST_GATEWAY_ADMIN_PORT:-9080}"
WORKER_PORT="${INGEST_WORKER_PORT:-9091}"
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"
BIN_DIR="$(release_dir)"

# stop_service NAME: stops the process in RUN_DIR/NAME.pid if it still is NAME.
stop_service() {
  local name="$1" pid_file="$RUN_DIR/$1.pid" pid cmdline
  [ -f "$pid_file" ] || return 0
  pid="$(cat "$pid_file")"
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || cmdline=""
  if [[ "$cmdline" == *"$name"* ]]; then
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

# start_service NAME READY_URL: starts target/release/NAME in the background, waits for READY_URL.
start_service() {
  local name="$1" ready_url="$2"
  say "starting $name (log: $LOG_DIR/$name.log)"
  setsid nohup "$BIN_DIR/$name" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
  wait_ready "$name" "$(cat "$RUN_DIR/$name.pid")" "$ready_url" "$LOG_DIR/$name.log"
}

if [ "${1:-}" = "stop" ]; then
  stop_service ingest-gateway
  stop_service ingest-worker
  exit 0
fi

[ -n "${INGEST_BIN_DIR:-}" ] || ensure_build_tools
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
scripts/stack.sh up
eval "$(scripts/stack.sh env)"
mkdir -p "$RUN_DIR" "$LOG_DIR"

if [ -z "${INGEST_BIN_DIR:-}" ]; then
  say "building release binaries"
  cargo build --locked --release -p ingest-gateway -p ingest-worker -p ingestctl
fi
say "migrating"
"$BIN_DIR/ingestctl" migrate

# A demo project, datasource and token, created once with the operator CLI. The token's
# secret is shown only once by `ingestctl token create`, so it is kept (mode 600) in
# the data dir to print again on later runs. A list is read whole before it is searched:
# piped into `grep -q`, which exits at the first match, ingestctl could fail writing the
# rest, and under pipefail the project would look missing.
ctl="$BIN_DIR/ingestctl"
projects="$("$ctl" --json project list)"
if [[ "$projects" != *'"id": "demo"'* ]]; then
  "$ctl" project create demo
fi
datasources="$("$ctl" --json datasource list demo)"
if [[ "$datasources" != *'"id": "web"'* ]]; then
  "$ctl" datasource create demo web
fi
token_file="$STACK_DIR/demo-token"
if [ ! -s "$token_file" ]; then
  secret="$("$ctl" --json token create demo --datasource web --name "scripts/run.sh demo" \
    | sed -n 's/.*"secret": *"\(ingk_[0-9a-f]*\)".*/\1/p')"
  [ -n "$secret" ] || die "could not create the demo token"
  (umask 077; printf '%s\n' "$secret" >"$token_file")
fi
DEMO_TOKEN="$(cat "$token_file")"

stop_service ingest-gateway
stop_service ingest-worker
export INGEST_GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT"
export INGEST_ADMIN_ADDR="127.0.0.1:$GATEWAY_ADMIN_PORT"
export INGEST_WORKER_ADDR="127.0.0.1:$WORKER_PORT"
start_service ingest-worker "http://127.0.0.1:$WORKER_PORT/readyz"
start_service ingest-gateway "http://127.0.0.1:$GATEWAY_ADMIN_PORT/readyz"

cat <<MSG

The pipeline is running:
  gateway  http://127.0.0.1:$GATEWAY_PORT   (log $LOG_DIR/ingest-gateway.log)
           http://127.0.0.1:$GATEWAY_ADMIN_PORT/metrics
  worker   http://127.0.0.1:$WORKER_PORT/metrics (log $LOG_DIR/ingest-worker.log)
  kafka    $KAFKA_BROKERS    postgres $DATABASE_URL

Send a first batch:

  curl -i -X POST http://127.0.0.1:$GATEWAY_PORT/v1/project/demo/datasource/web/stream/contacts \\
    -H 'Authorization: Bearer $DEMO_TOKEN' -H 'Content-Type: application/json' \\
    -d '[{"_user_id": "USER-1", "_email": "ada@example.com", "plan": "pro"}, {"_email": "no-user-id@example.com"}]'

and see it in PostgreSQL:

  psql "$DATABASE_URL" -c 'SELECT * FROM contacts'

Manage projects, datasources, limits and tokens: $ctl --help
Stop: scripts/run.sh stop && scripts/stack.sh down
MSG
