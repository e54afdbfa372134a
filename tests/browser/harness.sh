# Shared by scripts/browser-test.sh and scripts/screenshot.sh (sourced, not
# run): installs Chromium and playwright-core, builds busyapi, and starts
# busyapi and a load as children that `harness_cleanup` (their EXIT trap)
# kills. Needs only what a fresh machine has: bash, Node.js 20, npm, cargo,
# and apt-get for Chromium.
#
# Settings (environment):
#   CHROMIUM        the browser binary          Default: /usr/bin/chromium
#   BUSYAPI_BIN     a prebuilt busyapi; skips the build. Default: a `cargo build`
#   LOAD_RATE_MAX   the load's peak requests/s   Default: 300
#   LOAD_BAD_EVERY  every Nth request is invalid JSON (0 = never). Default: 0

HARNESS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HARNESS_DIR="$HARNESS_ROOT/tests/browser"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
HARNESS_PIDS=()
HARNESS_TMP="$(mktemp -d -t busyapi-browser.XXXXXX)"

# Stops the children newest first (the load before the server it loads),
# each with SIGTERM and, after 10 s, SIGKILL.
harness_cleanup() {
  local i pid n
  for ((i = ${#HARNESS_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${HARNESS_PIDS[i]}"
    kill "$pid" 2>/dev/null || continue
    for ((n = 0; n < 100; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -f "$HARNESS_TMP/load.log" ]]; then cat "$HARNESS_TMP/load.log" >&2; fi
  rm -rf "$HARNESS_TMP"
}

harness_log() { echo "== $*" >&2; }

# Root runs apt-get itself; anyone else goes through sudo.
harness_apt() {
  if [[ "$(id -u)" == 0 ]]; then env DEBIAN_FRONTEND=noninteractive "$@"
  else sudo env DEBIAN_FRONTEND=noninteractive "$@"; fi
}

harness_install_chromium() {
  if [[ -x "$CHROMIUM" ]]; then return 0; fi
  # With recommends: they bring fonts-liberation, so text renders in screenshots.
  harness_log "installing Debian's chromium (no $CHROMIUM)"
  # A fresh machine may have no package lists, or stale ones: update first.
  harness_apt apt-get update
  harness_apt apt-get install -y chromium
  [[ -x "$CHROMIUM" ]] || { echo "chromium installed but $CHROMIUM is missing" >&2; return 1; }
}

# playwright-core only drives a browser: it downloads none (npx playwright
# install does not work here), so Debian's chromium is the one it starts.
harness_install_node_modules() {
  if [[ -f "$HARNESS_DIR/node_modules/playwright-core/package.json" ]] &&
     [[ "$HARNESS_DIR/package-lock.json" -ot "$HARNESS_DIR/node_modules/.package-lock.json" ]]; then
    return 0
  fi
  harness_log "npm ci in tests/browser"
  (cd "$HARNESS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
}

harness_build() {
  if [[ -n "${BUSYAPI_BIN:-}" ]]; then return 0; fi
  harness_log "cargo build (debug)"
  (cd "$HARNESS_ROOT" && cargo build --locked --bin busyapi)
  BUSYAPI_BIN="${CARGO_TARGET_DIR:-$HARNESS_ROOT/target}/debug/busyapi"
}

# harness_start_busyapi NAME NODE_ID: starts busyapi on a port the kernel
# picks (no race with other processes), with a fresh data dir and MongoDB
# pointed at a port nothing listens on (port 9, discard), so MongoDB is down
# throughout; no shutdown grace, as the backlog can never be delivered.
# Sets HARNESS_URL.
harness_start_busyapi() {
  local name="$1" node="$2" log="$HARNESS_TMP/$1.log" i
  "$BUSYAPI_BIN" --listen 127.0.0.1:0 --data-dir "$HARNESS_TMP/$name-data" --node-id "$node" \
    --mongodb-uri "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1000" \
    --shutdown-grace-secs 0 >"$log" 2>&1 &
  HARNESS_PIDS+=($!)
  HARNESS_URL=""
  for i in $(seq 100); do
    HARNESS_URL="$(sed -nE 's#.*listening on (http://[0-9.]+:[0-9]+).*#\1#p' "$log" | head -n1)"
    [[ -n "$HARNESS_URL" ]] && break
    kill -0 "${HARNESS_PIDS[-1]}" 2>/dev/null || { cat "$log" >&2; echo "busyapi exited" >&2; return 1; }
    sleep 0.1
  done
  [[ -n "$HARNESS_URL" ]] || { cat "$log" >&2; echo "busyapi did not start listening" >&2; return 1; }
  node -e 'fetch(process.argv[1] + "/readyz").then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$HARNESS_URL" ||
    { cat "$log" >&2; echo "busyapi is not ready" >&2; return 1; }
  harness_log "busyapi node $node at $HARNESS_URL (log $log)"
}

harness_start_load() {
  node "$HARNESS_DIR/load.mjs" "$BUSYAPI_URL" >"$HARNESS_TMP/load.log" 2>&1 &
  HARNESS_PIDS+=($!)
  harness_log "load running (pid $!, peak ${LOAD_RATE_MAX:-300}/s)"
}

harness_setup() {
  harness_install_chromium
  harness_install_node_modules
  harness_build
  # BUSYAPI_URL: node 0, under the load. BUSYAPI_URL_NODE1: node 1, idle,
  # for the test of the page behind a round-robin balancer.
  harness_start_busyapi busyapi 0
  export BUSYAPI_URL="$HARNESS_URL"
  harness_start_busyapi idle 1
  export BUSYAPI_URL_NODE1="$HARNESS_URL"
  harness_start_load
}
