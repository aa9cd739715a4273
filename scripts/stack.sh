#!/usr/bin/env bash
# Development stack for the ingest pipeline: Apache Kafka (KRaft, jars from Maven
# Central) and a private PostgreSQL cluster (Debian packages), both on 127.0.0.1 only.
# Kafka runs as a single node (broker+controller in one JVM, the default) or as a
# three-node cluster (INGEST_KAFKA_NODES=3: three combined broker+controller nodes,
# topics with replication factor 3, min.insync.replicas=2, no unclean leader election).
#
# Usage: scripts/stack.sh up [kafka|postgres]|down [kafka|postgres] [--purge]|status|env
#        scripts/stack.sh topics [--delete]
#        scripts/stack.sh node N start|stop|kill
#        scripts/stack.sh controller
#
#   up          install missing tools, start both servers (or just the one named) if
#               not running, ensure the Kafka topics and the `ingest` database exist.
#               Idempotent.
#   down        stop the processes this script started (or just the one named): every
#               Kafka node of either mode, and PostgreSQL. --purge also deletes the data
#               dir. Idempotent.
#   status      running/reachable per Kafka node and for PostgreSQL (in cluster mode
#               also the active controller); exit 0 if all are up, 3 otherwise.
#   env         print `export ...` lines: eval "$(scripts/stack.sh env)"
#   topics      with Kafka up, create the three topics of INGEST_TOPIC_PREFIX if missing
#               (e.g. a private set for one test run); --delete deletes them instead.
#   node N ...  start, stop (SIGTERM: controlled shutdown) or kill (SIGKILL: a crash)
#               Kafka node N alone, for failure drills; `start` waits for its port.
#   controller  print the node id of the active KRaft controller.
#
# Environment (all optional):
#   INGEST_STACK_DIR              data dir           (default <repo>/.stack)
#   INGEST_CACHE_DIR              jar cache          (default ~/.cache/ingest-pipeline)
#   INGEST_KAFKA_NODES            1 or 3 Kafka nodes (default: the mode of the last `up`
#                                 in this data dir, else 1)
#   INGEST_KAFKA_PORT             Kafka client port  (default 19092; node N of a cluster
#                                 listens on this + 10(N-1): 19092, 19102, 19112)
#   INGEST_KAFKA_CONTROLLER_PORT  KRaft controller   (default 19093; + 10(N-1) likewise)
#   INGEST_PG_PORT                PostgreSQL port    (default 55432)
#   INGEST_TOPIC_PARTITIONS       partitions of ingest.contacts/events (default 8)
#   INGEST_DLQ_PARTITIONS         partitions of ingest.dlq (default 4)
#   INGEST_TOPIC_PREFIX           topics <prefix>.contacts/.events/.dlq (default ingest,
#                                 as for the gateway and the worker)
#   INGEST_PG_MEMORY              production (default: shared_buffers a quarter of the
#                                 memory, large and compressed checkpoints) or small
#                                 (the same with 256 MB of shared buffers)
#   INGEST_PG_OPTIONS             more server settings, e.g. "-c shared_preload_libraries=
#                                 pg_stat_statements" for a diagnosis (default none)
#   KAFKA_HEAP                    heap flags per node (default "-Xms512m -Xmx512m" for
#                                 one node, "-Xms384m -Xmx384m" each for three)
#
# Progress goes to stderr; stdout is reserved for `env` and `controller`.
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

KAFKA_DEPLOY_DIR="$REPO_ROOT/deploy/kafka"
KAFKA_POM="$KAFKA_DEPLOY_DIR/pom.xml"
# Single source of truth for the Kafka version: the pom.
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n1)"
CACHE_DIR="${INGEST_CACHE_DIR:-${HOME:-/root}/.cache/ingest-pipeline}"
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_START_TIMEOUT=90                      # seconds
KAFKA_STOP_TIMEOUT=30                       # seconds before SIGKILL

