"""The auth mode of scripts/bench.sh: what API keys cost per request.
busyapi with `--auth off` and with keys required, side by side in
alternating rounds (bench/sidebyside.py, wrk -t1 closed loop on
BENCH_CLOSED_CONNECTIONS, MongoDB unreachable): requests/s and server CPU
per request. Both get the same requests, `Authorization` header
included; the key's own limit is far above what wrk can send, so no
request meets its bucket.
"""

import hashlib
import os

import kit
import sidebyside

# The benchmark's key: any string works; its digest goes in the file.
KEY = "bench-key-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ"
# Far above a closed loop's rate on this machine, within the file's bounds
# (KEY_RATE_PER_S_MAX, KEY_BURST_MAX in src/limits.rs).
RATE_PER_S, BURST = 1_000_000, 10_000_000


def keys_file(directory):
    """A keys file with the benchmark's key; returns its path."""
    path = os.path.join(directory, "bench-keys.toml")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    with open(path, "w") as f:
        f.write(f'[[key]]\nid = "bench"\nsha256 = "{digest}"\n'
                f"rate_per_s = {RATE_PER_S}\nburst = {BURST}\n")
    return path


def auth(ctx):
    print(f"\n== auth: busyapi --auth off vs keys required, wrk -t1 at {ctx.closed_connections}"
          " connections (MongoDB unreachable)", flush=True)
    keys = keys_file(ctx.work)
    binary = ctx.binary("busyapi")
    required = f"--api-keys-file {keys} --admin-listen 127.0.0.1:0"
    sidebyside.run([
        "closed-loop", "--results", ctx.results, "--rounds", str(ctx.rounds),
        "--connections", ctx.closed_connections, "--duration-s", str(ctx.duration_s),
        "--script-arg", f"key={KEY}",
        "--server", f"auth-off={kit.busyapi_command(binary, extra='--auth off')}",
        "--server", f"keys-required={kit.busyapi_command(binary, extra=required)}",
    ])
