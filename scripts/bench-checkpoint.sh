#!/usr/bin/env bash
# Does a checkpoint set off a storm of full-page images when event ids are random?
# (BENCHMARKS.md, "Events at scale".) On a private stack with the production settings: a
# table of 10M realistic events (v4 ids), then 20,000 events/s through gateway and worker
# for 6 minutes, a CHECKPOINT after 2; every 10 s a line of pg_stat_wal (time, WAL
# records, full-page images, WAL bytes, autovacuum workers running, checkpoints so far).
# About 12 minutes. Results in target/bench/diag-fpi/ (wal.txt, load.json with the
# accept → visible p99 per minute).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"
ensure_build_tools
cargo build --locked --release -p ingest-gateway -p ingest-worker -p ingestctl -p ingest-loadgen
private_stack_env "$REPO_ROOT/.stack-bench" 29092 56432 8
export INGEST_GATEWAY_ADDR=127.0.0.1:28080 INGEST_ADMIN_ADDR=127.0.0.1:28081 INGEST_WORKER_ADDR=127.0.0.1:29091
export INGEST_LOG_FORMAT=json INGEST_PG_MEMORY=production
out=target/bench/diag-fpi; mkdir -p $out
BIN=target/release
trap 'stop_services; private_stack_down' EXIT
private_stack_up
$BIN/ingestctl project create bench >/dev/null
$BIN/ingestctl datasource create bench web >/dev/null
$BIN/ingestctl datasource set-limit bench web all 1000000000 >/dev/null
INGEST_LOADGEN_TOKEN="$(create_token bench web bench)"; export INGEST_LOADGEN_TOKEN
$BIN/ingest-loadgen prefill --project bench --datasource web --events 10000000 2>$out/prefill.log
psql "$DATABASE_URL" -qc "VACUUM ANALYZE events, event_ids" -c CHECKPOINT
start_release ingest-gateway http://127.0.0.1:28081/readyz $out/gateway.log
start_release ingest-worker http://127.0.0.1:29091/readyz $out/worker.log
( for i in $(seq 1 40); do
    psql "$DATABASE_URL" -tAc "SELECT now()::time(0), wal_records, wal_fpi, pg_size_pretty(wal_bytes),
      (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'),
      (SELECT checkpoints_req + checkpoints_timed FROM pg_stat_bgwriter) FROM pg_stat_wal"
    sleep 10
  done ) > $out/wal.txt 2>&1 &
sampler=$!
( sleep 120; psql "$DATABASE_URL" -qc CHECKPOINT; echo "checkpoint done $(date +%T)" >> $out/checkpoint.txt ) &
$BIN/ingest-loadgen http --url http://127.0.0.1:28080 --project bench --datasource web --connections 64 \
  --rate 20000 --duration 6m --warmup 0s --e2e-database-url "$DATABASE_URL" --quiet --json-out $out/load.json 2>$out/load.log || true
wait $sampler || true
