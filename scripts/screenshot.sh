#!/usr/bin/env bash
# Screenshots of the status page under load, for a person to look at:
#   scripts/screenshot.sh [OUT.png]
# saves OUT.png (desktop, 1280 px wide) and OUT-phone.png (390 px, 2x).
# Default OUT: status-page.png in the current directory. Starts busyapi like
# scripts/browser-test.sh (debug build, free port, temporary data dir,
# MongoDB down) with a paced load, and stops everything on exit.
# LOAD_BAD_EVERY=50 makes every 50th request invalid, to show the error counts;
# SCREENSHOT_COLOR_SCHEME=dark shows the dark theme.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-status-page.png}"
[[ "$out" == *.png ]] || out="$out.png"
[[ "$out" == /* ]] || out="$PWD/$out"
phone="${out%.png}-phone.png"
mkdir -p "$(dirname "$out")"

# shellcheck source=../tests/browser/harness.sh
source "$ROOT/tests/browser/harness.sh"
trap harness_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that Ctrl-C and kill run the EXIT trap too

harness_setup
node "$ROOT/tests/browser/screenshot.mjs" "$out" "$phone"
