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

`closed-loop` drives each server with `wrk -t1 -cN` (bench/usages.lua)
instead and records requests per second, p50 and p99 (wrk's, which hide
coordinated omission) and CPU per response.

It prints one line per run, then the medians per server and load, and
each median's ratio to the first server's. Raw output is kept in DIR.
Only the Python standard library is used.
"""

import argparse
import re
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BODY = '{"patientId": "100", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}'
# How long a server may take to answer its first request.
START_TIMEOUT_S = 15
# How long a server gets to stop on SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 5


def proc_cpu_s(stat_line, ticks_per_s):
    """utime + stime, in seconds, from one /proc/PID/stat line."""
    # The command name (field 2) is in parentheses and may hold spaces.
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_s


def read_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        return proc_cpu_s(f.read(), os.sysconf("SC_CLK_TCK"))


def prometheus_value(text, name):
    """The value of an unlabelled sample `name` in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


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


def oha_figures(report):
    """(responses, p50 ms, p99 ms, p99.9 ms, non-2xx) from oha's JSON."""
    codes = report.get("statusCodeDistribution", {})
    responses = sum(codes.values())
    non2xx = sum(n for code, n in codes.items() if not code.startswith("2"))
    pct = report["latencyPercentiles"]

    def ms(key):
        v = pct.get(key)
        return None if v is None else v * 1000.0

    return responses, ms("p50"), ms("p99"), ms("p99.9"), non2xx


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout_s=2):
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return r.read().decode()


class Server:
    """One server process on a fresh port and data directory."""

    def __init__(self, name, command, workdir, log_path):
        self.name = name
        self.port = free_port()
        self.data = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
        argv = shlex.split(command.format(port=self.port, data=self.data))
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited at start (log: {self.log.name})")
            try:
                get(self.base + "/", timeout_s=1)
                return
            except OSError:
                time.sleep(0.1)
        sys.exit(f"{self.name} did not answer within {START_TIMEOUT_S} s")

    def metrics(self):
        try:
            return get(self.base + "/metrics")
        except OSError:
            return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        subprocess.run(["rm", "-rf", self.data], check=False)


def run_oha(url, rate, duration_s, connections, out_path):
    argv = [
        "oha", "--no-tui", "--output-format", "json", "-q", str(rate),
        "-c", str(connections), "--latency-correction", "-z", f"{duration_s}s",
        "-m", "POST", "-T", "application/json", "-d", BODY, url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    with open(out_path, "w") as f:
        f.write(done.stdout)
        f.write(done.stderr)
    if done.returncode != 0:
        sys.exit(f"oha failed ({out_path}): {done.stderr.strip()[:400]}")
    return json.loads(done.stdout)


def wrk_figures(bench_line):
    """(requests/s, p50 ms, p99 ms, responses, non-2xx) from the BENCH line
    that bench/common.lua prints."""
    fields = dict(re.findall(r"(\w+)=(\S+)", bench_line))
    return (float(fields["rps"]), float(fields["p50_ms"]), float(fields["p99_ms"]),
            int(fields["requests"]), int(fields["non2xx"]))


def run_wrk(url, connections, duration_s, out_path):
    here = os.path.dirname(os.path.abspath(__file__))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency",
            "-s", os.path.join(here, "usages.lua"), url]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=here)
    with open(out_path, "w") as f:
        f.write(done.stdout)
        f.write(done.stderr)
    bench = [l for l in done.stdout.splitlines() if l.startswith("BENCH ")]
    if done.returncode != 0 or not bench:
        sys.exit(f"wrk failed ({out_path})")
    return wrk_figures(bench[-1])


def run_load(server, load, args, label):
    """Drives `server` with oha at rate `load` (fixed-rate) or wrk with
    `load` connections (closed-loop); returns a dict of figures."""
    if args.mode == "fixed-rate":
        report = run_oha(server.base + "/api/usages", load, args.duration_s,
                         args.connections, os.path.join(args.results, f"{label}.oha.json"))
        responses, p50, p99, p999, non2xx = oha_figures(report)
        rps = None
    else:
        rps, p50, p99, responses, non2xx = run_wrk(
            server.base, load, args.duration_s, os.path.join(args.results, f"{label}.wrk.txt"))
        p999 = None
    return {"rps": rps, "p50": p50, "p99": p99, "p999": p999,
            "non2xx": non2xx, "responses": responses}


def measure(name, command, load, args, label):
    """One run on a fresh server: returns a dict of figures."""
    server = Server(name, command, args.results, os.path.join(args.results, f"{label}.log"))
    try:
        before_metrics = server.metrics()
        before_cpu = read_cpu_s(server.proc.pid)
        started = time.monotonic()
        f = run_load(server, load, args, label)
        seconds = time.monotonic() - started
        cpu_s = read_cpu_s(server.proc.pid) - before_cpu
        after_metrics = server.metrics()
    finally:
        server.stop()
    responses = f["responses"]
    fsyncs_per_s = per_commit = None
    if before_metrics and after_metrics:
        fsyncs_per_s, per_commit = commit_stats(before_metrics, after_metrics, seconds)
    f.update(cpu_us=cpu_s / responses * 1e6 if responses else None,
             fsyncs_per_s=fsyncs_per_s, per_commit=per_commit)
    return f


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


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
        base = {k: median_or_none([r[k] for r in runs[(servers[0][0], load)]]) for k in KEYS}
        for name, _ in servers:
            med = {k: median_or_none([r[k] for r in runs[(name, load)]]) for k in KEYS}
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
    args = p.parse_args(argv)
    if args.mode == "fixed-rate":
        args.connections = int(args.connections or 64)
        loads, unit = [int(r) for r in args.rates.split(",")], "/s"
    else:
        loads, unit = [int(c) for c in (args.connections or "4,16,64").split(",")], " conns"
    return args, loads, unit


def main(argv=None):
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
