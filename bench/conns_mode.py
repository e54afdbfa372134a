"""The conns mode of scripts/bench.sh: the server memory (RSS) that many
connections hold. busyapi (MongoDB unreachable) on a fresh process for
each kind, BENCH_RSS_CONNECTIONS connections (default 1,000) from this
process:

  idle plain   each connected, one GET /healthz answered, then left open
  pipelining   each sends PIPELINED `GET /` (the 11 KiB status page) in
               one write and never reads: the server must stop decoding
               at its response budget and hold a bounded amount
  idle tls     as idle plain, over native TLS (a certificate made for the
               run; this client checks none)

RSS is read from /proc once it has settled, against the same server's
warm RSS before the connections; a bystander's POST must still get its
201 while they are held.
"""

import socket
import ssl
import time

import kit
from kit import BenchError
from modes import finish, start_busyapi
from tls_mode import make_cert, tls_flags

# Requests each pipelining connection sends: far more answer than the
# kernel's socket buffers take, as in the HTTP contract test.
PIPELINED = 256
# RSS counts as settled once two samples this far apart differ by at most
# SETTLE_KIB; SETTLE_MAX_S bounds the wait.
SETTLE_STEP_S, SETTLE_KIB, SETTLE_MAX_S = 1.0, 512, 60
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
KINDS = ("idle plain", "pipelining", "idle tls")


def per_connection_kib(before_kib, after_kib, connections):
    """The growth of RSS a connection caused, in KiB (never negative)."""
    return max(after_kib - before_kib, 0) / connections


def settled(samples_kib, tolerance_kib=SETTLE_KIB):
    """Whether the last two RSS samples are within `tolerance_kib`."""
    return len(samples_kib) >= 2 and abs(samples_kib[-1] - samples_kib[-2]) <= tolerance_kib


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return kit.status_kib(f.read(), "VmRSS")


def settled_rss(pid):
    samples, deadline = [rss_kib(pid)], time.monotonic() + SETTLE_MAX_S
    while not settled(samples) and time.monotonic() < deadline:
        time.sleep(SETTLE_STEP_S)
        samples.append(rss_kib(pid))
    return samples[-1]


def open_connection(server, kind, tls_context):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    if kind == "idle tls":
        s = tls_context.wrap_socket(s, server_hostname="127.0.0.1")
    if kind == "pipelining":
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * PIPELINED)
    else:
        s.sendall(HEALTHZ)
        if b" 200 " not in s.recv(4096):
            raise BenchError(f"{kind}: /healthz did not answer 200")
    return s


def bystander_status(server, tls_context, kind):
    """The status of one POST of a usage on a new connection."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    if kind == "idle tls":
        s = tls_context.wrap_socket(s, server_hostname="127.0.0.1")
    body = kit.BODY.encode()
    s.sendall(b"POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    status = s.recv(4096).split(b" ", 2)[1].decode()
    s.close()
    return status


def measure(ctx, kind, cert, key, connections):
    tls = kind == "idle tls"
    server = start_busyapi(ctx, kind.replace(" ", "-"), extra=tls_flags(cert, key) if tls else "",
                           scheme="https" if tls else "http")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        for _ in range(8):
            open_connection(server, "idle tls" if tls else "idle plain", context).close()
        before = settled_rss(server.pid)
        held = [open_connection(server, kind, context) for _ in range(connections)]
        after = settled_rss(server.pid)
        status = bystander_status(server, context, kind)
        for s in held:
            s.close()
    finally:
        finish(server)
    return before, after, status


def conns(ctx):
    n = ctx.rss_connections
    print(f"\n== conns: server RSS for {n} connections of each kind (MongoDB unreachable)", flush=True)
    cert, key = make_cert(ctx.work)
    for kind in KINDS:
        before, after, status = measure(ctx, kind, cert, key, n)
        print(f"{kind:<12} RSS {before} KiB -> {after} KiB: {per_connection_kib(before, after, n):.1f} KiB"
              f" a connection; a bystander's POST got {status}", flush=True)
        if status != "201":
            ctx.failed = True
