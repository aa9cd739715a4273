#!/usr/bin/env bash
# Development stack for the ingest pipeline: a single-node Apache Kafka (KRaft,
# broker+controller in one JVM, jars from Maven Central) and a private
# PostgreSQL cluster (Debian packages), both on 127.0.0.1 only.
#
# Usage: scripts/stack.sh up [kafka|postgres]|down [kafka|postgres] [--purge]|status|env
#        scripts/stack.sh topics [--delete]
#
#   up      install missing tools, start both servers (or just the one named) if
#           not running, ensure the Kafka topics and the `ingest` database exist.
#           Idempotent.
#   down    stop the processes this script started (or just the one named).
#           --purge also deletes the data dir. Idempotent.
#   status  running/reachable per server; exit 0 if both are up, 3 otherwise.
#   env     print `export ...` lines: eval "$(scripts/stack.sh env)"
#   topics  with Kafka up, create the three topics of INGEST_TOPIC_PREFIX if missing
#           (e.g. a private set for one test run); --delete deletes them instead.
#
# Environment (all optional):
#   INGEST_STACK_DIR              data dir           (default <repo>/.stack)
#   INGEST_CACHE_DIR              jar cache          (default ~/.cache/ingest-pipeline)
#   INGEST_KAFKA_PORT             Kafka client port  (default 19092)
#   INGEST_KAFKA_CONTROLLER_PORT  KRaft controller   (default 19093)
#   INGEST_PG_PORT                PostgreSQL port    (default 55432)
#   INGEST_TOPIC_PARTITIONS       partitions of ingest.contacts/events (default 8)
#   INGEST_DLQ_PARTITIONS         partitions of ingest.dlq (default 4)
#   INGEST_TOPIC_PREFIX           topics <prefix>.contacts/.events/.dlq (default ingest,
#                                 as for the gateway and the worker)
#   KAFKA_HEAP                    heap flags         (default "-Xms512m -Xmx512m")
#
# Progress goes to stderr; stdout is reserved for `env`.
set -euo pipefail

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"

DATA_DIR="${INGEST_STACK_DIR:-$REPO_ROOT/.stack}"
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$PWD/$DATA_DIR" ;; esac
LOG_DIR="$DATA_DIR/logs"
RUN_DIR="$DATA_DIR/run"

KAFKA_PORT="${INGEST_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${INGEST_KAFKA_CONTROLLER_PORT:-19093}"
PG_PORT="${INGEST_PG_PORT:-55432}"
TOPIC_PARTITIONS="${INGEST_TOPIC_PARTITIONS:-8}"
DLQ_PARTITIONS="${INGEST_DLQ_PARTITIONS:-4}"
TOPIC_PREFIX="${INGEST_TOPIC_PREFIX:-ingest}"
KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx512m}"

KAFKA_DEPLOY_DIR="$REPO_ROOT/deploy/kafka"
KAFKA_POM="$KAFKA_DEPLOY_DIR/pom.xml"
# Single source of truth for the Kafka version: the pom.
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n1)"
CACHE_DIR="${INGEST_CACHE_DIR:-${HOME:-/root}/.cache/ingest-pipeline}"
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_DIR="$DATA_DIR/kafka"                 # generated config + cluster id
KAFKA_LOG_DIRS="$KAFKA_DIR/data"            # Kafka's log.dirs (the actual data)
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_PID_FILE="$RUN_DIR/kafka.pid"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
KAFKA_START_TIMEOUT=90                      # seconds
KAFKA_STOP_TIMEOUT=30                       # seconds before SIGKILL

# topic:partitions
KAFKA_TOPICS=(
  "$TOPIC_PREFIX.contacts:$TOPIC_PARTITIONS"
  "$TOPIC_PREFIX.events:$TOPIC_PARTITIONS"
  "$TOPIC_PREFIX.dlq:$DLQ_PARTITIONS"
)