# Single node (1, the default) or a three-node cluster (3). When unset, the mode of the
# last `up` in this data dir, so that `down`, `status` and `env` act on what runs.
KAFKA_NODES="${INGEST_KAFKA_NODES:-$(cat "$DATA_DIR/kafka-nodes" 2>/dev/null || echo 1)}"
case "$KAFKA_NODES" in
  1) KAFKA_REPLICATION=1 KAFKA_MIN_ISR=1
     KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx512m}" ;;
  3) KAFKA_REPLICATION=3 KAFKA_MIN_ISR=2
     KAFKA_HEAP="${KAFKA_HEAP:--Xms384m -Xmx384m}" ;;
  *) printf 'ERROR: INGEST_KAFKA_NODES must be 1 or 3, not %s\n' "$KAFKA_NODES" >&2; exit 2 ;;
esac
KAFKA_BOOTSTRAP=""
for _n in $(seq 1 "$KAFKA_NODES"); do
  KAFKA_BOOTSTRAP+="${KAFKA_BOOTSTRAP:+,}127.0.0.1:$((KAFKA_PORT + 10 * (_n - 1)))"
done

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

# --- Nodes -------------------------------------------------------------------
# Node N (1-based) of the configured mode. Single node: the paths of earlier versions
# (<data>/kafka, run/kafka.pid, logs/kafka.log). Cluster: <data>/kafka-N, run/kafka-N.pid,
# logs/kafka-N.log, client port INGEST_KAFKA_PORT + 10(N-1), controller port
# INGEST_KAFKA_CONTROLLER_PORT + 10(N-1).
node_port() { echo $((KAFKA_PORT + 10 * ($1 - 1))); }
node_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 10 * ($1 - 1))); }
node_name() { if [ "$KAFKA_NODES" -eq 1 ]; then echo kafka; else echo "kafka-$1"; fi; }
node_dir() { echo "$DATA_DIR/$(node_name "$1")"; }
node_log_dirs() { echo "$(node_dir "$1")/data"; }
node_props() { echo "$(node_dir "$1")/server.properties"; }
node_pid_file() { echo "$RUN_DIR/$(node_name "$1").pid"; }
all_nodes() { seq 1 "$KAFKA_NODES"; }

kafka_check_node() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$KAFKA_NODES" ] \
    || die "kafka: no node '$1' (this stack has $KAFKA_NODES; INGEST_KAFKA_NODES selects the mode)"
}

# A Kafka UUID (base64url of 16 random bytes, as StorageTool random-uuid prints) without
# starting a JVM. Like Kafka's own Uuid.randomUuid, never one that starts with '-': the
# tools would read it as an option.
kafka_uuid() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" == -* ]] || break
  done
  printf '%s' "$id"
}

kafka_render_config() {
  local n="$1" dir quorum="" i
  dir="$(node_dir "$n")"
  mkdir -p "$dir"
  for i in $(all_nodes); do
    quorum+="${quorum:+,}127.0.0.1:$(node_controller_port "$i")"
  done
  # '|' as sed delimiter: paths contain '/'. Written on every start, so port
  # overrides take effect on the next start.
  sed -e "s|@NODE_ID@|$n|g" \
      -e "s|@KAFKA_PORT@|$(node_port "$n")|g" \
      -e "s|@CONTROLLER_PORT@|$(node_controller_port "$n")|g" \
      -e "s|@QUORUM_BOOTSTRAP@|$quorum|g" \
      -e "s|@KAFKA_LOG_DIRS@|$(node_log_dirs "$n")|g" \
      -e "s|@REPLICATION@|$KAFKA_REPLICATION|g" \
      -e "s|@MIN_ISR@|$KAFKA_MIN_ISR|g" \
      "$KAFKA_DEPLOY_DIR/server.properties" >"$(node_props "$n").tmp"
  mv "$(node_props "$n").tmp" "$(node_props "$n")"
}

