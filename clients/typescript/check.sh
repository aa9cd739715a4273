#!/usr/bin/env bash
# The TypeScript client's one command: install, build (library + tests, strict), lint, test.
#
#   clients/typescript/check.sh [JUNIT_XML]
#
# Needs Node 20+ and npm (with the npm registry for the first `npm ci`). The integration
# tests run against the client harness named by INGEST_HARNESS_URL (scripts/test.sh sets
# it); without it they are reported skipped, with the reason. With JUNIT_XML, the test
# results are also written there as JUnit XML. Exits non-zero on any failure.
set -euo pipefail

junit="${1:-}"
if [[ -n "$junit" && "$junit" != /* ]]; then junit="$PWD/$junit"; fi
cd "$(dirname "${BASH_SOURCE[0]}")"
started=$(date +%s)

node -e 'const [major] = process.versions.node.split(".").map(Number);
  if (major < 20) { console.error(`check.sh: Node 20+ needed, found ${process.version}`); process.exit(1); }'

# npm ci only when node_modules was not installed from this package-lock.json.
lock_hash=$(node -e 'const c = require("crypto"), f = require("fs");
  process.stdout.write(c.createHash("sha256").update(f.readFileSync("package-lock.json")).digest("hex"))')
stamp=node_modules/.check-sh-lock-sha256
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_hash" ]]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > "$stamp"
fi

echo "== tsc (library: src -> dist, strict, no Node types)"
rm -rf dist dist-test dist-bench
./node_modules/.bin/tsc -p .
echo "== tsc (tests: test -> dist-test, strict)"
./node_modules/.bin/tsc -p tsconfig.test.json
echo "== tsc (producer benchmark: benchmarks -> dist-bench, strict)"
./node_modules/.bin/tsc -p tsconfig.bench.json

echo "== lint"
node scripts/lint.mjs

echo "== node --test"
if [[ -z "${INGEST_HARNESS_URL:-}" ]]; then
  echo "INGEST_HARNESS_URL is not set: the integration tests will be skipped"
fi
reporters=(--test-reporter=spec --test-reporter-destination=stdout)
if [[ -n "$junit" ]]; then
  mkdir -p "$(dirname "$junit")"
  reporters+=(--test-reporter=junit "--test-reporter-destination=$junit")
fi
status=0
node --test --test-timeout=120000 "${reporters[@]}" \
  dist-test/unit/*.test.js dist-test/integration/*.test.js || status=$?

echo "check.sh: $([[ $status -eq 0 ]] && echo passed || echo FAILED) in $(( $(date +%s) - started )) s"
exit "$status"
