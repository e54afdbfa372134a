#!/usr/bin/env bash
# The benchmark kit: builds busyapi (release), runs it on fresh temporary data
# directories and drives it with wrk (-t1 -c64, closed-loop) and, if it is
# installed, oha (open-loop, at the mission's 18,000 req/s).
#
#   scripts/bench.sh [usages]  busyapi alone, bench/usages.lua, MongoDB unreachable
#   scripts/bench.sh ingest    bare may_minihttp baseline vs busyapi (MongoDB
#                              unreachable, fsync before every 201), alternating,
#                              medians and the ratio busyapi/bare; then open-loop
#   scripts/bench.sh mixed     busyapi with bench/mixed.lua (non-2xx expected)
#   scripts/bench.sh metrics   busyapi --metrics true vs false, alternating, ratio
#   scripts/bench.sh e2e       with the dev MongoDB live: every 201 ends up as a
#                              document; then drain throughput of a backlog vs a
#                              bare pymongo insert_many client
#   scripts/bench.sh open-loop oha -q 18000 against busyapi (if oha is installed)
#   scripts/bench.sh node      the Node/Express original (bench/node-original)
#                              vs busyapi, each with a fresh dev MongoDB live,
#                              wrk -t1 -c50, ratio busyapi/node; then the
#                              original's flaws measured: repeated ids, and
#                              acknowledged records lost to kill -9 (busyapi
#                              killed the same way, restarted, drained)
#   scripts/bench.sh fsync-floor bare may_minihttp; the same beside a stream
#                              of fdatasyncs nobody waits for; the same with
#                              each 201 waiting for an fdatasync (the thinnest
#                              durable server); busyapi. Alternating, medians
#                              and ratios to bare: what fsync alone costs here
#   scripts/bench.sh cpu       bare may_minihttp, the same waiting for an
#                              fdatasync per 201 (the thinnest durable server),
#                              and busyapi (MongoDB unreachable), held at fixed
#                              open-loop rates by oha
#                              (BENCH_CPU_RATES), alternating: server CPU per
#                              request, p50/p99/p99.9, fsyncs/s, records per
#                              commit, ratios to bare (bench/sidebyside.py)
#   scripts/bench.sh closed-loop busyapi at BENCH_BASE_REV (built in a git
#                              worktree under target/) vs this tree, wrk -t1 at
#                              BENCH_CLOSED_CONNECTIONS, alternating: req/s and
#                              CPU per request, ratios to the base
#   scripts/bench.sh headline  the mission on this box: oha -q 18000 for
#                              BENCH_HEADLINE_S against busyapi with the dev
#                              MongoDB live at nice 19; every response must be
#                              a 201, and after the drain every one a document
#   scripts/bench.sh all       all of the above
#
# Settings (environment):
#   BENCH_DURATION        wrk duration per run                  default 15s
#   BENCH_CONNECTIONS     wrk connections                       default 64
#   BENCH_ROUNDS          rounds in ingest/metrics/fsync-floor/cpu/closed-loop  default 3
#   BENCH_DRAIN_RECORDS   backlog size for the drain test       default 200000
#   BENCH_DRAIN_TIMEOUT_S longest wait for a backlog to drain   default 600
#   BENCH_STALL_S         a drain stuck this long is an error   default 60
#   BENCH_OHA_RATE        oha's fixed request rate              default 18000
#   BENCH_TMPDIR          where data directories go             default target/bench-tmp
#   BENCH_NODE_CONNECTIONS wrk connections in the node mode     default 50
#   BENCH_KILL_AFTER_S    load before the kill -9 (node mode)   default 5
#   BENCH_NODE_LOG_USAGES the original's console.log per POST   default 1
#   BENCH_CPU_RATES       fixed rates of the cpu mode           default 8000,12000,18000
#   BENCH_CPU_DURATION_S  seconds per fixed-rate run            default 10
#   BENCH_BASE_REV        the closed-loop mode's baseline       default 4039c4b
#   BENCH_CLOSED_CONNECTIONS wrk connections, closed-loop mode  default 4,16,64
#   BENCH_HEADLINE_S      seconds of load in the headline mode  default 60
#
# Every run's raw output (wrk, oha, server logs) is kept in
# bench/results/<date>-<mode>/. The numbers mean something only on an
# otherwise idle machine: the load generator itself takes about one core.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

MODE="${1:-usages}"
DURATION="${BENCH_DURATION:-15s}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS=1
ROUNDS="${BENCH_ROUNDS:-3}"
DRAIN_RECORDS="${BENCH_DRAIN_RECORDS:-200000}"
DRAIN_TIMEOUT_S="${BENCH_DRAIN_TIMEOUT_S:-600}"
# A drain with no progress for this long is reported as stuck.
STALL_S="${BENCH_STALL_S:-60}"
OHA_RATE="${BENCH_OHA_RATE:-18000}"
# One contract-shaped body for oha, which sends a fixed body.
OHA_BODY='{"patientId": "100", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}'
PY="$ROOT/.venv/bin/python"
NODE_DIR="$ROOT/bench/node-original"
NODE_CONNECTIONS="${BENCH_NODE_CONNECTIONS:-50}"
KILL_AFTER_S="${BENCH_KILL_AFTER_S:-5}"
NODE_LOG_USAGES="${BENCH_NODE_LOG_USAGES:-1}"
# The node mode measures with -c50, as the original was measured.
if [[ "$MODE" == node ]]; then CONNECTIONS="$NODE_CONNECTIONS"; fi

case "$MODE" in
  usages | ingest | mixed | metrics | e2e | open-loop | node | fsync-floor | cpu | closed-loop | headline | all) ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

# ---------------------------------------------------------------- cleanup

