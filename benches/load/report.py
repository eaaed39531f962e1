#!/usr/bin/env python3
"""Turns run.sh's raw.tsv and memory.tsv into Markdown tables: medians over
rounds, and ratios to nginx and HAProxy as medians of per-round ratios.

usage: report.py raw.tsv memory.tsv IDLE_CONNECTIONS
"""
import csv
import statistics
import sys
from collections import defaultdict

NAMES = {
    "direct": "upstream direct",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "fp": "fitbit-proxy",
    "fpplain": "fitbit-proxy",
    "fpwarn": "fitbit-proxy (RUST_LOG=warn)",
    "fb": "fitbit-proxy (before)",
    "fbplain": "fitbit-proxy (before)",
}
# The binary under test and the older one it is compared with (FP_BEFORE).
BEFORE = {"fp": "fb", "fpplain": "fbplain"}
MODES = {"tls": "HTTP/1.1, TLS upstream", "plain": "HTTP/1.1, plain upstream", "h2c": "h2c in (h2load -m 10), TLS upstream"}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"


def main():
    raw, mem, idle = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rows = list(csv.DictReader(open(raw), delimiter="\t"))
    by = defaultdict(dict)  # (mode, conns, target) -> round -> row
    for r in rows:
        for k in ("rps", "p50_ms", "p99_ms", "cpu_us"):
            r[k] = float(r[k]) if float(r[k]) > 0 else None
        by[(r["mode"], int(r["conns"]), r["target"])][r["round"]] = r
    points = sorted({(m, c) for (m, c, _) in by}, key=lambda p: (list(MODES).index(p[0]), p[1]))
    order = ["direct", "nginx", "haproxy", "fb", "fbplain", "fp", "fpplain", "fpwarn"]
    print("| point | server | req/s | p50 ms | p99 ms | CPU µs/req | req/s ÷ nginx | req/s ÷ HAProxy | p99 ÷ nginx | CPU ÷ nginx | CPU ÷ HAProxy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def ratio(target, ref, key, mode, c):
        out = []
        for rnd, r in by.get((mode, c, target), {}).items():
            o = by.get((mode, c, ref), {}).get(rnd)
            if o and r[key] and o[key]:
                out.append(r[key] / o[key])
        return med(out)

    for mode, c in points:
        for t in order:
            rs = by.get((mode, c, t))
            if not rs:
                continue
            vals = {k: med([r[k] for r in rs.values()]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
            point = f"{MODES[mode]}, {c} conns"
            print(
                f"| {point} | {NAMES[t]} | {fmt(vals['rps'], 0)} | {fmt(vals['p50_ms'])} | {fmt(vals['p99_ms'])} | {fmt(vals['cpu_us'], 1)} "
                f"| {fmt(ratio(t, 'nginx', 'rps', mode, c))} | {fmt(ratio(t, 'haproxy', 'rps', mode, c))} "
                f"| {fmt(ratio(t, 'nginx', 'p99_ms', mode, c))} | {fmt(ratio(t, 'nginx', 'cpu_us', mode, c))} | {fmt(ratio(t, 'haproxy', 'cpu_us', mode, c))} |"
            )
    if any(t in ("fb", "fbplain") for (_, _, t) in by):
        print()
        print("After ÷ before (fitbit-proxy, medians of per-round ratios):")
        print()
        print("| point | req/s | p99 | CPU µs/req |")
        print("|---|---:|---:|---:|")
        for mode, c in points:
            for t, b in BEFORE.items():
                if (mode, c, t) in by and (mode, c, b) in by:
                    print(
                        f"| {MODES[mode]}, {c} conns | {fmt(ratio(t, b, 'rps', mode, c))} "
                        f"| {fmt(ratio(t, b, 'p99_ms', mode, c))} | {fmt(ratio(t, b, 'cpu_us', mode, c))} |"
                    )
    m = defaultdict(dict)
    for r in csv.DictReader(open(mem), delimiter="\t"):
        m[r["target"]][r["phase"]] = (int(r["rss_kib"]), int(r["rss_anon_kib"]))
    print()
    print(f"Memory (MiB; nginx: master + worker). Per idle connection: RssAnon growth while {idle} idle keep-alive connections are held, ÷ {idle}.")
    print()
    print("| server | RSS / RssAnon at start | under load (256 conns) | with %d idle | RssAnon ÷ nginx (idle) | bytes per idle connection |" % idle)
    print("|---|---:|---:|---:|---:|---:|")
    ng_idle = m.get("nginx", {}).get("idle", (0, 0))[1]
    for t in ("nginx", "haproxy", "fb", "fp"):
        if t not in m:
            continue
        ph = m[t]
        cell = lambda p: "–" if p not in ph else f"{ph[p][0] / 1024:.1f} / {ph[p][1] / 1024:.1f}"
        per = "–"
        if "idle" in ph and "before_idle" in ph:
            per = f"{(ph['idle'][1] - ph['before_idle'][1]) * 1024 / idle:.0f}"
        rat = "–" if not ng_idle or "idle" not in ph else f"{ph['idle'][1] / ng_idle:.2f}"
        print(f"| {NAMES[t]} | {cell('start')} | {cell('load')} | {cell('idle')} | {rat} | {per} |")


if __name__ == "__main__":
    main()
