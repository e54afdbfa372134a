#!/usr/bin/env bash
# The production template scripts/deploy/haproxy.cfg, rendered for one
# machine, on stdout: the one renderer that scripts/cluster.sh and
# tests/rolling_restart.rs both run (and tests/deploy_kit, with --tls).
#
#   scripts/render-haproxy.sh [--tls TLS_LISTEN PEM] LISTEN STATS NODE...
#   scripts/render-haproxy.sh 127.0.0.1:8080 127.0.0.1:8404 127.0.0.1:3001 127.0.0.1:3002
#
# LISTEN is where HAProxy takes plain HTTP requests, STATS its stats page,
# and each NODE (host:port) becomes `server nodeI NODE`, I counting from 0.
# With --tls, HAProxy also terminates TLS on TLS_LISTEN with the certificate
# and key in PEM (one file), and LISTEN redirects to https as in production;
# without it there is no TLS bind and LISTEN serves requests. The markers
# documented at the top of the template say what changes:
#   # [host]                      lines dropped (daemon mode, chroot, syslog...)
#   # [listen], # [stats]         the address after `bind` replaced
#   # [tls]                       address and `crt` replaced, or dropped
#   # [https-only]                kept only with --tls
#   # [servers] ... # [/servers]  replaced by the nodes
# and HAProxy logs to stderr, without the lines of requests that went well.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

tls_listen="" tls_pem=""
if [[ "${1:-}" == --tls ]]; then
  if (($# < 3)); then
    echo "usage: $0 [--tls TLS_LISTEN PEM] LISTEN STATS NODE..." >&2
    exit 2
  fi
  tls_listen="$2" tls_pem="$3"
  shift 3
fi
if (($# < 3)); then
  echo "usage: $0 [--tls TLS_LISTEN PEM] LISTEN STATS NODE..." >&2
  exit 2
fi
listen="$1" stats="$2"
shift 2
servers="" i=0
for node in "$@"; do
  servers+="    server node$i $node"$'\n'
  i=$((i + 1))
done

awk -v listen="$listen" -v stats="$stats" -v servers="$servers" \
  -v tls_listen="$tls_listen" -v tls_pem="$tls_pem" '
  /^[ \t]*# \[servers\][ \t]*$/ { skip = 1; printf "%s", servers; next }
  /^[ \t]*# \[\/servers\][ \t]*$/ { skip = 0; next }
  skip { next }
  /^[ \t]*#/ { print; next }
  /# \[host\]/ { next }
  /# \[tls\]/ {
    if (tls_listen == "") next
    sub(/bind [^ ]+/, "bind " tls_listen)
    sub(/crt [^ ]+/, "crt " tls_pem)
  }
  /# \[https-only\]/ { if (tls_listen == "") next }
  /^global/ { print; print "    log stderr format raw local0 info"; next }
  /^defaults/ { print; print "    option dontlog-normal"; next }
  /# \[listen\]/ { sub(/bind [^ ]+/, "bind " listen) }
  /# \[stats\]/ { sub(/bind [^ ]+/, "bind " stats) }
  { print }
  END {
    if (skip) { print "render-haproxy.sh: an unclosed # [servers] block in the template" > "/dev/stderr"; exit 1 }
  }
' "$ROOT/scripts/deploy/haproxy.cfg"