# Formats node N's storage once (meta.properties is written by a successful format).
# Single node: a standalone KIP-853 quorum. Cluster: every node is formatted with the
# same --initial-controllers list (id@host:port:directory-id), kept in <data>/kafka-quorum.
kafka_format_ensure() {
  local n="$1" log_dirs
  log_dirs="$(node_log_dirs "$n")"
  [ -f "$log_dirs/meta.properties" ] && return 0
  local idf="$DATA_DIR/kafka-cluster-id" id
  [ "$KAFKA_NODES" -eq 1 ] && idf="$(node_dir 1)/cluster-id"
  if [ ! -s "$idf" ]; then
    kafka_uuid >"$idf.tmp"
    mv "$idf.tmp" "$idf"
  fi
  id="$(tr -d '[:space:]' <"$idf")"
  local mode=(--standalone)
  if [ "$KAFKA_NODES" -gt 1 ]; then
    local qf="$DATA_DIR/kafka-quorum" i controllers=""
    if [ ! -s "$qf" ]; then
      for i in $(all_nodes); do
        controllers+="${controllers:+,}$i@127.0.0.1:$(node_controller_port "$i"):$(kafka_uuid)"
      done
      echo "$controllers" >"$qf.tmp"
      mv "$qf.tmp" "$qf"
    fi
    mode=(--initial-controllers "$(tr -d '[:space:]' <"$qf")")
  fi
  say "kafka: formatting node $n storage (cluster id $id)"
  kafka_tool kafka.tools.StorageTool format "${mode[@]}" -t "$id" -c "$(node_props "$n")" \
    >>"$LOG_DIR/kafka-format.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/kafka-format.log" >&2; die "kafka: storage format of node $n failed"; }
}

# Prints the PID of our running node N, or fails.
kafka_pid() {
  local pid file
  file="$(node_pid_file "$1")"
  [ -f "$file" ] || return 1
  pid="$(cat "$file" 2>/dev/null)"
  # Must be a Kafka broker running *our* config, not a recycled PID.
  pid_matches "$pid" kafka.Kafka "$(node_props "$1")" || return 1
  echo "$pid"
}

# Launches node N in the background (does not wait for it: the nodes of a cluster only
# open their client ports once a controller quorum exists, so all are launched first).
kafka_launch() {
  local n="$1" pid port cport
  if pid="$(kafka_pid "$n")"; then
    say "kafka: node $n already running (pid $pid)"
    return 0
  fi
  rm -f "$(node_pid_file "$n")"
  port="$(node_port "$n")"
  cport="$(node_controller_port "$n")"
  local p
  for p in "$port" "$cport"; do
    port_open "$p" && die "kafka: port $p is already in use by another process (set INGEST_KAFKA_PORT / INGEST_KAFKA_CONTROLLER_PORT)"
  done
  kafka_render_config "$n"
  kafka_format_ensure "$n"

  say "kafka: starting node $n on 127.0.0.1:$port (log: $LOG_DIR/$(node_name "$n").log)"
  # shellcheck disable=SC2086  # KAFKA_HEAP is deliberately word-split.
  # setsid: own session, so the broker survives the calling terminal and
  # Ctrl-C of whatever ran `up`. Without job control the background child is
  # not a process-group leader, so setsid does not fork and $! is the JVM.
  nohup setsid "$JAVA" $KAFKA_HEAP \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DEPLOY_DIR/log4j2.yaml" \
    -Dkafka.logs.dir="$LOG_DIR" -Dkafka.log.name="$(node_name "$n")" -Dkafka.log.level=INFO \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$(node_props "$n")" \
    >>"$LOG_DIR/$(node_name "$n").out" 2>&1 </dev/null &
  echo "$!" >"$(node_pid_file "$n")"
}

