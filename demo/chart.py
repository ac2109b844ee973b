#!/usr/bin/env python3
"""demo/chart.py - an SVG chart of cost and latency per path.

Reads "key|value" lines (psql -At output of the query in scripts/demo.sh)
on standard input and writes an SVG document to standard output:

  left:  cost of the workload: all on the stream path, hybridexec (its
         stream and batch parts stacked), all batch
  middle: latency of the interactive tasks (p50 and p95), hybridexec (which
         streams them) against all batch, on a log scale (milliseconds
         against hours)
  right: a percentage rollout (when the input has one): the cost per task
         of the tasks the sampled rule streamed against those that fell
         through it to the window, with their median latency

A colour means a path, in both panels: every bar is drawn in the colour of
the path its cost or latency comes from, and the legend is made from the
paths the bars used (SERIES), so that it cannot name a colour no bar has.

Keys: all_stream, all_batch, stream_cost, batch_cost, currency,
p50_s, p95_s, batch_p50_s, batch_p95_s; optionally rollout_rule,
rollout_sample, rollout_sampled_cost, rollout_fell_cost, rollout_sampled_p50_s,
rollout_fell_p50_s (the rollout panel).  Python 3 standard library only.
"""
import math
import sys
from xml.sax.saxutils import escape

W, H = 1140, 400
PANEL_W, TOP, BOTTOM = 330, 60, 320
# the paths, each with its legend label and its colour: bars and legend both
# take their colour from here
SERIES = {"stream": ("stream path", "#d9534f"), "batch": ("batch path", "#5b8def")}


def read_values(stream):
    """The key|value lines as a dict (numbers as float, text kept)."""
    values = {}
    for line in stream:
        line = line.strip()
        if "|" not in line:
            continue
        key, value = line.split("|", 1)
        try:
            values[key] = float(value)
        except ValueError:
            values[key] = value
    return values


