"""The parts every benchmark mode shares: processes, ports, load generators,
busyapi's own figures, the dev MongoDB. Only the Python standard library.

Every process a mode starts is registered in `STARTED`, so `stop_all()`
(called on every exit by bench.py) leaves nothing running. Raw output of
every run goes to the results directory the caller names.
"""

import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "bench")
# The venv that scripts/dev-mongo.sh installs: it has pymongo.
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
# One contract-shaped body for oha, which sends a fixed body.
BODY = '{"patientId": "100", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}'
# How long a server may take to answer its first request.
START_TIMEOUT_S = 15
# How long a process gets to stop on SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 5
# How long a stopped dev MongoDB gets to exit, so the next measurement does
# not share the cores with its shutdown.
MONGO_EXIT_TIMEOUT_S = 10

# Processes started and not yet stopped, and dev MongoDB ports running.
STARTED = []
MONGO_PORTS = []


class BenchError(Exception):
    """A run that cannot give a figure: bench.py prints it and exits 1."""


# ------------------------------------------------------------ processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout_s=2):
    # A TLS server under benchmark has a certificate made for the run,
    # trusted by nothing: its figures are wanted, not its identity.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    with urllib.request.urlopen(url, timeout=timeout_s, context=context) as r:
        return r.read().decode()


def proc_cpu_s(stat_line, ticks_per_s):
    """utime + stime, in seconds, from one /proc/PID/stat line."""
    # The command name (field 2) is in parentheses and may hold spaces.
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_s


def read_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        return proc_cpu_s(f.read(), os.sysconf("SC_CLK_TCK"))


# The fields of /proc/stat's `cpu` line, in order (proc(5)).
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_ticks(stat_text):
    """The whole machine's CPU ticks by kind, from /proc/stat's text."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            return dict(zip(CPU_FIELDS, (int(v) for v in line.split()[1:])))
    raise BenchError("/proc/stat has no cpu line")


def read_cpu_ticks():
    with open("/proc/stat") as f:
        return cpu_ticks(f.read())


def cpu_shares(before, after):
    """Each kind's share of the machine's ticks between two cpu_ticks."""
    delta = {k: after[k] - before[k] for k in CPU_FIELDS}
    total = sum(delta.values()) or 1
    return {k: v / total for k, v in delta.items()}


def status_kib(status_text, field):
    """A `kB` field (VmRSS, VmHWM) of /proc/PID/status, in KiB, or None."""
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            kib = status_kib(f.read(), "VmHWM")
    except OSError:
        return None
    return None if kib is None else round(kib / 1024)


class Process:
    """One child process, logged to `log_path`, registered in STARTED."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=None if env is None else {**os.environ, **env})
        self.pid = self.proc.pid
        STARTED.append(self)

    def alive(self):
        return self.proc.poll() is None

    def wait_http(self, url):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(f"{self.name} exited at start (log: {self.log.name})")
            try:
                get(url, timeout_s=1)
                return self
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{url} did not answer within {START_TIMEOUT_S} s (log: {self.log.name})")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.stop()

    def stop(self, sig=signal.SIGTERM):
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        if self in STARTED:
            STARTED.remove(self)


class Server(Process):
    """A server on a fresh port, with a fresh data directory under `workdir`
    unless `data` names one (a restart on the same WAL): `command` is a
    shell-style line in which `{port}` and `{data}` are replaced; `scheme`
    is "https" for a server that speaks TLS. Returns once `ready_path`
    answers."""

    def __init__(self, name, command, workdir, log_path, ready_path="/", data=None,
                 scheme="http"):
        self.port = free_port()
        self.data = data or tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
        argv = shlex.split(command.format(port=self.port, data=self.data))
        super().__init__(name, argv, log_path)
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.wait_http(self.base + ready_path)

    def metrics(self):
        try:
            return get(self.base + "/metrics")
        except OSError:
            return None

    def stats(self):
        """busyapi's /api/stats as a dict, or None if it did not answer."""
        try:
            return json.loads(get(self.base + "/api/stats", timeout_s=5))
        except (OSError, ValueError):
            return None

    def stat(self, field):
        """One numeric field of /api/stats; -1 if the server did not answer."""
        s = self.stats()
        return -1 if s is None else s.get(field, -1)

    def remove_data(self):
        subprocess.run(["rm", "-rf", self.data], check=False)


def busyapi_command(binary, uri=None, extra=""):
    """The command line a busyapi benchmark runs. The shutdown grace is 0:
    what it would deliver at exit is of no interest here. Ids start at 1
    without asking MongoDB: every run has a MongoDB of its own (or none, or
    one that is down at first), which holds no id of any earlier run.
    MongoDB is unreachable unless a URI is given."""
    uri = uri or f"mongodb://127.0.0.1:{free_port()}"
    return (f"{binary} --listen 127.0.0.1:{{port}} --data-dir {{data}} --mongodb-uri {uri}"
            f" --database bench --shutdown-grace-secs 0 --fresh-dir-ids from-one {extra}").strip()


