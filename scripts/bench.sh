#!/usr/bin/env bash
# The benchmarks: one command from a fresh clone. Starts a private, empty stack (Kafka and
# PostgreSQL on ports of their own, so a running dev stack is left alone), builds release
# binaries, runs every scenario and rewrites the generated section of BENCHMARKS.md.
#
# Usage: scripts/bench.sh [--quick] [--keep]
#        scripts/bench.sh --scale [ARGS of scripts/bench-scale.sh]
#   --quick  short scenarios (about 15 minutes instead of 37), for trying changes
#   --keep   leave the benchmark stack running afterwards
#   --scale  events at scale instead (scripts/bench-scale.sh, about 1 h 40 min): the cost of
#            draining 2M events into a table already holding 0, 10M and 30M, for v4 and
#            v7 ids, with production and small PostgreSQL memory settings, beside raw
#            COPY at each size; then the sustained rate held for 30 minutes
#
# Every figure comes from the realistic workload (ingest-loadgen's default `--shape
# realistic`: every body distinct in ids and values, users repeating with a skew, contacts
# a mix of new users, partial updates with null removals and deletes).
#
# Scenarios, in order (results as JSON in target/bench/results/, logs in target/bench/logs/):
#   producer.json          bare rdkafka producer, the gateway's settings, the envelopes the
#                          gateway would publish for the same events: the gateway's ceiling
#   gateway_max.json       the gateway alone (no worker), events in batches of 100, closed
#                          loop at max; the gateway's CPU per event
#   gateway_b10.json, gateway_b1.json   the same with 10 and 1 event(s) per request
#   copy.json              raw COPY of the same rows into the same table: the worker's ceiling
#   drain.json             one worker draining the events backlog the gateway runs left
#   contacts_gateway.json  the gateway alone, contacts in batches of 100 (and deletes)
#   contacts_ceiling.json  the best set-based upsert of the same contact writes, outside
#                          the worker: the contacts ceiling
#   contacts_drain.json    one worker draining the contacts backlog
#   sustained_events.json  the highest open-loop event rate at which gateway + worker keep
#                          accept → visible p99 under 1 s (climbing from a low rate, then
#                          bisection, then a confirmation run of 2 minutes), CPU per
#                          process at that rate
#   sustained_contacts.json  the same for contacts
#   soak.json              an eighth of the gateway's peak for 10 minutes, gateway and worker
#                          memory watched, on an emptied events table
#
# Environment: BENCH_CONNECTIONS (64), BENCH_PARTITIONS (8), BENCH_STACK_DIR
# (.stack-bench), BENCH_KAFKA_PORT (29092), BENCH_PG_PORT (56432), BENCH_GATEWAY_PORT
# (28080), BENCH_GATEWAY_ADMIN_PORT (28081), BENCH_WORKER_PORT (29091), plus any INGEST_*
# variable of the binaries.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

if [ "${1:-}" = --scale ]; then
  shift
  exec "$(dirname "${BASH_SOURCE[0]}")/bench-scale.sh" --sustained 30m "$@"
fi

quick=false
keep=false
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    --keep) keep=true ;;
    *) die "unknown argument: $arg (usage: scripts/bench.sh [--quick] [--keep])" ;;
  esac
done

if $quick; then
  CEILING_SECS=10; MAX_SECS=15; STEP_SECS=15; CONFIRM_SECS=30; SEARCH_STEPS=4; SOAK_SECS=60
  COPY_ROWS=200000
else
  CEILING_SECS=20; MAX_SECS=30; STEP_SECS=30; CONFIRM_SECS=120; SEARCH_STEPS=6; SOAK_SECS=600
  COPY_ROWS=1000000
fi
CONNECTIONS="${BENCH_CONNECTIONS:-64}"

private_stack_env "${BENCH_STACK_DIR:-$REPO_ROOT/.stack-bench}" "${BENCH_KAFKA_PORT:-29092}" \
  "${BENCH_PG_PORT:-56432}" "${BENCH_PARTITIONS:-8}"
