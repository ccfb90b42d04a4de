#!/usr/bin/env python3
"""Draws the scale benchmark's SVG chart from the TSV `benches/etcd.sh` writes in SCALE mode.

    python3 benches/chart.py RESULTS.tsv OUT.svg

Two panels side by side: wall time and peak RSS against the number of entries (both axes
logarithmic), one line per command and etcd version. Plain SVG written by hand: no packages
beyond the standard library.
"""
import csv
import math
import sys
from collections import defaultdict

COLORS = {
    "etcdctl get -w protobuf": "#7f7f7f",
    "atrest audit": "#1f77b4",
    "atrest status": "#2ca02c",
    "atrest audit --snapshot": "#d62728",
    "atrest config rotate --stage prune": "#ff7f0e",
    "atrest rewrite": "#9467bd",
}
DASHES = ["", "6,4", "2,3", "8,3,2,3"]

W, H = 980, 430
PANEL_W, PANEL_H = 380, 300
MARGIN_L, MARGIN_T = 70, 50
GAP = 110


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def log_ticks(lo, hi):
    """Powers of ten, with 2 and 5 between them when the range is short."""
    ticks = []
    e = math.floor(math.log10(lo))
    while 10**e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**e
            if lo / 1.0001 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    if len(ticks) > 8:
        ticks = [t for t in ticks if str(t).lstrip("0.").startswith("1")]
    return ticks


def fmt(v):
    if v >= 1_000_000 and v % 1_000_000 == 0:
        return f"{v // 1_000_000:g}M"
    if v >= 1000 and v % 1000 == 0:
        return f"{v // 1000:g}k"
    return f"{v:g}"


def panel(out, x0, title, unit, series, xs_all):
    ys_all = [y for pts in series.values() for _, y in pts if y > 0]
    if not ys_all:
        return
    xlo, xhi = min(xs_all) / 1.3, max(xs_all) * 1.3
    ylo, yhi = min(ys_all) / 1.5, max(ys_all) * 1.5

    def sx(x):
        return x0 + (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo)) * PANEL_W

    def sy(y):
        return MARGIN_T + PANEL_H - (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) * PANEL_H

    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T - 18}" text-anchor="middle" font-weight="bold">{esc(title)}</text>')
    out.append(f'<rect x="{x0}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#333"/>')
    for t in log_ticks(ylo, yhi):
        y = sy(t)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{fmt(t)}</text>')
    for t in sorted(set(xs_all)):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{MARGIN_T}" x2="{x:.1f}" y2="{MARGIN_T + PANEL_H}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{MARGIN_T + PANEL_H + 16}" text-anchor="middle" font-size="11">{fmt(t)}</text>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T + PANEL_H + 36}" text-anchor="middle" font-size="12">entries (log scale)</text>')
    out.append(f'<text x="{x0 - 52}" y="{MARGIN_T + PANEL_H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 {x0 - 52} {MARGIN_T + PANEL_H / 2})">{esc(unit)} (log scale)</text>')
    for (command, version), pts in sorted(series.items()):
        pts = sorted(p for p in pts if p[1] > 0)
        color = COLORS.get(command, "#000")
        dash = DASHES[versions.index(version) % len(DASHES)]
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(pts))
        attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{attr}/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"><title>{esc(command)}, etcd {esc(version)}, {fmt(x)} entries: {y:.3g} {esc(unit)}</title></circle>')


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
    global versions
    versions = sorted({r["etcd"] for r in rows})
    secs = defaultdict(list)
    rss = defaultdict(list)
    for r in rows:
        k = (r["command"], r["etcd"])
        n = int(r["entries"])
        secs[k].append((n, float(r["secs"])))
        rss[k].append((n, int(r["rss_kib"]) / 1024))
    xs = sorted({int(r["entries"]) for r in rows})
    legend_rows = (len({k[0] for k in secs}) + 2) // 3 + 1
    height = MARGIN_T + PANEL_H + 60 + 20 * legend_rows
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>']
    panel(out, MARGIN_L, "Wall time", "seconds", secs, xs)
    panel(out, MARGIN_L + PANEL_W + GAP, "Peak RSS", "MiB", rss, xs)
    # Legend: colours are commands, dash patterns are etcd versions.
    y = MARGIN_T + PANEL_H + 60
    commands = [c for c in COLORS if any(k[0] == c for k in secs)]
    for i, c in enumerate(commands):
        x = MARGIN_L + (i % 3) * 300
        yy = y + (i // 3) * 20
        out.append(f'<line x1="{x}" y1="{yy}" x2="{x + 30}" y2="{yy}" stroke="{COLORS[c]}" stroke-width="3"/>')
        out.append(f'<text x="{x + 36}" y="{yy + 4}">{esc(c)}</text>')
    y += ((len(commands) + 2) // 3) * 20
    for i, v in enumerate(versions):
        x = MARGIN_L + i * 300
        dash = DASHES[i % len(DASHES)]
        attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 30}" y2="{y}" stroke="#000" stroke-width="2"{attr}/>')
        out.append(f'<text x="{x + 36}" y="{y + 4}">etcd {esc(v)}</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
