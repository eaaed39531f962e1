# Sourced by run.sh when PROFILE=1, once every server is up: instead of the
# rounds, the evidence for docs/performance.md.
#
# - System calls per request: `strace -c -f` attached to fitbit-proxy
#   (plain upstream) and to nginx's workers while `wrk -c16` runs PROFILE_DUR
#   seconds; calls counted ÷ requests answered.
# - Where the CPU goes: `perf record --call-graph dwarf` on fitbit-proxy
#   (TLS upstream) while `wrk -c64` runs; the kernel's share, the top
#   user-space frames by self time, and malloc/free/memmove charged to the
#   code that called them (fold.py).
#
# Output: $out/syscalls.txt, $out/strace-*.txt, $out/perf-top.txt and
# $out/perf.data (large; for `perf report -i`).

PROFILE_DUR=${PROFILE_DUR:-5}

# strace on the given PIDs (and their threads) while wrk runs against URL.
syscalls_per_request() { # name url pid...
    local name=$1 url=$2 n calls tracer
    shift 2
    local -a attach=()
    for p in "$@"; do attach+=(-p "$p"); done
    wrk -t1 -c16 -d1s -H "$CLIENT_AUTH" "$url" >/dev/null 2>&1 || true
    strace -c -f -o "$out/strace-$name.txt" "${attach[@]}" &
    tracer=$!
    sleep 1
    timeout $((PROFILE_DUR + 30)) wrk -t1 -c16 -d"${PROFILE_DUR}s" -H "$CLIENT_AUTH" "$url" >"$work/strace-wrk.out" 2>&1 || true
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    n=$(awk '/requests in/ {print $1}' "$work/strace-wrk.out")
    calls=$(awk '$NF == "total" {print $4}' "$out/strace-$name.txt")
    python3 -c "print(f'$name: {$calls} calls / {$n} requests = {$calls / $n:.2f} per request')" | tee -a "$out/syscalls.txt"
}

echo "profile: system calls per request (strace -c -f, wrk -c16, plain upstream)"
read -ra ng_procs <<<"$ng_workers"
syscalls_per_request nginx "http://127.0.0.1:$NG_PLAIN$PATH_Q" "${ng_procs[@]}"
syscalls_per_request fitbit-proxy "http://127.0.0.1:$FP_PLAIN$PATH_Q" "$fpplain_pid"

echo "profile: perf record --call-graph dwarf, fitbit-proxy, wrk -c64, TLS upstream"
wrk -t1 -c64 -d1s -H "$CLIENT_AUTH" "http://127.0.0.1:$FP_TLS$PATH_Q" >/dev/null 2>&1 || true
perf record -q -F 1999 --call-graph dwarf,16384 -p "$fp_pid" -o "$out/perf.data" -- sleep "$PROFILE_DUR" 2>/dev/null &
recorder=$!
timeout $((PROFILE_DUR + 30)) wrk -t1 -c64 -d"$((PROFILE_DUR + 1))s" -H "$CLIENT_AUTH" "http://127.0.0.1:$FP_TLS$PATH_Q" >/dev/null 2>&1 || true
wait "$recorder" 2>/dev/null || true
bash "$here/perf-report.sh" "$out/perf.data" >"$out/perf-top.txt"
echo "  $out/perf-top.txt"