# Everything this script starts, so the EXIT trap can stop it: process ids,
# and the ports of dev MongoDB instances (stopped through dev-mongo.sh).
PIDS=()
MONGO_PORTS=()
mkdir -p "${BENCH_TMPDIR:-$ROOT/target/bench-tmp}"
WORK="$(mktemp -d "${BENCH_TMPDIR:-$ROOT/target/bench-tmp}/run.XXXXXX")"
RESULTS="$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)-$MODE"
mkdir -p "$RESULTS"

# Stops one process we started: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
  local pid="$1" _
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid port
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  for port in "${MONGO_PORTS[@]}"; do stop_mongo "$port" || true; done
  rm -rf "$WORK"
  echo "raw output kept in ${RESULTS#"$ROOT"/}"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  echo "bench: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- helpers

print_machine() {
  echo "== machine: $(hostname), $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "== date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- 2>/dev/null || echo ' (dirty tree)')"
  echo "== wrk -t$THREADS -c$CONNECTIONS -d$DURATION; data in $WORK ($(stat -f -c %T "$WORK"))"
  if [[ "$(stat -f -c %T "$WORK")" == "tmpfs" ]]; then
    echo "!! $WORK is on tmpfs: fdatasync costs nothing there; set BENCH_TMPDIR to a disk" >&2
  fi
}

# wrk from Debian's packages, installed if missing (apt-get update once).
ensure_wrk() {
  command -v wrk >/dev/null && return 0
  local sudo=""
  if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
  echo "== installing wrk"
  $sudo apt-get update
  $sudo apt-get install -y wrk
}

# Release builds, copied out of target/ so a concurrent cargo build cannot
# swap a binary under a running benchmark.
build() {
  mkdir -p "$WORK/bin"
  if [[ "$MODE" =~ ^(ingest|fsync-floor|cpu|all)$ ]]; then
    # A crate of its own, so its may features never reach busyapi's builds.
    cargo build --release --locked --manifest-path bench/bare_minihttp/Cargo.toml
    cp bench/bare_minihttp/target/release/bare_minihttp "$WORK/bin/"
  fi
  cargo build --release --locked --bin busyapi
  cp target/release/busyapi "$WORK/bin/"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until `url` answers, or fails if `pid` died or 15 s passed.
wait_http() {
  local url="$1" pid="$2" log="$3" _
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "process $pid exited (log: $log)"; }
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  die "$url did not answer within 15 s (log: $log)"
}

# start_busyapi NAME PORT MONGODB_URI [busyapi flags...]: a release busyapi
# on a fresh data directory; sets STARTED_PID. The shutdown grace is 0:
# what it would deliver at exit is of no interest here. Ids start at 1
# without asking MongoDB: every run has a MongoDB of its own (or none, or
# one that is down at first), which holds no id of any earlier run.
start_busyapi() {
  local name="$1" port="$2" uri="$3"
  shift 3
  local log="$RESULTS/$name.server.log"
  "$WORK/bin/busyapi" --listen "127.0.0.1:$port" --data-dir "$WORK/$name-data" \
    --mongodb-uri "$uri" --database bench --shutdown-grace-secs 0 --fresh-dir-ids from-one \
    "$@" >"$log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  wait_http "http://127.0.0.1:$port/healthz" "$STARTED_PID" "$log"
}

start_bare() {
  local name="$1" port="$2"
  shift 2
  local log="$RESULTS/$name.server.log"
  "$WORK/bin/bare_minihttp" "127.0.0.1:$port" "$@" >"$log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  wait_http "http://127.0.0.1:$port/" "$STARTED_PID" "$log"
}

