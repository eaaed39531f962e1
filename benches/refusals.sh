#!/usr/bin/env bash
# Are refusals decided when a request arrives? The release binary against
# `fitbit-proxy simulate --quota 20 --window 10s`, `max_wait = "5s"`, 8
# saturating clients for 60 s (bounded in count and time): prints how many
# of the proxy's 429s took longer than 0.1 s to come back (a refusal is
# decided on arrival; one admitted is refused later only when an answer
# moves its slot past max_wait) and how many waited out max_wait (none
# should).
#
#   bash benches/refusals.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

start_simulator --window 10s --quota 20 --token-lifetime 24h
# Not a pipeline: start_proxy must run in this shell, so that the proxy's
# PID reaches the exit trap that stops it.
start_proxy REFUSALS_SECRET < <({
    proxy_toml_head REFUSALS_SECRET
    cat <<TOML
expires_in = 86400
[rate_limit]
quota = 20
window = "10s"
max_wait = "5s"
TOML
})
python3 benches/load/refusal_client.py "http://127.0.0.1:$PROXY_PORT" 8 "${SECONDS_RUN:-60}" 0.1 5
