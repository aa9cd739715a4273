#!/usr/bin/env bash
# Fuzzes the gateway's public HTTP API with schemathesis, from the OpenAPI document the
# gateway serves, with every check on: each documented operation gets generated valid
# and invalid requests, and every answer must be one the document describes (status,
# content type, headers, body schema), no 5xx, invalid data refused, valid data taken.
# The check settings and why they differ from schemathesis's defaults are in
# scripts/schemathesis.toml; the reasoning is in docs/API.md ("The OpenAPI document and
# the fuzzer").
#
# Runs the already built debug gateway (target/debug/ingest-gateway: `cargo build`
# first) on a free loopback port against the running stack (scripts/stack.sh up), with
# topics of its own, and a project, two datasources and a project token of its own made
# with target/debug/ingestctl; on exit, stops the gateway, deletes the topics and revokes
# the token (ingestctl deletes no projects: they stay, unused, in the database).
#
# Usage: scripts/fuzz-api.sh [extra `st run` options, e.g. --include-path-regex contacts]
# Environment: FUZZ_MAX_EXAMPLES (default 60 per operation and phase), FUZZ_SEED
# (default 20261124: the same run every time; set another to explore further).
# Ends with one line `fuzz: N passed, N failed` (one test per API operation, plus one for
# the stateful scenarios: passed when no check failed) and exits non-zero on any failure.
#
# One worker: with the seed, the run is the same every time (with several, the order of
# the requests varies), and CPython 3.11 (3.11.7 on this project's machines) has a race
# between threads in its AST parser (gh-106905) that makes schemathesis's generator fail
# at random ("AST constructor recursion depth mismatch") with more than one.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-60}"
SEED="${FUZZ_SEED:-20261124}"

GATEWAY=target/debug/ingest-gateway
INGESTCTL=target/debug/ingestctl
for bin in "$GATEWAY" "$INGESTCTL"; do
  [ -x "$bin" ] || die "$bin is missing: run 'cargo build' first"
done
scripts/stack.sh status >/dev/null 2>&1 || die "the stack is not running: run 'scripts/stack.sh up' first"
if [ -z "${DATABASE_URL:-}" ] || [ -z "${KAFKA_BROKERS:-}" ]; then
  eval "$(scripts/stack.sh env)"
fi

# Its own venv, named by the version, so changing the pin installs the new version.
venv="$STACK_DIR/venv-schemathesis-$SCHEMATHESIS_VERSION"
venv_tool st "schemathesis==$SCHEMATHESIS_VERSION" "$venv"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_id="fuzz-$(date +%Y%m%d%H%M%S)-$$"
work="$(mktemp -d "${TMPDIR:-/tmp}/$run_id.XXXXXX")"
log_dir="$STACK_DIR/logs"
mkdir -p "$log_dir"
gateway_log="$log_dir/$run_id-gateway.log"
export INGEST_TOPIC_PREFIX="$run_id"
gateway_pid=""
token_id=""
topics_created=false

cleanup() {
  local status=$?
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill -TERM "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  if [ -n "$token_id" ]; then
    "$INGESTCTL" token revoke "$token_id" >/dev/null 2>&1 || say "could not revoke token $token_id"
  fi
  if $topics_created; then
    scripts/stack.sh topics --delete 2>/dev/null || say "could not delete the topics $run_id.*"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "fuzz: topics $run_id.*"
INGEST_TOPIC_PARTITIONS=1 INGEST_DLQ_PARTITIONS=1 scripts/stack.sh topics
topics_created=true

say "fuzz: project, datasources and token $run_id"
# Two datasources: the writes go to one that declares nothing (so that only the generic
# rules, which the document states, apply), the spec reads to one that declares specs.
specs_datasource="$run_id-specs"
"$INGESTCTL" project create "$run_id" >/dev/null
for datasource in "$run_id" "$specs_datasource"; do
  "$INGESTCTL" datasource create "$run_id" "$datasource" >/dev/null
  # Far above what the run sends, so that no answer is a 429 for the rate limit.
  "$INGESTCTL" datasource set-limit "$run_id" "$datasource" all 1000000 >/dev/null
done
"$INGESTCTL" spec attribute set --type string "$run_id" "$specs_datasource" plan >/dev/null
"$INGESTCTL" spec attribute set --type number --multivalue 5 "$run_id" "$specs_datasource" scores >/dev/null
# The event types are also in scripts/schemathesis.toml (`declared_event_types`).
for event_type in purchase "page view"; do
  "$INGESTCTL" spec event-type add "$run_id" "$specs_datasource" "$event_type" >/dev/null
done
"$INGESTCTL" spec parameter set --type number --required "$run_id" "$specs_datasource" purchase amount >/dev/null
"$INGESTCTL" spec parameter set --type string --multivalue 10 "$run_id" "$specs_datasource" purchase items >/dev/null
# A project token: it may use both datasources.
"$INGESTCTL" --json token create "$run_id" --name fuzz-api >"$work/token.json"
read -r token_id token < <(python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
print(t["id"], t["secret"])' "$work/token.json")

port="$(free_port)"
base_url="http://127.0.0.1:$port"
say "fuzz: gateway on $base_url (log: $gateway_log)"
# No worker runs here, so `?_sync` never sees a commit: it waits INGEST_SYNC_WAIT_MS and
# answers the documented 202. Short, so that it does not slow the run down.
INGEST_GATEWAY_ADDR="127.0.0.1:$port" INGEST_ADMIN_ADDR="127.0.0.1:$(free_port)" \
  INGEST_SYNC_WAIT_MS=100 INGEST_LOG_FORMAT=json RUST_LOG="${RUST_LOG:-info}" \
  "$GATEWAY" >"$gateway_log" 2>&1 &
gateway_pid=$!
wait_ready gateway "$gateway_pid" "$base_url/openapi.json" "$gateway_log"

say "fuzz: schemathesis $SCHEMATHESIS_VERSION, $MAX_EXAMPLES examples per operation, seed $SEED"
report="$log_dir/$run_id-junit.xml"
started=$SECONDS
set +e
PYTHONDONTWRITEBYTECODE=1 FUZZ_TOKEN="$token" FUZZ_PROJECT="$run_id" FUZZ_DATASOURCE="$run_id" \
  FUZZ_SPECS_DATASOURCE="$specs_datasource" \
  "$venv/bin/st" --config-file scripts/schemathesis.toml run "$base_url/openapi.json" \
  --checks all --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 1 \
  --no-color --report junit --report-junit-path "$report" "$@"
status=$?
set -e
say "fuzz: schemathesis took $((SECONDS - started)) s (report: $report)"

# The JUnit report: one test case per API operation, and one for the stateful phase.
python3 - "$report" <<'EOF' || status=1
import sys
import xml.etree.ElementTree as ET

cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
print(f"fuzz: {len(cases) - failed} passed, {failed} failed")
EOF
exit "$status"