# Waits until node N's client port accepts connections; fails fast if its JVM dies.
kafka_wait() {
  local n="$1" pid port
  pid="$(cat "$(node_pid_file "$n")")"
  port="$(node_port "$n")"
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$(node_pid_file "$n")"
      kafka_fail_logs "$n"
      die "kafka: node $n exited during startup"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      kafka_fail_logs "$n"
      die "kafka: node $n not listening on 127.0.0.1:$port after ${KAFKA_START_TIMEOUT}s (still running as pid $pid; 'down' stops it)"
    fi
    sleep 0.5
  done
  say "kafka: node $n listening on 127.0.0.1:$port (pid $pid)"
}

kafka_start() {
  local n
  for n in $(all_nodes); do kafka_launch "$n"; done
  for n in $(all_nodes); do kafka_wait "$n"; done
}

kafka_fail_logs() {
  local f name
  name="$(node_name "$1")"
  for f in "$LOG_DIR/$name.out" "$LOG_DIR/$name.log"; do
    [ -s "$f" ] || continue
    printf -- '----- tail of %s -----\n' "$f" >&2
    tail -n 30 "$f" >&2
  done
}

# Create missing topics. One `--describe` call (which doubles as the
# "broker really serves requests" check, retried until the deadline) tells
# which exist; only missing ones are created, in parallel JVMs, because
# TopicCommand creates one topic per invocation. In cluster mode every topic gets
# replication factor 3, min.insync.replicas 2 and no unclean leader election.
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
      kafka_fail_logs 1
      die "kafka: brokers on $KAFKA_BOOTSTRAP do not answer admin requests"
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
    say "kafka: creating topic $name ($parts partitions, replication factor $KAFKA_REPLICATION, min.insync.replicas $KAFKA_MIN_ISR)"
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$name" --partitions "$parts" \
      --replication-factor "$KAFKA_REPLICATION" --config "min.insync.replicas=$KAFKA_MIN_ISR" \
      --config unclean.leader.election.enable=false \
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

# Sends SIG (TERM: controlled shutdown, KILL: a crash) to node N and waits until it is
# gone (SIGKILL after KAFKA_STOP_TIMEOUT).
kafka_signal() {
  local n="$1" sig="$2" pid
  if ! pid="$(kafka_pid "$n")"; then
    rm -f "$(node_pid_file "$n")"
    say "kafka: node $n not running"
    return 0
  fi
  say "kafka: stopping node $n (pid $pid, SIG$sig)"
  kill "-$sig" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      warn "kafka: node $n still running after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  rm -f "$(node_pid_file "$n")"
  say "kafka: node $n stopped"
}

# Stops every node (of either mode: whatever pid files this data dir holds), in parallel.
kafka_stop() {
  local n pids=() saved="$KAFKA_NODES" modes=1
  [ -n "$(ls "$RUN_DIR"/kafka-*.pid 2>/dev/null)" ] && modes="1 3"
  for KAFKA_NODES in $modes; do
    for n in $(all_nodes); do
      [ -f "$(node_pid_file "$n")" ] || continue
      kafka_signal "$n" TERM &
      pids+=("$!")
    done
  done
  KAFKA_NODES="$saved"
  [ "${#pids[@]}" -gt 0 ] || { say "kafka: not running"; return 0; }
  for n in "${pids[@]}"; do wait "$n" || true; done
}

kafka_up() {
  java_ensure
  kafka_libs_ensure
  echo "$KAFKA_NODES" >"$DATA_DIR/kafka-nodes"
  kafka_start
  kafka_topics_ensure
}

