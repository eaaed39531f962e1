#!/usr/bin/env bash
# Two callers through the release binary in real time: `fitbit-proxy
# simulate --window 30s --quota 60` upstream, caller "many" with 12
# saturating clients and caller "one" with 1, equal weights (or WEIGHTS,
# a TOML table such as '{ many = 1, one = 3 }'), for 100 s (bounded in
# count and time). Prints each window's accepted requests per caller and
# its share, upstream 429s and the proxy's own 429s per caller.
#
#   bash benches/callers.sh
#   BURST=2 bash benches/callers.sh
#   SECONDS_RUN=30 bash benches/callers.sh   # a shorter run
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

WEIGHTS=${WEIGHTS:-"{}"}
start_simulator --window 30s --quota 60 --token-lifetime 24h
# Not a pipeline: start_proxy must run in this shell, so that the proxy's
# PID reaches the exit trap that stops it.
start_proxy CALLERS_SECRET < <({
    proxy_toml_head CALLERS_SECRET
    cat <<TOML
expires_in = 86400
[rate_limit]
quota = 60
window = "30s"
burst = ${BURST:-10}
max_wait = "30s"
[callers]
weights = $WEIGHTS
TOML
})
python3 benches/load/callers_client.py "http://127.0.0.1:$PROXY_PORT" "${SECONDS_RUN:-100}" 30 60 many:12 one:1
