#!/usr/bin/env bash
# The production template scripts/deploy/haproxy.cfg, rendered for one
# machine, on stdout: the one renderer that scripts/cluster.sh and
# tests/rolling_restart.rs both run.
#
#   scripts/render-haproxy.sh LISTEN STATS NODE...
#   scripts/render-haproxy.sh 127.0.0.1:8080 127.0.0.1:8404 127.0.0.1:3001 127.0.0.1:3002
#
# LISTEN is where HAProxy takes requests, STATS its stats page, and each NODE
# (host:port) becomes `server nodeI NODE`, I counting from 0. The markers
# documented at the top of the template say what changes:
#   # [host]                      lines dropped (daemon mode, chroot, syslog...)
#   # [listen], # [stats]         the address after `bind` replaced
#   # [servers] ... # [/servers]  replaced by the nodes
# and HAProxy logs to stderr, without the lines of requests that went well.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if (($# < 3)); then
  echo "usage: $0 LISTEN STATS NODE..." >&2
  exit 2
fi
listen="$1" stats="$2"
shift 2
servers="" i=0
for node in "$@"; do
  servers+="    server node$i $node"$'\n'
  i=$((i + 1))
done

awk -v listen="$listen" -v stats="$stats" -v servers="$servers" '
  /^[ \t]*# \[servers\][ \t]*$/ { skip = 1; printf "%s", servers; next }
  /^[ \t]*# \[\/servers\][ \t]*$/ { skip = 0; next }
  skip { next }
  /^[ \t]*#/ { print; next }
  /# \[host\]/ { next }
  /^global/ { print; print "    log stderr format raw local0 info"; next }
  /^defaults/ { print; print "    option dontlog-normal"; next }
  /# \[listen\]/ { sub(/bind [^ ]+/, "bind " listen) }
  /# \[stats\]/ { sub(/bind [^ ]+/, "bind " stats) }
  { print }
  END {
    if (skip) { print "render-haproxy.sh: an unclosed # [servers] block in the template" > "/dev/stderr"; exit 1 }
  }
' "$ROOT/scripts/deploy/haproxy.cfg"
