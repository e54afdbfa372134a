"""Draws soak.csv (bench/soak.py) as a PNG: one panel per resource, one
line per run, time in minutes along the bottom. Runs with the project's
venv, which has matplotlib (scripts/bench.sh soak installs it).

    soak_chart.py SOAK.csv OUT.png
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend comes first)

PANELS = [
    ("rss_kib", "RSS (MiB)", 1 / 1024),
    ("fds", "open file descriptors", 1),
    ("segments", "WAL segments on disk", 1),
    ("backlog_records", "backlog (records)", 1),
]


def main(src, out):
    with open(src) as f:
        rows = list(csv.DictReader(f))
    runs = list(dict.fromkeys(r["run"] for r in rows))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 3.6))
    for ax, (key, label, scale) in zip(axes, PANELS):
        for run in runs:
            rs = [r for r in rows if r["run"] == run]
            ax.plot([float(r["t_s"]) / 60 for r in rs], [float(r[key]) * scale for r in rs], label=run)
        ax.set_title(label)
        ax.set_xlabel("minutes")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
