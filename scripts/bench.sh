#!/usr/bin/env bash
# The benchmark kit: a thin launcher for bench/bench.py, which builds
# busyapi (release), runs it on fresh temporary data directories, drives it
# with wrk or oha and does the statistics. `scripts/bench.sh help` lists the
# modes and settings.
#
#   scripts/bench.sh [usages|ingest|mixed|metrics|e2e|open-loop|node|
#                     fsync-floor|cpu|closed-loop|tls|auth|conns|headline|batch|soak|all]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
exec python3 bench/bench.py "$@"
