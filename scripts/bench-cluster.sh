#!/usr/bin/env bash
# The gateway against a three-node Kafka cluster vs a single node, in one run: one
# command from a fresh clone. Builds release binaries once, then for each Kafka mode in
# turn (one node, then three combined KRaft nodes with replication factor 3 and
# min.insync.replicas 2; see scripts/stack.sh) starts a private, empty stack (Kafka and
# PostgreSQL on ports of their own, so a running dev stack and the other benchmarks'
# stacks are left alone), runs the same scenarios with the same binaries and workload,
# stops the gateway and purges the stack; then rewrites BENCHMARKS.md's cluster section
# (between its own markers; the rest of the file is left alone).
#
# Usage: scripts/bench-cluster.sh [--quick]
#   --quick  5-10 s scenarios (about 2½ minutes without the build instead of about 4),
#            for trying a change
#
# Scenarios, per mode (results as JSON in target/bench/cluster/nodes-N/; the gateway's
# log and the stack's logs (Kafka, PostgreSQL), saved before each purge, in
# target/bench/cluster-logs/):
#   producer.json     bare rdkafka producer, the gateway's settings, to a scratch topic
#                     with the events topic's partitions and replication: the ceiling
#   gateway_max.json  the gateway alone (no worker), closed loop at max, 64 connections,
#                     batches of 100 events of ~300 bytes over 100,000 users (every id
#                     and payload distinct)
#   fixed.json        the gateway at a fixed offered rate, open loop: CLUSTER_RATE_SHARE
#                     (0.1) of the single node's max, the same rate for both modes (the
#                     three nodes' max is far lower on 2 cores: a quarter of the single
#                     node's was already past it)
#   publish.json      the gateway's ingest_gateway_publish_duration_seconds (sum, count)
#                     over the fixed-rate run, from its admin /metrics before and after
#   load.json         the machine's 1-minute load average after the mode's runs (this
#                     benchmark's own processes included): above ~3 on 2 cores, something
#                     else competed for the CPU
#
# Environment: CLUSTER_RATE_SHARE (0.1), BENCH_CONNECTIONS (64), CLUSTER_PARTITIONS (8),
# CLUSTER_STACK_DIR (.stack-bench-cluster), CLUSTER_KAFKA_PORT (24092: a cluster's nodes
# on 24092, 24102, 24112, their controllers on 24093, 24103, 24113), CLUSTER_PG_PORT
# (25432), CLUSTER_GATEWAY_PORT (24080), CLUSTER_ADMIN_PORT (24081: the gateway's
# INGEST_ADMIN_ADDR), plus any INGEST_* variable of the gateway. The defaults are below
# Linux's ephemeral range (32768-60999), where a busy machine's outgoing connections can
# hold a port a node then fails to bind.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

quick=false
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    *) die "unknown argument: $arg (usage: scripts/bench-cluster.sh [--quick])" ;;
  esac
done

# CEILING_WARMUP: freshly started Kafka JVMs are slow until their JIT has compiled the
# hot paths (three of them on 2 cores: the first 10 s ran at a third of the later rate),
# so the ceiling's warm-up, which also warms the brokers for the gateway's runs, is long.
if $quick; then
  CEILING_WARMUP=10s; CEILING_SECS=5; MAX_SECS=10; FIXED_SECS=10; WARMUP=3s; SETTLE=2
else
  CEILING_WARMUP=15s; CEILING_SECS=20; MAX_SECS=20; FIXED_SECS=20; WARMUP=5s; SETTLE=5
fi
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
RATE_SHARE="${CLUSTER_RATE_SHARE:-0.1}"
PARTITIONS="${CLUSTER_PARTITIONS:-8}"
STACK="${CLUSTER_STACK_DIR:-$REPO_ROOT/.stack-bench-cluster}"
KAFKA_PORT="${CLUSTER_KAFKA_PORT:-24092}"
PG_PORT="${CLUSTER_PG_PORT:-25432}"
GATEWAY_PORT="${CLUSTER_GATEWAY_PORT:-24080}"
ADMIN_PORT="${CLUSTER_ADMIN_PORT:-24081}"
RESULTS="$REPO_ROOT/target/bench/cluster"
LOGS="$REPO_ROOT/target/bench/cluster-logs"
BIN=target/release
ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
started_at=$(date +%s)

# Set before anything can fail, so that the trap finds the stack.
private_stack_env "$STACK" "$KAFKA_PORT" "$PG_PORT" "$PARTITIONS" 1

# save_stack_logs: copies the stack's logs (Kafka nodes, PostgreSQL) to
# $LOGS/stack-<mode>/ before a purge deletes them.
save_stack_logs() {
  [ -d "$INGEST_STACK_DIR/logs" ] || return 0
  rm -rf "$LOGS/stack-$INGEST_KAFKA_NODES"
  mkdir -p "$LOGS"
  cp -r "$INGEST_STACK_DIR/logs" "$LOGS/stack-$INGEST_KAFKA_NODES" 2>/dev/null || true
}

cleanup() {
  stop_services
  save_stack_logs
  # Stops every Kafka node of either mode (stack.sh acts on the pid files of the data
  # dir) and PostgreSQL, and deletes the data.
  private_stack_down
}
trap cleanup EXIT

