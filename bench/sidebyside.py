"""Servers side by side, in alternating rounds, for scripts/bench.sh.

    sidebyside.py fixed-rate --results DIR [--rates 8000,12000,18000]
                  [--rounds 3] [--duration-s 10] [--connections 64]
                  --server NAME=COMMAND ...
    sidebyside.py closed-loop --results DIR [--connections 4,16,64]
                  [--rounds 3] [--duration-s 10] --server NAME=COMMAND ...

Each COMMAND is a shell-style command line in which `{port}` and `{data}`
are replaced by a free port and a fresh directory. For every round, rate
and server in turn (alternating, so a noisy machine drifts on all of them
alike), it starts the server, waits for it to answer, drives it with
`oha -q RATE --latency-correction` for the duration, and records:

- server CPU per response: utime + stime from /proc/PID/stat over the
  run (the whole process, every thread), divided by the responses;
- p50, p99 and p99.9 as oha reports them, corrected for coordinated
  omission;
- for busyapi (a server with /metrics): fsyncs per second and records
  per commit, from the deltas of busyapi_wal_fsync_seconds and
  busyapi_wal_commit_records over the run.

`closed-loop` drives each server with `wrk -t1 -cN` (bench/usages.lua,
or the `script` and `script_args` a caller's args name: the batch mode)
instead and records requests per second, p50 and p99 (wrk's, which hide
coordinated omission) and CPU per response.

It prints one line per run, then the medians per server and load, and
each median's ratio to the first server's. Raw output is kept in DIR.
Only the Python standard library is used.
"""

import argparse
import os
import sys
import time

import kit
from kit import BenchError
from stats import fmt, median, ratio


