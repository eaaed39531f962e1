# Shared by run.sh and instructions.sh (sourced, not run): the release
# build, the load upstream's binary, the processes started (stopped by PID
# at exit, and only those) and a bounded wait for a port. Expects $repo and
# $work.

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