ensure_build_tools
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

say "building release binaries"
cargo build --locked --release -p ingest-gateway -p ingestctl -p ingest-loadgen

mkdir -p "$RESULTS" "$LOGS"
rm -rf "$RESULTS"/nodes-* "$RESULTS"/meta.json

export INGEST_GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT"
export INGEST_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT"
export INGEST_LOG_FORMAT="${INGEST_LOG_FORMAT:-json}"

json_field() { # json_field FILE KEY: a top-level number from a result file
  sed -n "s/^  \"$2\": \([0-9.e+-]*\),\{0,1\}\$/\1/p" "$1" | head -n1
}

# publish_histogram: "SUM COUNT" of the gateway's ingest_gateway_publish_duration_seconds
# (seconds, batches) as its admin /metrics says now.
publish_histogram() {
  curl -fsS -m 5 "$ADMIN_URL/metrics" | awk '
    $1 ~ /^ingest_gateway_publish_duration_seconds_sum($|\{)/ { s += $2 }
    $1 ~ /^ingest_gateway_publish_duration_seconds_count($|\{)/ { c += $2 }
    END { printf "%.9f %d\n", s, c }'
}

workload=(--kind events --batch-size 100 --item-bytes 300 --users 100000)
rate=""

# run_mode NODES: the scenarios against an emptied stack with NODES Kafka nodes, into
# $RESULTS/nodes-NODES/; stops the gateway and purges the stack afterwards.
run_mode() {
  local nodes="$1" dir="$RESULTS/nodes-$1" gateway_pid before after
  mkdir -p "$dir"
  private_stack_env "$STACK" "$KAFKA_PORT" "$PG_PORT" "$PARTITIONS" "$nodes"
  say "[$nodes node(s)] starting an empty stack in $INGEST_STACK_DIR"
  private_stack_up
  say "[$nodes node(s)] KAFKA_BROKERS=$KAFKA_BROKERS"

  "$BIN/ingestctl" project create bench >/dev/null
  "$BIN/ingestctl" datasource create bench web >/dev/null
  "$BIN/ingestctl" datasource set-limit bench web all 1000000000 >/dev/null
  INGEST_LOADGEN_TOKEN="$(create_token bench web bench)"
  export INGEST_LOADGEN_TOKEN

  say "[$nodes node(s)] bare-producer ceiling (${CEILING_WARMUP} warm-up, ${CEILING_SECS}s)"
  "$BIN/ingest-loadgen" producer-ceiling "${workload[@]}" --concurrency "$CONNECTIONS" \
    --warmup "$CEILING_WARMUP" --duration "${CEILING_SECS}s" --json-out "$dir/producer.json"

  local log="$LOGS/ingest-gateway-$nodes.log"
  : >"$log"
  start_release ingest-gateway "$ADMIN_URL/readyz" "$log"
  gateway_pid=$STARTED_PID
  local load=("$BIN/ingest-loadgen" http --url "http://127.0.0.1:$GATEWAY_PORT" --project bench
    --datasource web --connections "$CONNECTIONS" "${workload[@]}" --warmup "$WARMUP" --quiet)

  say "[$nodes node(s)] the gateway alone at max, closed loop (${MAX_SECS}s)"
  "${load[@]}" --duration "${MAX_SECS}s" --json-out "$dir/gateway_max.json"
  if [ -z "$rate" ]; then
    rate="$(awk -v p="$(json_field "$dir/gateway_max.json" accepted_items_per_sec)" \
      -v s="$RATE_SHARE" 'BEGIN { printf "%d", p * s }')"
    [ "$rate" -gt 0 ] || die "the gateway accepted nothing at max"
  fi
  sleep "$SETTLE" # followers catch up with the max run's backlog

  say "[$nodes node(s)] the gateway at a fixed $rate events/s, open loop (${FIXED_SECS}s)"
  before="$(publish_histogram)"
  "${load[@]}" --rate "$rate" --duration "${FIXED_SECS}s" --json-out "$dir/fixed.json"
  after="$(publish_histogram)"
  awk -v b="$before" -v a="$after" 'BEGIN {
    split(b, x, " "); split(a, y, " ")
    printf "{\"sum_s\": %.9f, \"count\": %d}\n", y[1] - x[1], y[2] - x[2] }' >"$dir/publish.json"
  printf '{"loadavg_1m": %s}\n' "$(cut -d' ' -f1 /proc/loadavg)" >"$dir/load.json"

  stop_release "$gateway_pid"
  say "[$nodes node(s)] done: stopping and purging the stack"
  save_stack_logs
  private_stack_down
}

run_mode 1
run_mode 3

kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml | head -n1)"
mode=full; $quick && mode=quick
command="scripts/bench-cluster.sh"; $quick && command="$command --quick"
cat >"$RESULTS/meta.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%MZ)", "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')",
 "kafka": "$kafka_version", "command": "$command", "mode": "$mode",
 "rate_share": $RATE_SHARE, "rate": $rate, "partitions": $PARTITIONS}
JSON
"$BIN/ingest-loadgen" cluster-report --results "$RESULTS" --out BENCHMARKS.md
say "done in $(($(date +%s) - started_at)) s; results in $RESULTS, summary in BENCHMARKS.md"
