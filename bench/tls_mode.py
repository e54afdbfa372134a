"""The tls mode of scripts/bench.sh: what native TLS (--tls-cert,
--tls-key) costs next to plain HTTP, on the same binary, alternating.

Two figures each way, busyapi with MongoDB unreachable:
  keep-alive       wrk -t1 with bench/usages.lua: requests/s over
                   connections kept open (one handshake each, at the start)
  new connections  wrk -t1 GET /healthz with `Connection: close`: every
                   request a new TCP connection, and over TLS a full
                   handshake (wrk resumes no sessions), so requests/s is
                   connections/s

The certificate is a self-signed EC P-256 one made for the run with the
openssl CLI; wrk does not check certificates, so none is trusted.
"""

import os
import re
import subprocess

import kit
from modes import finish, rss, start_busyapi, wrk, wrk_line
from stats import fmt, median, ratio

# The two kinds of server, in the order each round runs them.
KINDS = ("plain", "tls")


def make_cert(directory):
    """A self-signed certificate for 127.0.0.1 and its key, in `directory`;
    returns (cert, key)."""
    cert, key = os.path.join(directory, "bench.pem"), os.path.join(directory, "bench.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=busyapi bench", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return cert, key


def tls_flags(cert, key):
    """The busyapi flags that make --listen speak TLS with `cert` and `key`."""
    return f"--tls-cert {cert} --tls-key {key}"


def requests_per_s(wrk_text):
    """The `Requests/sec:` figure of wrk's own report, or None."""
    found = re.findall(r"^Requests/sec:\s+([0-9.]+)\s*$", wrk_text, re.M)
    return float(found[-1]) if found else None


def new_connections_argv(base, connections, duration):
    """wrk with a new connection per request: `Connection: close`, GET of
    the cheapest path."""
    return ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "-H", "Connection: close",
            base + "/healthz"]


def new_connections(ctx, label, server):
    """Requests/s of `new_connections_argv`: new connections per second."""
    out_path = ctx.result(f"{label}.wrk.txt")
    done = subprocess.run(new_connections_argv(server.base, ctx.connections, ctx.duration),
                          capture_output=True, text=True, check=False)
    with open(out_path, "w") as f:
        f.write(done.stdout + done.stderr)
    rps = requests_per_s(done.stdout)
    if done.returncode != 0 or rps is None:
        raise kit.BenchError(f"wrk failed ({out_path}): {done.stderr.strip()[:400]}")
    return rps


def tls(ctx):
    print("\n== tls: busyapi plain HTTP vs --tls-cert/--tls-key (MongoDB unreachable), alternating:"
          " keep-alive POSTs, then a new connection per request")
    cert, key = make_cert(ctx.work)
    runs = {kind: {"keep": [], "new": []} for kind in KINDS}
    for r in range(1, ctx.rounds + 1):
        for kind in KINDS:
            name = f"{kind}-{r}"
            flags = tls_flags(cert, key) if kind == "tls" else ""
            server = start_busyapi(ctx, name, extra=flags, scheme="https" if kind == "tls" else "http")
            b = wrk(ctx, f"{name}-keepalive", server)
            print(wrk_line(f"round {r}  {kind} keep-alive", b, rss(server)))
            conns = new_connections(ctx, f"{name}-new", server)
            print(f"round {r}  {kind} new connections {conns:>10.1f} /s")
            runs[kind]["keep"].append(float(b["rps"]))
            runs[kind]["new"].append(conns)
            finish(server)
    med = {kind: {k: median(v) for k, v in xs.items()} for kind, xs in runs.items()}
    for kind in KINDS:
        print(f"median of {ctx.rounds}  {kind:<6} keep-alive {med[kind]['keep']:>10.1f} req/s"
              f"   new connections {med[kind]['new']:>10.1f} /s")
    print(f"ratio tls/plain: keep-alive {fmt(ratio(med['tls']['keep'], med['plain']['keep']), '.3f')},"
          f" new connections {fmt(ratio(med['tls']['new'], med['plain']['new']), '.3f')}")
