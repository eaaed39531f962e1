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
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet
BIN=target/release/fitbit-proxy
ATTACKS=$(cargo bench --quiet --bench attacks --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "attacks" and m.get("executable"):
        print(m["executable"])')

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)

"$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --quota 100000000 --window 1h >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
SECRET=""
for _ in $(seq 50); do
    SECRET=$(grep -o 'client secret = "[^"]*"' "$WORK/sim.log" 2>/dev/null | head -1 | cut -d'"' -f2 || true)
    [ -n "$SECRET" ] && break
    sleep 0.1
done
CLIENT_ID=$(grep -o 'client_id = "[^"]*"' "$WORK/sim.log" | head -1 | cut -d'"' -f2)

cat >"$WORK/proxy.toml" <<TOML
[listen]
addr = "127.0.0.1:$PROXY_PORT"
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
[upstream]
url = "http://127.0.0.1:$SIM_PORT"
[credentials]
token_url = "http://127.0.0.1:$SIM_PORT/oauth2/token"
client_id = "$CLIENT_ID"
client_secret_env = "ATTACKS_SECRET"
[rate_limit]
hourly_quota = 100000000
burst = 100000
TOML

ATTACKS_SECRET="$SECRET" RUST_LOG=warn "$BIN" run --config "$WORK/proxy.toml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=($PROXY_PID)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== attacks: ${SECONDS_EACH}s each, $(nproc) cores, proxy pid $PROXY_PID"
timeout $((SECONDS_EACH * 10 + 60)) "$ATTACKS" --proxy "127.0.0.1:$PROXY_PORT" --pid "$PROXY_PID" --secs "$SECONDS_EACH"
echo "warn lines in the proxy log, by message:"
grep -o '"message":"[^"]*"\|WARN.*' "$WORK/proxy.log" | sed 's/peer=[^ ]* //' | cut -c1-120 | sort | uniq -c | sort -rn | head -5
if grep -q 'panicked' "$WORK/proxy.log"; then echo "PANIC in the proxy log"; exit 1; fi
kill -0 "$PROXY_PID" || { echo "the proxy died"; exit 1; }
