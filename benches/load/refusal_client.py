#!/usr/bin/env python3
"""Saturating clients that time the proxy's own refusals: a refusal is
decided when its request arrives, so a proxy 429 should come back at once,
never after waiting. Bounded in time and in requests per thread.

Prints how many requests went upstream, how many the proxy refused (429
rate_limited, 503 queue_full), how many of those refusals took longer than
LATE seconds (an answer that moved a waiting request's slot past its
max_wait refuses it then, by rule), the slowest, and how many waited out
MAX_WAIT before their refusal (none should).

usage: refusal_client.py URL THREADS SECONDS LATE MAX_WAIT
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
        start = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=60) as res:
                res.read()
                row = ("ok", time.monotonic() - start, None, None)
        except urllib.error.HTTPError as err:
            err.read()
            took = time.monotonic() - start
            kind = err.headers.get("x-fitbit-proxy-error") or f"upstream {err.code}"
            row = (kind, took, err.headers.get("retry-after"),
                   err.headers.get("fitbit-rate-limit-reset"))
        except OSError:
            row = ("failed", time.monotonic() - start, None, None)
        with lock:
            out.append(row)
        if row[0] not in ("ok",):
            time.sleep(0.2)


def main():
    url, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    late, max_wait = float(sys.argv[4]), float(sys.argv[5])
    out, lock = [], threading.Lock()
    deadline = time.monotonic() + seconds
    workers = [threading.Thread(target=client, args=(url, deadline, out, lock))
               for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    kinds = {}
    for kind, *_ in out:
        kinds[kind] = kinds.get(kind, 0) + 1
    refused = [r for r in out if r[0] in ("rate_limited", "queue_full")]
    slow = [r for r in refused if r[1] > late]
    waited_out = [r for r in refused if r[1] >= max_wait - 0.1]
    print(f"answers by kind: {kinds}")
    print(f"proxy refusals: {len(refused)}; taking longer than {late} s: {len(slow)}; "
          f"slowest: {max((r[1] for r in refused), default=0):.3f} s")
    print(f"refusals after waiting out max_wait ({max_wait} s): {len(waited_out)}")


if __name__ == "__main__":
    main()
