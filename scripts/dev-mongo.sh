#!/usr/bin/env bash
# The MongoDB-compatible dev server (SecantusDB, from PyPI) in a project-local
# virtualenv. Development, tests and CI use it; production uses a real mongod.
#
#   scripts/dev-mongo.sh install               create .venv and install it
#   scripts/dev-mongo.sh start [PORT] [DIR]    start it in the background
#   scripts/dev-mongo.sh stop  [PORT]          stop the one started on PORT
#
# PORT defaults to 27017, DIR to ./data/mongo (kept across restarts).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
SECANTUS_VERSION="0.7.0b3"
PYMONGO_VERSION="4.20.1"

install() {
  # grep without -q reads all of pip's output: under pipefail, a grep -q that
  # exits at the first match can kill pip with SIGPIPE and fail the check.
  if [[ -x "$VENV/bin/secantusd-py" ]] && "$VENV/bin/pip" show SecantusDB 2>/dev/null | grep "^Version: $SECANTUS_VERSION$" >/dev/null; then
    return 0
  fi
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian ships venv's pip bootstrap in its own package.
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      apt-get install -y -qq python3-venv >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    else
      echo "python3 cannot create a virtualenv here: install python3-venv" >&2
      return 1
    fi
  fi
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION" "pymongo==$PYMONGO_VERSION"
}

pidfile() { echo "$ROOT/data/secantusd-$1.pid"; }

start() {
  local port="${1:-27017}" dir="${2:-$ROOT/data/mongo}"
  install
  mkdir -p "$ROOT/data" "$dir"
  if [[ -f "$(pidfile "$port")" ]] && kill -0 "$(cat "$(pidfile "$port")")" 2>/dev/null; then
    echo "dev MongoDB already running on port $port"
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    # Something else answers there (a system mongod?): busyapi would write
    # into it. Say so rather than take it for the dev server.
    echo "port $port is already in use by another process; set MONGODB_URI to use that server, or stop it" >&2
    return 1
  fi
  "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path "$dir" --log-level WARNING \
    >"$ROOT/data/secantusd-$port.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$(pidfile "$port")"
  for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$(pidfile "$port")"
      echo "dev MongoDB exited at start; see data/secantusd-$port.log" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "dev MongoDB listening on mongodb://127.0.0.1:$port (log: data/secantusd-$port.log)"
      return 0
    fi
    sleep 0.2
  done
  echo "dev MongoDB did not start; see data/secantusd-$port.log" >&2
  return 1
}

stop() {
  local port="${1:-27017}" pf
  pf="$(pidfile "$port")"
  if [[ -f "$pf" ]]; then
    kill "$(cat "$pf")" 2>/dev/null || true
    rm -f "$pf"
  fi
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 install | start [PORT] [DIR] | stop [PORT]" >&2; exit 2 ;;
esac
