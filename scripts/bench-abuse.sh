#!/usr/bin/env bash
# The abuse benchmark: can a client knock the gateway over? One command from a fresh
# clone. Builds release binaries, starts a private, empty Kafka and PostgreSQL (ports of
# their own, like scripts/bench.sh), creates a project with an "attacker" and a "healthy"
# datasource (limits raised out of the way) and a token for each, and runs every attack
# of `ingest-loadgen abuse` in turn against one release gateway while a healthy client
# writes; then rewrites BENCHMARKS.md's abuse section (between its own markers; the rest
# of the file is left alone).
#
# Usage: scripts/bench-abuse.sh [--quick] [--same-gateway] [--keep] [--results DIR]
#   --quick         10 s attacks and 15 s after them (about 4 minutes instead of about
#                   10), for trying a change: "after" is then not the 60 s of the target
#   --same-gateway  one gateway process through all scenarios; by default each scenario
#                   gets a freshly started one, so that what an attack leaves behind
#                   (memory not given back) does not blur the next scenario's figures
#   --keep          leave the stack (and the gateway) running afterwards
#   --results DIR   where the JSON results go (default target/bench/abuse)
#
# Scenarios, in order. Each: the healthy client (50 requests/s of 10 events from
# 127.0.0.1, 5 s timeout) alone for 3 s ("idle" memory), then the attack for HOLD (20 s)
# with the healthy client measured throughout (and a fresh connection from its address
# five times a second), then AFTER (60 s) of watching the gateway's memory; attacks come
# from 127.0.0.2, 127.0.0.3, ... (at most 1,000 connections per address):
#   baseline                     the healthy client alone (10 s), for reference
#   stalled-body-anon 1000/2000  no Authorization, Content-Length 1 MiB, 1 MiB - 1 sent
#   stalled-body-auth 1000/2000  the same with the attacker's valid token
#   idle 12000                   connections that send nothing
#   slowloris 3000               a request head one byte every 3 s, never finished
#   token-flood 300              closed loop, random unknown tokens, over 3 addresses
#
# Results: JSON per scenario in the results directory, the gateway's log in
# target/bench/abuse-logs/. Exit status 1 when a scenario could not run (the others
# still do); targets not met are results, not failures.
#
# Environment: ABUSE_STACK_DIR (.stack-abuse), ABUSE_KAFKA_PORT (39092), ABUSE_PG_PORT
# (57432), ABUSE_GATEWAY_PORT (38080), ABUSE_ADMIN_PORT (38081: the gateway's
# INGEST_ADMIN_ADDR; its metrics are read there when it serves them there, else on the
# public port), ABUSE_GATEWAY_NOFILE (the gateway's soft limit on open files; default:
# this shell's), plus any INGEST_* variable of the gateway.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

quick=false
keep=false
same_gateway=false
RESULTS="$REPO_ROOT/target/bench/abuse"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --quick) quick=true ;;
    --keep) keep=true ;;
    --same-gateway) same_gateway=true ;;
    --results)
      [ "$#" -ge 2 ] || die "--results needs a directory"
      RESULTS="$2"
      shift
      ;;
    *) die "unknown argument: $1 (usage: scripts/bench-abuse.sh [--quick] [--same-gateway] [--keep] [--results DIR])" ;;
  esac
  shift
