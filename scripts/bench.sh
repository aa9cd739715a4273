#!/usr/bin/env bash
# The benchmarks: one command from a fresh clone. Starts a private, empty stack (Kafka and
# PostgreSQL on ports of their own, so a running dev stack is left alone), builds release
# binaries, runs every scenario and rewrites the generated section of BENCHMARKS.md.
#
# Usage: scripts/bench.sh [--quick] [--keep]
#   --quick  short scenarios (about 4 minutes instead of about 20), for trying changes
#   --keep   leave the benchmark stack running afterwards
#
# Scenarios, in order (results as JSON in target/bench/results/, logs in target/bench/logs/):
#   producer.json     bare rdkafka producer, the gateway's settings: the gateway's ceiling
#   gateway_max.json  the gateway alone (no worker), closed loop at max
#   copy.json         raw COPY of the same rows into the same table: the worker's ceiling
#   drain.json        one worker draining the backlog the gateway run left in Kafka
#   pipeline.json     gateway + worker, open loop at half the gateway's peak, end-to-end
#                     latency sampled
#   pipeline_quarter.json  the same at a quarter of the peak (a reference point)
#   soak.json         an eighth of the peak for 10 minutes, gateway and worker memory
#                     watched, on an emptied events table: a rate the pipeline keeps up
#                     with on 2 cores, whose rows fit on a small disk (~10 GB; at half the
#                     peak the backlog alone would grow by ~30 GB in 10 minutes)
#
# Environment: BENCH_CONNECTIONS (64), BENCH_PARTITIONS (8), BENCH_STACK_DIR
# (.stack-bench), BENCH_KAFKA_PORT (29092), BENCH_PG_PORT (56432), BENCH_GATEWAY_PORT
# (28080), BENCH_GATEWAY_ADMIN_PORT (28081), BENCH_WORKER_PORT (29091), plus any INGEST_*
# variable of the binaries.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

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
  CEILING_SECS=10; MAX_SECS=15; PIPELINE_SECS=30; SOAK_SECS=60; COPY_ROWS=200000
else
  CEILING_SECS=20; MAX_SECS=30; PIPELINE_SECS=120; SOAK_SECS=600; COPY_ROWS=1000000
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

say "1/6 bare-producer ceiling (${CEILING_SECS}s)"
"$BIN/ingest-loadgen" producer-ceiling --concurrency "$CONNECTIONS" \
  --duration "${CEILING_SECS}s" --json-out "$RESULTS/producer.json"

say "2/6 gateway alone at max, closed loop (${MAX_SECS}s)"
start ingest-gateway "$GATEWAY_ADMIN_PORT"; gateway_pid=$STARTED_PID
"${load[@]}" --duration "${MAX_SECS}s" --json-out "$RESULTS/gateway_max.json"
peak="$(json_field "$RESULTS/gateway_max.json" accepted_items_per_sec)"
half="$(awk -v p="$peak" 'BEGIN { printf "%d", p / 2 }')"
quarter="$(awk -v p="$peak" 'BEGIN { printf "%d", p / 4 }')"
eighth="$(awk -v p="$peak" 'BEGIN { printf "%d", p / 8 }')"
[ "$half" -gt 0 ] || die "the gateway accepted nothing at max"

say "3/6 raw COPY ceiling ($COPY_ROWS rows)"
"$BIN/ingest-loadgen" copy-ceiling --rows "$COPY_ROWS" --cleanup --json-out "$RESULTS/copy.json"

say "4/6 one worker draining the backlog"
start ingest-worker "$WORKER_PORT"; worker_pid=$STARTED_PID
"$BIN/ingest-loadgen" drain --metrics-url "http://127.0.0.1:$WORKER_PORT/metrics" \
  --topic ingest.events --project bench --json-out "$RESULTS/drain.json"

say "5/6 pipeline at half the gateway's peak: $half items/s for ${PIPELINE_SECS}s"
"${load[@]}" --rate "$half" --duration "${PIPELINE_SECS}s" --e2e-database-url "$DATABASE_URL" \
  --watch "gateway=$gateway_pid" --watch "worker=$worker_pid" --json-out "$RESULTS/pipeline.json"

say "5b/6 pipeline at a quarter of the gateway's peak: $quarter items/s for ${PIPELINE_SECS}s"
# Let the worker catch up first, so that this run starts without a backlog.
"$BIN/ingest-loadgen" drain --metrics-url "http://127.0.0.1:$WORKER_PORT/metrics" \
  --topic ingest.events --project bench --json-out /dev/null
"${load[@]}" --rate "$quarter" --duration "${PIPELINE_SECS}s" --e2e-database-url "$DATABASE_URL" \
  --watch "gateway=$gateway_pid" --watch "worker=$worker_pid" --json-out "$RESULTS/pipeline_quarter.json"

"$BIN/ingest-loadgen" drain --metrics-url "http://127.0.0.1:$WORKER_PORT/metrics" \
  --topic ingest.events --project bench --json-out /dev/null
psql "$DATABASE_URL" -qc "TRUNCATE events, event_ids" -c "CHECKPOINT" # the rows so far: disk space
say "6/6 soak: $eighth items/s for ${SOAK_SECS}s, memory watched"
"${load[@]}" --rate "$eighth" --duration "${SOAK_SECS}s" --e2e-database-url "$DATABASE_URL" \
  --watch "gateway=$gateway_pid" --watch "worker=$worker_pid" --watch-every 10s \
  --json-out "$RESULTS/soak.json"

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
