"""Grouped bar charts as SVG, for the benchmark document, with the Python
standard library only (no plotting package to install).

    chart.py CSV OUT.svg

CSV columns: panel,unit,group,series,value. One panel per distinct
`panel` (side by side, each with its own linear scale from 0), one
cluster of bars per `group` (a load: "8,000/s"), one bar per `series` (a
server), in the order they first appear. Every bar is labelled with its
value, so the chart never needs a reader to estimate from an axis.
"""

import csv
import sys
from xml.sax.saxutils import escape

# Geometry, in SVG user units (pixels at 100%).
PANEL_W, PANEL_H = 420, 260
MARGIN_TOP, MARGIN_BOTTOM, MARGIN_SIDE = 40, 70, 20
BAR_GAP = 4
GROUP_GAP = 24
# Colours for the series, in order: a neutral baseline, then two accents.
COLOURS = ["#9e9e9e", "#ef8a62", "#2166ac", "#1b7837", "#762a83"]


def ordered(values):
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def nice_max(v):
    """The smallest 1, 2 or 5 times a power of ten that is at least v."""
    if v <= 0:
        return 1.0
    p = 1.0
    while p * 10 <= v:
        p *= 10
    while p > v:
        p /= 10
    for m in (1, 2, 5, 10):
        if m * p >= v:
            return m * p
    return 10 * p


def bars(rows, series, groups, width, height):
    """(x, y, w, h, value, series index) for each bar of one panel, inside
    a plot area of `width` x `height` whose origin is its top left."""
    top = nice_max(max(r["value"] for r in rows))
    slot = (width - GROUP_GAP * (len(groups) - 1)) / len(groups)
    bar_w = (slot - BAR_GAP * (len(series) - 1)) / len(series)
    out = []
    for r in rows:
        g, s = groups.index(r["group"]), series.index(r["series"])
        h = r["value"] / top * height
        x = g * (slot + GROUP_GAP) + s * (bar_w + BAR_GAP)
        out.append((x, height - h, bar_w, h, r["value"], s))
    return out, top


def label(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def panel_svg(name, unit, rows, series, groups, x0):
    w = PANEL_W - 2 * MARGIN_SIDE
    h = PANEL_H - MARGIN_TOP - MARGIN_BOTTOM
    parts = [f'<g transform="translate({x0 + MARGIN_SIDE},{MARGIN_TOP})">',
             f'<text x="{w / 2}" y="-18" text-anchor="middle" font-weight="bold">'
             f"{escape(name)} ({escape(unit)})</text>",
             f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#333"/>']
    placed, _ = bars(rows, series, groups, w, h)
    for x, y, bw, bh, v, s in placed:
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}"'
                     f' fill="{COLOURS[s % len(COLOURS)]}"/>')
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle"'
                     f' font-size="10">{label(v)}</text>')
    slot = (w - GROUP_GAP * (len(groups) - 1)) / len(groups)
    for i, g in enumerate(groups):
        parts.append(f'<text x="{i * (slot + GROUP_GAP) + slot / 2:.1f}" y="{h + 16}"'
                     f' text-anchor="middle">{escape(g)}</text>')
    parts.append("</g>")
    return parts


def render(rows):
    panels = ordered(r["panel"] for r in rows)
    series = ordered(r["series"] for r in rows)
    groups = ordered(r["group"] for r in rows)
    width, height = PANEL_W * len(panels), PANEL_H + 20 * len(series)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
             f' font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for i, p in enumerate(panels):
        mine = [r for r in rows if r["panel"] == p]
        parts += panel_svg(p, mine[0]["unit"], mine, series, groups, i * PANEL_W)
    for i, s in enumerate(series):
        y = PANEL_H - MARGIN_BOTTOM + 40 + 20 * i
        parts.append(f'<rect x="{MARGIN_SIDE}" y="{y - 10}" width="12" height="12"'
                     f' fill="{COLOURS[i % len(COLOURS)]}"/>')
        parts.append(f'<text x="{MARGIN_SIDE + 18}" y="{y}">{escape(s)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def read(path):
    with open(path, newline="") as f:
        return [{**r, "value": float(r["value"])} for r in csv.DictReader(f)]


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    with open(argv[2], "w") as f:
        f.write(render(read(argv[1])))


if __name__ == "__main__":
    main(sys.argv)
