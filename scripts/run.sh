#!/usr/bin/env bash
# Builds busyapi (release) and runs it. Extra arguments go to busyapi, e.g.
# `scripts/run.sh --listen 0.0.0.0:8080`.
#
# What it adds, and only where nothing else says otherwise (a flag, the
# environment or a `--config` file):
#   - the data directory ./data/wal;
#   - a MongoDB: the dev server (SecantusDB, installed into .venv) started on
#     127.0.0.1:27017 with its data in ./data/mongo, so a fresh machine gets a
#     working sink with no other step. It is stopped again when busyapi exits.
#
# BUSYAPI_BIN runs that binary instead of building one (the tests use it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

config="${BUSYAPI_CONFIG:-}" data_dir_given=0 uri_given=0
[[ -n "${BUSYAPI_DATA_DIR:-}" ]] && data_dir_given=1
[[ -n "${MONGODB_URI:-}" ]] && uri_given=1
prev=""
for arg in "$@"; do
  case "$arg" in
    --data-dir|--data-dir=*) data_dir_given=1 ;;
    --mongodb-uri|--mongodb-uri=*) uri_given=1 ;;
    --config=*) config="${arg#--config=}" ;;
  esac
  [[ "$prev" == "--config" ]] && config="$arg"
  prev="$arg"
done
# A config file that sets a key counts as saying so.
file_sets() { [[ -n "$config" && -f "$config" ]] && grep -Eq "^[[:space:]]*$1[[:space:]]*=" "$config"; }
file_sets data_dir && data_dir_given=1
file_sets mongodb_uri && uri_given=1

BIN="${BUSYAPI_BIN:-}"
if [[ -z "$BIN" ]]; then
  cargo build --release --locked
  BIN="$ROOT/target/release/busyapi"
fi
extra=()
if (( ! data_dir_given )); then
  extra+=(--data-dir "$ROOT/data/wal")
fi
if (( ! uri_given )); then
  scripts/dev-mongo.sh start 27017
  export MONGODB_URI="mongodb://127.0.0.1:27017"
  trap 'scripts/dev-mongo.sh stop 27017' EXIT
fi
"$BIN" "${extra[@]}" "$@"
