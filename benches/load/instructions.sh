#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind (callgrind): a
# measure of the proxy's own work that other load on a shared machine does
# not disturb (the kernel's share and memory stalls are not in it; see
# run.sh for time and PROFILE=1 for system calls). Each binary serves the
# same wrk load (one connection per wrk thread... 16 connections, plain and
# TLS upstream) after a warm-up; callgrind counts only that window.
#
#   bash benches/load/instructions.sh [BINARY ...]   # default: the release build
#   REQUESTS window: DUR seconds of wrk (default 10; valgrind runs ~50x slower)
#
# Prints "BINARY MODE Ir/request" lines and keeps the callgrind files in
# benches/load/results/<stamp>-ir/ (`callgrind_annotate FILE` for where).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
DUR=${DUR:-10}
CONNS=${CONNS:-16}
out="$repo/benches/load/results/$(date +%Y%m%d-%H%M%S)-ir"
work=$(mktemp -d /tmp/fitbit-proxy-ir.XXXXXX)
mkdir -p "$out"
# Ports: PORTS="TLS PLAIN PROXY" to run beside another copy of this script.
read -r UP_TLS UP_PLAIN FP <<<"${PORTS:-19543 19180 19391}"
PATH_Q=/1/user/-/activities/date/today.json
CLIENT_AUTH='Authorization: Basic Zm9vOmJhcg=='

command -v valgrind >/dev/null && command -v wrk >/dev/null || {
    echo "needs valgrind and wrk (apt-get install -y valgrind wrk)" >&2
    exit 1
}
source "$here/common.sh"
build_binaries
bins=("$@")
((${#bins[@]})) || bins=("$repo/target/release/fitbit-proxy")

TOKIO_WORKER_THREADS=1 "$upstream_bin" --tls 127.0.0.1:$UP_TLS --plain 127.0.0.1:$UP_PLAIN --dir "$work" 2>/dev/null &
pids+=($!)
wait_port $UP_TLS

for mode in plain tls; do
    case $mode in
    plain) url="http://127.0.0.1:$UP_PLAIN" ;;
    tls) url="https://127.0.0.1:$UP_TLS" ;;
    esac
    fp_config $FP "$url" >"$work/fp.toml"
    for i in "${!bins[@]}"; do
        bin=${bins[$i]}
        file="$out/callgrind.$mode.$i"
        RUST_LOG=info TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$file" "$bin" --config "$work/fp.toml" 2>"$work/vg.log" &
        vg=$!
        pids+=($vg)
        wait_port $FP 600
        wrk -t1 -c"$CONNS" -d3s -H "$CLIENT_AUTH" "http://127.0.0.1:$FP$PATH_Q" >/dev/null 2>&1 || true
        callgrind_control -i on "$vg" >/dev/null
        sleep 1
        wrk -t1 -c"$CONNS" -d"${DUR}s" -H "$CLIENT_AUTH" "http://127.0.0.1:$FP$PATH_Q" >"$work/wrk.out" 2>&1 || true
        callgrind_control -i off "$vg" >/dev/null
        n=$(awk '/requests in/ {print $1}' "$work/wrk.out")
        kill -INT "$vg" 2>/dev/null || true
        wait "$vg" 2>/dev/null || true
        ir=$(awk '/^totals:/ {print $2}' "$file")
        python3 -c "print(f'{\"$bin\".split(\"/\")[-1]:<28} $mode  {$ir / $n:10.0f} Ir/request  ({$n} requests)')" | tee -a "$out/summary.txt"
    done
done