PG_DATA="$DATA_DIR/postgres"
PG_LOG="$LOG_DIR/postgres.log"
PG_PID_FILE="$RUN_DIR/postgres.pid"         # informational copy of postmaster.pid
PG_USER=ingest
PG_DB=ingest
PG_BIN=""                                   # set by pg_find_bin

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
say()  { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARN: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if /proc/$1/cmdline contains every further argument (as substrings).
pid_matches() {
  local pid="$1" cmd; shift
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  local needle
  for needle in "$@"; do
    [[ "$cmd" == *"$needle"* ]] || return 1
  done
}

APT_UPDATED=0
apt_install() {
  is_root || die "missing packages ($*); install them (as root: apt-get install $*)"
  command -v apt-get >/dev/null || die "missing packages ($*) and no apt-get to install them"
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt: updating package lists"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  say "apt: installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_dirs() {
  mkdir -p "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"
}

# ---------------------------------------------------------------------------
# Java / Maven
# ---------------------------------------------------------------------------
JAVA=""
java_ensure() {
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
    JAVA="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null; then
    JAVA="$(command -v java)"
  else
    apt_install openjdk-17-jre-headless
    JAVA="$(command -v java)"
  fi
  # Kafka 4.x brokers need Java 17+.
  local v
  v="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
  if [ -z "$v" ] || [ "$v" -lt 17 ]; then
    die "Kafka $KAFKA_VERSION needs Java 17+, $JAVA is version '${v:-?}'"
  fi
}

mvn_ensure() {
  command -v mvn >/dev/null || apt_install maven
}

# ---------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------

# Resolve the broker's jars from Maven Central into the cache (once per pom).
kafka_libs_ensure() {
  [ -n "$KAFKA_VERSION" ] || die "cannot read <kafka.version> from $KAFKA_POM"
  local marker="$KAFKA_LIBS/.complete" want
  # The marker holds the pom's hash, so editing the pom (e.g. a log4j bump)
  # re-resolves even though the directory name only carries the Kafka version.
  want="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
    return 0
  fi
  mvn_ensure
  say "kafka: resolving jars for Kafka $KAFKA_VERSION from Maven Central (first run downloads ~55 MB)"
  local tmp="$KAFKA_LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  # Output to a log (Maven 3.8 prints stray ANSI resets even with -q -B).
  if ! mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      >"$LOG_DIR/kafka-mvn.log" 2>&1; then
    rm -rf "$tmp"
    tail -n 30 "$LOG_DIR/kafka-mvn.log" >&2
    die "kafka: mvn dependency:copy-dependencies failed (log: $LOG_DIR/kafka-mvn.log)"
  fi
  # Swap in atomically-ish so an interrupted download never looks complete.
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  echo "$want" >"$marker"
}

# Run a Kafka class (CLI tool) with the cached jars; tool logging goes to
# <logs>/kafka-tools.log at WARN so stdout/stderr carry only the tool's output.
# Bounded by `timeout`: the admin client would otherwise retry for minutes.
kafka_tool() {
  timeout 60 "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2.yaml" \
    -Dkafka.logs.dir="$LOG_DIR" -Dkafka.log.name=kafka-tools -Dkafka.log.level=WARN \
    -cp "$KAFKA_LIBS/*" "$@"
}

kafka_render_config() {
  mkdir -p "$KAFKA_DIR"
  # '|' as sed delimiter: paths contain '/'. Written on every `up`, so port
  # overrides take effect on the next start.
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@KAFKA_LOG_DIRS@|$KAFKA_LOG_DIRS|g" \
      "$KAFKA_DEPLOY_DIR/server.properties" >"$KAFKA_PROPS.tmp"
  mv "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"
}

kafka_format_ensure() {
  # meta.properties is written by a successful format.
  [ -f "$KAFKA_LOG_DIRS/meta.properties" ] && return 0
  local idf="$KAFKA_DIR/cluster-id" id
  if [ ! -s "$idf" ]; then
    kafka_tool kafka.tools.StorageTool random-uuid >"$idf.tmp"
    mv "$idf.tmp" "$idf"
  fi
  id="$(tr -d '[:space:]' <"$idf")"
  say "kafka: formatting storage (cluster id $id)"
  kafka_tool kafka.tools.StorageTool format --standalone -t "$id" -c "$KAFKA_PROPS" >>"$LOG_DIR/kafka-format.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/kafka-format.log" >&2; die "kafka: storage format failed"; }
}

# Prints the PID of our running broker, or fails.
kafka_pid() {
  local pid
  [ -f "$KAFKA_PID_FILE" ] || return 1
  pid="$(cat "$KAFKA_PID_FILE" 2>/dev/null)"
  # Must be a Kafka broker running *our* config, not a recycled PID.
  pid_matches "$pid" kafka.Kafka "$KAFKA_PROPS" || return 1
  echo "$pid"
}

kafka_start() {
  local pid
  if pid="$(kafka_pid)"; then
    say "kafka: already running (pid $pid)"
    return 0
  fi
  rm -f "$KAFKA_PID_FILE"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$p" && die "kafka: port $p is already in use by another process (set INGEST_KAFKA_PORT / INGEST_KAFKA_CONTROLLER_PORT)"
  done
  kafka_render_config
  kafka_format_ensure

  say "kafka: starting on $KAFKA_BOOTSTRAP (log: $LOG_DIR/kafka.log)"
  # shellcheck disable=SC2086  # KAFKA_HEAP is deliberately word-split.
  # setsid: own session, so the broker survives the calling terminal and
  # Ctrl-C of whatever ran `up`. Without job control the background child is
  # not a process-group leader, so setsid does not fork and $! is the JVM.
  nohup setsid "$JAVA" $KAFKA_HEAP \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2.yaml" \
    -Dkafka.logs.dir="$LOG_DIR" -Dkafka.log.name=kafka -Dkafka.log.level=INFO \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" \
    >>"$LOG_DIR/kafka.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$KAFKA_PID_FILE"

  # Wait until the client port accepts connections; fail fast if the JVM dies.
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until port_open "$KAFKA_PORT"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$KAFKA_PID_FILE"
      kafka_fail_logs
      die "kafka: process exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      kafka_fail_logs
      die "kafka: not listening on $KAFKA_BOOTSTRAP after ${KAFKA_START_TIMEOUT}s (still running as pid $pid; 'down' stops it)"
    fi
    sleep 0.5
  done
  say "kafka: listening (pid $pid)"
}

kafka_fail_logs() {
  local f
  for f in "$LOG_DIR/kafka.out" "$LOG_DIR/kafka.log"; do
    [ -s "$f" ] || continue
    printf -- '----- tail of %s -----\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
}

# Create missing topics. One `--describe` call (which doubles as the
# "broker really serves requests" check, retried until the deadline) tells
# which exist; only missing ones are created, in parallel JVMs, because
# TopicCommand creates one topic per invocation.
kafka_topics_ensure() {
  local regex="" t name parts
  for t in "${KAFKA_TOPICS[@]}"; do
    name="${t%%:*}"
    regex+="${regex:+|}${name//./\\.}"
  done

  local out="" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    if out="$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
        --describe --if-exists --topic "^($regex)\$" 2>"$RUN_DIR/topics.err")"; then
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      cat "$RUN_DIR/topics.err" >&2
      kafka_fail_logs
      die "kafka: broker on $KAFKA_BOOTSTRAP does not answer admin requests"
    fi
    sleep 1
  done

  local pids=() names=() existing
  for t in "${KAFKA_TOPICS[@]}"; do
    name="${t%%:*}"
    parts="${t##*:}"
    # Summary line: "Topic: ingest.events\tTopicId: ...\tPartitionCount: 8\t..."
    existing="$(printf '%s\n' "$out" | awk -v n="$name" '
      $1 == "Topic:" && $2 == n { for (i = 1; i < NF; i++) if ($i == "PartitionCount:") print $(i+1) }')"
    if [ -n "$existing" ]; then
      if [ "$existing" != "$parts" ]; then
        # Not altered automatically: adding partitions remaps keys.
        warn "kafka: topic $name has $existing partitions, wanted $parts (left as is; 'down --purge' to recreate)"
      fi
      continue
    fi
    say "kafka: creating topic $name ($parts partitions)"
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1 \
      >"$RUN_DIR/topic-$name.out" 2>&1 &
    pids+=("$!")
    names+=("$name")
  done
  local i rc=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      cat "$RUN_DIR/topic-${names[$i]}.out" >&2
      warn "kafka: creating topic ${names[$i]} failed"
      rc=1
    fi
    rm -f "$RUN_DIR/topic-${names[$i]}.out"
  done
  rm -f "$RUN_DIR/topics.err"
  [ "$rc" -eq 0 ] || die "kafka: topic creation failed"
  say "kafka: topics ok (${KAFKA_TOPICS[*]%%:*})"
}