stop_started() {
  local pid="$1" p keep=()
  stop_pid "$pid"
  for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# The peak resident memory of a running process, in MiB.
peak_rss_mib() {
  awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

# A numeric field of busyapi's /api/stats; -1 if the server did not answer.
stat_field() {
  local v
  v="$(curl -s --max-time 5 "http://127.0.0.1:$1/api/stats" | sed -n "s/.*\"$2\": \([0-9]*\).*/\1/p")" || true
  echo "${v:--1}"
}

# A field of the BENCH line printed by bench/common.lua.
bench_field() {
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"
}

# run_wrk LABEL SCRIPT URL [script args...]: one wrk run; its output goes to
# the results directory and its BENCH line to LAST_BENCH.
run_wrk() {
  local label="$1" script="$2" url="$3"
  shift 3
  local out="$RESULTS/$label.wrk.txt" args=()
  if (($# > 0)); then args=(-- "$@"); fi
  if ! wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "$url" "${args[@]}" >"$out" 2>&1; then
    cat "$out" >&2
    die "wrk failed ($label)"
  fi
  LAST_BENCH="$(grep '^BENCH ' "$out" | tail -1)"
  [[ -n "$LAST_BENCH" ]] || { cat "$out" >&2; die "wrk printed no BENCH line ($label)"; }
}

# One line per run: requests/s, p50, p99, non-2xx.
print_run() {
  local label="$1" b="$2" extra="${3:-}"
  printf '%-26s %10s req/s   p50 %8s ms   p99 %8s ms   non-2xx %s   socket errors %s%s\n' \
    "$label" "$(bench_field "$b" rps)" "$(bench_field "$b" p50_ms)" "$(bench_field "$b" p99_ms)" \
    "$(bench_field "$b" non2xx)" "$(bench_field "$b" socket_errors)" "$extra"
}

median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) { print v[(NR + 1) / 2]; exit }
    m = sprintf("%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2); sub(/\.?0+$/, "", m); print m }'
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'
}

now_s() { date +%s.%N; }

# ---------------------------------------------------------------- modes

# busyapi alone with MongoDB unreachable: the WAL fills, every 201 is fsynced.
mode_usages() {
  echo
  echo "== usages: busyapi (MongoDB unreachable), bench/usages.lua"
  local port
  port="$(free_port)"
  start_busyapi usages "$port" "mongodb://127.0.0.1:$(free_port)"
  run_wrk usages bench/usages.lua "http://127.0.0.1:$port"
  print_run "busyapi" "$LAST_BENCH" "   peak RSS $(peak_rss_mib "$STARTED_PID") MiB"
  echo "server errors (5xx) counted by busyapi: $(stat_field "$port" serverErrors)"
  stop_started "$STARTED_PID"
}

# Bare and busyapi alternately (bare, busyapi, bare, busyapi, ...), each on
# a fresh process; prints every run, the medians and busyapi/bare.
mode_ingest() {
  echo
  echo "== ingest: bare may_minihttp vs busyapi (MongoDB unreachable, fdatasync before every 201)"
  local bare_rps=() bare_p50=() bare_p99=() busy_rps=() busy_p50=() busy_p99=() r port dead
  dead="$(free_port)"
  for r in $(seq 1 "$ROUNDS"); do
    port="$(free_port)"
    start_bare "bare-$r" "$port"
    run_wrk "bare-$r" bench/usages.lua "http://127.0.0.1:$port"
    print_run "round $r  bare" "$LAST_BENCH" "   peak RSS $(peak_rss_mib "$STARTED_PID") MiB"
    bare_rps+=("$(bench_field "$LAST_BENCH" rps)")
    bare_p50+=("$(bench_field "$LAST_BENCH" p50_ms)")
    bare_p99+=("$(bench_field "$LAST_BENCH" p99_ms)")
    stop_started "$STARTED_PID"

    port="$(free_port)"
    start_busyapi "busyapi-$r" "$port" "mongodb://127.0.0.1:$dead"
    run_wrk "busyapi-$r" bench/usages.lua "http://127.0.0.1:$port"
    print_run "round $r  busyapi" "$LAST_BENCH" "   peak RSS $(peak_rss_mib "$STARTED_PID") MiB"
    busy_rps+=("$(bench_field "$LAST_BENCH" rps)")
    busy_p50+=("$(bench_field "$LAST_BENCH" p50_ms)")
    busy_p99+=("$(bench_field "$LAST_BENCH" p99_ms)")
    stop_started "$STARTED_PID"
  done
  local b_rps u_rps b_p99 u_p99
  b_rps="$(median "${bare_rps[@]}")"
  u_rps="$(median "${busy_rps[@]}")"
  b_p99="$(median "${bare_p99[@]}")"
  u_p99="$(median "${busy_p99[@]}")"
  printf 'median of %d  bare       %10s req/s   p50 %8s ms   p99 %8s ms\n' "$ROUNDS" "$b_rps" "$(median "${bare_p50[@]}")" "$b_p99"
  printf 'median of %d  busyapi    %10s req/s   p50 %8s ms   p99 %8s ms\n' "$ROUNDS" "$u_rps" "$(median "${busy_p50[@]}")" "$u_p99"
  echo "ratio busyapi/bare: requests/s $(ratio "$u_rps" "$b_rps"), p99 $(ratio "$u_p99" "$b_p99")"
}

# The floor under the 0.85x target, side by side: the bare handler; the
# same with a back-to-back fdatasync stream beside it that nobody waits
# for (what the fsyncs cost in CPU); the same with every 201 waiting for an
# fdatasync that started after its request arrived (the thinnest durable
# server on this stack, see bench/bare_minihttp); and busyapi.
mode_fsync_floor() {
  echo
  echo "== fsync-floor: bare, bare + fsync stream, bare waiting for fsyncs, busyapi (MongoDB unreachable)"
  local -A rps=()
  local kinds=(bare stream wait busyapi) r k port dead syncs
  dead="$(free_port)"
  for r in $(seq 1 "$ROUNDS"); do
    for k in "${kinds[@]}"; do
      port="$(free_port)"
      case "$k" in
        bare) start_bare "$k-$r" "$port" ;;
        stream | wait)
          mkdir -p "$WORK/$k-$r"
          start_bare "$k-$r" "$port" "--fsync-$k" "$WORK/$k-$r"
          ;;
        busyapi) start_busyapi "$k-$r" "$port" "mongodb://127.0.0.1:$dead" ;;
      esac
      run_wrk "$k-$r" bench/usages.lua "http://127.0.0.1:$port"
      stop_started "$STARTED_PID"
      rm -rf "${WORK:?}/$k-$r"
      rps[$k]+=" $(bench_field "$LAST_BENCH" rps)"
      # The stream's own count, a line a second; the middle one.
      syncs="$(awk '/^fsync stream:/ { v[++n] = $3 } END { print (n ? v[int(n / 2) + 1] : "") }' \
        "$RESULTS/$k-$r.server.log")"
      print_run "round $r  $k" "$LAST_BENCH" "${syncs:+   $syncs fdatasyncs/s}"
    done
  done
  local b
  # shellcheck disable=SC2086 # the lists are space-separated numbers
  b="$(median ${rps[bare]})"
  for k in "${kinds[@]}"; do
    # shellcheck disable=SC2086
    printf 'median of %d  %-8s %10s req/s   ratio to bare %s\n' "$ROUNDS" "$k" \
      "$(median ${rps[$k]})" "$(ratio "$(median ${rps[$k]})" "$b")"
  done
}

mode_mixed() {
  echo
  echo "== mixed: busyapi (MongoDB unreachable), bench/mixed.lua (10 of 20 requests are bad)"
  local port out
  port="$(free_port)"
  start_busyapi mixed "$port" "mongodb://127.0.0.1:$(free_port)"
  run_wrk mixed bench/mixed.lua "http://127.0.0.1:$port"
  out="$RESULTS/mixed.wrk.txt"
  print_run "busyapi mixed" "$LAST_BENCH"
  sed -n '/^sent by kind/,/^expected:/p; /^statuses:/p' "$out"
  if grep -Eq '^statuses:.*\b5[0-9][0-9] x' "$out"; then
    echo "!! 5xx responses under the mixed load (see $out)"
  fi
  stop_started "$STARTED_PID"
}

