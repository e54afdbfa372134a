#!/usr/bin/env bash
# A scale-out cluster on one machine: the dev MongoDB, N busyapi nodes (each
# with its own --node-id, port and WAL directory) and HAProxy in front, run
# with the production template scripts/deploy/haproxy.cfg.
#
#   scripts/cluster.sh [N]              start N nodes (default 2); Ctrl-C stops all
#   scripts/cluster.sh --restart-node I restart node I of the running cluster
#   scripts/cluster.sh --rolling-restart restart every node in turn
#
# The last two are run from a second terminal while the first one runs the
# cluster. A restart is what a deploy does: SIGTERM (the node's /readyz turns
# 503, HAProxy takes it out of rotation within a second, the node keeps
# serving for --shutdown-drain-ms, then stops and delivers its backlog), start
# again on the same port and WAL, and wait until HAProxy sees it up.
#
# Environment (defaults in brackets):
#   BUSYAPI_CLUSTER_PORT        HAProxy's port [8080]
#   BUSYAPI_CLUSTER_BIND        HAProxy's address [127.0.0.1]
#   BUSYAPI_CLUSTER_NODE_PORT   node I listens on this + I [3001]
#   BUSYAPI_CLUSTER_STATS_PORT  HAProxy's stats page on loopback [8404]
#   BUSYAPI_CLUSTER_MONGO_PORT  the dev MongoDB [27018]
#   MONGODB_URI                 use this MongoDB instead of the dev one
# State (WALs, logs, the rendered haproxy.cfg, the dev MongoDB's files) is
# in data/cluster/ and kept across runs; remove it to start afresh.
# HAProxy is a Debian package: it is installed with apt-get when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PORT="${BUSYAPI_CLUSTER_PORT:-8080}"
BIND="${BUSYAPI_CLUSTER_BIND:-127.0.0.1}"
NODE_PORT="${BUSYAPI_CLUSTER_NODE_PORT:-3001}"
STATS_PORT="${BUSYAPI_CLUSTER_STATS_PORT:-8404}"
MONGO_PORT="${BUSYAPI_CLUSTER_MONGO_PORT:-27018}"
WORK="$ROOT/data/cluster"
BIN="$ROOT/target/release/busyapi"
# HAProxy takes a node out within ~0.75 s of its /readyz turning 503 (inter
# 500ms, fall 2, fastinter 250ms in haproxy.cfg); the drain is well above it.
DRAIN_MS=2000
# How long a stopping node may take: drain + in-flight + the flusher's 25 s.
STOP_SECS_MAX=90
# How long HAProxy may take to see a started node up (rise 2, downinter 1s).
UP_SECS_MAX=30

die() { echo "cluster.sh: $*" >&2; exit 1; }
log() { echo "== $*"; }

# Succeeds if something accepts TCP connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# GET http://127.0.0.1:$1$2 with bash alone (curl is not on every machine).
http_get() {
  local port="$1" path="$2"
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
  cat <&3
  exec 3<&-
}

# HAProxy's view of node I: UP, DOWN, "UP 1/2" (going down), MAINT, ...
node_status() {
  http_get "$STATS_PORT" "/stats;csv" 2>/dev/null |
    awk -F, -v sv="node$1" '$1 == "busyapi" && $2 == sv { print $18 }'
}

wait_status() {
  local i="$1" want="$2" secs="$3" s=""
  for _ in $(seq 1 $((secs * 5))); do
    s="$(node_status "$i" || true)"
    [[ "$s" == "$want" ]] && return 0
    alive "$(pid_of haproxy)" || die "HAProxy exited; see $WORK/haproxy.log"
    sleep 0.2
  done
  die "HAProxy still reports node $i as '${s:-unknown}' after ${secs}s, not $want"
}

pid_of() { cat "$WORK/$1.pid" 2>/dev/null || true; }
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

ensure_haproxy() {
  command -v haproxy >/dev/null && return 0
  log "installing HAProxy (Debian package)"
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy >/dev/null
  # The package enables its own service on :80 with the default config; this
  # script runs its own instance and leaves the system one alone.
}

# Starts node I in its own session, so a Ctrl-C in the terminal reaches only
# this script, which then stops the node in order (a second signal would make
# busyapi exit at once).
start_node() {
  local i="$1" port=$((NODE_PORT + $1)) uri
  uri="$(cat "$WORK/mongodb-uri")"
  alive "$(pid_of "node$i")" && die "node $i is already running (pid $(pid_of "node$i"))"
  # busyapi refuses a taken port itself; checking first gives the clearer
  # message when the port belongs to something else.
  listening "$port" && die "port $port is taken; set BUSYAPI_CLUSTER_NODE_PORT"
  mkdir -p "$WORK/node$i"
  setsid "$BIN" --node-id "$i" --listen "127.0.0.1:$port" --data-dir "$WORK/node$i" \
    --mongodb-uri "$uri" --shutdown-drain-ms "$DRAIN_MS" \
    >>"$WORK/node$i.log" 2>&1 </dev/null &
  echo $! >"$WORK/node$i.pid"
  for _ in $(seq 1 150); do
    listening "$port" && return 0
    alive "$(pid_of "node$i")" || die "node $i exited at start; see $WORK/node$i.log"
    sleep 0.2
  done
  die "node $i does not listen on $port; see $WORK/node$i.log"
}

