#!/usr/bin/env python3
"""Callers competing through the proxy for a bounded time (and at most
MAX_PER_THREAD requests each): each caller has its own number of
saturating clients, each request names its caller in x-caller. Prints,
per quota window (the first opens with the first accepted request, as the
simulator's does), the requests the upstream accepted from each caller and
its share, then upstream 429s (passed through) and the proxy's own 429s
per caller.

usage: callers_client.py URL SECONDS WINDOW_SECONDS QUOTA NAME:CLIENTS...
"""
import sys
import threading
import time
import urllib.error
import urllib.request

MAX_PER_THREAD = 5000


def client(url, caller, deadline, out, lock):
    for _ in range(MAX_PER_THREAD):
        if time.monotonic() >= deadline:
            return
        req = urllib.request.Request(url, headers={"x-caller": caller})
        try:
            with urllib.request.urlopen(req, timeout=120) as res:
                res.read()
                kind, pause = "ok", 0
        except urllib.error.HTTPError as err:
            err.read()
            own = err.headers.get("x-fitbit-proxy-error")
            kind = "proxy" if own else ("upstream" if err.code == 429 else "other")
            pause = min(float(err.headers.get("retry-after") or 1), 5)
        except OSError:
            kind, pause = "other", 1
        with lock:
            out.append((time.monotonic(), caller, kind))
        if pause:
            time.sleep(pause)


def main():
    url, seconds, window, quota = sys.argv[1:5]
    seconds, window, quota = float(seconds), float(window), int(quota)
    callers = [(name, int(n)) for name, n in (a.split(":") for a in sys.argv[5:])]
    out, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds
    workers = [
        threading.Thread(target=client, args=(f"{url}/1/load/{name}/{i}", name, deadline, out, lock))
        for name, n in callers
        for i in range(n)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    oks = sorted((t, c) for t, c, k in out if k == "ok")
    origin = oks[0][0] if oks else 0
    full = int((deadline - origin) // window)
    print(f"| window | accepted (of {quota}) | " + " | ".join(f"{name} ({n} clients)" for name, n in callers) + " |")
    print("|---|---|" + "---|" * len(callers))
    for i in range(full):
        inside = [c for t, c in oks if origin + i * window <= t < origin + (i + 1) * window]
        cells = []
        for name, _ in callers:
            mine = sum(1 for c in inside if c == name)
            cells.append(f"{mine} ({100 * mine / max(len(inside), 1):.1f} %)")
        print(f"| {i + 1} | {len(inside)} | " + " | ".join(cells) + " |")
    upstream = sum(1 for _, _, k in out if k == "upstream")
    own = {name: sum(1 for _, c, k in out if k == "proxy" and c == name) for name, _ in callers}
    other = sum(1 for _, _, k in out if k == "other")
    print(f"upstream 429s: {upstream}; proxy 429s: {own}; other failures: {other}")


if __name__ == "__main__":
    main()
