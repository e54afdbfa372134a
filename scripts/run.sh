#!/usr/bin/env bash
# Builds busyapi (release) and runs it. Without MONGODB_URI it first installs
# and starts the dev MongoDB on 127.0.0.1:27017 (data in ./data/mongo), so a
# fresh machine gets a working sink with no other step. Extra arguments go to
# busyapi, e.g. `scripts/run.sh --listen 0.0.0.0:8080`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
cargo build --release --locked
if [[ -z "${MONGODB_URI:-}" ]]; then
  scripts/dev-mongo.sh start 27017
  export MONGODB_URI="mongodb://127.0.0.1:27017"
  trap 'scripts/dev-mongo.sh stop 27017' EXIT
fi
target/release/busyapi --data-dir "${BUSYAPI_DATA_DIR:-$ROOT/data/wal}" "$@"