# SIGTERM, then waits for the process to be gone.
stop_pid() {
  local pid="$1" what="$2"
  alive "$pid" || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 $((STOP_SECS_MAX * 5))); do
    alive "$pid" || return 0
    sleep 0.2
  done
  echo "cluster.sh: $what did not stop within ${STOP_SECS_MAX}s; killing it (its WAL keeps everything acknowledged)" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

restart_node() {
  local i="$1" pid
  [[ -f "$WORK/nodes" ]] || die "no cluster is running (start one with scripts/cluster.sh N)"
  ((i >= 0 && i < $(cat "$WORK/nodes"))) || die "no node $i: the cluster has nodes 0..$(($(cat "$WORK/nodes") - 1))"
  pid="$(pid_of "node$i")"
  log "node $i: SIGTERM (pid $pid)"
  stop_pid "$pid" "node $i"
  tail -n 2 "$WORK/node$i.log" | sed 's/^/   /'
  log "node $i: starting again on port $((NODE_PORT + i))"
  start_node "$i"
  wait_status "$i" UP "$UP_SECS_MAX"
  log "node $i: up in HAProxy"
}

cleanup() {
  trap - INT TERM EXIT
  echo
  log "stopping"
  stop_pid "$(pid_of haproxy)" "HAProxy"
  local i pids=()
  for ((i = 0; i < N; i++)); do
    pids+=("$(pid_of "node$i")")
    alive "${pids[i]}" && kill -TERM "${pids[i]}"
  done
  for ((i = 0; i < N; i++)); do stop_pid "${pids[i]}" "node $i"; done
  if [[ -f "$WORK/dev-mongo-port" ]]; then scripts/dev-mongo.sh stop "$MONGO_PORT"; fi
  rm -f "$WORK"/*.pid "$WORK/nodes" "$WORK/ports" "$WORK/dev-mongo-port"
  log "stopped; WALs and logs are in $WORK"
}

# The production template with this machine's addresses (see
# scripts/render-haproxy.sh, which the rolling restart test runs too).
render_haproxy_cfg() {
  local nodes=() i
  for ((i = 0; i < N; i++)); do nodes+=("127.0.0.1:$((NODE_PORT + i))"); done
  scripts/render-haproxy.sh "$BIND:$PORT" "127.0.0.1:$STATS_PORT" "${nodes[@]}" >"$WORK/haproxy.cfg"
}

run_cluster() {
  [[ "$N" =~ ^[0-9]+$ ]] && ((N >= 1 && N <= 64)) || die "N must be 1 to 64, not '$N'"
  mkdir -p "$WORK"
  if alive "$(pid_of cluster)"; then die "a cluster is already running (pid $(pid_of cluster))"; fi
  listening "$PORT" && die "port $PORT is taken; set BUSYAPI_CLUSTER_PORT"
  ensure_haproxy
  log "building busyapi (release)"
  cargo build --release --locked --bin busyapi
  echo $$ >"$WORK/cluster.pid"
  echo "$N" >"$WORK/nodes"
  # For --restart-node and --rolling-restart, run from another terminal.
  printf 'NODE_PORT=%s\nSTATS_PORT=%s\n' "$NODE_PORT" "$STATS_PORT" >"$WORK/ports"
  trap 'cleanup; exit 130' INT
  trap 'cleanup; exit 143' TERM
  trap cleanup EXIT

  if [[ -n "${MONGODB_URI:-}" ]]; then
    echo "$MONGODB_URI" >"$WORK/mongodb-uri"
  else
    scripts/dev-mongo.sh start "$MONGO_PORT" "$WORK/mongo"
    echo "$MONGO_PORT" >"$WORK/dev-mongo-port"
    echo "mongodb://127.0.0.1:$MONGO_PORT" >"$WORK/mongodb-uri"
  fi

  local i
  for ((i = 0; i < N; i++)); do
    start_node "$i"
    log "node $i: http://127.0.0.1:$((NODE_PORT + i)) (log: $WORK/node$i.log)"
  done

  render_haproxy_cfg
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "HAProxy refused $WORK/haproxy.cfg"
  setsid haproxy -f "$WORK/haproxy.cfg" -db >>"$WORK/haproxy.log" 2>&1 </dev/null &
  echo $! >"$WORK/haproxy.pid"
  for ((i = 0; i < N; i++)); do wait_status "$i" UP "$UP_SECS_MAX"; done

  cat <<EOF

busyapi cluster: $N node(s) behind HAProxy

  POST http://$BIND:$PORT/api/usages
  HAProxy stats: http://127.0.0.1:$STATS_PORT/stats
  restart a node: scripts/cluster.sh --restart-node I   (rolling: --rolling-restart)

Ctrl-C stops everything.
EOF
  while alive "$(pid_of haproxy)"; do sleep 1; done
  die "HAProxy exited; see $WORK/haproxy.log"
}

# The running cluster's ports win over the environment for the helpers.
if [[ "${1:-}" == --restart-node || "${1:-}" == --rolling-restart ]] && [[ -f "$WORK/ports" ]]; then
  # shellcheck source=/dev/null
  source "$WORK/ports"
fi

case "${1:-}" in
  --restart-node)
    [[ $# == 2 && "$2" =~ ^[0-9]+$ ]] || die "usage: $0 --restart-node I"
    restart_node "$2"
    ;;
  --rolling-restart)
    [[ -f "$WORK/nodes" ]] || die "no cluster is running (start one with scripts/cluster.sh N)"
    for ((n = 0; n < $(cat "$WORK/nodes"); n++)); do restart_node "$n"; done
    ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    ;;
  *)
    N="${1:-2}"
    run_cluster
    ;;
esac
