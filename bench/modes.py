"""The closed-loop benchmark modes of scripts/bench.sh, driven by wrk.

Each mode takes the run's context (`bench.Context`: settings, the results
and work directories, the binaries) and prints its figures. busyapi runs
with MongoDB unreachable unless the mode says otherwise, so the WAL fills
and every 201 waits for its fdatasync.
"""

import os
import re

import kit
from stats import fmt, median, ratio


def wrk_line(label, b, extra=""):
    """One line per run: requests/s, p50, p99, non-2xx."""
    return (f"{label:<26} {b['rps']:>10} req/s   p50 {b['p50_ms']:>8} ms   p99 {b['p99_ms']:>8} ms"
            f"   non-2xx {b['non2xx']}   socket errors {b['socket_errors']}{extra}")


def rss(server):
    return f"   peak RSS {kit.peak_rss_mib(server.pid)} MiB"


def start_busyapi(ctx, name, uri=None, extra="", data=None, scheme="http"):
    command = kit.busyapi_command(ctx.binary("busyapi"), uri, extra)
    return kit.Server(name, command, ctx.work, ctx.log(name), ready_path="/healthz", data=data,
                      scheme=scheme)


def start_bare(ctx, name, extra=""):
    command = f"{ctx.binary('bare_minihttp')} 127.0.0.1:{{port}} {extra}".strip()
    return kit.Server(name, command, ctx.work, ctx.log(name))


def wrk(ctx, label, server, script="usages.lua", script_args=(), connections=None):
    return kit.run_wrk(server.base, connections or ctx.connections, ctx.duration,
                       ctx.result(f"{label}.wrk.txt"), script, script_args)


def finish(server):
    server.stop()
    server.remove_data()


def usages(ctx):
    print("\n== usages: busyapi (MongoDB unreachable), bench/usages.lua")
    server = start_busyapi(ctx, "usages")
    b = wrk(ctx, "usages", server)
    print(wrk_line("busyapi", b, rss(server)))
    print(f"server errors (5xx) counted by busyapi: {server.stat('serverErrors')}")
    finish(server)


def ingest(ctx):
    """Bare and busyapi alternately, each on a fresh process; every run,
    the medians and busyapi/bare."""
    print("\n== ingest: bare may_minihttp vs busyapi (MongoDB unreachable, fdatasync before every 201)")
    runs = {"bare": [], "busyapi": []}
    for r in range(1, ctx.rounds + 1):
        for kind in runs:
            server = start_bare(ctx, f"bare-{r}") if kind == "bare" else start_busyapi(ctx, f"busyapi-{r}")
            b = wrk(ctx, f"{kind}-{r}", server)
            print(wrk_line(f"round {r}  {kind}", b, rss(server)))
            runs[kind].append({k: float(b[k]) for k in ("rps", "p50_ms", "p99_ms")})
            finish(server)
    med = {kind: {k: median([x[k] for x in xs]) for k in ("rps", "p50_ms", "p99_ms")}
           for kind, xs in runs.items()}
    for kind, m in med.items():
        print(f"median of {ctx.rounds}  {kind:<10} {m['rps']:>10.1f} req/s   p50 {m['p50_ms']:>8.3f} ms"
              f"   p99 {m['p99_ms']:>8.3f} ms")
    print(f"ratio busyapi/bare: requests/s {fmt(ratio(med['busyapi']['rps'], med['bare']['rps']), '.3f')},"
          f" p99 {fmt(ratio(med['busyapi']['p99_ms'], med['bare']['p99_ms']), '.3f')}")