GATEWAY_PORT="${BENCH_GATEWAY_PORT:-28080}"
GATEWAY_ADMIN_PORT="${BENCH_GATEWAY_ADMIN_PORT:-28081}"
WORKER_PORT="${BENCH_WORKER_PORT:-29091}"
RESULTS="$REPO_ROOT/target/bench/results"
LOGS="$REPO_ROOT/target/bench/logs"
BIN=target/release
started_at=$(date +%s)

cleanup() {
  stop_services
  if ! $keep; then
    private_stack_down
  fi
}
trap cleanup EXIT

ensure_build_tools
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

say "building release binaries"
cargo build --locked --release -p ingest-gateway -p ingest-worker -p ingestctl -p ingest-loadgen

say "starting an empty benchmark stack in $INGEST_STACK_DIR"
private_stack_up
mkdir -p "$RESULTS" "$LOGS"
rm -f "$RESULTS"/*.json

"$BIN/ingestctl" project create bench >/dev/null
"$BIN/ingestctl" datasource create bench web >/dev/null
"$BIN/ingestctl" datasource set-limit bench web all 1000000000 >/dev/null
INGEST_LOADGEN_TOKEN="$(create_token bench web bench)"
export INGEST_LOADGEN_TOKEN

export INGEST_GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT"
export INGEST_ADMIN_ADDR="127.0.0.1:$GATEWAY_ADMIN_PORT"
export INGEST_WORKER_ADDR="127.0.0.1:$WORKER_PORT"
export INGEST_LOG_FORMAT="${INGEST_LOG_FORMAT:-json}"

# start NAME PORT: starts target/release/NAME, waits for /readyz on PORT (its operations
# listener), sets $STARTED_PID.
start() {
  start_release "$1" "http://127.0.0.1:$2/readyz" "$LOGS/$1.log"
}

json_field() { # json_field FILE KEY: a top-level number from a result file
  sed -n "s/^  \"$2\": \([0-9.e+-]*\),\{0,1\}\$/\1/p" "$1" | head -n1
}

load=("$BIN/ingest-loadgen" http --url "http://127.0.0.1:$GATEWAY_PORT" --project bench
  --datasource web --connections "$CONNECTIONS")
metrics="http://127.0.0.1:$WORKER_PORT/metrics"
kafka_pid="$(head -n1 "$INGEST_STACK_DIR/run/kafka.pid")"
postgres_pid="$(head -n1 "$INGEST_STACK_DIR/run/postgres.pid")"

say "1/11 bare-producer ceiling (${CEILING_SECS}s)"
"$BIN/ingest-loadgen" producer-ceiling --concurrency "$CONNECTIONS" \
  --duration "${CEILING_SECS}s" --json-out "$RESULTS/producer.json"

start ingest-gateway "$GATEWAY_ADMIN_PORT"; gateway_pid=$STARTED_PID
watch_stack=(--watch "gateway=$gateway_pid" --watch "kafka=$kafka_pid" --watch "postgres=$postgres_pid")
for size in 100 10 1; do
  out="$RESULTS/gateway_b$size.json"; [ "$size" = 100 ] && out="$RESULTS/gateway_max.json"
  say "2/11 gateway alone at max, events in batches of $size, closed loop (${MAX_SECS}s)"
  "${load[@]}" --batch-size "$size" --duration "${MAX_SECS}s" "${watch_stack[@]}" --json-out "$out"
done
peak="$(json_field "$RESULTS/gateway_max.json" accepted_items_per_sec)"
eighth="$(awk -v p="$peak" 'BEGIN { printf "%d", p / 8 }')"
[ "$eighth" -gt 0 ] || die "the gateway accepted nothing at max"

say "3/11 raw COPY ceiling ($COPY_ROWS rows)"
"$BIN/ingest-loadgen" copy-ceiling --rows "$COPY_ROWS" --cleanup --json-out "$RESULTS/copy.json"

say "4/11 one worker draining the events backlog"
start ingest-worker "$WORKER_PORT"; worker_pid=$STARTED_PID
"$BIN/ingest-loadgen" drain --metrics-url "$metrics" --topic ingest.events --project bench \
  --json-out "$RESULTS/drain.json"
drain_rate="$(json_field "$RESULTS/drain.json" steady_rows_per_sec)"
stop_release "$worker_pid"

say "5/11 gateway alone at max, contacts in batches of 100 (${MAX_SECS}s)"
"${load[@]}" --kind contacts --duration "${MAX_SECS}s" "${watch_stack[@]}" \
  --json-out "$RESULTS/contacts_gateway.json"

say "6/11 contacts ceiling: set-based upsert of the same writes"
"$BIN/ingest-loadgen" contacts-ceiling --kind contacts --rows "$COPY_ROWS" --methods unnest,copy-merge --cleanup \
  --json-out "$RESULTS/contacts_ceiling.json"

say "7/11 one worker draining the contacts backlog"
start ingest-worker "$WORKER_PORT"; worker_pid=$STARTED_PID
"$BIN/ingest-loadgen" drain --metrics-url "$metrics" --topic ingest.contacts --project bench \
  --json-out "$RESULTS/contacts_drain.json"
contacts_drain_rate="$(json_field "$RESULTS/contacts_drain.json" steady_rows_per_sec)"
watch_all=("${watch_stack[@]}" --watch "worker=$worker_pid")

search=("$BIN/ingest-loadgen" rate-search --url "http://127.0.0.1:$GATEWAY_PORT" --project bench
  --datasource web --connections "$CONNECTIONS" --step "${STEP_SECS}s"
  --confirm "${CONFIRM_SECS}s" --max-steps "$SEARCH_STEPS" "${watch_all[@]}")
# The search climbs from 35% of what the worker drains alone by a quarter a step, and
# goes no higher than that drain rate (it shares the machine with the gateway then).
# The rows so far are not needed any more: disk space (the table stays partitioned as it was).
psql "$DATABASE_URL" -qc "TRUNCATE events, event_ids" -c "CHECKPOINT"
say "8/11 sustained pipeline rate, events (steps of ${STEP_SECS}s, confirmation ${CONFIRM_SECS}s)"
"${search[@]}" --start-rate "$(awk -v r="$drain_rate" 'BEGIN { printf "%d", r * 0.35 }')" \
  --max-rate "$(awk -v r="$drain_rate" -v p="$peak" 'BEGIN { m = r < p ? r : p; printf "%d", m }')" \
  --json-out "$RESULTS/sustained_events.json"

psql "$DATABASE_URL" -qc "TRUNCATE events, event_ids" -c "CHECKPOINT"
say "9/11 sustained pipeline rate, contacts"
"${search[@]}" --kind contacts \
  --start-rate "$(awk -v r="$contacts_drain_rate" 'BEGIN { printf "%d", r * 0.35 }')" \
  --max-rate "$(awk -v r="$contacts_drain_rate" 'BEGIN { printf "%d", r }')" \
  --json-out "$RESULTS/sustained_contacts.json"

psql "$DATABASE_URL" -qc "TRUNCATE events, event_ids" -c "CHECKPOINT" # the rows so far: disk space
say "10/11 soak: $eighth items/s for ${SOAK_SECS}s, memory watched"
"${load[@]}" --rate "$eighth" --duration "${SOAK_SECS}s" --e2e-database-url "$DATABASE_URL" \
  --watch "gateway=$gateway_pid" --watch "worker=$worker_pid" --watch-every 10s \
  --json-out "$RESULTS/soak.json"

say "11/11 report"
pg_version="$(psql --version | awk '{print $3}')"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml | head -n1)"
mode=full; $quick && mode=quick
command="scripts/bench.sh"; $quick && command="scripts/bench.sh --quick"
cat >"$RESULTS/meta.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%MZ)", "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')",
 "kafka": "$kafka_version", "postgres": "$pg_version", "command": "$command", "mode": "$mode"}
JSON
"$BIN/ingest-loadgen" report --results "$RESULTS" --out BENCHMARKS.md
say "done in $(( $(date +%s) - started_at )) s; results in $RESULTS, summary in BENCHMARKS.md"
