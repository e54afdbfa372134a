#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need
# (the dev MongoDB and schemathesis into .venv; Chromium and playwright-core
# for the status page test), then runs formatting, lints, and every test
# against the real binary and the real dev MongoDB. Exits non-zero on any failure, and also
# if fewer tests ran than the suite holds (a guard against "0 tests, green").
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# The suite has at least this many tests; raise it when adding tests.
MIN_TESTS=375

echo "== installing the dev MongoDB (SecantusDB) into .venv"
scripts/dev-mongo.sh install
export BUSYAPI_SECANTUSD="$ROOT/.venv/bin/secantusd-py"

# HAProxy and nginx: the deployment-kit tests validate their configurations
# and the rolling-restart test runs HAProxy in front of busyapi. strace:
# wal_recovery reads the order of recovery's syncs and cuts. promtool (in
# Debian's prometheus package) checks and unit-tests the alerting rules.
# iproute2 and iptables: the network-fault tests put the dev MongoDB in a
# network namespace and drop, lose or delay its packets. openssl and curl:
# the TLS tests make their certificates and check them as clients.
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v strace >/dev/null || need+=(strace)
command -v promtool >/dev/null || need+=(prometheus)
command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || need+=(iproute2)
command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]] || need+=(iptables)
if (( ${#need[@]} )); then
  echo "== installing ${need[*]} from Debian's packages"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml

echo "== cargo clippy"
cargo clippy --locked --all-targets --features failpoints -- -D warnings

echo "== cargo test"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
cargo test --locked --features failpoints --all-targets --no-fail-fast 2>&1 | tee "$LOG"
passed=$(grep -E '^test result: ok\.' "$LOG" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -cE '^test result: FAILED' "$LOG" || true)
echo "== $passed tests passed"
if [[ "$failed" != "0" ]]; then echo "some test binary failed" >&2; exit 1; fi
if (( passed < MIN_TESTS )); then
  echo "only $passed tests ran; the suite holds at least $MIN_TESTS" >&2
  exit 1
fi
echo "== schemathesis against the running binary and docs/openapi.json"
scripts/schemathesis.sh

echo "== the benchmark tool's arithmetic and parsing (bench/test_*.py)"
python3 -m unittest discover -s bench -p 'test_*.py'

echo "== status page in headless Chromium"
scripts/browser-test.sh

# Every fuzz target for a few seconds from its committed seeds: a crash
# (or a broken property) fails the suite. The first run installs
# cargo-fuzz and builds the targets with AddressSanitizer (minutes).
echo "== fuzz targets, a short run each (docs/TESTING.md, Fuzzing)"
scripts/fuzz.sh smoke "${BUSYAPI_FUZZ_SMOKE_S:-10}"

echo "== all tests passed"
