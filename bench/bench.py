"""The benchmark kit behind scripts/bench.sh: builds busyapi (release), runs
it on fresh temporary data directories and drives it with wrk (-t1,
closed loop) or oha (open loop, at fixed rates).

    bench.py [MODE]

  usages       busyapi alone, bench/usages.lua, MongoDB unreachable
  ingest       bare may_minihttp baseline vs busyapi (MongoDB unreachable,
               fsync before every 201), alternating, medians and the ratio
               busyapi/bare; then open-loop
  mixed        busyapi with bench/mixed.lua (non-2xx expected)
  metrics      busyapi --metrics true vs false, alternating, ratio
  e2e          with the dev MongoDB live: every 201 ends up as a document;
               then drain throughput of a backlog vs a bare pymongo
               insert_many client
  open-loop    oha -q 18000 against busyapi
  node         the Node/Express original (bench/node-original) vs busyapi,
               each with a fresh dev MongoDB live, wrk -t1 -c50, ratio
               busyapi/node; then the original's flaws measured: repeated
               ids, and acknowledged records lost to kill -9 (busyapi killed
               the same way, restarted, drained)
  fsync-floor  bare may_minihttp; the same beside a stream of fdatasyncs
               nobody waits for; the same with each 201 waiting for an
               fdatasync (the thinnest durable server); busyapi.
               Alternating, medians and ratios to bare: what fsync alone
               costs here
  cpu          bare may_minihttp, the same waiting for an fdatasync per 201
               (back to back, and paced as busyapi paces its commits),
               and busyapi (MongoDB unreachable), held at fixed open-loop
               rates by oha (BENCH_CPU_RATES), alternating: server CPU per
               request, p50/p99/p99.9, fsyncs/s, records per commit, ratios
               to bare (bench/sidebyside.py)
  closed-loop  busyapi at BENCH_BASE_REV (built in a git worktree under
               target/) vs this tree, wrk -t1 at BENCH_CLOSED_CONNECTIONS,
               alternating: req/s and CPU per request, ratios to the base
  batch        records/s and server CPU per record for batch POSTs of
               BENCH_BATCH_SIZES usages (bench/batch.lua) beside single
               POSTs, wrk -t1 (MongoDB unreachable), alternating; then
               the retry window's RSS once full
  tls          busyapi plain vs native TLS (--tls-cert/--tls-key),
               alternating: keep-alive requests/s, and new connections/s
               (a full handshake each over TLS); ratios tls/plain
               (bench/tls_mode.py)
  headline     the mission on this box: oha -q 18000 for BENCH_HEADLINE_S
               against busyapi with the dev MongoDB live at nice 19 (in
               every thread); every response must be a 201, and after the
               drain every one a document; prints the machine's CPU shares
               and busyapi's slow fdatasyncs
  auth         busyapi --auth off vs keys required (a key in every request),
               wrk -t1 at BENCH_CLOSED_CONNECTIONS, alternating: req/s and
               CPU per request, ratios to off (bench/auth_mode.py)
  conns        server RSS for BENCH_RSS_CONNECTIONS idle, pipelining (never
               reading) and idle TLS connections (bench/conns_mode.py)
  soak         two runs of BENCH_SOAK_S at fixed rates, sampled every
               BENCH_SOAK_SAMPLE_S: with the dev MongoDB live at a rate it
               keeps up with (measured first), then at BENCH_SOAK_INGEST_RATE
               with MongoDB unreachable; RSS, open fds, WAL segments and
               backlog to soak.csv and soak.png (bench/soak.py); not in all
  all          all of the above but soak

Settings (environment):
  BENCH_DURATION         wrk duration per run                  default 15s
  BENCH_CONNECTIONS      wrk and oha connections               default 64
  BENCH_ROUNDS           rounds of the alternating modes       default 3
  BENCH_DRAIN_RECORDS    backlog size for the drain test       default 200000
  BENCH_DRAIN_TIMEOUT_S  longest wait for a backlog to drain   default 600
  BENCH_STALL_S          a drain stuck this long is an error   default 60
  BENCH_OHA_RATE         oha's fixed request rate              default 18000
  BENCH_TMPDIR           where data directories go             default target/bench-tmp
  BENCH_MONGO_TMPDIR     where the dev MongoDB's data goes: a
                         disk of its own, or /dev/shm to keep
                         its writes off busyapi's disk         default BENCH_TMPDIR
  BENCH_NODE_CONNECTIONS wrk connections in the node mode      default 50
  BENCH_KILL_AFTER_S     load before the kill -9 (node mode)   default 5
  BENCH_NODE_LOG_USAGES  the original's console.log per POST   default 1
  BENCH_CPU_RATES        fixed rates of the cpu mode           default 8000,12000,18000
  BENCH_CPU_DURATION_S   seconds per fixed-rate run            default 10
  BENCH_CPU_HOLDS_US     more busyapi servers in the cpu mode, one per
                         --commit-delay-max-us value (0,500),
                         each beside the paced bare handler    default none
  BENCH_BASE_REV         the closed-loop mode's baseline       default 4039c4b
  BENCH_CLOSED_CONNECTIONS wrk connections, closed-loop mode   default 4,16,64
  BENCH_HEADLINE_S       seconds of load in the headline mode  default 60
  BENCH_RSS_CONNECTIONS  connections of each kind, conns mode   default 1000
  BENCH_SOAK_S           seconds of each soak run              default 1800
  BENCH_SOAK_SAMPLE_S    seconds between soak samples          default 10
  BENCH_SOAK_DELIVERY_RATE the delivery run's rate             default: measured
  BENCH_SOAK_INGEST_RATE the ingest run's rate                 default 10000
  BENCH_BATCH_SIZES      usages per request, batch mode        default 1,10,100,1000

Every run's raw output (wrk, oha, server logs) is kept in
bench/results/<date>-<mode>/. The numbers mean something only on an
otherwise idle machine: the load generator itself takes about one core.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import auth_mode
import batch_mode
import conns_mode
import kit
import live_modes
import modes
import node_mode
import sidebyside
import soak
import tls_mode
from kit import BenchError, ROOT


class Context:
    """One run of the tool: its settings, directories and binaries."""

    def __init__(self, mode, env):
        self.mode = mode
        self.duration = env.get("BENCH_DURATION", "15s")
        self.duration_s = int(self.duration.rstrip("s"))
        self.connections = int(env.get("BENCH_CONNECTIONS", "64"))
        # The node mode measures with -c50, as the original was measured.
        self.node_connections = int(env.get("BENCH_NODE_CONNECTIONS", "50"))
        if mode == "node":
            self.connections = self.node_connections
        self.rounds = int(env.get("BENCH_ROUNDS", "3"))
        self.drain_records = int(env.get("BENCH_DRAIN_RECORDS", "200000"))
        self.drain_timeout_s = float(env.get("BENCH_DRAIN_TIMEOUT_S", "600"))
        self.stall_s = float(env.get("BENCH_STALL_S", "60"))
        self.oha_rate = int(env.get("BENCH_OHA_RATE", "18000"))
        self.kill_after_s = float(env.get("BENCH_KILL_AFTER_S", "5"))
        self.node_log_usages = env.get("BENCH_NODE_LOG_USAGES", "1")
        self.cpu_rates = env.get("BENCH_CPU_RATES", "8000,12000,18000")
        self.cpu_duration_s = env.get("BENCH_CPU_DURATION_S", "10")
        self.cpu_holds_us = [h for h in env.get("BENCH_CPU_HOLDS_US", "").split(",") if h]
        self.base_rev = env.get("BENCH_BASE_REV", "4039c4b")
        self.closed_connections = env.get("BENCH_CLOSED_CONNECTIONS", "4,16,64")
        self.headline_s = int(env.get("BENCH_HEADLINE_S", "60"))
        self.rss_connections = int(env.get("BENCH_RSS_CONNECTIONS", "1000"))
        self.soak_s = int(env.get("BENCH_SOAK_S", "1800"))
        self.soak_sample_s = float(env.get("BENCH_SOAK_SAMPLE_S", "10"))
        self.soak_delivery_rate = int(env.get("BENCH_SOAK_DELIVERY_RATE", "0"))
        self.soak_ingest_rate = int(env.get("BENCH_SOAK_INGEST_RATE", "10000"))
        self.batch_sizes = env.get("BENCH_BATCH_SIZES", "1,10,100,1000")
        tmp = env.get("BENCH_TMPDIR", os.path.join(ROOT, "target", "bench-tmp"))
        os.makedirs(tmp, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="run.", dir=tmp)
        mongo_tmp = env.get("BENCH_MONGO_TMPDIR")
        self.mongo_work = tempfile.mkdtemp(prefix="mongo.", dir=mongo_tmp) if mongo_tmp else self.work
        self.results = os.path.join(ROOT, "bench", "results", time.strftime("%Y%m%d-%H%M%S") + f"-{mode}")
        os.makedirs(self.results, exist_ok=True)
        self.bin = os.path.join(self.work, "bin")
        self.failed = False

    def binary(self, name):
        return os.path.join(self.bin, name)

    def result(self, name):
        return os.path.join(self.results, name)

    def log(self, name):
        return self.result(f"{name}.server.log")

    @staticmethod
    def have(tool):
        return shutil.which(tool) is not None


def run(*argv, **kw):
    subprocess.run(argv, check=True, **kw)


def git(*args):
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def print_machine(ctx):
    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    dirty = "" if subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT).returncode == 0 \
        else " (dirty tree)"
    fs = subprocess.run(["stat", "-f", "-c", "%T", ctx.work], capture_output=True, text=True).stdout.strip()
    lines = [
        f"== machine: {socket.gethostname()}, {os.cpu_count()} cores, {model}",
        f"== date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average {load},"
        f" commit {git('rev-parse', '--short', 'HEAD') or '?'}{dirty}",
        f"== wrk -t1 -c{ctx.connections} -d{ctx.duration}; data in {ctx.work} ({fs})",
    ]
    print("\n".join(lines))
    with open(ctx.result("machine.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if fs == "tmpfs":
        print(f"!! {ctx.work} is on tmpfs: fdatasync costs nothing there; set BENCH_TMPDIR to a disk",
              file=sys.stderr)


def ensure_tools(ctx):
    """wrk from Debian's packages; oha for the open-loop modes; the dev
    MongoDB's venv for the modes that run it."""
    if not ctx.have("wrk"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print("== installing wrk", flush=True)
        run(*sudo, "apt-get", "update")
        run(*sudo, "apt-get", "install", "-y", "wrk")
    if ctx.mode in ("cpu", "headline", "soak", "all") and not ctx.have("oha"):
        print("== installing oha (cargo install --locked oha; slow to build)", flush=True)
        run("cargo", "install", "--locked", "oha")
    if ctx.mode in ("e2e", "node", "headline", "soak", "all") and not os.access(kit.VENV_PY, os.X_OK):
        run(os.path.join(ROOT, "scripts", "dev-mongo.sh"), "install")
    if ctx.mode == "soak" and subprocess.run([kit.VENV_PY, "-c", "import matplotlib"],
                                             capture_output=True).returncode != 0:
        print("== installing matplotlib into .venv (for the soak's chart)", flush=True)
        run(kit.VENV_PY, "-m", "pip", "install", "--quiet", "matplotlib")


def build(ctx):
    """Release builds, copied out of target/ so a concurrent cargo build
    cannot swap a binary under a running benchmark."""
    os.makedirs(ctx.bin)
    if ctx.mode in ("ingest", "fsync-floor", "cpu", "all"):
        # A crate of its own, so its may features never reach busyapi's builds.
        run("cargo", "build", "--release", "--locked", "--manifest-path",
            os.path.join(ROOT, "bench", "bare_minihttp", "Cargo.toml"), cwd=ROOT)
        shutil.copy(os.path.join(ROOT, "bench", "bare_minihttp", "target", "release", "bare_minihttp"), ctx.bin)
    run("cargo", "build", "--release", "--locked", "--bin", "busyapi", cwd=ROOT)
    shutil.copy(os.path.join(ROOT, "target", "release", "busyapi"), ctx.bin)


def build_rev(ctx, rev):
    """Builds busyapi at `rev` in a worktree of its own; returns its path."""
    tree = os.path.join(ROOT, "target", "bench-base", f"src-{rev}")
    if not os.path.isdir(tree):
        run("git", "worktree", "add", "--detach", tree, rev, cwd=ROOT)
    target = os.path.join(ROOT, "target", "bench-base", "target")
    run("cargo", "build", "--release", "--locked", "--bin", "busyapi", "--manifest-path",
        os.path.join(tree, "Cargo.toml"), env={**os.environ, "CARGO_TARGET_DIR": target})
    path = ctx.binary(f"busyapi-{rev}")
    shutil.copy(os.path.join(target, "release", "busyapi"), path)
    return path


def cpu(ctx):
    print(f"\n== cpu: bare may_minihttp vs busyapi at fixed rates (oha -c {ctx.connections}"
          " --latency-correction, MongoDB unreachable)", flush=True)
    sidebyside.run([
        "fixed-rate", "--results", ctx.results, "--rounds", str(ctx.rounds),
        "--rates", ctx.cpu_rates, "--duration-s", ctx.cpu_duration_s,
        "--connections", str(ctx.connections),
        "--server", f"bare={ctx.binary('bare_minihttp')} 127.0.0.1:{{port}}",
        "--server", f"bare-fsync-wait={ctx.binary('bare_minihttp')} 127.0.0.1:{{port}} --fsync-wait {{data}}",
        "--server", paced_bare(ctx, HOLD_DEFAULT_US),
        "--server", f"busyapi={kit.busyapi_command(ctx.binary('busyapi'))}",
    ] + [arg for hold in ctx.cpu_holds_us for arg in (
        # The same binary with another pacing bound: what a hold buys in
        # CPU and costs in latency, measured beside the default, and the
        # thinnest durable server paced the same.
        "--server", paced_bare(ctx, hold),
        "--server",
        f"busyapi-hold{hold}us={kit.busyapi_command(ctx.binary('busyapi'), extra=f'--commit-delay-max-us {hold}')}",
    )])


# busyapi's --commit-delay-max-us when none is given.
HOLD_DEFAULT_US = 1500


def paced_bare(ctx, hold_us):
    """The --server argument of the thinnest durable server whose commits
    are paced like busyapi's at `hold_us` (bench/bare_minihttp)."""
    return (f"bare-fsync-paced{hold_us}us={ctx.binary('bare_minihttp')} 127.0.0.1:{{port}}"
            f" --fsync-paced {{data}} {hold_us}")


def closed_loop(ctx):
    base = build_rev(ctx, ctx.base_rev)
    print(f"\n== closed-loop: busyapi at {ctx.base_rev} vs this tree, wrk -t1 (MongoDB unreachable)", flush=True)
    sidebyside.run([
        "closed-loop", "--results", ctx.results, "--rounds", str(ctx.rounds),
        "--connections", ctx.closed_connections, "--duration-s", str(ctx.duration_s),
        "--server", f"{ctx.base_rev}={kit.busyapi_command(base)}",
        "--server", f"this-tree={kit.busyapi_command(ctx.binary('busyapi'))}",
    ])


def ingest_then_open_loop(ctx):
    modes.ingest(ctx)
    modes.open_loop(ctx)


MODES = {
    "usages": [modes.usages],
    "ingest": [ingest_then_open_loop],
    "mixed": [modes.mixed],
    "metrics": [modes.metrics],
    "e2e": [live_modes.e2e],
    "open-loop": [modes.open_loop],
    "node": [node_mode.node],
    "fsync-floor": [modes.fsync_floor],
    "cpu": [cpu],
    "closed-loop": [closed_loop],
    "headline": [live_modes.headline],
    "batch": [batch_mode.batch],
    "tls": [tls_mode.tls],
    "auth": [auth_mode.auth],
    "conns": [conns_mode.conns],
    "soak": [soak.soak],
}
MODES["all"] = [modes.usages, modes.ingest, modes.mixed, modes.metrics, modes.open_loop,
                live_modes.e2e, node_mode.node, modes.fsync_floor, cpu, closed_loop,
                tls_mode.tls, auth_mode.auth, conns_mode.conns, live_modes.headline,
                batch_mode.batch]


def main(argv):
    mode = argv[1] if len(argv) > 1 else "usages"
    if mode not in MODES or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    ctx = Context(mode, os.environ)
    try:
        print_machine(ctx)
        ensure_tools(ctx)
        build(ctx)
        for step in MODES[mode]:
            step(ctx)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        ctx.failed = True
    except KeyboardInterrupt:
        ctx.failed = True
    finally:
        kit.stop_all()
        shutil.rmtree(ctx.work, ignore_errors=True)
        if ctx.mongo_work != ctx.work:
            shutil.rmtree(ctx.mongo_work, ignore_errors=True)
        print(f"raw output kept in {os.path.relpath(ctx.results, ROOT)}")
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
