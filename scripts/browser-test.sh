#!/usr/bin/env bash
# The status page in real headless Chromium: installs Debian's chromium (if
# /usr/bin/chromium is missing) and playwright-core (npm ci in tests/browser),
# builds busyapi (debug), starts it on a free port with a temporary data dir
# and MongoDB pointed at a dead port, runs a paced POST load, and runs
# tests/browser/status_page.test.mjs. Exits non-zero on any failure; every
# process it starts is stopped on exit. See tests/browser/harness.sh for the
# settings it reads from the environment.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../tests/browser/harness.sh
source "$ROOT/tests/browser/harness.sh"
trap harness_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that Ctrl-C and kill run the EXIT trap too

harness_setup
harness_log "status page test in $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
cd "$ROOT/tests/browser"
node --test --test-reporter=spec --test-timeout=120000 status_page.test.mjs
