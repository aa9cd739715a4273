#!/usr/bin/env bash
# Everything the Python client must pass, in one command (scripts/test.sh calls it):
# ruff check, ruff format --check, mypy --strict, then pytest (unit and integration tests;
# the integration tests need INGEST_HARNESS_URL, the client harness's address, and are
# skipped without it).
#
# Usage: clients/python/check.sh [JUNIT_XML]   (JUNIT_XML: where pytest writes its results)
#
# The tools live in a virtualenv under "${INGEST_CACHE_DIR:-$HOME/.cache/ingest-pipeline}",
# made and filled on first use (python3 and PyPI are all it needs), and reinstalled only
# when pyproject.toml changes or the venv points at another checkout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
junit="${1:-}"
if [ -n "$junit" ]; then
  case "$junit" in /*) ;; *) junit="$PWD/$junit" ;; esac
fi
cache="${INGEST_CACHE_DIR:-$HOME/.cache/ingest-pipeline}"
venv="$cache/venv-python-client"
python="${PYTHON:-python3}"

say() { printf '==> %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  mkdir -p "$cache"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Some distributions ship python3 without ensurepip: virtualenv does the same job.
    rm -rf "$venv"
    "$python" -m pip install -q --user virtualenv
    "$python" -m virtualenv -q "$venv"
  fi
fi

stamp="$venv/.ingest-client-stamp"
want="$("$python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$here/pyproject.toml") $here"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] \
  || ! "$venv/bin/python" -c 'import ingest_client, pytest, pytest_asyncio, mypy, httpx' 2>/dev/null; then
  say "installing clients/python[dev] into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here[dev]"
  echo "$want" >"$stamp"
fi

cd "$here"
export PATH="$venv/bin:$PATH"
status=0
say "ruff check"
ruff check --no-cache . || status=1
say "ruff format --check"
ruff format --no-cache --check . || status=1
say "mypy --strict"
mypy --strict --cache-dir "$venv/.mypy_cache" || status=1
say "pytest"
# -rfEs: list failures, errors and skips (with their reasons) at the end.
args=(-q -rfEs -p no:cacheprovider)
if [ -n "$junit" ]; then
  args+=("--junitxml=$junit")
fi
pytest "${args[@]}" || status=1
exit "$status"