def text(x, y, s, size=12, anchor="middle", weight="normal"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" font-family="sans-serif">{escape(s)}</text>')


def rect(x, y, w, h, color):
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{max(h, 0.5):.1f}" fill="{color}"/>'


def cost_panel(v, x0, used):
    """Bars: all stream, hybrid (stream + batch stacked), all batch; adds the
    series drawn to used."""
    out = [text(x0 + PANEL_W / 2, 30, "Cost of the workload (%s)" % v.get("currency", ""), 14, weight="bold")]
    top = max(v["all_stream"], v["stream_cost"] + v["batch_cost"], v["all_batch"]) or 1.0
    scale = (BOTTOM - TOP) / top
    bars = [("all stream", [(v["all_stream"], "stream")]),
            ("hybridexec", [(v["stream_cost"], "stream"), (v["batch_cost"], "batch")]),
            ("all batch", [(v["all_batch"], "batch")])]
    bw = 60
    for i, (label, parts) in enumerate(bars):
        x = x0 + 40 + i * 100
        y = BOTTOM
        for amount, series in parts:
            h = amount * scale
            y -= h
            out.append(rect(x, y, bw, h, SERIES[series][1]))
            used.append(series)
        total = sum(a for a, _ in parts)
        out.append(text(x + bw / 2, y - 6, f"{total:.2f}"))
        out.append(text(x + bw / 2, BOTTOM + 18, label))
    out.append(f'<line x1="{x0 + 30}" y1="{BOTTOM}" x2="{x0 + PANEL_W}" y2="{BOTTOM}" stroke="black"/>')
    saved = 100 * (v["all_stream"] - v["stream_cost"] - v["batch_cost"]) / v["all_stream"] if v["all_stream"] else 0
    out.append(text(x0 + PANEL_W / 2, BOTTOM + 44, f"hybridexec saves {saved:.0f}% against all stream", 12))
    return out


def latency_panel(v, x0, used):
    """Bars on a log scale: p50 and p95 of interactive tasks, hybrid (they
    stream) vs all batch; adds the series drawn to used."""
    out = [text(x0 + PANEL_W / 2, 30, "Latency of interactive tasks", 14, weight="bold")]
    lo, hi = 1e-3, max(v["batch_p95_s"], v["p95_s"], 1.0) * 2     # 1 ms .. a bit above the top

    def ypos(seconds):
        seconds = max(seconds, lo)
        return BOTTOM - (math.log10(seconds) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (BOTTOM - TOP)

    for tick, label in [(1e-3, "1 ms"), (1e-1, "100 ms"), (1.0, "1 s"), (60.0, "1 min"),
                        (3600.0, "1 h"), (86400.0, "1 day")]:
        if tick <= hi:
            y = ypos(tick)
            out.append(f'<line x1="{x0 + 40}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" '
                       f'stroke="#dddddd"/>')
            out.append(text(x0 + 36, y + 4, label, 10, anchor="end"))

    def human(seconds):
        if seconds < 1:
            return f"{seconds * 1000:.1f} ms"
        if seconds < 120:
            return f"{seconds:.1f} s"
        return f"{seconds / 3600:.1f} h"

    bars = [("p50 hybridexec", v["p50_s"], "stream"), ("p95 hybridexec", v["p95_s"], "stream"),
            ("p50 all batch", v["batch_p50_s"], "batch"), ("p95 all batch", v["batch_p95_s"], "batch")]
    bw = 50
    for i, (label, seconds, series) in enumerate(bars):
        x = x0 + 50 + i * 70
        y = ypos(seconds)
        out.append(rect(x, y, bw, BOTTOM - y, SERIES[series][1]))
        used.append(series)
        out.append(text(x + bw / 2, y - 6, human(seconds), 11))
        out.append(text(x + bw / 2, BOTTOM + 16, label.split(" ", 1)[0], 11))
        out.append(text(x + bw / 2, BOTTOM + 30, label.split(" ", 1)[1], 10))
    out.append(f'<line x1="{x0 + 40}" y1="{BOTTOM}" x2="{x0 + PANEL_W}" y2="{BOTTOM}" stroke="black"/>')
    return out


def rollout_panel(v, x0, used):
    """Bars: cost per task of the sampled arm (streamed) and of the tasks
    that fell through to the window, each with its median latency; adds
    the series drawn to used."""
    out = [text(x0 + PANEL_W / 2, 30, "Rollout: %s (sample %s)" % (v["rollout_rule"], v["rollout_sample"]),
                14, weight="bold")]
    arms = [("sampled", v["rollout_sampled_cost"], v["rollout_sampled_p50_s"], "stream"),
            ("fell through", v["rollout_fell_cost"], v["rollout_fell_p50_s"], "batch")]
    top = max(a[1] for a in arms) or 1.0
    scale = (BOTTOM - TOP) / top
    bw = 70
    for i, (label, cost, p50, series) in enumerate(arms):
        x = x0 + 70 + i * 130
        h = cost * scale
        out.append(rect(x, BOTTOM - h, bw, h, SERIES[series][1]))
        used.append(series)
        out.append(text(x + bw / 2, BOTTOM - h - 6, f"{cost:.4f} a task"))
        out.append(text(x + bw / 2, BOTTOM + 18, label))
        latency = f"{p50 * 1000:.1f} ms" if p50 < 1 else (f"{p50:.1f} s" if p50 < 120 else f"{p50 / 3600:.1f} h")
        out.append(text(x + bw / 2, BOTTOM + 34, f"p50 {latency}", 11))
    out.append(f'<line x1="{x0 + 40}" y1="{BOTTOM}" x2="{x0 + PANEL_W}" y2="{BOTTOM}" stroke="black"/>')
    return out


def main():
    v = read_values(sys.stdin)
    needed = ["all_stream", "all_batch", "stream_cost", "batch_cost", "p50_s", "p95_s", "batch_p50_s", "batch_p95_s"]
    missing = [k for k in needed if not isinstance(v.get(k), float)]
    if missing:
        sys.exit("chart.py: missing values: " + ", ".join(missing))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">',
             f'<rect width="{W}" height="{H}" fill="white"/>']
    used = []
    parts += cost_panel(v, 20, used)
    parts += latency_panel(v, 400, used)
    rollout = ["rollout_sampled_cost", "rollout_fell_cost", "rollout_sampled_p50_s", "rollout_fell_p50_s"]
    if "rollout_rule" in v and all(isinstance(v.get(k), float) for k in rollout):
        parts += rollout_panel(v, 780, used)
    # the legend: one entry per series the bars used, in the order first used
    legend = [SERIES[series] for series in dict.fromkeys(used)]
    x = (W - 130 * len(legend)) / 2
    for i, (label, color) in enumerate(legend):
        parts.append(rect(x + i * 130, H - 16, 12, 12, color))
        parts.append(text(x + 16 + i * 130, H - 6, label, 11, anchor="start"))
    parts.append("</svg>")
    sys.stdout.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