# The node id of the active KRaft controller (the quorum's leader), on stdout.
kafka_active_controller() {
  local n out
  for n in $(all_nodes); do
    port_open "$(node_controller_port "$n")" || continue
    out="$(kafka_tool org.apache.kafka.tools.MetadataQuorumCommand \
      --bootstrap-controller "127.0.0.1:$(node_controller_port "$n")" describe --status 2>/dev/null)" || continue
    printf '%s\n' "$out" | awk '$1 == "LeaderId:" { print $2; found = 1 } END { exit !found }' && return 0
  done
  return 1
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

# The settings a production deployment uses on a machine of this size (docker-compose.yml
# has the same): shared_buffers a quarter of the memory, so the deduplication window's ids
# stay cached; checkpoints every 15 min or 16 GB of WAL, compressed full-page images, so a
# write to a page already written since the last checkpoint costs no 8 kB image in the
# WAL. INGEST_PG_MEMORY=small keeps all that but shared_buffers at 256 MB (what the stack
# used before), to measure what the memory buys.
pg_memory_settings() {
  local mem_kb shared
  mem_kb="$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
  case "${INGEST_PG_MEMORY:-production}" in
    production) shared="$((mem_kb / 4 / 1024))MB" ;;
    small) shared=256MB ;;
    *) die "INGEST_PG_MEMORY must be production or small, not ${INGEST_PG_MEMORY}" ;;
  esac
  printf '%s' "-c shared_buffers=$shared -c effective_cache_size=$((mem_kb / 2 / 1024))MB"
  printf '%s' " -c max_wal_size=16GB -c min_wal_size=1GB -c checkpoint_timeout=15min"
  printf '%s' " -c checkpoint_completion_target=0.9 -c wal_compression=lz4"
  printf '%s' " -c maintenance_work_mem=1GB"
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
  opts+=" -c max_connections=200 $(pg_memory_settings)"
  # pg_ctl hands -o to /bin/sh, so single quotes survive.
  opts+=" -c log_min_duration_statement=1000 -c log_line_prefix='%m [%p] %q%u@%d '"
  # INGEST_PG_OPTIONS: more settings, e.g. for a diagnosis
  # ("-c shared_preload_libraries=pg_stat_statements").
  opts+=" ${INGEST_PG_OPTIONS:-}"
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
  local ok=0 pid state reach n port

  for n in $(all_nodes); do
    port="$(node_port "$n")"
    if pid="$(kafka_pid "$n")"; then state="running (pid $pid)"; else state="stopped"; ok=1; fi
    if port_open "$port"; then reach="reachable on 127.0.0.1:$port"; else reach="not reachable on 127.0.0.1:$port"; ok=1; fi
    if [ "$KAFKA_NODES" -eq 1 ]; then
      printf 'kafka:    %s, %s\n' "$state" "$reach"
    else
      printf 'kafka-%s:  %s, %s\n' "$n" "$state" "$reach"
    fi
  done
  if [ "$KAFKA_NODES" -gt 1 ]; then
    java_ensure
    if [ -f "$KAFKA_LIBS/.complete" ] && n="$(kafka_active_controller)"; then
      printf 'kafka:    active controller: node %s\n' "$n"
    else
      printf 'kafka:    no active controller found\n'; ok=1
    fi
  fi

  if pg_find_bin && pg_running; then state="running (pid $(pg_pid || echo '?'))"; else state="stopped"; ok=1; fi
  if [ -n "$PG_BIN" ] && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -t 3; then
    reach="reachable on 127.0.0.1:$PG_PORT"
  else
    reach="not reachable on 127.0.0.1:$PG_PORT"; ok=1
  fi
  printf 'postgres: %s, %s\n' "$state" "$reach"

  [ "$ok" -eq 0 ] || return 3
}

cmd_node() {
  local n="${1:-}" action="${2:-}"
  kafka_check_node "$n"
  ensure_dirs
  case "$action" in
    start)
      java_ensure
      kafka_libs_ensure
      kafka_launch "$n"
      kafka_wait "$n"
      ;;
    stop) kafka_signal "$n" TERM ;;
    kill) kafka_signal "$n" KILL ;;
    *) die "usage: $0 node N start|stop|kill" ;;
  esac
}

cmd_controller() {
  java_ensure
  kafka_libs_ensure
  kafka_active_controller || die "kafka: no controller answers on this stack's controller ports"
}

cmd_topics() {
  ensure_dirs
  port_open "$KAFKA_PORT" || die "kafka: nothing listens on 127.0.0.1:$KAFKA_PORT (run '$0 up' first)"
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
    node) cmd_node "$@" ;;
    controller) cmd_controller "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