mode_metrics() {
  echo
  echo "== metrics: busyapi --metrics true vs --metrics false (MongoDB unreachable)"
  local on=() off=() on99=() off99=() r port dead setting
  dead="$(free_port)"
  for r in $(seq 1 "$ROUNDS"); do
    for setting in true false; do
      port="$(free_port)"
      start_busyapi "metrics-$setting-$r" "$port" "mongodb://127.0.0.1:$dead" --metrics "$setting"
      run_wrk "metrics-$setting-$r" bench/usages.lua "http://127.0.0.1:$port"
      print_run "round $r  metrics $setting" "$LAST_BENCH"
      if [[ "$setting" == true ]]; then
        on+=("$(bench_field "$LAST_BENCH" rps)")
        on99+=("$(bench_field "$LAST_BENCH" p99_ms)")
      else
        off+=("$(bench_field "$LAST_BENCH" rps)")
        off99+=("$(bench_field "$LAST_BENCH" p99_ms)")
      fi
      stop_started "$STARTED_PID"
    done
  done
  local m_on m_off
  m_on="$(median "${on[@]}")"
  m_off="$(median "${off[@]}")"
  printf 'median of %d  metrics true   %10s req/s   p99 %8s ms\n' "$ROUNDS" "$m_on" "$(median "${on99[@]}")"
  printf 'median of %d  metrics false  %10s req/s   p99 %8s ms\n' "$ROUNDS" "$m_off" "$(median "${off99[@]}")"
  echo "ratio on/off: requests/s $(ratio "$m_on" "$m_off")"
}

# wait_drained PORT FLUSHED0 [TARGET]: polls /api/stats until
# walBacklogRecords is 0. Sets DRAIN_FIRST_S (when `flushed` first moved
# past FLUSHED0), DRAIN_DONE_S (when TARGET more records were flushed, i.e.
# confirmed by MongoDB) and DRAIN_END_S (backlog 0, which also waits for the
# checkpoint, rewritten about once a second). Prints progress every 5 s.
wait_drained() {
  local port="$1" flushed0="$2" target="${3:-0}" backlog flushed last_print t
  local last_flushed=-1 last_move
  DRAIN_FIRST_S=""
  DRAIN_DONE_S=""
  last_move="$(now_s)"
  last_print="$(now_s)"
  local deadline
  deadline="$(awk -v n="$(now_s)" -v d="$DRAIN_TIMEOUT_S" 'BEGIN { printf "%.0f", n + d }')"
  while :; do
    t="$(now_s)"
    backlog="$(stat_field "$port" walBacklogRecords)"
    flushed="$(stat_field "$port" flushed)"
    if [[ -z "$DRAIN_FIRST_S" && "$flushed" -gt "$flushed0" ]]; then DRAIN_FIRST_S="$t"; fi
    if [[ -z "$DRAIN_DONE_S" && "$flushed" -ge $((flushed0 + target)) && "$flushed" -ge 0 ]]; then DRAIN_DONE_S="$t"; fi
    if [[ "$backlog" == "0" ]]; then
      DRAIN_END_S="$t"
      DRAIN_FIRST_S="${DRAIN_FIRST_S:-$t}"
      DRAIN_DONE_S="${DRAIN_DONE_S:-$t}"
      return 0
    fi
    if awk -v t="$t" -v d="$deadline" 'BEGIN { exit !(t > d) }'; then
      die "backlog not drained after ${DRAIN_TIMEOUT_S}s (walBacklogRecords $backlog)"
    fi
    if [[ "$flushed" != "$last_flushed" ]]; then
      last_flushed="$flushed"
      last_move="$t"
    elif awk -v t="$t" -v m="$last_move" -v s="$STALL_S" 'BEGIN { exit !(t - m > s) }'; then
      die "no delivery progress for ${STALL_S}s (walBacklogRecords $backlog, flushed $flushed);" \
        "see the server log and the dev MongoDB log (data/secantusd-<port>.log, copied to ${RESULTS#"$ROOT"/})"
    fi
    if awk -v t="$t" -v l="$last_print" 'BEGIN { exit !(t - l >= 5) }'; then
      echo "   ... backlog $backlog records, flushed $flushed"
      last_print="$t"
    fi
    sleep 0.2
  done
}

start_mongo() {
  local port="$1" dir="$2"
  MONGO_PORTS+=("$port")
  scripts/dev-mongo.sh start "$port" "$dir" >/dev/null
}

# Stops a dev MongoDB this script started and waits (up to 10 s) for it to
# exit, so the next measurement does not share the cores with its shutdown.
stop_mongo() {
  local port="$1" pidfile pid="" _
  pidfile="$ROOT/data/secantusd-$port.pid"
  [[ -f "$pidfile" ]] && pid="$(cat "$pidfile")"
  scripts/dev-mongo.sh stop "$port"
  if [[ -n "$pid" ]]; then
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  cp "$ROOT/data/secantusd-$port.log" "$RESULTS/mongo-$port.log" 2>/dev/null || true
}

# start_prepared_mongo PORT DIR: a fresh dev MongoDB whose collection and
# index exist already (see `prepare` in bench/mongo_bench.py for why).
start_prepared_mongo() {
  local port="$1" dir="$2"
  start_mongo "$port" "$dir"
  "$PY" bench/mongo_bench.py prepare "mongodb://127.0.0.1:$port" bench usages
}

