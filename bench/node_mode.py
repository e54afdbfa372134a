"""The Node/Express original (bench/node-original/server.js) against
busyapi, each on a fresh dev MongoDB, then the original's flaws measured:
repeated ids, and acknowledged records lost to kill -9 (busyapi killed the
same way, restarted on the same data directory, drained)."""

import json
import os
import shutil
import signal
import subprocess
import time

import kit
from kit import BenchError
from live_modes import mongo, wait_drained
from modes import finish, rss, start_busyapi, wrk, wrk_line
from stats import fmt, ratio

NODE_DIR = os.path.join(kit.BENCH_DIR, "node-original")


def ensure_node_original(ctx):
    """npm ci in bench/node-original when node_modules is missing (or older
    than the lock file)."""
    if shutil.which("node") is None:
        raise BenchError("node is not installed (the node mode needs Node 20 and npm)")
    stamp = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
    lock = os.path.join(NODE_DIR, "package-lock.json")
    if not os.path.exists(stamp) or os.path.getmtime(lock) > os.path.getmtime(stamp):
        print("== npm ci in bench/node-original", flush=True)
        with open(ctx.result("npm-ci.log"), "w") as log:
            if subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                              stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                raise BenchError(f"npm ci failed (see {log.name})")


def package_version(name):
    with open(os.path.join(NODE_DIR, "node_modules", name, "package.json")) as f:
        return json.load(f)["version"]


