#!/usr/bin/env bash
# schemathesis (from PyPI, into .venv) against the real binary with the API
# document it serves: every response must be one the document lists, with
# the body, content type and headers it says, and no 5xx but its 503s.
# busyapi runs with MongoDB unreachable (a dead port): 201s come from the
# WAL, which is what the API promises during an outage too.
#
#   scripts/schemathesis.sh [BUSYAPI_BIN]    default: target/debug/busyapi
#
# Bounded: EXAMPLES test cases per operation and phase, MAX_TIME seconds in
# all; a fixed seed, so a failure reproduces. Exits non-zero on any failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
SCHEMATHESIS_VERSION="4.32.5"

# The venv scripts/dev-mongo.sh makes; schemathesis goes in beside SecantusDB.
scripts/dev-mongo.sh install
if ! "$VENV/bin/pip" show schemathesis 2>/dev/null | grep "^Version: $SCHEMATHESIS_VERSION$" >/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# 40 cases per operation and phase, 40 s in all: about 45 s with the start.
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-40}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-40}"
SEED="${SCHEMATHESIS_SEED:-20261204}"
BIN="${1:-$ROOT/target/debug/busyapi}"
[[ -x "$BIN" ]] || { echo "no busyapi binary at $BIN: cargo build first" >&2; exit 1; }

work="$(mktemp -d)"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
# A free port, then a dead one for MongoDB: both asked of the kernel.
port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
dead="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$BIN" --listen "127.0.0.1:$port" --data-dir "$work/wal" \
  --mongodb-uri "mongodb://127.0.0.1:$dead/?serverSelectionTimeoutMS=200" \
  --shutdown-grace-secs 1 --shutdown-drain-ms 0 \
  >"$work/busyapi.log" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/busyapi.log" >&2; echo "busyapi exited at start" >&2; exit 1; }
  sleep 0.2
done

# From the scratch folder: schemathesis keeps a crash cache in the current one.
status=0
# The hooks give schemathesis a serializer for NDJSON batches.
(cd "$work" && PYTHONPATH="$ROOT/tests" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  "$VENV/bin/schemathesis" --config-file "$ROOT/tests/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,response_headers_conformance,negative_data_rejection,unsupported_method \
  --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --seed "$SEED" \
  --phases examples,coverage,fuzzing --workers 1 --request-timeout 5 \
  --generation-database none --no-color --report-dir "$work/report") || status=$?
if ! kill -0 "$pid" 2>/dev/null || grep -q panicked "$work/busyapi.log"; then
  echo "busyapi died or panicked under schemathesis; its log:" >&2
  cat "$work/busyapi.log" >&2
  status=1
fi
exit "$status"
