#!/usr/bin/env python3
"""Saturating clients against the proxy for a bounded time (and at most
MAX_PER_THREAD requests each): prints the requests the upstream accepted in
each quota window (the first opens with the first accepted request, as the
simulator's does), upstream 429s (passed through) and the proxy's own 429s.

usage: window_client.py URL THREADS SECONDS WINDOW_SECONDS QUOTA LABEL
"""
import sys
import threading
import time
import urllib.error
import urllib.request

MAX_PER_THREAD = 5000


def client(url, deadline, out, lock):
    for _ in range(MAX_PER_THREAD):
        if time.monotonic() >= deadline:
            return
        try:
            with urllib.request.urlopen(url, timeout=120) as res:
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
            out.append((time.monotonic(), kind))
        if pause:
            time.sleep(pause)


def main():
    url, threads, seconds, window, quota, label = sys.argv[1:7]
    threads, seconds, window, quota = int(threads), float(seconds), float(window), int(quota)
    out, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds
    workers = [threading.Thread(target=client, args=(f"{url}/1/load/{i}", deadline, out, lock)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    oks = sorted(t for t, k in out if k == "ok")
    count = lambda k: sum(1 for _, kind in out if kind == k)
    origin = oks[0] if oks else 0
    full = int((deadline - origin) // window)
    per_window = [sum(1 for t in oks if origin + i * window <= t < origin + (i + 1) * window) for i in range(full)]
    print(f"| {label} | {per_window} of {quota} | {count('upstream')} | {count('proxy')} | {count('other')} |")


if __name__ == "__main__":
    main()
