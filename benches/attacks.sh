#!/usr/bin/env bash
# The CPU bound of catalog 1.24 and 1.29, measured (tests never assert CPU
# or wall-clock time): the release binary in front of the simulator, then
# benches/attacks.rs runs each attack for SECONDS while a normal HTTP/1
# client sends a request every 10 ms, and prints one table row per attack:
# the proxy's CPU seconds per second (utime + stime, /proc/PID/stat), its
# RSS, and the normal client's p50/p99. Not run by CI.
#
#   benches/attacks.sh [SECONDS]      # default 10 s per attack, ~1 min
#
# Loopback only; every loop is bounded by its deadline; only the processes
# this script starts are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-10}
source benches/lib.sh
ATTACKS=$(cargo bench --quiet --bench attacks --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "attacks" and m.get("executable"):
        print(m["executable"])')

start_simulator --quota 100000000 --window 1h
# Not a pipeline: start_proxy must run in this shell, so that the proxy's
# PID reaches the exit trap that stops it.
start_proxy ATTACKS_SECRET < <({
    proxy_toml_head ATTACKS_SECRET
    cat <<TOML
[rate_limit]
hourly_quota = 100000000
burst = 100000
TOML
})

echo "== attacks: ${SECONDS_EACH}s each, $(nproc) cores, proxy pid $PROXY_PID"
timeout $((SECONDS_EACH * 10 + 60)) "$ATTACKS" --proxy "127.0.0.1:$PROXY_PORT" --pid "$PROXY_PID" --secs "$SECONDS_EACH"
echo "warn lines in the proxy log, by message:"
grep -o '"message":"[^"]*"\|WARN.*' "$WORK/proxy.log" | sed 's/peer=[^ ]* //' | cut -c1-120 | sort | uniq -c | sort -rn | head -5
if grep -q 'panicked' "$WORK/proxy.log"; then echo "PANIC in the proxy log"; exit 1; fi
kill -0 "$PROXY_PID" || { echo "the proxy died"; exit 1; }
