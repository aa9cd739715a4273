#!/usr/bin/env bash
# Events at scale (`scripts/bench.sh --scale` runs this): does the cost of storing an
# event grow with what is already stored?
#
# Usage: scripts/bench-scale.sh [--sizes LIST] [--ids LIST] [--memory LIST] [--backlog N]
#                               [--sustained DURATION] [--no-curves] [--out DIR] [--keep]
#   --sizes   events already stored when each drain starts (default 0,10000000,30000000)
#   --ids     v4 (random UUIDs, what Segment's SDKs send) and/or v7 (time-ordered, what
#             this project's clients send); default v4,v7
#   --memory  production (scripts/stack.sh's default PostgreSQL settings) and/or small
#             (the same with 256 MB of shared buffers); default production,small
#   --backlog events in each drained backlog (default 2000000)
#   --sustained  after the curves, on a new stack (production memory, v4 ids): the highest
#             open-loop rate with accept → visible p99 under 1 s (a minute at the start rate
#             not judged, to warm the caches; then four steps of SCALE_STEP, 2 minutes,
#             from SCALE_START_RATE, 15,000 events/s, up by a fifth until one fails, then
#             bisection), then a confirmation run of DURATION (e.g. 30m) that must hold
#             the limit in every minute; gateway and worker RSS every 10 s. About
#             DURATION + 15 minutes. (Steps of 30 s passed rates that a longer run did
#             not hold: a backlog growing by a few hundred events a second takes minutes
#             to show.)
#   --no-curves  only the sustained run
#   --out     results directory (default target/bench/scale)
# INGEST_BIN_DIR: run the release binaries in that directory instead of building
# target/release (those of another commit, for a before/after comparison).
#
# For each memory setting and id kind, on a new empty stack: for each size, the table is
# filled up to that size by `ingest-loadgen prefill` (the worker's own persistence in
# large id-sorted batches: the same rows and deduplication state a worker leaves), a
# backlog of realistic events is posted through the gateway (open loop, worker stopped),
# the raw-COPY ceiling is measured at that size (`copy-ceiling --rollback`: the same rows
# into the same project and datasource, rolled back), then a worker drains the backlog and
# its rate and the CPU of the worker and of PostgreSQL per 1,000 events are recorded.
# Duration: about 25 minutes per (memory, ids) pair with the default sizes.
#
# Results: DIR/<memory>-<ids>-<size>-{drain,copy,prefill,load}.json, DIR/sustained.json,
# logs in DIR/logs; then BENCHMARKS.md's "Events at scale" section is rewritten from them
# (`ingest-loadgen scale-report`; SCALE_BEFORE=DIR shows an earlier run's beside them,
# SCALE_NO_REPORT=1 leaves BENCHMARKS.md alone).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

invocation="scripts/bench-scale.sh $*"
sizes=0,10000000,30000000
id_kinds=v4,v7
memories=production,small
backlog=2000000
out="$REPO_ROOT/target/bench/scale"
keep=false
sustained=""
curves=true
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --ids) id_kinds="$2"; shift 2 ;;
    --memory) memories="$2"; shift 2 ;;
    --backlog) backlog="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --sustained) sustained="$2"; shift 2 ;;
    --no-curves) curves=false; shift ;;
    --keep) keep=true; shift ;;
    *) die "unknown argument: $1 (see the usage at the top of scripts/bench-scale.sh)" ;;
  esac
done

private_stack_env "${BENCH_STACK_DIR:-$REPO_ROOT/.stack-bench}" "${BENCH_KAFKA_PORT:-29092}" \
  "${BENCH_PG_PORT:-56432}" "${BENCH_PARTITIONS:-8}"
GATEWAY_PORT="${BENCH_GATEWAY_PORT:-28080}"
GATEWAY_ADMIN_PORT="${BENCH_GATEWAY_ADMIN_PORT:-28081}"
WORKER_PORT="${BENCH_WORKER_PORT:-29091}"
BIN="$(release_dir)"
LOGS="$out/logs"
export INGEST_GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT"
export INGEST_ADMIN_ADDR="127.0.0.1:$GATEWAY_ADMIN_PORT"
export INGEST_WORKER_ADDR="127.0.0.1:$WORKER_PORT"
export INGEST_LOG_FORMAT="${INGEST_LOG_FORMAT:-json}"
started_at=$(date +%s)

cleanup() {
  stop_services
  $keep || private_stack_down
}
trap cleanup EXIT

ensure_build_tools
if [ -z "${INGEST_BIN_DIR:-}" ]; then
  say "building release binaries"
  cargo build --locked --release -p ingest-gateway -p ingest-worker -p ingestctl -p ingest-loadgen
fi
mkdir -p "$out" "$LOGS"

IFS=, read -r -a size_list <<<"$sizes"
IFS=, read -r -a id_list <<<"$id_kinds"
IFS=, read -r -a memory_list <<<"$memories"
$curves || memory_list=()

