# Shared by run.sh and instructions.sh (sourced, not run): the release
# build, the load upstream's binary, the processes started (stopped by PID
# at exit, and only those), a bounded wait for a port and the proxy's
# config. Expects $repo and $work.

# Builds the proxy and the load upstream; sets upstream_bin.
build_binaries() {
    (cd "$repo" && cargo build --release --quiet --bin fitbit-proxy)
    upstream_bin=$(cd "$repo" && cargo bench --no-run --bench load_upstream --message-format=json 2>/dev/null |
        python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="load_upstream" and m.get("executable"): print(m["executable"])')
}

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits for 127.0.0.1:$1 to accept, up to ${2:-100} tenths of a second.
wait_port() {
    for _ in $(seq "${2:-100}"); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    exit 1
}

# The proxy's config for the load runs: listen on 127.0.0.1:$1, forward to
# $2, tokens from the load upstream's plain port ($UP_PLAIN), a quota that
# never holds a request back.
fp_config() { # port upstream-url
    cat <<EOF
[listen]
addr = "127.0.0.1:$1"
max_connections = $((${NOFILE:-1024} / 2 - 100))
header_read_timeout = "120s"
[admin]
addr = ""
[upstream]
url = "$2"
ca_file = "$work/ca.pem"
[credentials]
token_url = "http://127.0.0.1:$UP_PLAIN/oauth2/token"
client_id = "load"
client_secret = "load-secret"
[rate_limit]
hourly_quota = ${FP_QUOTA:-1000000000}
burst = ${FP_QUOTA:-1000000000}
max_queued = 1000000
EOF
}