done
case "$RESULTS" in /*) ;; *) RESULTS="$REPO_ROOT/$RESULTS" ;; esac

if $quick; then
  HOLD=10s; AFTER=15s
else
  HOLD=20s; AFTER=60s
fi

private_stack_env "${ABUSE_STACK_DIR:-$REPO_ROOT/.stack-abuse}" "${ABUSE_KAFKA_PORT:-39092}" \
  "${ABUSE_PG_PORT:-57432}" "${ABUSE_PARTITIONS:-4}"
GATEWAY_PORT="${ABUSE_GATEWAY_PORT:-38080}"
ADMIN_PORT="${ABUSE_ADMIN_PORT:-38081}"
LOGS="$REPO_ROOT/target/bench/abuse-logs"
GATEWAY_LOG="$LOGS/ingest-gateway.log"
BIN=target/release
started_at=$(date +%s)

cleanup() {
  if ! $keep; then
    stop_services
    private_stack_down
  fi
}
trap cleanup EXIT

ensure_build_tools
command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

say "building release binaries"
cargo build --locked --release -p ingest-gateway -p ingestctl -p ingest-loadgen

say "starting an empty stack in $INGEST_STACK_DIR"
private_stack_up
mkdir -p "$RESULTS" "$LOGS"
rm -f "$RESULTS"/*.json
: >"$GATEWAY_LOG"

"$BIN/ingestctl" project create abuse >/dev/null
for datasource in attacker healthy; do
  "$BIN/ingestctl" datasource create abuse "$datasource" >/dev/null
  "$BIN/ingestctl" datasource set-limit abuse "$datasource" all 1000000000 >/dev/null
done
INGEST_ABUSE_ATTACKER_TOKEN="$(create_token abuse attacker attacker)"
INGEST_ABUSE_HEALTHY_TOKEN="$(create_token abuse healthy healthy)"
export INGEST_ABUSE_ATTACKER_TOKEN INGEST_ABUSE_HEALTHY_TOKEN

# Lowered in this shell, for the gateways it starts; ingest-loadgen raises its own
# limit back to the hard limit.
if [ -n "${ABUSE_GATEWAY_NOFILE:-}" ]; then
  ulimit -Sn "$ABUSE_GATEWAY_NOFILE"
fi
export INGEST_GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT"
export INGEST_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT"
export INGEST_LOG_FORMAT="${INGEST_LOG_FORMAT:-json}"
GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"
ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
metrics_url="$ADMIN_URL/metrics"

# start_gateway: starts the release gateway (ready when its admin listener's /readyz
# answers), sets $gateway_pid.
start_gateway() {
  start_release ingest-gateway "$ADMIN_URL/readyz" "$GATEWAY_LOG"
  gateway_pid=$STARTED_PID
  say "gateway $gateway_pid on $GATEWAY_URL, metrics at $metrics_url"
}

# gateway_ready: a gateway that lives and answers /readyz: a fresh one for every
# scenario, or with --same-gateway the one running unless it is gone or not ready within
# 30 s.
gateway_pid=""
gateway_ready() {
  if $same_gateway && [ -n "$gateway_pid" ]; then
    for _ in $(seq 1 300); do
      alive "$gateway_pid" || break
      curl -fsS -m 2 -o /dev/null "$ADMIN_URL/readyz" 2>/dev/null && return 0
      sleep 0.1
    done
    say "the gateway ($gateway_pid) is gone or not ready: starting a new one"
  fi
  if [ -n "$gateway_pid" ]; then
    stop_release "$gateway_pid"
  fi
  start_gateway
}

failed=()
step=0
# scenario NAME CONNECTIONS [ARGS...]: `ingest-loadgen abuse NAME` with that many attack
# connections (for HOLD, then AFTER, unless SCENARIO_HOLD or SCENARIO_AFTER say
# otherwise), into the next numbered result file; a failure is noted and the run goes
# on.
scenario() {
  local name="$1" connections="$2" file
  shift 2
  step=$((step + 1))
  gateway_ready
  file="$(printf '%02d' "$step")-$name"
  [ "$connections" -eq 0 ] || file="$file-$connections"
  say "$step. $name, $connections connections $*"
  if ! "$BIN/ingest-loadgen" abuse "$name" --connections "$connections" --url "$GATEWAY_URL" \
      --metrics-url "$metrics_url" --project abuse --gateway-pid "$gateway_pid" \
      --gateway-log "$GATEWAY_LOG" --hold "${SCENARIO_HOLD:-$HOLD}" \
      --after "${SCENARIO_AFTER:-$AFTER}" \
      --json-out "$RESULTS/$file.json" "$@"; then
    say "scenario $file failed"
    failed+=("$file")
  fi
}

SCENARIO_HOLD=10s SCENARIO_AFTER=0s scenario baseline 0
scenario stalled-body-anon 1000
scenario stalled-body-anon 2000
scenario stalled-body-auth 1000
scenario stalled-body-auth 2000
scenario idle 12000
scenario slowloris 3000
scenario token-flood 300 --per-address 100

mode=full; $quick && mode=quick
command="scripts/bench-abuse.sh"
$quick && command="$command --quick"
$same_gateway && command="$command --same-gateway"
cat >"$RESULTS/meta.json" <<JSON
{"date": "$(date -u +%Y-%m-%dT%H:%MZ)", "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')",
 "command": "$command", "mode": "$mode"}
JSON
"$BIN/ingest-loadgen" abuse-report --results "$RESULTS" --out BENCHMARKS.md
say "done in $(($(date +%s) - started_at)) s; results in $RESULTS, summary in BENCHMARKS.md"
if [ "${#failed[@]}" -gt 0 ]; then
  die "scenarios that could not run: ${failed[*]}"
fi
