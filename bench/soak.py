"""The soak (scripts/bench.sh soak): two long runs at fixed open-loop
rates, sampling the server's resources every few seconds, so that a leak
shows as a line that climbs.

- Delivery run: the dev MongoDB live, at a rate it keeps up with. The rate
  is measured first (BENCH_SOAK_DELIVERY_RATE overrides it): busyapi is
  loaded above what the dev MongoDB stores, and the flusher's delivery
  rate over the calibration is taken at SAFETY_FRACTION. At the end every
  acknowledged record must be a document (counted once, after the drain).
- Ingest run: MongoDB unreachable and a WAL quota larger than the run, so
  the WAL only grows.

Each sample: RSS, open file descriptors, WAL segments on disk, the
backlog. They go to soak.csv in the results directory; soak.png is drawn
from it with matplotlib from the project's venv (bench/soak_chart.py).
"""

import csv
import os
import subprocess
import time

import kit
from kit import BenchError
from live_modes import mongo, wait_drained
from modes import finish, start_busyapi

# The share of the measured delivery rate the delivery run is held at:
# below it the backlog stays bounded even when the shared box slows down.
SAFETY_FRACTION = 0.6
# The calibration's load: well above what the dev MongoDB stores (about
# 2,300 documents/s with the index on this machine), so the backlog never
# empties and the flusher runs flat out.
CALIBRATION_RATE = 5000
CALIBRATION_S = 40
# The first seconds of the calibration are the flusher starting up.
CALIBRATION_SKIP_S = 10
# The ingest run's WAL quota: far above 30 minutes at 10,000 records/s
# (about 50 bytes a record on disk), so no POST is refused for it.
INGEST_WAL_MAX = "64GiB"
CSV_FIELDS = ["run", "t_s", "rss_kib", "fds", "segments", "backlog_records", "acknowledged", "flushed"]


def segments_on_disk(data_dir):
    """WAL segment files (the spare and a partial spare are not segments)."""
    return sum(1 for name in os.listdir(data_dir) if name.endswith(".wal"))


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample(run, t_s, server):
    """One row of soak.csv, read from /proc and busyapi's /api/stats."""
    with open(f"/proc/{server.pid}/status") as f:
        rss = kit.status_kib(f.read(), "VmRSS")
    stats = server.stats() or {}
    return {
        "run": run, "t_s": round(t_s, 1), "rss_kib": rss, "fds": open_fds(server.pid),
        "segments": segments_on_disk(server.data),
        "backlog_records": stats.get("walBacklogRecords", -1),
        "acknowledged": stats.get("acknowledged", -1), "flushed": stats.get("flushed", -1),
    }


def summarize(rows):
    """Per run: first and last value and the maximum of each resource, and
    the RSS slope over the second half of the run in KiB per minute (a leak
    climbs there; warm-up does not)."""
    out = {}
    for run in dict.fromkeys(r["run"] for r in rows):
        rs = [r for r in rows if r["run"] == run]
        half = [r for r in rs if r["t_s"] >= rs[-1]["t_s"] / 2]
        s = {}
        for k in ("rss_kib", "fds", "segments", "backlog_records"):
            vals = [r[k] for r in rs]
            s[k] = (vals[0], vals[-1], max(vals))
        s["rss_slope_kib_per_min"] = slope([r["t_s"] for r in half], [r["rss_kib"] for r in half]) * 60
        out[run] = s
    return out