kafka_stop() {
  local pid
  if ! pid="$(kafka_pid)"; then
    rm -f "$KAFKA_PID_FILE"
    say "kafka: not running"
    return 0
  fi
  say "kafka: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      warn "kafka: still running after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.5
  done
  rm -f "$KAFKA_PID_FILE"
  say "kafka: stopped"
}

kafka_up() {
  java_ensure
  kafka_libs_ensure
  kafka_start
  kafka_topics_ensure
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

# Highest installed /usr/lib/postgresql/<ver>/bin with initdb + pg_ctl.
pg_find_bin() {
  local d
  PG_BIN=""
  # sort -V so that e.g. 10 sorts after 9; the last (highest) match wins.
  while read -r d; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then PG_BIN="$d"; fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
  [ -n "$PG_BIN" ]
}

pg_ensure_installed() {
  pg_find_bin && return 0
  apt_install postgresql
  pg_find_bin || die "postgres: installed 'postgresql' but found no initdb/pg_ctl under /usr/lib/postgresql/*/bin"
}

# initdb/postgres/pg_ctl refuse to run as root: as root, run them as the
# `postgres` system user (created by the Debian package).
pg_as_owner() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# As root: make sure the postgres user can reach the data dir, then hand it
# (and the logs/run dirs postgres writes into) to that user.
pg_prepare_dirs() {
  mkdir -p "$PG_DATA"
  is_root || return 0
  id postgres >/dev/null 2>&1 || die "postgres: running as root but there is no 'postgres' system user"
  # Every ancestor must be searchable (x) by postgres, e.g. /root (0700) is
  # not. Checked top-down so the message names the directory that blocks.
  local d="" part parts
  IFS=/ read -r -a parts <<<"${DATA_DIR#/}"
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    d="$d/$part"
    if ! runuser -u postgres -- test -x "$d"; then
      die "postgres: user 'postgres' cannot traverse $d (needed to reach $PG_DATA). Run 'chmod o+x $d' or set INGEST_STACK_DIR to a path it can reach."
    fi
  done
  chown postgres:postgres "$PG_DATA" "$LOG_DIR" "$RUN_DIR"
  chmod 0700 "$PG_DATA"
  touch "$PG_LOG"
  chown postgres:postgres "$PG_LOG"
}

pg_initdb_ensure() {
  [ -f "$PG_DATA/PG_VERSION" ] && return 0
  if [ -n "$(ls -A "$PG_DATA" 2>/dev/null)" ]; then
    die "postgres: $PG_DATA is not empty but holds no cluster (interrupted initdb?); remove it or run 'down --purge'"
  fi
  say "postgres: initdb $PG_DATA ($(basename "$(dirname "$PG_BIN")"))"
  pg_as_owner "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust --username="$PG_USER" \
    -E UTF8 --locale=C >>"$LOG_DIR/postgres-initdb.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/postgres-initdb.log" >&2; die "postgres: initdb failed"; }
}

pg_running() {
  [ -f "$PG_DATA/PG_VERSION" ] || return 1
  pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# First line of postmaster.pid = PID of the postmaster.
pg_pid() {
  local pid
  pid="$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null)" || return 1
  pid_matches "$pid" postgres "$PG_DATA" || return 1
  echo "$pid"
}

pg_start() {
  if pg_running; then
    say "postgres: already running (pid $(pg_pid || echo '?'))"
    pg_pid >"$PG_PID_FILE" 2>/dev/null || true
    return 0
  fi
  port_open "$PG_PORT" && die "postgres: port $PG_PORT is already in use by another process (set INGEST_PG_PORT)"
  # Unix socket paths are limited to ~107 bytes.
  [ "${#RUN_DIR}" -lt 90 ] || die "postgres: socket dir path too long ($RUN_DIR); set a shorter INGEST_STACK_DIR"
  say "postgres: starting on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
  # Settings are passed on the command line (not written to postgresql.conf)
  # so that changing them here takes effect on the next start.
  # fsync/synchronous_commit stay at their (durable) defaults on purpose.
  local opts="-c listen_addresses=127.0.0.1 -p $PG_PORT -k $RUN_DIR"
  opts+=" -c max_connections=200 -c shared_buffers=256MB"
  # pg_ctl hands -o to /bin/sh, so single quotes survive.
  opts+=" -c log_min_duration_statement=1000 -c log_line_prefix='%m [%p] %q%u@%d '"
  pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "$opts" start >/dev/null \
    || { tail -n 30 "$PG_LOG" >&2; die "postgres: failed to start"; }
  pg_pid >"$PG_PID_FILE" 2>/dev/null || true
  say "postgres: running (pid $(cat "$PG_PID_FILE" 2>/dev/null || echo '?'))"
}

pg_psql() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$@"
}

pg_db_ensure() {
  local exists
  exists="$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")"
  if [ "$exists" != "1" ]; then
    say "postgres: creating database $PG_DB"
    pg_psql -d postgres -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
  fi
  say "postgres: database $PG_DB ok"
}