mode_e2e() {
  [[ -x "$PY" ]] || scripts/dev-mongo.sh install
  echo
  echo "== e2e: busyapi with the dev MongoDB live, bench/usages.lua (every response tallied)"
  local mport port uri
  mport="$(free_port)"
  start_prepared_mongo "$mport" "$WORK/mongo-live"
  uri="mongodb://127.0.0.1:$mport"
  port="$(free_port)"
  start_busyapi e2e "$port" "$uri"
  run_wrk e2e bench/usages.lua "http://127.0.0.1:$port" count
  local b="$LAST_BENCH" n201 t0 docs acked committed
  n201="$(bench_field "$b" n201)"
  print_run "busyapi + MongoDB" "$b" "   peak RSS $(peak_rss_mib "$STARTED_PID") MiB"
  t0="$(now_s)"
  wait_drained "$port" 0
  echo "backlog drained $(awk -v a="$t0" -v b="$DRAIN_END_S" 'BEGIN { printf "%.1f", b - a }') s after wrk stopped"
  docs="$("$PY" bench/mongo_bench.py count "$uri" bench usages)"
  acked="$(stat_field "$port" acknowledged)"
  committed="$(stat_field "$port" lastId)"
  echo "201s seen by wrk:          $n201"
  echo "acknowledged (busyapi):    $acked"
  echo "committed to WAL (lastId): $committed"
  echo "documents in MongoDB:      $docs"
  # wrk stops with up to one request in flight per connection: those are
  # committed and delivered, but wrk never reads their 201.
  if [[ "$docs" == "$n201" ]]; then
    echo "CHECK OK: documents == 201s"
  elif ((docs > n201 && docs - n201 <= CONNECTIONS)) && [[ "$docs" == "$committed" ]]; then
    echo "CHECK OK: documents == committed records; $((docs - n201)) more than the 201s wrk read" \
      "(at most one request per connection was in flight when wrk stopped)"
  else
    echo "CHECK FAILED: documents $docs vs 201s $n201 (committed $committed)"
    E2E_FAILED=1
  fi
  stop_started "$STARTED_PID"
  stop_mongo "$mport"

  echo
  echo "== e2e drain: a backlog of ~$DRAIN_RECORDS records built with MongoDB down, then MongoDB started"
  # The data directory is prepared on another port first, so the collection
  # exists before busyapi can reach the server.
  mport="$(free_port)"
  start_prepared_mongo "$mport" "$WORK/mongo-drain"
  stop_mongo "$mport"
  mport="$(free_port)"
  uri="mongodb://127.0.0.1:$mport"
  port="$(free_port)"
  start_busyapi drain "$port" "$uri"
  # wrk knows only durations: limit=N stops its threads after N responses,
  # and the script interrupts wrk once the server has acknowledged them.
  wrk -t"$THREADS" -c"$CONNECTIONS" -d600s --latency -s bench/usages.lua \
    "http://127.0.0.1:$port" -- "limit=$DRAIN_RECORDS" >"$RESULTS/drain-fill.wrk.txt" 2>&1 &
  local wrk_pid=$!
  PIDS+=("$wrk_pid")
  while (($(stat_field "$port" acknowledged) < DRAIN_RECORDS)); do
    kill -0 "$wrk_pid" 2>/dev/null || die "wrk exited early (see $RESULTS/drain-fill.wrk.txt)"
    sleep 0.2
  done
  sleep 0.5
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true
  local backlog flushed0 t_up drained busy_rate busy_rate_total docs2
  backlog="$(stat_field "$port" walBacklogRecords)"
  flushed0="$(stat_field "$port" flushed)"
  echo "backlog: $backlog records ($(stat_field "$port" walBacklogBytes) bytes)"
  start_mongo "$mport" "$WORK/mongo-drain"
  t_up="$(now_s)"
  wait_drained "$port" "$flushed0" "$backlog"
  drained=$(($(stat_field "$port" flushed) - flushed0))
  # Rates end when `flushed` covered the backlog (MongoDB confirmed it all).
  busy_rate="$(awk -v n="$drained" -v a="$DRAIN_FIRST_S" -v b="$DRAIN_DONE_S" 'BEGIN { printf "%.1f", n / (b - a) }')"
  busy_rate_total="$(awk -v n="$drained" -v a="$t_up" -v b="$DRAIN_DONE_S" 'BEGIN { printf "%.1f", n / (b - a) }')"
  docs2="$("$PY" bench/mongo_bench.py count "$uri" bench usages)"
  echo "busyapi drain: $drained records; $busy_rate docs/s once flowing," \
    "$busy_rate_total docs/s counted from MongoDB up (includes $(awk -v a="$t_up" -v b="$DRAIN_FIRST_S" \
      'BEGIN { printf "%.1f", b - a }') s of reconnect backoff and index creation);" \
    "walBacklogRecords reached 0 $(awk -v a="$DRAIN_DONE_S" -v b="$DRAIN_END_S" 'BEGIN { printf "%.1f", b - a }') s later;" \
    "documents in MongoDB: $docs2"
  [[ "$docs2" == "$drained" ]] || echo "!! documents ($docs2) != records drained ($drained)"
  stop_started "$STARTED_PID"
  stop_mongo "$mport"

  # The bare client, each time against a fresh dev server of the same kind:
  # first with busyapi's secondary index (the fair comparison), then without.
  local line bare_rate="" rate index
  for index in index noindex; do
    mport="$(free_port)"
    start_mongo "$mport" "$WORK/mongo-bare-$index"
    line="$("$PY" bench/mongo_bench.py insert "mongodb://127.0.0.1:$mport" bench usages "$drained" 1000 "$index" |
      tee "$RESULTS/bare-insert-$index.txt")"
    stop_mongo "$mport"
    rate="$(sed -n 's/.*docs_per_s=\([0-9.]*\).*/\1/p' <<<"$line")"
    if [[ "$index" == index ]]; then
      bare_rate="$rate"
      echo "bare pymongo insert_many(1000, unordered, j:true), index {patientId, timestamp} as busyapi: $drained docs, $rate docs/s"
    else
      echo "bare pymongo insert_many(1000, unordered, j:true), _id index only (reference):      $drained docs, $rate docs/s"
    fi
  done
  echo "ratio busyapi/bare drain: $(ratio "$busy_rate" "$bare_rate") (once flowing)," \
    "$(ratio "$busy_rate_total" "$bare_rate") (from MongoDB up)"
}