def prometheus_value(text, name):
    """The value of an unlabelled sample `name` in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def count_above(text, name, bound):
    """How many observations of histogram `name` in Prometheus text were
    above `bound` (which must be one of its bucket bounds), or None."""
    total = prometheus_value(text, name + "_count")
    below = prometheus_value(text, f'{name}_bucket{{le="{bound}"}}')
    return None if total is None or below is None else total - below


def commit_stats(before, after, seconds):
    """(fsyncs per second, records per commit) between two /metrics texts."""
    def delta(name):
        a, b = prometheus_value(after, name), prometheus_value(before, name)
        return None if a is None or b is None else a - b

    commits = delta("busyapi_wal_fsync_seconds_count")
    records = delta("busyapi_wal_commit_records_sum")
    if commits is None or records is None:
        return None, None
    per_commit = records / commits if commits else 0.0
    return commits / seconds, per_commit


def run_load(server, load, args, label):
    """Drives `server` with oha at rate `load` (fixed-rate) or wrk with
    `load` connections (closed-loop); returns a dict of figures."""
    if args.mode == "fixed-rate":
        report = kit.run_oha(server.base + "/api/usages", load, args.duration_s,
                             args.connections, os.path.join(args.results, f"{label}.oha.json"))
        responses, p50, p99, p999, non2xx = kit.oha_figures(report)
        rps = None
    else:
        bench = kit.run_wrk(server.base, load, f"{args.duration_s}s",
                            os.path.join(args.results, f"{label}.wrk.txt"),
                            getattr(args, "script", "usages.lua"), getattr(args, "script_args", ()))
        rps, p50, p99, responses, non2xx = kit.wrk_figures(bench)
        p999 = None
    return {"rps": rps, "p50": p50, "p99": p99, "p999": p999,
            "non2xx": non2xx, "responses": responses}


def measure(name, command, load, args, label):
    """One run on a fresh server: returns a dict of figures."""
    # /healthz answers on every busyapi, also one with keys required (whose
    # public address serves no status page); the bare handlers answer any path.
    server = kit.Server(name, command, args.results, os.path.join(args.results, f"{label}.log"),
                        ready_path="/healthz")
    try:
        before_metrics = server.metrics()
        before_cpu = kit.read_cpu_s(server.pid)
        started = time.monotonic()
        f = run_load(server, load, args, label)
        seconds = time.monotonic() - started
        cpu_s = kit.read_cpu_s(server.pid) - before_cpu
        after_metrics = server.metrics()
    finally:
        server.stop()
        server.remove_data()
    responses = f["responses"]
    fsyncs_per_s = per_commit = None
    if before_metrics and after_metrics:
        fsyncs_per_s, per_commit = commit_stats(before_metrics, after_metrics, seconds)
    f.update(cpu_us=cpu_s / responses * 1e6 if responses else None,
             fsyncs_per_s=fsyncs_per_s, per_commit=per_commit)
    return f


def line(label, f):
    rps = "" if f.get("rps") is None else f"{f['rps']:9.0f} req/s   "
    return (f"{label:<28} {rps}CPU/req {fmt(f['cpu_us'], '6.1f')} µs   p50 {fmt(f['p50'], '7.2f')} ms"
            f"   p99 {fmt(f['p99'], '7.2f')} ms   p99.9 {fmt(f['p999'], '7.2f')} ms"
            f"   fsync/s {fmt(f['fsyncs_per_s'], '6.0f')}   rec/commit {fmt(f['per_commit'], '5.1f')}"
            f"   non-2xx {f['non2xx']}")


KEYS = ["rps", "cpu_us", "p50", "p99", "p999", "fsyncs_per_s", "per_commit"]


def summarize(runs, servers, loads, unit):
    """Medians per (server, load), and ratios to the first server."""
    print()
    print("medians (ratio to %s)" % servers[0][0])
    for load in loads:
        base = {k: median([r[k] for r in runs[(servers[0][0], load)]]) for k in KEYS}
        for name, _ in servers:
            med = {k: median([r[k] for r in runs[(name, load)]]) for k in KEYS}
            med["non2xx"] = sum(r["non2xx"] for r in runs[(name, load)])
            extra = ""
            if name != servers[0][0]:
                extra = "   ratio: req/s %s, CPU/req %s, p99 %s" % (
                    fmt(ratio(med["rps"], base["rps"]), ".3f"),
                    fmt(ratio(med["cpu_us"], base["cpu_us"]), ".2f"),
                    fmt(ratio(med["p99"], base["p99"]), ".2f"))
            print(line(f"{load}{unit} {name}", med) + extra)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["fixed-rate", "closed-loop"])
    p.add_argument("--results", required=True)
    p.add_argument("--rates", default="8000,12000,18000", help="fixed-rate: requests/s")
    p.add_argument("--connections", help="fixed-rate: oha's connections (64); "
                   "closed-loop: wrk's, a list (4,16,64)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration-s", type=int, default=10)
    p.add_argument("--server", action="append", required=True, help="NAME=COMMAND")
    p.add_argument("--script-arg", action="append", dest="script_args", default=[],
                   help="closed-loop: an argument for the wrk script (key=API_KEY)")
    args = p.parse_args(argv)
    if args.mode == "fixed-rate":
        args.connections = int(args.connections or 64)
        loads, unit = [int(r) for r in args.rates.split(",")], "/s"
    else:
        loads, unit = [int(c) for c in (args.connections or "4,16,64").split(",")], " conns"
    return args, loads, unit


def main(argv=None):
    try:
        run(argv)
    except BenchError as e:
        kit.stop_all()
        sys.exit(f"sidebyside: {e}")


def run(argv):
    args, loads, unit = parse_args(argv)
    servers = [tuple(s.split("=", 1)) for s in args.server]
    runs = {(n, load): [] for n, _ in servers for load in loads}
    for rnd in range(1, args.rounds + 1):
        for load in loads:
            for name, command in servers:
                f = measure(name, command, load, args, f"{name}-{load}-r{rnd}")
                runs[(name, load)].append(f)
                print(line(f"round {rnd} {load}{unit} {name}", f), flush=True)
    summarize(runs, servers, loads, unit)


if __name__ == "__main__":
    main()
