"""The batch mode of scripts/bench.sh: records/s and server CPU per record
for batch POSTs of BENCH_BATCH_SIZES usages (bench/batch.lua), side by side
with single POSTs (bench/usages.lua), on keep-alive connections (wrk -t1,
closed loop), MongoDB unreachable so every 201 waits for its fdatasync.
Alternating rounds, each run on a fresh server; then the retry window's
memory, measured.

The figures mean something only on a quiet machine: wrk takes about a core
of its own, and on a shared one the figures measure the neighbours.
"""

import json
import types
import urllib.request

import kit
import sidebyside
from stats import fmt, median

# The window's size at the default (RETRY_WINDOW_EVENTS in src/limits.rs).
RETRY_WINDOW_EVENTS = 65536


def parse_sizes(text):
    """`1,10,100,1000` → [1, 10, 100, 1000]; each within what busyapi takes
    by default (--batch-max-records 1000)."""
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if not sizes or any(s < 1 or s > 1000 for s in sizes):
        raise kit.BenchError(f"BENCH_BATCH_SIZES: each size must be 1 to 1000, not {text!r}")
    return sizes


def per_record(rps, size, cpu_us_per_request):
    """(records/s, server CPU µs per record) of requests of `size` records
    at `rps` requests/s that cost `cpu_us_per_request` each."""
    if rps is None or cpu_us_per_request is None:
        return None, None
    return rps * size, cpu_us_per_request / size


def run_one(ctx, kind, size, label):
    """One run on a fresh busyapi (sidebyside's closed-loop measuring, with
    batch.lua for a batch): a dict of figures."""
    args = types.SimpleNamespace(mode="closed-loop", results=ctx.results, duration_s=ctx.duration_s)
    if kind != "single":
        args.script, args.script_args = "batch.lua", [f"size={size}"]
    f = sidebyside.measure(label, kit.busyapi_command(ctx.binary("busyapi")), ctx.connections, args, label)
    f["records_s"], f["cpu_us"] = per_record(f["rps"], size, f["cpu_us"])
    return f


def line(label, f):
    return (f"{label:<22} {fmt(f['records_s'], '10.0f')} records/s  {fmt(f['rps'], '9.0f')} req/s"
            f"   CPU/record {fmt(f['cpu_us'], '6.2f')} µs   p50 {fmt(f['p50'], '7.2f')} ms"
            f"   p99 {fmt(f['p99'], '7.2f')} ms   fsync/s {fmt(f['fsyncs_per_s'], '5.0f')}"
            f"   rec/commit {fmt(f['per_commit'], '6.1f')}   non-2xx {f['non2xx']}")


def post(base, body):
    req = urllib.request.Request(base + "/api/usages", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def window_memory(ctx):
    """RSS of a fresh busyapi before and after it acknowledged
    RETRY_WINDOW_EVENTS usages with eventIds (in batches of 1,000), and
    after as many more, which evict the first ones (the window is full)."""
    label = "window-memory"
    server = kit.Server(label, kit.busyapi_command(ctx.binary("busyapi")), ctx.work, ctx.log(label),
                        ready_path="/healthz")
    try:
        rss = [kit.status_kib(open(f"/proc/{server.pid}/status").read(), "VmRSS")]
        for rnd in range(2):
            for first in range(0, RETRY_WINDOW_EVENTS, 1000):
                n = min(1000, RETRY_WINDOW_EVENTS - first)
                usages = [{"patientId": f"p{rnd}-{first + i}", "timestamp": 0, "medication": "m",
                           "eventId": f"{rnd}-{first + i:036d}"} for i in range(n)]
                post(server.base, json.dumps(usages))
            rss.append(kit.status_kib(open(f"/proc/{server.pid}/status").read(), "VmRSS"))
    finally:
        server.stop()
        server.remove_data()
    print(f"retry window: RSS {rss[0]} KiB fresh, {rss[1]} KiB after {RETRY_WINDOW_EVENTS} events"
          f" with eventIds, {rss[2]} KiB after as many more (evicting):"
          f" {(rss[1] - rss[0]) * 1024 / RETRY_WINDOW_EVENTS:.0f} bytes an event as filled")


def batch(ctx):
    sizes = parse_sizes(ctx.batch_sizes)
    kinds = [("single", 1)] + [(f"batch-{s}", s) for s in sizes]
    print(f"\n== batch: single POSTs and batches of {ctx.batch_sizes} usages, wrk -t1 -c{ctx.connections}"
          f" (MongoDB unreachable, fdatasync before every 201)", flush=True)
    runs = {k: [] for k, _ in kinds}
    for rnd in range(1, ctx.rounds + 1):
        for kind, size in kinds:
            f = run_one(ctx, "single" if kind == "single" else "batch", size, f"{kind}-r{rnd}")
            runs[kind].append(f)
            print(line(f"round {rnd} {kind}", f), flush=True)
    print(f"\nmedians of {ctx.rounds}")
    for kind, _ in kinds:
        med = {k: median([r[k] for r in runs[kind]]) for k in
               ("records_s", "rps", "cpu_us", "p50", "p99", "fsyncs_per_s", "per_commit")}
        med["non2xx"] = sum(r["non2xx"] for r in runs[kind])
        print(line(kind, med))
    window_memory(ctx)
