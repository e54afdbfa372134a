#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers and of WAL recovery, with
# cargo-fuzz (libFuzzer) on the stable toolchain (docs/TESTING.md, "Fuzzing").
#
#   scripts/fuzz.sh smoke [SECONDS]      every target for SECONDS (default 20)
#   scripts/fuzz.sh campaign [SECONDS]   every target for SECONDS (default 600)
#   scripts/fuzz.sh build                only build the targets
#
# Targets run one after another, on one core, from the committed seeds in
# fuzz/corpus/<target>/ plus what earlier runs on this machine found
# (fuzz/work/<target>/, not committed). A crash stops the script non-zero;
# its input is in fuzz/artifacts/<target>/, and
# `cargo fuzz run <target> <file>` replays it. Logs: fuzz/work/logs/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

TARGETS=(http_head chunked usage timestamp wal_recover)
# The version the targets were written against; `cargo install --locked`
# builds it from crates.io with the dependencies it was released with.
CARGO_FUZZ_VERSION=0.13.2
# libFuzzer's defaults, bounded: a single input slower than this is a hang,
# and a process above this much memory a leak (both are findings).
INPUT_TIMEOUT_S=10
RSS_LIMIT_MB=2048

# cargo-fuzz passes -Zsanitizer and other nightly flags to rustc; the
# stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

install_cargo_fuzz() {
  if cargo fuzz --version 2>/dev/null | grep "$CARGO_FUZZ_VERSION" >/dev/null; then
    return
  fi
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
}

build() {
  install_cargo_fuzz
  echo "== building the fuzz targets (release, AddressSanitizer)"
  cargo fuzz build
}

# Runs every target for $1 seconds; prints one summary line per target.
run_all() {
  local seconds=$1 summary=()
  mkdir -p fuzz/work/logs
  for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    local log="fuzz/work/logs/$t.log"
    echo "== fuzzing $t for ${seconds}s (log: $log)"
    if ! cargo fuzz run "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout="$INPUT_TIMEOUT_S" \
      -rss_limit_mb="$RSS_LIMIT_MB" -print_final_stats=1 >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/" >&2
      exit 1
    fi
    local runs
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    summary+=("$t: ${runs:-?} runs in ${seconds}s, no crash")
  done
  printf '== %s\n' "${summary[@]}"
}

mode=${1:-smoke}
case "$mode" in
  build) build ;;
  smoke) build; run_all "${2:-20}" ;;
  campaign) build; run_all "${2:-600}" ;;
  *)
    echo "usage: $0 smoke|campaign [SECONDS] | build" >&2
    exit 2
    ;;
esac
