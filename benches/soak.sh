#!/usr/bin/env bash
# Soak (RELIABILITY.md 3.16): mixed traffic through the real binary for a
# bounded time, then a report: requests served, errors by kind, peak RSS and
# open file descriptors at start and end. Not run by CI.
#
#   benches/soak.sh [SECONDS] [CLIENTS]      # defaults: 60 s, 8 clients
#
# Traffic per client, round robin: good GETs, good POSTs, denied paths (403),
# malformed requests (400), slow bodies that stall, and requests aborted
# mid-flight. Needs curl and python3 (both on the machine image). Everything
# is on loopback; every loop is bounded by the deadline; only the processes
# this script starts are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN=${1:-60}
CLIENTS=${2:-8}
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)

"$BIN" simulate --listen "127.0.0.1:$SIM_PORT" --quota 100000000 --window 1h \
    --token-lifetime 30s >"$WORK/sim.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/proxy.toml" <<TOML
[listen]
addr = "127.0.0.1:$PROXY_PORT"
header_read_timeout = "2s"
max_request_body = 65536
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
[upstream]
url = "http://127.0.0.1:$SIM_PORT"
request_timeout = "5s"
[credentials]
token_url = "http://127.0.0.1:$SIM_PORT/oauth2/token"
client_id = "demo-client"
client_secret_env = "SOAK_SECRET"
expires_in = 3600
refresh_before_expiry = "10s"
[rate_limit]
hourly_quota = 100000000
burst = 100000
TOML
SECRET=$(grep -o 'client secret = "[^"]*"' "$WORK/sim.log" 2>/dev/null | head -1 | cut -d'"' -f2 || true)
for _ in $(seq 50); do
    [ -n "$SECRET" ] && break
    sleep 0.1
    SECRET=$(grep -o 'client secret = "[^"]*"' "$WORK/sim.log" | head -1 | cut -d'"' -f2 || true)
done
CLIENT_ID=$(grep -o 'client_id = "[^"]*"' "$WORK/sim.log" | head -1 | cut -d'"' -f2)
sed -i "s/demo-client/$CLIENT_ID/" "$WORK/proxy.toml"

SOAK_SECRET="$SECRET" RUST_LOG=warn "$BIN" run --config "$WORK/proxy.toml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=($PROXY_PID)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$PROXY_PID/status"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$PROXY_PID/status"; }
fds() { ls "/proc/$PROXY_PID/fd" | wc -l; }
START_RSS=$(rss_kib); START_FDS=$(fds)

BASE="http://127.0.0.1:$PROXY_PORT"
DEADLINE=$(( $(date +%s) + SECONDS_TO_RUN ))
client() {
    local n=$1 i=0 out="$WORK/client-$1.txt"
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        i=$((i + 1))
        case $((i % 6)) in
        0) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$BASE/1/user/-/profile.json?c=$n") ;;
        1) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST --data "x=$i" "$BASE/1/user/-/foods/log.json") ;;
        2) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$BASE/oauth2/revoke") ;;
        3) code=$(printf 'POST /1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n' \
                 | timeout 5 python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",'"$PROXY_PORT"')); s.sendall(sys.stdin.buffer.read()); print(s.recv(64).split(b" ")[1].decode())' 2>/dev/null || echo 000) ;;
        4) code=slow; timeout 3 python3 -c 'import socket,time; s=socket.create_connection(("127.0.0.1",'"$PROXY_PORT"')); s.sendall(b"POST /1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"); time.sleep(2)' 2>/dev/null || true ;;
        5) code=aborted; curl -s -o /dev/null -m 0.05 "$BASE/sim/slow/500" || true ;;
        esac
        echo "$code" >>"$out"
    done
}
for n in $(seq "$CLIENTS"); do client "$n" & PIDS+=($!); done
PEAK=0
while [ "$(date +%s)" -lt "$DEADLINE" ]; do
    sleep 1
    r=$(rss_kib); [ "$r" -gt "$PEAK" ] && PEAK=$r
done
wait "${PIDS[@]:2}" 2>/dev/null || true
sleep 3  # let slow bodies hit header/body timeouts and connections close
END_RSS=$(rss_kib); END_FDS=$(fds); HWM=$(hwm_kib)

echo "== soak: ${SECONDS_TO_RUN}s, $CLIENTS clients"
echo "client-side outcomes (code: count):"
cat "$WORK"/client-*.txt | sort | uniq -c | sort -rn | awk '{printf "  %s: %s\n", $2, $1}'
echo "proxy's own count (fitbit_proxy_requests_total):"
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^fitbit_proxy_requests_total' | sed 's/^/  /'
echo "RSS KiB: start $START_RSS, peak sampled $PEAK, high-water $HWM, end $END_RSS"
echo "open fds: start $START_FDS, end $END_FDS"
if grep -q 'panicked' "$WORK/proxy.log"; then echo "PANIC in the proxy log"; exit 1; fi
if grep -q "$SECRET" "$WORK/proxy.log"; then echo "the secret appeared in the log"; exit 1; fi
kill -0 "$PROXY_PID" || { echo "the proxy died"; exit 1; }
