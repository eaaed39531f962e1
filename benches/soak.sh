#!/usr/bin/env bash
# Soak (RELIABILITY.md 3.16): mixed traffic through the real binary for a
# bounded time, then a report: requests served, errors by kind, peak RSS and
# open file descriptors at start and end. It fails when RSS, open
# descriptors or tokio tasks grow from the middle third of the run to the
# last (no plateau), when a token or the secret shows in the proxy's log or
# admin answers, and when the proxy panicked or died. Not run by CI.
#
#   benches/soak.sh [SECONDS] [CLIENTS]      # defaults: 60 s, 8 clients
#   benches/soak.sh 1800                     # the catalog's 30-minute soak
#
# Traffic per HTTP/1 client, round robin: good GETs, good POSTs, denied paths
# (403), malformed requests (400), slow bodies that stall, requests aborted
# mid-flight, 1 MiB downloads, upstream 500s, and upstream 401 invalid_token
# (each one invalidates the token: a fetch and a retry). Beside them, h2load
# drives h2c (prior knowledge) in bounded rounds. The simulator grants 30 s
# tokens (a refresh every ~15 s) and a quota of SOAK_QUOTA per 60 s window
# (default 120000, ~2,000/s), so pacing spreads the load. Every 10 s the
# proxy's RSS, open descriptors, threads and alive tokio tasks
# (fitbit_proxy_runtime_tasks) are sampled; the medians of the last third of
# the run must not exceed those of the middle third by more than RSS 10 % +
# 2 MiB, 8 descriptors, tasks 10 % + 20 (runs shorter than 60 s are too
# short to judge and fail). The proxy logs at SOAK_RUST_LOG (default: warn,
# and debug for the token code, so that every fetch is logged and searched).
# Needs curl, python3 and h2load (nghttp2-client). Everything is on
# loopback; every loop is bounded by the deadline; only the processes this
# script starts are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN=${1:-60}
CLIENTS=${2:-8}
source benches/lib.sh

QUOTA=${SOAK_QUOTA:-120000}
export PROXY_RUST_LOG=${SOAK_RUST_LOG:-warn,fitbit_proxy::token=debug}
start_simulator --quota "$QUOTA" --window 60s --token-lifetime 30s
start_proxy SOAK_SECRET <<TOML
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
client_id = "$CLIENT_ID"
client_secret_env = "SOAK_SECRET"
expires_in = 3600
refresh_before_expiry = "10s"
[rate_limit]
hourly_quota = $QUOTA
burst = 50
max_wait = "5s"
TOML

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
        case $((i % 9)) in
        0) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$BASE/1/user/-/profile.json?c=$n") ;;
        1) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 -X POST --data "x=$i" "$BASE/1/user/-/foods/log.json") ;;
        2) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$BASE/oauth2/revoke") ;;
        3) code=$(printf 'POST /1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n' \
                 | timeout 5 python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",'"$PROXY_PORT"')); s.sendall(sys.stdin.buffer.read()); print(s.recv(64).split(b" ")[1].decode())' 2>/dev/null || echo 000) ;;
        4) code=slow; timeout 3 python3 -c 'import socket,time; s=socket.create_connection(("127.0.0.1",'"$PROXY_PORT"')); s.sendall(b"POST /1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"); time.sleep(2)' 2>/dev/null || true ;;
        5) code=aborted; curl -s -o /dev/null -m 0.05 "$BASE/sim/slow/500" || true ;;
        6) code=$(curl -s -o /dev/null -w 'stream-%{http_code}-%{size_download}' -m 10 "$BASE/sim/stream/1048576") ;;
        7) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$BASE/sim/status/500") ;;
        8) code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$BASE/sim/status/401?errorType=invalid_token") ;;
        esac
        echo "$code" >>"$out"
    done
}
h2c() {
    # Bounded rounds: each is at most 5,000 requests and 60 s.
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        timeout 60 h2load -n 5000 -c 2 -m 8 "$BASE/1/user/-/activities.json" 2>&1 \
            | grep -E '^(requests|status codes):' >>"$WORK/h2load.txt" || true
    done
}
threads() { awk '/Threads/ {print $2}' "/proc/$PROXY_PID/status"; }
tasks() {
    curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^fitbit_proxy_runtime_tasks / {print $2; found=1} END {if (!found) print -1}'
}
for n in $(seq "$CLIENTS"); do client "$n" & PIDS+=($!); done
h2c & PIDS+=($!)
START=$(date +%s)
PEAK=0
NEXT_SAMPLE=$START
echo "elapsed_s rss_kib fds threads tasks" >"$WORK/samples.txt"
while [ "$(date +%s)" -lt "$DEADLINE" ]; do
    sleep 1
    r=$(rss_kib); [ "$r" -gt "$PEAK" ] && PEAK=$r
    now=$(date +%s)
    if [ "$now" -ge "$NEXT_SAMPLE" ]; then
        echo "$((now - START)) $r $(fds) $(threads) $(tasks)" >>"$WORK/samples.txt"
        NEXT_SAMPLE=$((NEXT_SAMPLE + 10))
    fi
