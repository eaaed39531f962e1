#!/usr/bin/env bash
# Three release-binary replicas sharing one quota and one token through
# Redis (SPEC §11), in real time: redis-server and `fitbit-proxy simulate
# --quota 60 --window 30s` on loopback, saturating clients on 2 of 3
# replicas, then moving from one replica to another, for WINDOWS windows
# (default 6; bounded in count and time). Prints per upstream window the
# quota used, upstream 429s, proxy refusals and token fetches; then the
# latency shared mode adds per request against a lone proxy (p50, p99) in
# front of a simulator that never paces.
#
#   bash benches/replicas.sh [WINDOWS]     # WINDOWS=0: the latency only
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

WINDOWS=${1:-6}
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    (echo >"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
    sleep 0.1
done

# One replica: $1 names it; [shared] when $2 is "shared". Sets PROXY_PORT,
# ADMIN_PORT; waits (bounded: 10 s) for /readyz.
replica() {
    PROXY_PORT=$(free_port) ADMIN_PORT=$(free_port)
    {
        proxy_toml_head REPLICAS_SECRET
        cat <<TOML
expires_in = 86400
[rate_limit]
quota = $QUOTA
window = "$WINDOW"
replicas = 3
max_wait = "30s"
TOML
        if [ "$2" = shared ]; then printf '[shared]\nredis_url = "redis://127.0.0.1:%s"\n' "$REDIS_PORT"; fi
    } >"$WORK/$1.toml"
    env REPLICAS_SECRET="$SECRET" RUST_LOG=warn "$BIN" run --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "replica $1 did not become ready:" >&2; tail -5 "$WORK/$1.log" >&2; exit 1
}

if [ "$WINDOWS" -gt 0 ]; then  # 0: the latency only
    QUOTA=60 WINDOW=30s
    start_simulator --quota 60 --window 30s --token-lifetime 24h
    proxies=() admins=()
    for i in 1 2 3; do
        replica "r$i" shared
        proxies+=("http://127.0.0.1:$PROXY_PORT") admins+=("http://127.0.0.1:$ADMIN_PORT")
    done
    echo "== 3 replicas, shared through Redis $(redis-server --version | grep -o 'v=[^ ]*'), 60 per 30 s, demand on 2 of 3 then moving"
    python3 benches/replicas.py 30 "$WINDOWS" "${proxies[@]}" -- "${admins[@]}"
    SIM_PORT=$(free_port)
fi

# Latency: a simulator that never paces; one lone proxy, one shared.
QUOTA=10000000 WINDOW=1h
start_simulator --quota 10000000 --window 1h --token-lifetime 24h
replica lone alone; lone="http://127.0.0.1:$PROXY_PORT"
replica shared shared; shared="http://127.0.0.1:$PROXY_PORT"
echo "== latency shared mode adds (loopback)"
python3 benches/replicas.py latency 5000 "$lone" "$shared"