pg_stop() {
  if ! pg_find_bin || ! pg_running; then
    rm -f "$PG_PID_FILE"
    say "postgres: not running"
    return 0
  fi
  # pg_ctl acts on $PG_DATA/postmaster.pid, i.e. exactly our server.
  say "postgres: stopping (pid $(pg_pid || echo '?'))"
  pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
  rm -f "$PG_PID_FILE"
  say "postgres: stopped"
}

pg_up() {
  pg_ensure_installed
  pg_prepare_dirs
  pg_initdb_ensure
  pg_start
  pg_db_ensure
}

# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------
cmd_up() {
  ensure_dirs
  case "${1:-all}" in
    # Postgres first: it is quick, and Kafka's startup then overlaps nothing.
    all) pg_up; kafka_up ;;
    kafka) kafka_up ;;
    postgres) pg_up ;;
    *) die "usage: $0 up [kafka|postgres]" ;;
  esac
  say "stack up. Use: eval \"\$($0 env)\""
}

cmd_down() {
  local purge=0 only=all arg
  for arg in "$@"; do
    case "$arg" in
      --purge) purge=1 ;;
      kafka | postgres) only="$arg" ;;
      *) die "usage: $0 down [kafka|postgres] [--purge]" ;;
    esac
  done
  [ "$only" = postgres ] || kafka_stop
  [ "$only" = kafka ] || pg_stop
  if [ "$purge" -eq 1 ] && [ -d "$DATA_DIR" ]; then
    # Guard against an INGEST_STACK_DIR that points somewhere precious.
    case "$DATA_DIR" in
      / | "$REPO_ROOT" | "${HOME:-/}" | "$REPO_ROOT/") die "refusing to purge $DATA_DIR" ;;
    esac
    say "purging $DATA_DIR"
    rm -rf "$DATA_DIR"
  fi
}