# Open-loop latency at the mission's load; wrk -t1 is closed-loop and hides
# queueing delay (coordinated omission).
mode_open_loop() {
  echo
  echo "== open-loop: oha -q $OHA_RATE -c $CONNECTIONS --latency-correction -z $DURATION against busyapi (MongoDB unreachable)"
  if ! command -v oha >/dev/null; then
    echo "oha is not installed; skipping. 'cargo install oha' installs it (slow to build)."
    return 0
  fi
  local port out
  port="$(free_port)"
  start_busyapi open-loop "$port" "mongodb://127.0.0.1:$(free_port)"
  out="$RESULTS/open-loop.oha.txt"
  oha --no-tui -q "$OHA_RATE" -c "$CONNECTIONS" --latency-correction -z "$DURATION" \
    -m POST -T application/json -d "$OHA_BODY" "http://127.0.0.1:$port/api/usages" >"$out" 2>&1 ||
    { cat "$out" >&2; die "oha failed"; }
  grep -E 'Requests/sec|Success rate|^[[:space:]]*(50|90|99|99\.9)(\.0+)?%' "$out" || cat "$out"
  stop_started "$STARTED_PID"
}

# ---------------------------------------------------------------- cost at fixed rates

# The command line sidebyside.py starts busyapi with ({port} and {data} are
# its own); MongoDB is unreachable unless a URI is given.
busyapi_command() {
  local bin="$1" uri="${2:-mongodb://127.0.0.1:$(free_port)}"
  echo "$bin --listen 127.0.0.1:{port} --data-dir {data} --mongodb-uri $uri --database bench --shutdown-grace-secs 0 --fresh-dir-ids from-one"
}

ensure_oha() {
  command -v oha >/dev/null && return 0
  echo "== installing oha (cargo install --locked oha; slow to build)"
  cargo install --locked oha
}

mode_cpu() {
  ensure_oha
  echo
  echo "== cpu: bare may_minihttp vs busyapi at fixed rates (oha -c $CONNECTIONS --latency-correction, MongoDB unreachable)"
  python3 bench/sidebyside.py fixed-rate --results "$RESULTS" --rounds "$ROUNDS" \
    --rates "${BENCH_CPU_RATES:-8000,12000,18000}" --duration-s "${BENCH_CPU_DURATION_S:-10}" \
    --connections "$CONNECTIONS" \
    --server "bare=$WORK/bin/bare_minihttp 127.0.0.1:{port}" \
    --server "bare-fsync-wait=$WORK/bin/bare_minihttp 127.0.0.1:{port} --fsync-wait {data}" \
    --server "busyapi=$(busyapi_command "$WORK/bin/busyapi")"
}

# Builds busyapi at REV in a worktree of its own; prints the binary's path.
build_rev() {
  local rev="$1" tree="$ROOT/target/bench-base/src-$1"
  if [[ ! -d "$tree" ]]; then
    git worktree add --detach "$tree" "$rev" >&2
  fi
  CARGO_TARGET_DIR="$ROOT/target/bench-base/target" \
    cargo build --release --locked --bin busyapi --manifest-path "$tree/Cargo.toml" >&2
  cp "$ROOT/target/bench-base/target/release/busyapi" "$WORK/bin/busyapi-$rev"
  echo "$WORK/bin/busyapi-$rev"
}

mode_closed_loop() {
  ensure_wrk
  local rev="${BENCH_BASE_REV:-4039c4b}" base
  base="$(build_rev "$rev")"
  echo
  echo "== closed-loop: busyapi at $rev vs this tree, wrk -t1 (MongoDB unreachable)"
  python3 bench/sidebyside.py closed-loop --results "$RESULTS" --rounds "$ROUNDS" \
    --connections "${BENCH_CLOSED_CONNECTIONS:-4,16,64}" --duration-s "${DURATION%s}" \
    --server "$rev=$(busyapi_command "$base")" \
    --server "this-tree=$(busyapi_command "$WORK/bin/busyapi")"
}

# The mission's headline: 18,000 requests/s open loop for a minute, the dev
# MongoDB live on the same box at the lowest CPU priority (standing in for
# a database on hosts of its own). Progress is read from busyapi's own
# /api/stats; MongoDB is counted once, at the end.
mode_headline() {
  ensure_oha
  [[ -x "$PY" ]] || scripts/dev-mongo.sh install
  local secs="${BENCH_HEADLINE_S:-60}" rate="$OHA_RATE" mport port uri out pid cpu0 cpu1 docs acked
  echo
  echo "== headline: oha -q $rate -c $CONNECTIONS --latency-correction -z ${secs}s, dev MongoDB live at nice 19"
  mport="$(free_port)"
  start_prepared_mongo "$mport" "$WORK/mongo-headline"
  pid="$(cat "$ROOT/data/secantusd-$mport.pid")"
  renice -n 19 -p "$pid" >/dev/null
  uri="mongodb://127.0.0.1:$mport"
  port="$(free_port)"
  start_busyapi headline "$port" "$uri"
  cpu0="$(awk '{ print $14 + $15 }' "/proc/$STARTED_PID/stat")"
  out="$RESULTS/headline.oha.json"
  oha --no-tui --output-format json -q "$rate" -c "$CONNECTIONS" --latency-correction -z "${secs}s" \
    -m POST -T application/json -d "$OHA_BODY" "http://127.0.0.1:$port/api/usages" >"$out" ||
    die "oha failed"
  cpu1="$(awk '{ print $14 + $15 }' "/proc/$STARTED_PID/stat")"
  python3 - "$out" "$cpu0" "$cpu1" "$(getconf CLK_TCK)" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
codes = r["statusCodeDistribution"]
n = sum(codes.values())
p = r["latencyPercentiles"]
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4])
print(f"responses {n}  statuses {codes}  errors {r.get('errorDistribution', {})}")
print(f"p50 {p['p50']*1e3:.2f} ms  p99 {p['p99']*1e3:.2f} ms  p99.9 {p['p99.9']*1e3:.2f} ms"
      f"  busyapi CPU per request {cpu / max(n, 1) * 1e6:.1f} us (delivery included)")