def slope(xs, ys):
    """Least-squares slope of ys over xs; 0 for fewer than two points."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def load(ctx, server, rate, secs, name):
    """oha at a fixed rate in the background; returns the process."""
    argv = ["oha", "--no-tui", "--output-format", "json", "-q", str(rate), "-c", str(ctx.connections),
            "--latency-correction", "-z", f"{secs}s", "-m", "POST", "-T", "application/json",
            "-d", kit.BODY, server.base + "/api/usages"]
    out = open(ctx.result(f"{name}.oha.json"), "w")
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def soak_run(ctx, writer, run, server, rate):
    """Holds `rate` for the soak's length, sampling every interval."""
    print(f"   {run}: {rate} requests/s for {ctx.soak_s} s, a sample every {ctx.soak_sample_s} s", flush=True)
    oha = load(ctx, server, rate, ctx.soak_s, run)
    start = time.monotonic()
    rows = []
    while True:
        row = sample(run, time.monotonic() - start, server)
        rows.append(row)
        writer.writerow(row)
        if len(rows) % 30 == 0:
            print(f"   ... {row}", flush=True)
        if oha.poll() is not None:
            break
        time.sleep(ctx.soak_sample_s)
    if oha.returncode != 0:
        raise BenchError(f"oha failed in the {run} run (see {ctx.result(run + '.oha.json')})")
    with open(ctx.result(f"{run}.oha.json")) as f:
        text = f.read()
    report = kit.json.loads(text[text.index("{"):])
    n, p50, p99, p999, non2xx = kit.oha_figures(report)
    print(f"   {run}: {n} responses, non-2xx {non2xx}, p50 {p50:.2f} ms, p99 {p99:.2f} ms,"
          f" p99.9 {p999:.2f} ms", flush=True)
    return rows


def calibrate(ctx):
    """The dev MongoDB's delivery rate through busyapi on this machine."""
    if ctx.soak_delivery_rate:
        return ctx.soak_delivery_rate
    print(f"   calibrating: {CALIBRATION_RATE} requests/s for {CALIBRATION_S} s with the dev MongoDB live",
          flush=True)
    mport, uri = mongo(ctx, "calibrate")
    server = start_busyapi(ctx, "calibrate", uri)
    oha = load(ctx, server, CALIBRATION_RATE, CALIBRATION_S, "calibrate")
    time.sleep(CALIBRATION_SKIP_S)
    f0, t0 = server.stat("flushed"), time.monotonic()
    oha.wait()
    f1, t1 = server.stat("flushed"), time.monotonic()
    finish(server)
    kit.stop_mongo(mport, ctx.results)
    delivered = (f1 - f0) / (t1 - t0)
    rate = int(delivered * SAFETY_FRACTION) // 100 * 100
    print(f"   delivered {delivered:.0f} documents/s while overloaded: the delivery run holds {rate}/s",
          flush=True)
    if rate <= 0:
        raise BenchError("the dev MongoDB delivered nothing during the calibration")
    return rate


def soak(ctx):
    print(f"\n== soak: a delivery run and an ingest run of {ctx.soak_s} s each (oha -c {ctx.connections}"
          " --latency-correction)", flush=True)
    path = ctx.result("soak.csv")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        rate = calibrate(ctx)
        mport, uri = mongo(ctx, "soak")
        server = start_busyapi(ctx, "delivery", uri)
        rows = soak_run(ctx, writer, "delivery", server, rate)
        acked = server.stat("acknowledged")
        wait_drained(ctx, server)
        docs = kit.count_documents(uri)
        print(f"   delivery: acknowledged {acked}, documents in MongoDB {docs}", flush=True)
        finish(server)
        kit.stop_mongo(mport, ctx.results)
        if docs != acked:
            ctx.failed = True
            print(f"CHECK FAILED: {docs} documents for {acked} acknowledged usages")
        server = start_busyapi(ctx, "ingest", extra=f"--wal-max-bytes {INGEST_WAL_MAX}")
        rows += soak_run(ctx, writer, "ingest", server, ctx.soak_ingest_rate)
        finish(server)
    for run, s in summarize(rows).items():
        print(f"{run}: " + ", ".join(f"{k} first/last/max {v[0]}/{v[1]}/{v[2]}" for k, v in s.items()
                                    if isinstance(v, tuple))
              + f", RSS slope over the second half {s['rss_slope_kib_per_min']:.1f} KiB/min")
    chart = ctx.result("soak.png")
    subprocess.run([kit.VENV_PY, os.path.join(kit.BENCH_DIR, "soak_chart.py"), path, chart], check=True)
    print(f"chart: {os.path.relpath(chart, kit.ROOT)}")
