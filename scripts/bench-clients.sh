#!/usr/bin/env bash
# Producer benchmark of the three client libraries (docs/clients.md): each client's
# sustained accepted events/s against one gateway, one command from a fresh clone.
# Builds the release gateway, ingestctl and ingest-loadgen, starts a private, empty stack
# (Kafka and PostgreSQL on ports of their own; a running dev stack is left alone) and
# the gateway alone (no worker: what is measured is producer -> gateway -> Kafka), then
# runs each client's producer in turn, with the same workload, against the same gateway:
#
#   rust        ingest-loadgen producer: 8 tasks calling Client::track (crates/ingest-client)
#   python      clients/python/benchmarks/producer.py: one thread calling Client.track
#   typescript  clients/typescript/benchmarks/producer.ts: one loop awaiting track()
#
# Every event is distinct (client-generated UUID v7 ids, users drawn from 100,000, varied
# types and parameter sizes, seeded). Each producer runs closed loop, held back only by
# its client's bounded queue (default options: batches of up to 100, 4 event requests in
# flight), for a warm-up and then the measured window, in which accepted outcomes are
# counted. Results in target/bench/clients/*.json; BENCHMARKS.md's clients section is
# rewritten between its markers.
#
# Usage: scripts/bench-clients.sh [--quick]   (--quick: 3 s warm-up, 8 s window; else 5 s, 20 s)
# Environment: CLIENTS_STACK_DIR (.stack-bench-clients), CLIENTS_KAFKA_PORT (26092),
# CLIENTS_PG_PORT (26432), CLIENTS_GATEWAY_PORT (26080), CLIENTS_ADMIN_PORT (26081).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

quick=false
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true ;;
    *) die "unknown argument: $arg (usage: scripts/bench-clients.sh [--quick])" ;;
  esac
done
if $quick; then WARMUP=3; WINDOW=8; else WARMUP=5; WINDOW=20; fi

STACK="${CLIENTS_STACK_DIR:-$REPO_ROOT/.stack-bench-clients}"
KAFKA_PORT="${CLIENTS_KAFKA_PORT:-26092}"
PG_PORT="${CLIENTS_PG_PORT:-26432}"
GATEWAY_PORT="${CLIENTS_GATEWAY_PORT:-26080}"
ADMIN_PORT="${CLIENTS_ADMIN_PORT:-26081}"
RESULTS="$REPO_ROOT/target/bench/clients"
BIN=target/release
URL="http://127.0.0.1:$GATEWAY_PORT"

private_stack_env "$STACK" "$KAFKA_PORT" "$PG_PORT" 8 1
cleanup() {
  stop_services
  private_stack_down
}
trap cleanup EXIT

ensure_build_tools
say "building release binaries"
cargo build --locked --release -p ingest-gateway -p ingestctl -p ingest-loadgen

say "preparing the Python and TypeScript clients"
venv="${INGEST_CACHE_DIR:-$HOME/.cache/ingest-pipeline}/venv-python-client-bench"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -e clients/python
(cd clients/typescript && npm ci --silent --no-audit --no-fund && ./node_modules/.bin/tsc -p . && ./node_modules/.bin/tsc -p tsconfig.bench.json)

mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json
private_stack_up
"$BIN/ingestctl" project create bench >/dev/null
"$BIN/ingestctl" datasource create bench web >/dev/null
"$BIN/ingestctl" datasource set-limit bench web all 1000000000 >/dev/null
token="$(create_token bench web bench)"

export INGEST_GATEWAY_ADDR="127.0.0.1:$GATEWAY_PORT"
export INGEST_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT"
export INGEST_LOG_FORMAT=json
start_release ingest-gateway "http://127.0.0.1:$ADMIN_PORT/readyz" "$RESULTS/gateway.log"

say "rust: ingest-loadgen producer (${WARMUP}s warm-up, ${WINDOW}s window)"
INGEST_LOADGEN_TOKEN="$token" "$BIN/ingest-loadgen" producer --url "$URL" --project bench \
  --datasource web --producers 8 --duration "${WINDOW}s" --warmup "${WARMUP}s" --seed 42 \
  --users 100000 --quiet --json-out "$RESULTS/rust.json"

say "python: clients/python/benchmarks/producer.py"
"$venv/bin/python" clients/python/benchmarks/producer.py "$URL" bench web "$token" \
  "$WINDOW" "$WARMUP" >"$RESULTS/python.json"

say "typescript: clients/typescript/benchmarks/producer.ts"
node clients/typescript/dist-bench/producer.js "$URL" bench web "$token" \
  "$WINDOW" "$WARMUP" >"$RESULTS/typescript.json"

say "rendering BENCHMARKS.md (clients section)"
python3 - "$RESULTS" "$(git rev-parse --short HEAD)" "$WINDOW" "$quick" <<'EOF'
import json
import pathlib
import platform
import subprocess
import sys
from datetime import datetime, timezone

results, commit, window, quick = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rust = json.loads((results / "rust.json").read_text())
python = json.loads((results / "python.json").read_text())
typescript = json.loads((results / "typescript.json").read_text())
cpu = next(
    (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
    platform.processor(),
)
rows = [
    ("Rust (`crates/ingest-client`)", "8 tasks", rust["accepted_per_sec"],
     rust["rejected"] + rust["failed"] + rust["dropped"], rust["stats"]["requests"]),
    ("Python (`clients/python`)", "1 thread", python["events_per_sec"],
     python["rejected"] + python["failed"] + python["dropped"], python["requests"]),
    ("TypeScript (`clients/typescript`)", "1 loop", typescript["events_per_sec"],
     typescript["rejected"] + typescript["failed"] + typescript["dropped"], typescript["requests"]),
]
lines = [
    "### Latest clients run",
    "",
    f"When: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · commit `{commit}` · "
    f"{cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores"
    + (" · `--quick`" if quick == "true" else ""),
    "",
    f"Command: `scripts/bench-clients.sh`. Each producer in turn against one release gateway "
    f"(no worker), closed loop, default client options; accepted events counted over a "
    f"{window} s window after the warm-up. Mean event: {rust['mean_event_bytes']:.0f} bytes "
    f"of JSON (Rust's generator; the others' are alike).",
    "",
    "| client | producer | accepted events/s | not accepted | requests |",
    "|---|---|---|---|---|",
]
for name, producer, rate, bad, requests in rows:
    lines.append(f"| {name} | {producer} | {rate:,.0f} | {bad} | {requests:,} |")
section = "\n".join(lines) + "\n"
path = pathlib.Path("BENCHMARKS.md")
text = path.read_text()
begin, end = "<!-- bench-clients:begin -->", "<!-- bench-clients:end -->"
if begin in text:
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    text = head + begin + "\n" + section + end + tail
else:
    text = text.rstrip("\n") + "\n\n## Client libraries: producer throughput\n\n" + begin + "\n" + section + end + "\n"
path.write_text(text)
print(section)
EOF