done
wait "${PIDS[@]:2}" 2>/dev/null || true
sleep 3  # let slow bodies hit header/body timeouts and connections close
END_RSS=$(rss_kib); END_FDS=$(fds); HWM=$(hwm_kib)

echo "== soak: ${SECONDS_TO_RUN}s, $CLIENTS clients"
echo "client-side outcomes (code: count):"
cat "$WORK"/client-*.txt | sort | uniq -c | sort -rn | awk '{printf "  %s: %s\n", $2, $1}'
echo "h2c (h2load rounds):"
awk '/^requests:/ {t+=$2; s+=$8; f+=$10} /^status codes:/ {c2+=$3; c4+=$7; c5+=$9}
     END {printf "  requests %d, succeeded %d, failed %d; 2xx %d, 4xx %d, 5xx %d\n", t, s, f, c2, c4, c5}' "$WORK/h2load.txt"
echo "proxy's own count (fitbit_proxy_requests_total), token fetches, pacing:"
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
    | grep -E '^fitbit_proxy_(requests_total|token_fetches_total|paced_|rate_limit_|upstream_rate_limited)' | sed 's/^/  /'
echo "RSS KiB: start $START_RSS, peak sampled $PEAK, high-water $HWM, end $END_RSS"
echo "open fds: start $START_FDS, end $END_FDS"
# Secrets: no token the simulator issued (prefix sim-token-) and not the
# secret in the proxy's log or in anything the admin port answers.
for path in /metrics /readyz /status.json /; do
    curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT$path" >>"$WORK/admin-answers.txt" || true
done
LEAKS=$(cat "$WORK/proxy.log" "$WORK/admin-answers.txt" | grep -c -F -e "$SECRET" -e 'sim-token-' || true)
FETCH_LINES=$(grep -c 'access token fetched' "$WORK/proxy.log" || true)
echo "secrets: $LEAKS lines with a token or the secret in the log ($(wc -l <"$WORK/proxy.log") lines, $FETCH_LINES token fetches logged) and admin answers"
# Plateau: the middle third of the samples against the last third.
python3 - "$WORK/samples.txt" <<'PY'
import statistics, sys
rows = [list(map(int, line.split())) for line in open(sys.argv[1]).readlines()[1:]]
n = len(rows)
middle, last = rows[n // 3 : 2 * n // 3], rows[2 * n // 3 :]
if len(middle) < 2 or len(last) < 2:
    sys.exit(f"plateau: {n} samples are too few to judge (run 60 s or more)")
grew = []
# (name, column, allowed growth as a share, and in units)
for name, i, share, units in (("RSS KiB", 1, 0.10, 2048), ("open fds", 2, 0.0, 8),
                              ("threads", 3, None, None), ("tasks", 4, 0.10, 20)):
    m = [r[i] for r in middle]
    l = [r[i] for r in last]
    mm, lm = statistics.median(m), statistics.median(l)
    verdict = ""
    if share is not None:
        if min(m + l) < 0:
            grew.append(f"{name}: not sampled")
        elif lm > mm * (1 + share) + units:
            verdict = f"  GROWTH over {share:.0%} + {units}"
            grew.append(name)
    print(f"plateau {name}: middle third median {mm:g} (max {max(m)}), "
          f"last third median {lm:g} (max {max(l)}){verdict}")
print("samples (elapsed_s rss_kib fds threads tasks), every 10th:")
for r in rows[::10]:
    print("  " + " ".join(map(str, r)))
if grew:
    sys.exit("no plateau: " + ", ".join(grew))
PY
cp "$WORK/samples.txt" "${SOAK_SAMPLES:-/dev/null}" 2>/dev/null || true
if grep -q 'panicked' "$WORK/proxy.log"; then echo "PANIC in the proxy log"; exit 1; fi
if [ "$LEAKS" -ne 0 ]; then echo "a token or the secret appeared in the log or an admin answer"; exit 1; fi
if [ "$FETCH_LINES" -eq 0 ]; then echo "no token fetch was logged: the search saw nothing"; exit 1; fi
kill -0 "$PROXY_PID" || { echo "the proxy died"; exit 1; }