class NodeServer(kit.Process):
    """The original, run as `npm start` runs it: NODE_ENV unset, i.e.
    express's "development", with morgan's request log on (usages.lua sends
    only valid bodies, so the development error pages never show)."""

    def __init__(self, ctx, name, uri):
        self.port = kit.free_port()
        env = {"PORT": str(self.port), "MONGODB_URI": uri, "NODE_ENV": "development",
               "LOG_USAGES": ctx.node_log_usages}
        super().__init__(name, ["node", os.path.join(NODE_DIR, "server.js")], ctx.log(name), env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.wait_http(self.base + "/")


def kill_under_load(ctx, name, server):
    """Drives the server with ids.lua (statuses and ids tallied), kill -9s
    it after the configured seconds, then stops wrk with SIGINT (it still
    reports). Returns the fields of the BENCH and IDS lines; the distinct
    ids go to WORK/NAME.ids."""
    out = ctx.result(f"{name}.wrk.txt")
    argv = kit.wrk_argv(server.base, ctx.connections, "600s", "node-original/ids.lua",
                        [f"ids_file={os.path.join(ctx.work, name + '.ids')}"])
    load = kit.Process(f"{name}-wrk", argv, out)
    time.sleep(ctx.kill_after_s)
    if not load.alive():
        raise BenchError(f"wrk exited early ({out})")
    server.kill9()
    time.sleep(0.5)
    load.stop(signal.SIGINT)
    with open(out) as f:
        text = f.read()
    bench, ids = kit.last_line(text, "BENCH "), kit.last_line(text, "IDS ")
    if bench is None or ids is None:
        raise BenchError(f"wrk printed no BENCH/IDS line ({out})")
    return kit.fields(bench), kit.fields(ids)


def side_by_side(ctx):
    mport, uri = mongo(ctx, "node", prepared=False)
    node = NodeServer(ctx, "node", uri)
    n = wrk(ctx, "node", node)
    print(wrk_line("node original", n, rss(node)))
    # SIGTERM: the original has no shutdown hook, so its array's tail is gone.
    node.stop()
    docs = kit.settled_count(uri, "busyapi_node", "usages")
    print(f"   documents in MongoDB after SIGTERM: {docs} of {n['requests']} requests answered")
    kit.stop_mongo(mport, ctx.results)

    # Prepared like e2e's (collection and busyapi's index created first).
    mport, uri = mongo(ctx, "busyapi")
    server = start_busyapi(ctx, "node-busyapi", uri)
    u = wrk(ctx, "node-busyapi", server)
    print(wrk_line("busyapi", u, rss(server)))
    finish(server)
    kit.stop_mongo(mport, ctx.results)
    print(f"ratio busyapi/node: requests/s {fmt(ratio(float(u['rps']), float(n['rps'])), '.3f')},"
          f" p99 {fmt(ratio(float(u['p99_ms']), float(n['p99_ms'])), '.3f')}")


def id_range(ids):
    return f"{ids['distinct']} distinct ids ({ids['min']}..{ids['max']})"


def node_flaws(ctx):
    mport, uri = mongo(ctx, "node-kill", prepared=False)
    node = NodeServer(ctx, "node-kill", uri)
    b, ids = kill_under_load(ctx, "node-kill", node)
    n201 = int(b["n201"])
    docs = kit.settled_count(uri, "busyapi_node", "usages")
    kit.stop_mongo(mport, ctx.results)
    print(f"node original  (a) ids:     {n201} acknowledged, {id_range(ids)}")
    lost = n201 - docs
    detail = f"lost {lost} acknowledged records" if lost >= 0 else \
        f"lost none ({-lost} more documents than 201s read)"
    print(f"node original  (b) kill -9: {n201} acknowledged, {docs} documents in MongoDB: {detail}")


def busyapi_kill(ctx):
    mport, uri = mongo(ctx, "busyapi-kill")
    data = os.path.join(ctx.work, "busyapi-kill-data")
    os.makedirs(data)
    server = start_busyapi(ctx, "busyapi-kill", uri, data=data)
    b, ids = kill_under_load(ctx, "busyapi-kill", server)
    n201 = int(b["n201"])
    print(f"busyapi        (a) ids:     {n201} acknowledged, {id_range(ids)}")
    # The same data directory: the WAL replays.
    os.replace(ctx.log("busyapi-kill"), ctx.log("busyapi-kill.before-kill"))
    t0 = time.monotonic()
    server = start_busyapi(ctx, "busyapi-kill", uri, data=data)
    watch = wait_drained(ctx, server)
    line = kit.mongo_tool("node-original/acked_ids.py", uri, "bench", "usages",
                          os.path.join(ctx.work, "busyapi-kill.ids"))
    with open(ctx.result("busyapi-kill.acked.txt"), "w") as f:
        f.write(line + "\n")
    acked = kit.fields(line)
    docs, missing = int(acked["documents"]), int(acked["missing"])
    print(f"busyapi        (b) kill -9: restarted on the same data directory, drained"
          f" {watch.end_s - t0:.1f} s after the restart; {n201} acknowledged, {docs} documents in"
          f" MongoDB, {missing} acknowledged ids missing: lost {missing} acknowledged records")
    if missing == 0 and int(acked["ids"]) == n201:
        print(f"CHECK OK: every acknowledged id is a document in MongoDB ({docs - n201} more"
              " documents: requests committed whose 201 wrk never read)")
    else:
        print(f"CHECK FAILED: {missing} of {n201} acknowledged ids missing"
              f" (see {ctx.result('busyapi-kill.acked.txt')})")
        ctx.failed = True
    finish(server)
    kit.stop_mongo(mport, ctx.results)


def node(ctx):
    connections, ctx.connections = ctx.connections, ctx.node_connections
    try:
        run_node(ctx)
    finally:
        ctx.connections = connections


def run_node(ctx):
    ensure_node_original(ctx)
    print(f"\n== node: the Node/Express original vs busyapi, each with a fresh dev MongoDB live;"
          f" wrk -t1 -c{ctx.connections} -d{ctx.duration}, bench/usages.lua")
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"node {node_version}, express {package_version('express')}, mongodb driver"
          f" {package_version('mongodb')}; the original's console.log per POST"
          f" {'off' if ctx.node_log_usages == '0' else 'on'}")
    side_by_side(ctx)
    print(f"\n== node flaws: bench/node-original/ids.lua (every status and id tallied), kill -9 after"
          f" {ctx.kill_after_s}s of load; a fresh dev MongoDB each")
    node_flaws(ctx)
    busyapi_kill(ctx)