PYEOF
  acked="$(stat_field "$port" acknowledged)"
  echo "acknowledged by busyapi: $acked; waiting for the backlog to drain"
  wait_drained "$port" 0
  docs="$("$PY" bench/mongo_bench.py count "$uri" bench usages)"
  echo "documents in MongoDB: $docs (acknowledged $acked)"
  [[ "$docs" == "$acked" ]] || die "MongoDB holds $docs documents for $acked acknowledged usages"
  stop_started "$STARTED_PID"
}

# ---------------------------------------------------------------- node original

# npm ci in bench/node-original when node_modules is missing (or older than
# the lock file).
ensure_node_original() {
  command -v node >/dev/null || die "node is not installed (the node mode needs Node 20 and npm)"
  local stamp="$NODE_DIR/node_modules/.package-lock.json"
  if [[ ! -f "$stamp" || "$NODE_DIR/package-lock.json" -nt "$stamp" ]]; then
    echo "== npm ci in bench/node-original"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund) >"$RESULTS/npm-ci.log" 2>&1 ||
      { cat "$RESULTS/npm-ci.log" >&2; die "npm ci failed"; }
  fi
}

node_pkg_version() {
  node -p "require('$NODE_DIR/node_modules/$1/package.json').version"
}

# start_node NAME PORT MONGODB_URI: the Node original; sets STARTED_PID (the
# node process itself, so kill -9 reaches it). It runs as `npm start` runs
# the original: NODE_ENV unset, i.e. express's "development", with morgan's
# request log on (bench/usages.lua sends only valid bodies, so the
# development error pages never show).
start_node() {
  local name="$1" port="$2" uri="$3"
  local log="$RESULTS/$name.server.log"
  PORT="$port" MONGODB_URI="$uri" NODE_ENV=development LOG_USAGES="$NODE_LOG_USAGES" \
    node "$NODE_DIR/server.js" >"$log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  wait_http "http://127.0.0.1:$port/" "$STARTED_PID" "$log"
}

# settled_count URI DB COLLECTION: the document count once two reads a
# second apart agree (inserts sent before a kill may still be landing).
settled_count() {
  local prev=-1 n=-1 _
  for _ in $(seq 1 30); do
    n="$("$PY" bench/mongo_bench.py count "$@")"
    [[ "$n" == "$prev" ]] && break
    prev="$n"
    sleep 1
  done
  echo "$n"
}

# kill_under_load NAME URL PID: drives URL with bench/node-original/ids.lua
# (statuses and ids tallied), kill -9s PID after KILL_AFTER_S seconds, then
# stops wrk with SIGINT (it still reports). Sets LAST_BENCH and LAST_IDS;
# the distinct ids go to $WORK/NAME.ids.
kill_under_load() {
  local name="$1" url="$2" pid="$3" out="$RESULTS/$1.wrk.txt" wrk_pid
  wrk -t"$THREADS" -c"$CONNECTIONS" -d600s --latency -s bench/node-original/ids.lua \
    "$url" -- "ids_file=$WORK/$name.ids" >"$out" 2>&1 &
  wrk_pid=$!
  PIDS+=("$wrk_pid")
  sleep "$KILL_AFTER_S"
  kill -0 "$wrk_pid" 2>/dev/null || { cat "$out" >&2; die "wrk exited early ($name)"; }
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  stop_started "$pid"
  sleep 0.5
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true
  stop_started "$wrk_pid"
  LAST_BENCH="$(grep '^BENCH ' "$out" | tail -1)"
  LAST_IDS="$(grep '^IDS ' "$out" | tail -1)"
  [[ -n "$LAST_BENCH" && -n "$LAST_IDS" ]] || { cat "$out" >&2; die "wrk printed no BENCH/IDS line ($name)"; }
}

