"""The benchmark modes with the dev MongoDB live: end to end, the drain of
a backlog, the mission's headline, and the Node original side by side.

Progress is read from busyapi's own /api/stats while load runs; MongoDB is
counted once, at the end, because a count scans the whole collection and
would starve the inserts being timed.
"""

import os
import signal
import time

import kit
from kit import BenchError
from modes import finish, rss, start_busyapi, wrk, wrk_line
from sidebyside import count_above, prometheus_value
from stats import DrainWatch, StalledError, fmt, rate, ratio

# How often a drain is sampled, and how often its progress is printed.
DRAIN_POLL_S = 0.2
DRAIN_PRINT_S = 5.0
# The headline's MongoDB stands in for a database on hosts of its own, so
# it takes the CPU only when busyapi and the load generator leave it idle.
HEADLINE_MONGO_NICE = 19


def mongo(ctx, name, prepared=True, nice=0):
    """A fresh dev MongoDB on a free port, at `nice`; returns (port, uri)."""
    port = kit.free_port()
    directory = os.path.join(ctx.mongo_work, f"mongo-{name}")
    (kit.start_prepared_mongo if prepared else kit.start_mongo)(port, directory, nice)
    return port, f"mongodb://127.0.0.1:{port}"


def wait_drained(ctx, server, flushed0=0, target=0):
    """Polls busyapi until its WAL backlog is 0; returns the DrainWatch."""
    start = time.monotonic()
    watch = DrainWatch(flushed0, target, start, ctx.stall_s, ctx.drain_timeout_s)
    last_print = start
    while True:
        t = time.monotonic()
        stats = server.stats() or {}
        backlog, flushed = stats.get("walBacklogRecords", -1), stats.get("flushed", -1)
        try:
            if watch.sample(t, backlog, flushed):
                return watch
        except StalledError as e:
            raise BenchError(f"{e}; see the server log and the dev MongoDB log in {ctx.results}")
        if t - last_print >= DRAIN_PRINT_S:
            print(f"   ... backlog {backlog} records, flushed {flushed}", flush=True)
            last_print = t
        time.sleep(DRAIN_POLL_S)


def e2e(ctx):
    print("\n== e2e: busyapi with the dev MongoDB live, bench/usages.lua (every response tallied)")
    mport, uri = mongo(ctx, "live")
    server = start_busyapi(ctx, "e2e", uri)
    b = wrk(ctx, "e2e", server, script_args=["count"])
    n201 = int(b["n201"])
    print(wrk_line("busyapi + MongoDB", b, rss(server)))
    t0 = time.monotonic()
    watch = wait_drained(ctx, server)
    print(f"backlog drained {watch.end_s - t0:.1f} s after wrk stopped")
    docs = kit.count_documents(uri)
    acked, committed = server.stat("acknowledged"), server.stat("lastId")
    print(f"201s seen by wrk:          {n201}\nacknowledged (busyapi):    {acked}\n"
          f"committed to WAL (lastId): {committed}\ndocuments in MongoDB:      {docs}")
    # wrk stops with up to one request in flight per connection: those are
    # committed and delivered, but wrk never reads their 201.
    if docs == n201:
        print("CHECK OK: documents == 201s")
    elif n201 < docs <= n201 + ctx.connections and docs == committed:
        print(f"CHECK OK: documents == committed records; {docs - n201} more than the 201s wrk read"
              " (at most one request per connection was in flight when wrk stopped)")
    else:
        print(f"CHECK FAILED: documents {docs} vs 201s {n201} (committed {committed})")
        ctx.failed = True
    finish(server)
    kit.stop_mongo(mport, ctx.results)
    drained, busy_rate, busy_rate_total = drain(ctx)
    bare_drain(ctx, drained, busy_rate, busy_rate_total)


def fill_backlog(ctx, server):
    """Drives busyapi (MongoDB down) until it has acknowledged the drain's
    record count. wrk knows only durations: limit=N stops its threads after
    N responses, and wrk is interrupted once the server has them."""
    argv = kit.wrk_argv(server.base, ctx.connections, "600s", "usages.lua",
                        [f"limit={ctx.drain_records}"])
    load = kit.Process("drain-fill", argv, ctx.result("drain-fill.wrk.txt"))
    while server.stat("acknowledged") < ctx.drain_records:
        if not load.alive():
            raise BenchError(f"wrk exited early (see {ctx.result('drain-fill.wrk.txt')})")
        time.sleep(DRAIN_POLL_S)
    time.sleep(0.5)
    load.stop(signal.SIGINT)


