#!/usr/bin/env bash
# The whole test suite against the real stack: starts Kafka and PostgreSQL (installing
# what is missing), applies migrations, checks formatting and lints, runs every unit and
# integration test, validates the OpenAPI document and fuzzes the running gateway against
# it (scripts/fuzz-api.sh), then runs the Python and TypeScript client libraries' suites
# (scripts/test-clients.sh). Stops the stack again afterwards if it was not running before.
# The operations tests' tools (promtool, prometheus, docker-compose, kubernetes-validate,
# hadolint) are installed when missing by ensure_ops_tools (scripts/common.sh).
#
# Usage: scripts/test.sh [extra cargo test args, e.g. -p ingest-worker]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"

started_stack=false
if ! scripts/stack.sh status >/dev/null 2>&1; then
  started_stack=true
fi
stop_stack() {
  if $started_stack; then
    say "stopping the stack this run started"
    scripts/stack.sh down || true
  fi
}
trap stop_stack EXIT

ensure_build_tools
ensure_ops_tools
scripts/stack.sh up
eval "$(scripts/stack.sh env)"

say "checking format"
cargo fmt --all -- --check
say "building"
cargo build --locked --workspace --all-targets
say "migrating"
cargo run --locked -q -p ingestctl -- migrate

say "checking lints"
cargo clippy --locked --workspace --all-targets -- -D warnings

say "running the tests"
log="$STACK_DIR/logs/test-$(date +%Y%m%d-%H%M%S).log"
mkdir -p "$(dirname "$log")"
# Written again by this run's OpenAPI test, so the check below never reads a stale file.
rm -f target/openapi.json
set +e
cargo test --locked --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The OpenAPI document the gateway serves (written by crates/ingest-gateway/tests/openapi.rs)
# must validate as OpenAPI 3.1 with a real validator.
# (A run limited with -p to other crates does not write it, and has nothing to check.)
if [ "$status" -eq 0 ] && [ -e target/openapi.json ]; then
  venv_tool openapi-spec-validator openapi-spec-validator==0.9.0
  say "validating target/openapi.json as OpenAPI 3.1"
  "$STACK_DIR/venv/bin/openapi-spec-validator" --schema 3.1.0 target/openapi.json || status=1
fi

# The gateway must answer as that document says, to generated valid and invalid requests
# (schemathesis, every check on; a bounded run with a fixed seed). Also only when the
# gateway's tests ran; its closing `fuzz: N passed, N failed` line counts below.
if [ -e target/openapi.json ]; then
  say "fuzzing the gateway's API (scripts/fuzz-api.sh)"
  set +e
  scripts/fuzz-api.sh 2>&1 | tee -a "$log"
  fuzz_status=${PIPESTATUS[0]}
  set -e
  if [ "$fuzz_status" -ne 0 ]; then
    status=1
    # Failed before it could count (e.g. the install): one failure all the same.
    grep -q '^fuzz: [0-9]* passed' "$log" || echo "fuzz: 0 passed, 1 failed" | tee -a "$log"
  fi
fi

# The Python and TypeScript client libraries (lints, unit tests, and integration tests
# against the real pipeline through the client harness), on a full run; each prints a
# `clients (<language>): N passed, N failed, N skipped` line counted below.
if [ $# -eq 0 ]; then
  set +e
  scripts/test-clients.sh 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  set -e
fi

# One closing line over every test binary (cargo prints one result line per binary), the
# fuzzer's tests (one per API operation, and one for its stateful phase) and the clients'.
awk '/^test result:/ || /^fuzz: [0-9]+ passed/ || /^clients \([a-z]+\): [0-9]+ passed/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^(ignored|skipped)/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
