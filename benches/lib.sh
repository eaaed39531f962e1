# Shared by benches/soak.sh, benches/attacks.sh and benches/dialects.sh (sourced, not run): the
# release binary, a scratch directory, the processes started (stopped by
# PID at exit, and only those), free loopback ports, the simulator and the
# proxy in front of it.
#
#   source benches/lib.sh
#   start_simulator --quota 1000 --window 60s  # sets SIM_PORT, SECRET, CLIENT_ID
#   start_proxy SECRET_ENV_NAME <<TOML ... TOML # sets PROXY_PID; waits for /readyz
#
# The proxy.toml on stdin may use $SIM_PORT, $PROXY_PORT, $ADMIN_PORT and
# $CLIENT_ID (expanded by the caller's here-document).

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

# Starts `fitbit-proxy simulate` with the given options and reads the
# credentials it prints (bounded: 5 s).
start_simulator() {
    "$BIN" simulate --listen "127.0.0.1:$SIM_PORT" "$@" >"$WORK/sim.log" 2>&1 &
    PIDS+=($!)
    SECRET=""
    for _ in $(seq 50); do
        SECRET=$(grep -o 'client secret = "[^"]*"' "$WORK/sim.log" 2>/dev/null | head -1 | cut -d'"' -f2 || true)
        [ -n "$SECRET" ] && break
        sleep 0.1
    done
    [ -n "$SECRET" ] || { echo "the simulator did not start" >&2; exit 1; }
    CLIENT_ID=$(grep -o 'client_id = "[^"]*"' "$WORK/sim.log" | head -1 | cut -d'"' -f2)
}

# Runs the proxy on the proxy.toml read from stdin, with the simulator's
# secret in the environment variable named by $1, at RUST_LOG=$PROXY_RUST_LOG
# (default warn); waits
# (bounded: 10 s) until /readyz says 200.
start_proxy() {
    cat >"$WORK/proxy.toml"
    env "$1=$SECRET" RUST_LOG="${PROXY_RUST_LOG:-warn}" "$BIN" run --config "$WORK/proxy.toml" >"$WORK/proxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=($PROXY_PID)
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the proxy did not become ready; its log:" >&2
    tail -5 "$WORK/proxy.log" >&2
    exit 1
}

# Prints the [listen], [admin], [upstream] and [credentials] sections of a
# proxy.toml in front of the simulator, the secret in the environment
# variable named by $1; a caller appends its own sections.
proxy_toml_head() {
    cat <<TOML
[listen]
addr = "127.0.0.1:$PROXY_PORT"
[admin]
addr = "127.0.0.1:$ADMIN_PORT"
[upstream]
url = "http://127.0.0.1:$SIM_PORT"
[credentials]
token_url = "http://127.0.0.1:$SIM_PORT/oauth2/token"
client_id = "$CLIENT_ID"
client_secret_env = "$1"
TOML
}
