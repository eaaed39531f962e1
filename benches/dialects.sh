#!/usr/bin/env bash
# A new user's run, in real time, of the release binary against the
# simulator in one rate-limit dialect: `fitbit-proxy simulate --headers X
# --window 30s --quota 60`, the proxy configured for it, and 8 saturating
# clients for 100 s (bounded in count and time). Prints one table row:
# requests accepted per 30 s window, upstream 429s, proxy 429s.
#
#   bash benches/dialects.sh ietf
#   bash benches/dialects.sh x-ratelimit epoch
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

HEADERS=${1:?dialect}
RESET=${2:-}
sim_reset=() proxy_reset=""
if [ -n "$RESET" ]; then sim_reset=(--reset "$RESET"); proxy_reset="reset = \"$RESET\""; fi
start_simulator --headers "$HEADERS" "${sim_reset[@]}" --window 30s --quota 60 --token-lifetime 24h
# Not a pipeline: start_proxy must run in this shell, so that the proxy's
# PID reaches the exit trap that stops it.
start_proxy DIALECTS_SECRET < <({
    proxy_toml_head DIALECTS_SECRET
    cat <<TOML
expires_in = 86400
[rate_limit]
headers = "$HEADERS"
$proxy_reset
quota = 60
window = "30s"
burst = 10
max_wait = "30s"
TOML
})
python3 benches/load/window_client.py "http://127.0.0.1:$PROXY_PORT" 8 100 30 60 "$HEADERS ${RESET}"