cmd_status() {
  local ok=0 pid state reach

  if pid="$(kafka_pid)"; then state="running (pid $pid)"; else state="stopped"; ok=1; fi
  if port_open "$KAFKA_PORT"; then reach="reachable on $KAFKA_BOOTSTRAP"; else reach="not reachable on $KAFKA_BOOTSTRAP"; ok=1; fi
  printf 'kafka:    %s, %s\n' "$state" "$reach"

  if pg_find_bin && pg_running; then state="running (pid $(pg_pid || echo '?'))"; else state="stopped"; ok=1; fi
  if [ -n "$PG_BIN" ] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -t 3; then
    reach="reachable on 127.0.0.1:$PG_PORT"
  else
    reach="not reachable on 127.0.0.1:$PG_PORT"; ok=1
  fi
  printf 'postgres: %s, %s\n' "$state" "$reach"

  [ "$ok" -eq 0 ] || return 3
}

cmd_topics() {
  ensure_dirs
  port_open "$KAFKA_PORT" || die "kafka: nothing listens on $KAFKA_BOOTSTRAP (run '$0 up' first)"
  java_ensure
  kafka_libs_ensure
  case "${1:-}" in
    "") kafka_topics_ensure ;;
    --delete)
      local regex="" t name
      for t in "${KAFKA_TOPICS[@]}"; do
        name="${t%%:*}"
        regex+="${regex:+|}${name//./\\.}"
      done
      say "kafka: deleting topics ${KAFKA_TOPICS[*]%%:*}"
      kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
        --delete --if-exists --topic "^($regex)\$" >&2
      ;;
    *) die "usage: $0 topics [--delete]" ;;
  esac
}

cmd_env() {
  printf 'export KAFKA_BROKERS=%s\n' "$KAFKA_BOOTSTRAP"
  printf 'export DATABASE_URL=postgres://%s@127.0.0.1:%s/%s\n' "$PG_USER" "$PG_PORT" "$PG_DB"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    topics) cmd_topics "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