# new_stack MEMORY: stops the services, starts an empty stack with that PostgreSQL memory
# setting, a project and a token, and the gateway.
new_stack() {
  stop_services
  export INGEST_PG_MEMORY="$1"
  private_stack_up
  "$BIN/ingestctl" project create bench >/dev/null
  "$BIN/ingestctl" datasource create bench web >/dev/null
  "$BIN/ingestctl" datasource set-limit bench web all 1000000000 >/dev/null
  INGEST_LOADGEN_TOKEN="$(create_token bench web bench)"
  export INGEST_LOADGEN_TOKEN
  postgres_pid="$(head -n1 "$INGEST_STACK_DIR/run/postgres.pid")"
  kafka_pid="$(head -n1 "$INGEST_STACK_DIR/run/kafka.pid")"
  start_release ingest-gateway "http://127.0.0.1:$GATEWAY_ADMIN_PORT/readyz" "$LOGS/gateway.log"
  gateway_pid=$STARTED_PID
}

for memory in "${memory_list[@]}"; do
  for ids in "${id_list[@]}"; do
    say "scale: PostgreSQL memory $memory, $ids ids: a new empty stack"
    new_stack "$memory"
    stored=0
    for size in "${size_list[@]}"; do
      run="$out/$memory-$ids-$size"
      if [ "$size" -gt "$stored" ]; then
        say "scale [$memory $ids]: filling the table up to $size events"
        "$BIN/ingest-loadgen" prefill --project bench --datasource web --ids "$ids" \
          --events "$((size - stored))" --json-out "$run-prefill.json" 2>>"$LOGS/prefill.log"
        stored=$size
      fi
      psql "$DATABASE_URL" -qc "VACUUM ANALYZE events, event_ids" -c "CHECKPOINT"
      say "scale [$memory $ids]: a backlog of $backlog events through the gateway"
      "$BIN/ingest-loadgen" http --url "http://127.0.0.1:$GATEWAY_PORT" --project bench \
        --datasource web --connections 64 --ids "$ids" --rate 100000 --warmup 0s \
        --duration "$((backlog / 100000))s" --quiet --json-out "$run-load.json"
      say "scale [$memory $ids]: raw COPY ceiling at $stored events stored"
      "$BIN/ingest-loadgen" copy-ceiling --project bench --datasource web --ids "$ids" \
        --rows 1000000 --rollback --json-out "$run-copy.json"
      psql "$DATABASE_URL" -qc "VACUUM events" -c "CHECKPOINT"
      say "scale [$memory $ids]: one worker draining the backlog at $stored events stored"
      # What the load left in the topic, read before the worker starts and consumes it.
      pending="$("$BIN/ingest-loadgen" lag --group "${INGEST_WORKER_GROUP:-ingest-worker}" \
        --topic ingest.events)"
      start_release ingest-worker "http://127.0.0.1:$WORKER_PORT/readyz" "$LOGS/worker.log"
      worker_pid=$STARTED_PID
      "$BIN/ingest-loadgen" drain --metrics-url "http://127.0.0.1:$WORKER_PORT/metrics" \
        --topic ingest.events --backlog "$pending" --project bench \
        --watch "worker=$worker_pid" --watch "postgres=$postgres_pid" \
        --json-out "$run-drain.json"
      stop_release "$worker_pid"
      stored=$((stored + backlog))
      psql "$DATABASE_URL" -tAc "SELECT 'scale: ' || count(*) || ' events stored; event_ids '
        || (SELECT pg_size_pretty(sum(pg_total_relation_size(relid)))
                   || ' with ' || pg_size_pretty(sum(pg_indexes_size(relid))) || ' of indexes'
              FROM pg_partition_tree('event_ids'))
        || '; events ' || (SELECT pg_size_pretty(sum(pg_total_relation_size(relid)))
                   || ' with ' || pg_size_pretty(sum(pg_indexes_size(relid))) || ' of indexes'
              FROM pg_partition_tree('events'))
        FROM events" | tee "$run-size.txt" >&2
    done
  done
done
if [ -n "$sustained" ]; then
  say "scale: sustained rate, then $sustained at it, on a new empty stack"
  new_stack production
  start_release ingest-worker "http://127.0.0.1:$WORKER_PORT/readyz" "$LOGS/worker.log"
  worker_pid=$STARTED_PID
  "$BIN/ingest-loadgen" rate-search --url "http://127.0.0.1:$GATEWAY_PORT" --project bench \
    --datasource web --connections 64 --warm-up-run 60s --step "${SCALE_STEP:-2m}" --confirm "$sustained" \
    --max-steps 4 --confirmations 1 \
    --start-rate "${SCALE_START_RATE:-15000}" --max-rate 60000 --growth 1.2 \
    --watch "gateway=$gateway_pid" --watch "worker=$worker_pid" --watch "kafka=$kafka_pid" \
    --watch "postgres=$postgres_pid" --json-out "$out/sustained.json"
  psql "$DATABASE_URL" -tAc "SELECT 'scale: ' || count(*) || ' events stored after the sustained run'
    FROM events" | tee "$out/sustained-size.txt" >&2
fi
cat >"$out/meta.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%MZ)", "commit": "${SCALE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')}",
 "command": "$invocation"}
JSON
if [ -z "${SCALE_NO_REPORT:-}" ]; then
  "$BIN/ingest-loadgen" scale-report --results "$out" ${SCALE_BEFORE:+--before "$SCALE_BEFORE"} --out BENCHMARKS.md
fi
say "scale: done in $(( $(date +%s) - started_at )) s; results in $out"
