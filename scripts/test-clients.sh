#!/usr/bin/env bash
# The client libraries' suites (docs/clients.md): Python (clients/python/check.sh) and
# TypeScript (clients/typescript/check.sh) — lints, unit tests, and integration tests
# against the real pipeline through the client harness (ingest-testkit's client-harness:
# a private Kafka, an in-process gateway and worker, the dev stack's PostgreSQL). The
# Rust client's tests run with the workspace's `cargo test`.
#
# Needs the dev stack up (scripts/stack.sh up) and the workspace built (the harness is
# target/debug/client-harness). scripts/test.sh calls it; it can run alone too.
# Prints one closing line per language: `clients (python): N passed, N failed, N skipped`.
#
# Usage: scripts/test-clients.sh [python|typescript ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"
eval "$(scripts/stack.sh env)"

languages=("$@")
[ ${#languages[@]} -gt 0 ] || languages=(python typescript)

harness_out="$STACK_DIR/logs/client-harness.out"
mkdir -p "$STACK_DIR/logs"
[ -x target/debug/client-harness ] || cargo build --locked -q -p ingest-testkit --bin client-harness
target/debug/client-harness >"$harness_out" 2>"$STACK_DIR/logs/client-harness.err" &
harness_pid=$!
stop_harness() {
  kill "$harness_pid" 2>/dev/null || true
  # It stops its Kafka and deletes its data dir on the way out.
  wait "$harness_pid" 2>/dev/null || true
}
trap stop_harness EXIT
for _ in $(seq 1 120); do
  grep -q '^HARNESS_URL=' "$harness_out" 2>/dev/null && break
  kill -0 "$harness_pid" 2>/dev/null || { cat "$STACK_DIR/logs/client-harness.err" >&2; die "the client harness did not start"; }
  sleep 0.5
done
grep -q '^HARNESS_URL=' "$harness_out" || die "the client harness did not print its URL within 60 s"
export INGEST_HARNESS_URL
INGEST_HARNESS_URL="$(sed -n 's/^HARNESS_URL=//p' "$harness_out")"
say "client harness at $INGEST_HARNESS_URL"

# Counts a JUnit XML report: "<passed> <failed> <skipped>".
junit_counts() {
  python3 - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET

cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
passed = failed = skipped = 0
for case in cases:
    tags = {child.tag for child in case}
    if tags & {"failure", "error"}:
        failed += 1
    elif "skipped" in tags:
        skipped += 1
    else:
        passed += 1
print(passed, failed, skipped)
EOF
}

status=0
for language in "${languages[@]}"; do
  report="$STACK_DIR/logs/clients-$language.xml"
  rm -f "$report"
  say "client library: $language (clients/$language/check.sh)"
  if ! "clients/$language/check.sh" "$report"; then
    status=1
  fi
  if [ -s "$report" ]; then
    read -r passed failed skipped < <(junit_counts "$report")
  else
    # Failed before its tests ran (install, lint or build): one failure all the same.
    passed=0 failed=1 skipped=0
  fi
  [ "$failed" -eq 0 ] || status=1
  echo "clients ($language): $passed passed, $failed failed, $skipped skipped"
done
exit "$status"