def fsync_stream_rate(log_path):
    """The middle of the fdatasyncs/s lines bare_minihttp --fsync-stream
    prints once a second, or None."""
    with open(log_path) as f:
        values = re.findall(r"^fsync stream: (\S+)", f.read(), re.M)
    return values[len(values) // 2] if values else None


def fsync_floor(ctx):
    """The floor under any server that fsyncs before its 201, side by side:
    the bare handler; the same beside a back-to-back fdatasync stream that
    nobody waits for (what the fsyncs cost in CPU); the same with every 201
    waiting for an fdatasync that started after its request arrived (the
    thinnest durable server on this stack, see bench/bare_minihttp); and
    busyapi."""
    print("\n== fsync-floor: bare, bare + fsync stream, bare waiting for fsyncs, busyapi (MongoDB unreachable)")
    kinds = ["bare", "stream", "wait", "busyapi"]
    rps = {k: [] for k in kinds}
    for r in range(1, ctx.rounds + 1):
        for k in kinds:
            name = f"{k}-{r}"
            if k == "bare":
                server = start_bare(ctx, name)
            elif k == "busyapi":
                server = start_busyapi(ctx, name)
            else:
                directory = os.path.join(ctx.work, name)
                os.makedirs(directory, exist_ok=True)
                server = start_bare(ctx, name, f"--fsync-{k} {directory}")
            b = wrk(ctx, name, server)
            finish(server)
            rps[k].append(float(b["rps"]))
            syncs = fsync_stream_rate(ctx.log(name))
            print(wrk_line(f"round {r}  {k}", b, f"   {syncs} fdatasyncs/s" if syncs else ""))
    base = median(rps["bare"])
    for k in kinds:
        m = median(rps[k])
        print(f"median of {ctx.rounds}  {k:<8} {m:>10.1f} req/s   ratio to bare {fmt(ratio(m, base), '.3f')}")


def mixed(ctx):
    print("\n== mixed: busyapi (MongoDB unreachable), bench/mixed.lua (10 of 20 requests are bad)")
    server = start_busyapi(ctx, "mixed")
    b = wrk(ctx, "mixed", server, script="mixed.lua")
    print(wrk_line("busyapi mixed", b))
    with open(ctx.result("mixed.wrk.txt")) as f:
        text = f.read()
    block = re.search(r"^sent by kind.*?^expected:.*?$", text, re.M | re.S)
    statuses = re.findall(r"^statuses:.*$", text, re.M)
    print("\n".join(([block.group(0)] if block else []) + statuses))
    if any(re.search(r"\b5\d\d x", s) for s in statuses):
        print(f"!! 5xx responses under the mixed load (see {ctx.result('mixed.wrk.txt')})")
    finish(server)


def metrics(ctx):
    print("\n== metrics: busyapi --metrics true vs --metrics false (MongoDB unreachable)")
    runs = {"true": [], "false": []}
    for r in range(1, ctx.rounds + 1):
        for setting, xs in runs.items():
            label = f"metrics-{setting}-{r}"
            server = start_busyapi(ctx, label, extra=f"--metrics {setting}")
            b = wrk(ctx, label, server)
            print(wrk_line(f"round {r}  metrics {setting}", b))
            xs.append((float(b["rps"]), float(b["p99_ms"])))
            finish(server)
    med = {s: (median([x[0] for x in xs]), median([x[1] for x in xs])) for s, xs in runs.items()}
    for s, (m_rps, m_p99) in med.items():
        print(f"median of {ctx.rounds}  metrics {s:<6} {m_rps:>10.1f} req/s   p99 {m_p99:>8.3f} ms")
    print(f"ratio on/off: requests/s {fmt(ratio(med['true'][0], med['false'][0]), '.3f')}")


def open_loop(ctx):
    """Open-loop latency at the mission's load; wrk -t1 is closed-loop and
    hides queueing delay (coordinated omission)."""
    print(f"\n== open-loop: oha -q {ctx.oha_rate} -c {ctx.connections} --latency-correction"
          f" -z {ctx.duration} against busyapi (MongoDB unreachable)")
    if not ctx.have("oha"):
        print("oha is not installed; skipping. 'cargo install --locked oha' installs it (slow to build).")
        return
    server = start_busyapi(ctx, "open-loop")
    report = kit.run_oha(server.base + "/api/usages", ctx.oha_rate, ctx.duration_s,
                         ctx.connections, ctx.result("open-loop.oha.json"))
    finish(server)
    n, p50, p99, p999, non2xx = kit.oha_figures(report)
    print(f"responses {n} (non-2xx {non2xx}), {report['summary'].get('requestsPerSec', 0):.0f} req/s;"
          f" p50 {fmt(p50, '.2f')} ms  p99 {fmt(p99, '.2f')} ms  p99.9 {fmt(p999, '.2f')} ms")
