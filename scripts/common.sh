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