# The Node/Express original (bench/node-original/server.js) against busyapi,
# each on a fresh dev MongoDB, then the original's flaws measured.
mode_node() {
  [[ -x "$PY" ]] || scripts/dev-mongo.sh install
  ensure_node_original
  local CONNECTIONS="$NODE_CONNECTIONS"
  local mport uri port n_rps n_p99 u_rps u_p99 requests n201 distinct docs lost line missing t0
  echo
  echo "== node: the Node/Express original vs busyapi, each with a fresh dev MongoDB live;" \
    "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, bench/usages.lua"
  echo "node $(node --version), express $(node_pkg_version express), mongodb driver $(node_pkg_version mongodb);" \
    "the original's console.log per POST $([[ "$NODE_LOG_USAGES" == 0 ]] && echo off || echo on)"

  mport="$(free_port)"
  start_mongo "$mport" "$WORK/mongo-node"
  uri="mongodb://127.0.0.1:$mport"
  port="$(free_port)"
  start_node node "$port" "$uri"
  run_wrk node bench/usages.lua "http://127.0.0.1:$port"
  print_run "node original" "$LAST_BENCH" "   peak RSS $(peak_rss_mib "$STARTED_PID") MiB"
  n_rps="$(bench_field "$LAST_BENCH" rps)"
  n_p99="$(bench_field "$LAST_BENCH" p99_ms)"
  requests="$(bench_field "$LAST_BENCH" requests)"
  # SIGTERM: the original has no shutdown hook, so the array's tail is gone.
  stop_started "$STARTED_PID"
  echo "   documents in MongoDB after SIGTERM: $(settled_count "$uri" busyapi_node usages) of $requests requests answered"
  stop_mongo "$mport"

  # Prepared like e2e's (collection and busyapi's index created first).
  mport="$(free_port)"
  start_prepared_mongo "$mport" "$WORK/mongo-busyapi"
  uri="mongodb://127.0.0.1:$mport"
  port="$(free_port)"
  start_busyapi node-busyapi "$port" "$uri"
  run_wrk node-busyapi bench/usages.lua "http://127.0.0.1:$port"
  print_run "busyapi" "$LAST_BENCH" "   peak RSS $(peak_rss_mib "$STARTED_PID") MiB"
  u_rps="$(bench_field "$LAST_BENCH" rps)"
  u_p99="$(bench_field "$LAST_BENCH" p99_ms)"
  stop_started "$STARTED_PID"
  stop_mongo "$mport"
  echo "ratio busyapi/node: requests/s $(ratio "$u_rps" "$n_rps"), p99 $(ratio "$u_p99" "$n_p99")"

  echo
  echo "== node flaws: bench/node-original/ids.lua (every status and id tallied), kill -9 after ${KILL_AFTER_S}s of load;" \
    "a fresh dev MongoDB each"
  mport="$(free_port)"
  start_mongo "$mport" "$WORK/mongo-node-kill"
  uri="mongodb://127.0.0.1:$mport"
  port="$(free_port)"
  start_node node-kill "$port" "$uri"
  kill_under_load node-kill "http://127.0.0.1:$port" "$STARTED_PID"
  n201="$(bench_field "$LAST_BENCH" n201)"
  distinct="$(bench_field "$LAST_IDS" distinct)"
  docs="$(settled_count "$uri" busyapi_node usages)"
  stop_mongo "$mport"
  lost=$((n201 - docs))
  echo "node original  (a) ids:     $n201 acknowledged, $distinct distinct ids" \
    "($(bench_field "$LAST_IDS" min)..$(bench_field "$LAST_IDS" max))"
  if ((lost >= 0)); then
    echo "node original  (b) kill -9: $n201 acknowledged, $docs documents in MongoDB: lost $lost acknowledged records"
  else
    echo "node original  (b) kill -9: $n201 acknowledged, $docs documents in MongoDB: lost none" \
      "($((-lost)) more documents than 201s read)"
  fi

  mport="$(free_port)"
  start_prepared_mongo "$mport" "$WORK/mongo-busyapi-kill"
  uri="mongodb://127.0.0.1:$mport"
  port="$(free_port)"
  start_busyapi busyapi-kill "$port" "$uri"
  kill_under_load busyapi-kill "http://127.0.0.1:$port" "$STARTED_PID"
  n201="$(bench_field "$LAST_BENCH" n201)"
  distinct="$(bench_field "$LAST_IDS" distinct)"
  echo "busyapi        (a) ids:     $n201 acknowledged, $distinct distinct ids" \
    "($(bench_field "$LAST_IDS" min)..$(bench_field "$LAST_IDS" max))"
  # The same data directory ($WORK/busyapi-kill-data): the WAL replays.
  mv "$RESULTS/busyapi-kill.server.log" "$RESULTS/busyapi-kill.before-kill.server.log"
  port="$(free_port)"
  t0="$(now_s)"
  start_busyapi busyapi-kill "$port" "$uri"
  wait_drained "$port" 0
  line="$("$PY" bench/node-original/acked_ids.py "$uri" bench usages "$WORK/busyapi-kill.ids" |
    tee "$RESULTS/busyapi-kill.acked.txt")"
  docs="$(bench_field "$line" documents)"
  missing="$(bench_field "$line" missing)"
  echo "busyapi        (b) kill -9: restarted on the same data directory, drained" \
    "$(awk -v a="$t0" -v b="$DRAIN_END_S" 'BEGIN { printf "%.1f", b - a }') s after the restart;" \
    "$n201 acknowledged, $docs documents in MongoDB, $missing acknowledged ids missing:" \
    "lost $missing acknowledged records"
  if [[ "$missing" == 0 && "$(bench_field "$line" ids)" == "$n201" ]]; then
    echo "CHECK OK: every acknowledged id is a document in MongoDB" \
      "($((docs - n201)) more documents: requests committed whose 201 wrk never read)"
  else
    echo "CHECK FAILED: $missing of $n201 acknowledged ids missing (see $RESULTS/busyapi-kill.acked.txt)"
    E2E_FAILED=1
  fi
  stop_started "$STARTED_PID"
  stop_mongo "$mport"
}

# ---------------------------------------------------------------- main

E2E_FAILED=0
print_machine | tee "$RESULTS/machine.txt"
ensure_wrk
build
case "$MODE" in
  usages) mode_usages ;;
  ingest)
    mode_ingest
    mode_open_loop
    ;;
  mixed) mode_mixed ;;
  metrics) mode_metrics ;;
  e2e) mode_e2e ;;
  fsync-floor) mode_fsync_floor ;;
  open-loop) mode_open_loop ;;
  node) mode_node ;;
  cpu) mode_cpu ;;
  closed-loop) mode_closed_loop ;;
  headline) mode_headline ;;
  all)
    # One per line: a function called as part of an && list runs with
    # `set -e` switched off.
    mode_usages
    mode_ingest
    mode_mixed
    mode_metrics
    mode_open_loop
    mode_e2e
    mode_node
    mode_fsync_floor
    mode_cpu
    mode_closed_loop
    mode_headline
    ;;
esac
exit "$E2E_FAILED"