def drain(ctx):
    """A backlog built with MongoDB down, then MongoDB started: busyapi's
    drain rate, once flowing and counted from MongoDB up."""
    print(f"\n== e2e drain: a backlog of ~{ctx.drain_records} records built with MongoDB down, then MongoDB started")
    # The data directory is prepared on another port first, so the
    # collection exists before busyapi can reach the server.
    mport, _ = mongo(ctx, "drain")
    kit.stop_mongo(mport, ctx.results)
    mport = kit.free_port()
    uri = f"mongodb://127.0.0.1:{mport}"
    server = start_busyapi(ctx, "drain", uri)
    fill_backlog(ctx, server)
    backlog, flushed0 = server.stat("walBacklogRecords"), server.stat("flushed")
    print(f"backlog: {backlog} records ({server.stat('walBacklogBytes')} bytes)")
    kit.start_mongo(mport, os.path.join(ctx.mongo_work, "mongo-drain"))
    t_up = time.monotonic()
    watch = wait_drained(ctx, server, flushed0, backlog)
    drained = server.stat("flushed") - flushed0
    # Rates end when `flushed` covered the backlog (MongoDB confirmed it all).
    busy_rate = rate(drained, watch.first_s, watch.done_s)
    busy_rate_total = rate(drained, t_up, watch.done_s)
    docs = kit.count_documents(uri)
    print(f"busyapi drain: {drained} records; {fmt(busy_rate, '.1f')} docs/s once flowing,"
          f" {fmt(busy_rate_total, '.1f')} docs/s counted from MongoDB up (includes"
          f" {watch.first_s - t_up:.1f} s of reconnect backoff and index creation);"
          f" walBacklogRecords reached 0 {watch.end_s - watch.done_s:.1f} s later;"
          f" documents in MongoDB: {docs}")
    if docs != drained:
        print(f"!! documents ({docs}) != records drained ({drained})")
    finish(server)
    kit.stop_mongo(mport, ctx.results)
    return drained, busy_rate, busy_rate_total


def bare_drain(ctx, drained, busy_rate, busy_rate_total):
    """The bare pymongo client, each time against a fresh dev server of the
    same kind: first with busyapi's secondary index (the fair comparison),
    then without."""
    bare_rate = None
    for index in ("index", "noindex"):
        mport, uri = mongo(ctx, f"bare-{index}", prepared=False)
        line = kit.mongo_tool("insert", uri, "bench", "usages", drained, 1000, index)
        kit.stop_mongo(mport, ctx.results)
        with open(ctx.result(f"bare-insert-{index}.txt"), "w") as f:
            f.write(line + "\n")
        docs_per_s = float(kit.fields(line)["docs_per_s"])
        if index == "index":
            bare_rate = docs_per_s
            print(f"bare pymongo insert_many(1000, unordered, j:true), index {{patientId, timestamp}}"
                  f" as busyapi: {drained} docs, {docs_per_s} docs/s")
        else:
            print(f"bare pymongo insert_many(1000, unordered, j:true), _id index only (reference):"
                  f"      {drained} docs, {docs_per_s} docs/s")
    print(f"ratio busyapi/bare drain: {fmt(ratio(busy_rate, bare_rate), '.3f')} (once flowing),"
          f" {fmt(ratio(busy_rate_total, bare_rate), '.3f')} (from MongoDB up)")


def slow_fsyncs(ctx, server):
    """Keeps busyapi's /metrics and prints how many of its fdatasyncs took
    long enough to show in the request latencies' tail."""
    text = server.metrics()
    with open(ctx.result("headline.metrics.txt"), "w") as f:
        f.write(text)
    name = "busyapi_wal_fsync_seconds"
    total = prometheus_value(text, name + "_count")
    print(f"fdatasyncs: {fmt(total, '.0f')}, over 10 ms {fmt(count_above(text, name, 0.01), '.0f')},"
          f" over 50 ms {fmt(count_above(text, name, 0.05), '.0f')},"
          f" over 100 ms {fmt(count_above(text, name, 0.1), '.0f')}")


def headline(ctx):
    """The mission's headline: 18,000 requests/s open loop for a minute, the
    dev MongoDB live on the same box at the lowest CPU priority (standing
    in for a database on hosts of its own)."""
    secs = ctx.headline_s
    print(f"\n== headline: oha -q {ctx.oha_rate} -c {ctx.connections} --latency-correction -z {secs}s,"
          " dev MongoDB live at nice 19")
    mport, uri = mongo(ctx, "headline", nice=HEADLINE_MONGO_NICE)
    server = start_busyapi(ctx, "headline", uri)
    cpu0, machine0 = kit.read_cpu_s(server.pid), kit.read_cpu_ticks()
    report = kit.run_oha(server.base + "/api/usages", ctx.oha_rate, secs, ctx.connections,
                         ctx.result("headline.oha.json"))
    cpu = kit.read_cpu_s(server.pid) - cpu0
    share = kit.cpu_shares(machine0, kit.read_cpu_ticks())
    print(f"machine over the minute: user {share['user']:.0%}, niced (MongoDB, busyapi's flusher) {share['nice']:.0%},"
          f" system {share['system'] + share['irq'] + share['softirq']:.0%},"
          f" idle {share['idle']:.0%}, iowait {share['iowait']:.0%}, steal {share['steal']:.0%}")
    slow_fsyncs(ctx, server)
    n, p50, p99, p999, _ = kit.oha_figures(report)
    print(f"responses {n}  statuses {report.get('statusCodeDistribution', {})}"
          f"  errors {report.get('errorDistribution', {})}")
    print(f"p50 {fmt(p50, '.2f')} ms  p99 {fmt(p99, '.2f')} ms  p99.9 {fmt(p999, '.2f')} ms"
          f"  busyapi CPU per request {cpu / max(n, 1) * 1e6:.1f} us (delivery included)")
    acked = server.stat("acknowledged")
    print(f"acknowledged by busyapi: {acked}; waiting for the backlog to drain", flush=True)
    wait_drained(ctx, server)
    docs = kit.count_documents(uri)
    print(f"documents in MongoDB: {docs} (acknowledged {acked})")
    finish(server)
    kit.stop_mongo(mport, ctx.results)
    if docs != acked:
        raise BenchError(f"MongoDB holds {docs} documents for {acked} acknowledged usages")
