#!/usr/bin/env python3
"""test/bench/report.py - prints the benchmark's JSON lines (one per peer
and round, on stdin) as a side-by-side table with hybridexec's ratios.
Figures only: it never fails on a timing."""

import json
import statistics
import sys

rows = [json.loads(line) for line in sys.stdin if line.strip().startswith("{")]
by_peer = {}
for r in rows:
    by_peer.setdefault(r["peer"], []).append(r)


def med(peer, key):
    vals = [r[key] for r in by_peer.get(peer, []) if r.get(key) is not None]
    return statistics.median(vals) if vals else None


peers = ["hybridexec"] + sorted(p for p in by_peer if p != "hybridexec")
metrics = [
    ("stream latency p50 (ms)", "lat_p50_ms", "lower"),
    ("stream latency p95 (ms)", "lat_p95_ms", "lower"),
    ("stream latency p99 (ms)", "lat_p99_ms", "lower"),
    ("throughput (tasks/s)", "thru_per_s", "higher"),
    ("throughput wall time (s)", "thru_seconds", "lower"),
    ("classification (us/call)", "classify_us", "lower"),
    ("hx_await wake p50 (ms)", "await_p50_ms", "lower"),
    ("hx_await wake p99 (ms)", "await_p99_ms", "lower"),
]

print()
header = f"{'metric':28s}" + "".join(f"{p:>18s}" for p in peers)
if len(peers) > 1:
    header += f"{'ratio':>12s}"
# the external executor (hx_worker) against graphile-worker: both outside
# the server
ext = "hx_worker" in by_peer and "graphile-worker" in by_peer
if ext:
    header += f"{'hx_worker ratio':>17s}"
print(header)
print("-" * len(header))
for label, key, better in metrics:
    vals = [med(p, key) for p in peers]
    line = f"{label:28s}" + "".join(
        f"{v:>18.3f}" if isinstance(v, float) else f"{v if v is not None else '-':>18}"
        for v in vals
    )
    if len(peers) > 1 and vals[0] and vals[1]:
        ratio = vals[1] / vals[0] if better == "lower" else vals[0] / vals[1]
        line += f"{ratio:>11.2f}x"
    if ext:
        a, b = med("hx_worker", key), med("graphile-worker", key)
        if a and b:
            line += f"{(b / a if better == 'lower' else a / b):>16.2f}x"
    print(line)
print()
for p in peers:
    r = by_peer.get(p, [{}])[0]
    extra = {k: v for k, v in r.items() if k not in {m[1] for m in metrics} and k != "peer"}
    print(f"{p}: rounds={len(by_peer.get(p, []))} {json.dumps(extra)}")
for p in peers:
    runs = by_peer.get(p, [])
    print(f"{p}: p50 per round " + ", ".join(f"{r['lat_p50_ms']:.3f}" for r in runs)
          + "; tasks/s per round " + ", ".join(str(r['thru_per_s']) for r in runs))
print("ratio = how many times better hybridexec is (latency: peer/ours; throughput: ours/peer)")
if ext:
    print("hx_worker ratio = the same for the external executor (hx_worker --noop) against graphile-worker")