def stop_all():
    for p in list(STARTED):
        p.stop()
    for port in list(MONGO_PORTS):
        stop_mongo(port, results=None)


# ------------------------------------------------------------ load generators


def fields(line):
    """`key=value` pairs of a BENCH / IDS / ACKED / INSERT line, as strings."""
    return dict(re.findall(r"(\w+)=(\S+)", line))


def wrk_figures(f):
    """(requests/s, p50 ms, p99 ms, responses, non-2xx) from the fields of
    the BENCH line that bench/common.lua prints."""
    return (float(f["rps"]), float(f["p50_ms"]), float(f["p99_ms"]),
            int(f["requests"]), int(f["non2xx"]))


def wrk_argv(url, connections, duration, script, script_args=()):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency",
            "-s", os.path.join(BENCH_DIR, script), url]
    return argv + (["--", *script_args] if script_args else [])


def last_line(text, prefix):
    lines = [l for l in text.splitlines() if l.startswith(prefix)]
    return lines[-1] if lines else None


def run_wrk(url, connections, duration, out_path, script="usages.lua", script_args=()):
    """One wrk run; returns the fields of its BENCH line (all strings)."""
    done = subprocess.run(wrk_argv(url, connections, duration, script, script_args),
                          capture_output=True, text=True, check=False, cwd=BENCH_DIR)
    with open(out_path, "w") as f:
        f.write(done.stdout)
        f.write(done.stderr)
    bench = last_line(done.stdout, "BENCH ")
    if done.returncode != 0 or bench is None:
        raise BenchError(f"wrk failed ({out_path}): {done.stderr.strip()[:400]}")
    return fields(bench)


def run_oha(url, rate, duration_s, connections, out_path):
    """One oha run at a fixed rate, corrected for coordinated omission;
    returns its JSON report."""
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
        raise BenchError(f"oha failed ({out_path}): {done.stderr.strip()[:400]}")
    return json.loads(done.stdout)


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


# ------------------------------------------------------------ the dev MongoDB


def mongo_pidfile(port):
    return os.path.join(ROOT, "data", f"secantusd-{port}.pid")


def start_mongo(port, directory, nice=0):
    """A fresh dev MongoDB, started at `nice`. The nice value is set before
    the server starts so that every thread it makes inherits it: renicing
    a running server's pid would lower its main thread only, and the
    worker threads that do its inserts would stay at nice 0."""
    MONGO_PORTS.append(port)
    subprocess.run([os.path.join(ROOT, "scripts", "dev-mongo.sh"), "start", str(port), directory],
                   check=True, stdout=subprocess.DEVNULL,
                   preexec_fn=(lambda: os.nice(nice)) if nice else None)


def start_prepared_mongo(port, directory, nice=0):
    """A fresh dev MongoDB whose collection and index exist already (see
    `prepare` in bench/mongo_bench.py for why)."""
    start_mongo(port, directory, nice)
    mongo_tool("prepare", f"mongodb://127.0.0.1:{port}", "bench", "usages")


def stop_mongo(port, results):
    """Stops a dev MongoDB this tool started and waits for it to exit; its
    log is copied into `results`."""
    pid = None
    try:
        with open(mongo_pidfile(port)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pass
    subprocess.run([os.path.join(ROOT, "scripts", "dev-mongo.sh"), "stop", str(port)],
                   check=False, stdout=subprocess.DEVNULL)
    if pid is not None:
        deadline = time.monotonic() + MONGO_EXIT_TIMEOUT_S
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
    if results:
        subprocess.run(["cp", os.path.join(ROOT, "data", f"secantusd-{port}.log"),
                        os.path.join(results, f"mongo-{port}.log")], check=False,
                       stderr=subprocess.DEVNULL)
    if port in MONGO_PORTS:
        MONGO_PORTS.remove(port)


def mongo_tool(*args):
    """Runs bench/mongo_bench.py (or another pymongo script under bench/)
    with the venv's Python; returns its last output line ("" if none)."""
    script = "mongo_bench.py"
    if args and args[0].endswith(".py"):
        script, args = args[0], args[1:]
    done = subprocess.run([VENV_PY, os.path.join(BENCH_DIR, script), *map(str, args)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{script} {args[0] if args else ''} failed: {done.stderr.strip()[-400:]}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def count_documents(uri, db="bench", coll="usages"):
    return int(mongo_tool("count", uri, db, coll))


def settled_count(uri, db, coll, tries=30):
    """The document count once two reads a second apart agree (inserts sent
    before a kill may still be landing)."""
    prev, n = -1, -1
    for _ in range(tries):
        n = count_documents(uri, db, coll)
        if n == prev:
            break
        prev = n
        time.sleep(1)
    return n


def fail(message):
    print(f"bench: {message}", file=sys.stderr)
    sys.exit(1)
