#!/usr/bin/env python3
"""Drives 3 replicas that share one quota (benches/replicas.sh): saturating
clients on some replicas, moving from one to another, for a bounded time
(and at most MAX_PER_THREAD requests each). Prints, per upstream quota
window: the quota the upstream counted (its own limit - remaining), upstream
429s, the proxies' refusals (429/503 of their own), and token fetches of
the whole group.

usage: replicas.py WINDOW_SECONDS WINDOWS PROXY_URL... -- ADMIN_URL...
       replicas.py latency N LONE_URL SHARED_URL
"""
import http.client
import re
import sys
import threading
import time
import urllib.parse

MAX_PER_THREAD = 20000
CLIENTS_PER_REPLICA = 2


def request(conn, path):
    conn.request("GET", path)
    res = conn.getresponse()
    res.read()
    return res


def client(base, start, end, out, lock):
    u = urllib.parse.urlsplit(base)
    conn = None
    while time.monotonic() < start:
        time.sleep(0.01)
    for _ in range(MAX_PER_THREAD):
        if time.monotonic() >= end:
            return
        try:
            conn = conn or http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            res = request(conn, "/1/user/-/profile.json")
        except (OSError, http.client.HTTPException):
            conn = None
            time.sleep(0.5)
            continue
        now = time.monotonic()
        own = res.getheader("x-fitbit-proxy-error")
        limit, remaining, reset = (res.getheader("fitbit-rate-limit-" + h) for h in ("limit", "remaining", "reset"))
        with lock:
            out.append((now, res.status, bool(own), limit, remaining, reset))
        if own:
            time.sleep(min(float(res.getheader("retry-after") or 1), 5))


def fetches(admin):
    u = urllib.parse.urlsplit(admin)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return sum(float(v) for v in re.findall(r'^fitbit_proxy_token_fetches_total\{result="ok"\} (\S+)', text, re.M))


def scrape(admins, end, samples):
    while time.monotonic() < end + 1:
        try:
            samples.append((time.monotonic(), sum(fetches(a) for a in admins)))
        except OSError:
            pass
        time.sleep(1)


def windows_run(window, windows, proxies, admins):
    out, lock, samples = [], threading.Lock(), []
    t0 = time.monotonic() + 0.5
    # Demand per stretch of one window: on 2 of 3, then moving to the
    # third alone, then to the first alone, then back to 2 of 3.
    plan = [[0, 1], [0, 1], [2], [2], [0], [1, 2]]
    threads = []
    for k in range(windows):
        for r in plan[k % len(plan)]:
            for _ in range(CLIENTS_PER_REPLICA):
                threads.append(threading.Thread(target=client, args=(proxies[r], t0 + k * window, t0 + (k + 1) * window, out, lock)))
    end = t0 + windows * window
    threads.append(threading.Thread(target=scrape, args=(admins, end, samples)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Upstream windows, from the upstream's own answers: each answer names
    # its window's end (now + reset); answers within 3 s of one another's
    # end are one window.
    groups = []  # [end, used, first, last]
    for now, status, own, limit, remaining, reset in sorted(out):
        if own or limit is None or reset is None:
            continue
        e = now + float(reset)
        used = int(limit) - int(remaining)
        if groups and abs(groups[-1][0] - e) < 3:
            g = groups[-1]
            g[1], g[3] = max(g[1], used), now
        else:
            groups.append([e, used, now, now])
    limit = next((int(r[3]) for r in out if r[3]), 0)
    print(f"{'window':>6} {'ends at':>8} {'quota used':>11} {'upstream 429':>13} {'proxy refusals':>15} {'token fetches':>14}")
    prev_end = None
    for i, (e, used, first, last) in enumerate(groups):
        start = prev_end if prev_end is not None else t0
        in_window = [r for r in out if start <= r[0] < e + 2]
        up429 = sum(1 for r in in_window if r[1] == 429 and not r[2])
        refused = sum(1 for r in in_window if r[2])
        before = [v for t, v in samples if t <= start] or [0]
        after = [v for t, v in samples if t <= e] or [0]
        full = "" if 0 < i < len(groups) - 1 else "  (partial)"
        print(f"{i + 1:>6} {e - t0:>7.1f}s {used:>4}/{limit:<3} {100 * used / max(limit, 1):5.1f}% {up429:>8} {refused:>15} {int(after[-1] - before[-1]):>14}{full}")
        prev_end = e
    total_up429 = sum(1 for r in out if r[1] == 429 and not r[2])
    print(f"total: {len(out)} answers, {total_up429} upstream 429s, {sum(1 for r in out if r[2])} proxy refusals, "
          f"{int(samples[-1][1]) if samples else 0} token fetches for the group")


def latency(n, lone, shared):
    def run(base, count):
        u = urllib.parse.urlsplit(base)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        times = []
        for _ in range(count):
            t = time.perf_counter()
            res = request(conn, "/1/user/-/profile.json")
            times.append(time.perf_counter() - t)
            assert res.status == 200, res.status
        return times

    run(lone, 200), run(shared, 200)  # warm both
    a, b = [], []
    for _ in range(10):  # interleaved blocks, so drift hits both alike
        a += run(lone, n // 10)
        b += run(shared, n // 10)
    q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))] * 1000
    print(f"{'':>8} {'p50 ms':>8} {'p99 ms':>8}   ({n} sequential requests each, one connection)")
    print(f"{'lone':>8} {q(a, .5):8.3f} {q(a, .99):8.3f}")
    print(f"{'shared':>8} {q(b, .5):8.3f} {q(b, .99):8.3f}")
    print(f"{'added':>8} {q(b, .5) - q(a, .5):8.3f} {q(b, .99) - q(a, .99):8.3f}")


def main():
    if sys.argv[1] == "latency":
        latency(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    window, windows = float(sys.argv[1]), int(sys.argv[2])
    rest = sys.argv[3:]
    split = rest.index("--")
    windows_run(window, windows, rest[:split], rest[split + 1:])


if __name__ == "__main__":
    main()
