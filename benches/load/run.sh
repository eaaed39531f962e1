#!/usr/bin/env bash
# Side-by-side load comparison: fitbit-proxy vs nginx vs HAProxy doing the
# same job (replace Authorization with a fixed Bearer token, keep-alive pool
# to a TLS HTTP/1.1 upstream serving 1.2 KB of JSON), one worker each, all
# on loopback. A benchmark, never a CI test.
#
#   bash benches/load/run.sh            # full: 5 rounds of 5 s runs, ~13 min
#   QUICK=1 bash benches/load/run.sh    # 1 round of 3 s runs, ~3 min
#   WORKERS=2 bash benches/load/run.sh  # two workers each (nginx
#       worker_processes 2, HAProxy nbthread 2, fitbit-proxy's default runtime)
#   FP_BEFORE=path/to/older/fitbit-proxy bash benches/load/run.sh
#       # also measures that binary (the "before" of a change) in the same
#       # rounds, as "fitbit-proxy (before)"
#   FP_BIN=path/to/fitbit-proxy ...     # measure that binary instead of the build
#   CONNS="64" MODES="tls" IDLE=0 ...   # only some points; IDLE=0: no idle test
#   PROFILE=1 bash benches/load/run.sh  # instead of the rounds: system calls
#       per request (strace) and a CPU profile (perf); see profile.sh
#
# Rounds alternate direct / nginx / HAProxy / fitbit-proxy at every point,
# and the table reports medians of per-round ratios: the machine may be
# shared, and only ratios measured side by side mean anything.
# Raw output goes to benches/load/results/<stamp>/, the table to
# benches/load/results/<stamp>/table.md (also printed).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}; DUR=${DUR:-3}; H2N=${H2N:-30000}
else
    ROUNDS=${ROUNDS:-5}; DUR=${DUR:-5}; H2N=${H2N:-80000}
fi
CONNS=${CONNS:-"1 16 64 256"}
MODES=${MODES:-"tls plain h2c"}
IDLE=${IDLE:-5000}
WORKERS=${WORKERS:-1}
FP_BEFORE=${FP_BEFORE:-}
stamp=$(date +%Y%m%d-%H%M%S)
out="$repo/benches/load/results/$stamp"
work=$(mktemp -d /tmp/fitbit-proxy-load.XXXXXX)
mkdir -p "$out"
raw="$out/raw.tsv"
log="$out/runs.txt"
printf 'round\ttarget\tmode\tconns\trps\tp50_ms\tp99_ms\tcpu_us\n' >"$raw"

# Ports (loopback only).
UP_TLS=19443 UP_PLAIN=19080
NG_TLS=19101 NG_PLAIN=19102 NG_H2C=19103
HA_TLS=19201 HA_PLAIN=19202 HA_H2C=19203
FP_TLS=19301 FP_PLAIN=19302 FP_WARN=19303 FB_TLS=19311 FB_PLAIN=19312
PATH_Q=/1/user/-/activities/date/today.json
CLIENT_AUTH='Authorization: Basic Zm9vOmJhcg=='

# --- tools ------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

echo "building (release) ..."
source "$here/common.sh"
build_binaries
proxy_bin=${FP_BIN:-$repo/target/release/fitbit-proxy}

TOKIO_WORKER_THREADS=1 "$upstream_bin" --tls 127.0.0.1:$UP_TLS --plain 127.0.0.1:$UP_PLAIN --dir "$work" 2>"$out/upstream.log" &
up_pid=$!; pids+=($up_pid)
wait_port $UP_TLS

cat >"$work/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile $NOFILE;
pid $work/nginx.pid;
error_log $out/nginx-error.log warn;
daemon off;
events { worker_connections $((NOFILE / 2 - 100)); }
http {
    access_log /dev/null combined buffer=32k;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_body_temp_path $work/ngx-body;
    proxy_temp_path $work/ngx-proxy;
    upstream up_tls { server 127.0.0.1:$UP_TLS; keepalive 256; keepalive_requests 10000000; }
    upstream up_plain { server 127.0.0.1:$UP_PLAIN; keepalive 256; keepalive_requests 10000000; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host localhost;
    proxy_set_header Authorization "Bearer load-test-token";
    proxy_set_header Proxy-Authorization "";
    proxy_ssl_trusted_certificate $work/ca.pem;
    proxy_ssl_verify on;
    proxy_ssl_name localhost;
    proxy_ssl_server_name on;
    proxy_ssl_session_reuse on;
    server { listen 127.0.0.1:$NG_TLS; location / { proxy_pass https://up_tls; } }
    server { listen 127.0.0.1:$NG_PLAIN; location / { proxy_pass http://up_plain; } }
    server { listen 127.0.0.1:$NG_H2C http2; location / { proxy_pass https://up_tls; } }
}
EOF
nginx -p "$work" -e "$out/nginx-error.log" -c "$work/nginx.conf" &
ng_pid=$!; pids+=($ng_pid)

cat >"$work/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn $((NOFILE / 2 - 100))
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 60s
    timeout http-keep-alive 120s
    http-reuse always
frontend f_tls
    bind 127.0.0.1:$HA_TLS
    bind 127.0.0.1:$HA_H2C proto h2
    default_backend b_tls
frontend f_plain
    bind 127.0.0.1:$HA_PLAIN
    default_backend b_plain
backend b_tls
    http-request set-header Authorization "Bearer load-test-token"
    http-request del-header Proxy-Authorization
    server up 127.0.0.1:$UP_TLS ssl verify required ca-file $work/ca.pem sni str(localhost) alpn http/1.1
backend b_plain
    http-request set-header Authorization "Bearer load-test-token"
    http-request del-header Proxy-Authorization
    server up 127.0.0.1:$UP_PLAIN
EOF
haproxy -db -f "$work/haproxy.cfg" 2>"$out/haproxy.log" &
ha_pid=$!; pids+=($ha_pid)

# One worker: TOKIO_WORKER_THREADS=1; more: the binary's default runtime
# (one worker per core), as deployed.
start_fp() { # name port url rust_log [binary]
    fp_config "$2" "$3" >"$work/$1.toml"
    if [[ $WORKERS == 1 ]]; then
        RUST_LOG=$4 TOKIO_WORKER_THREADS=1 "${5:-$proxy_bin}" --config "$work/$1.toml" 2>/dev/null &
    else
        RUST_LOG=$4 "${5:-$proxy_bin}" --config "$work/$1.toml" 2>/dev/null &
    fi
    pids+=($!)
    eval "${1}_pid=$!"
}
start_fp fp $FP_TLS "https://127.0.0.1:$UP_TLS" info
start_fp fpplain $FP_PLAIN "http://127.0.0.1:$UP_PLAIN" info
start_fp fpwarn $FP_WARN "https://127.0.0.1:$UP_TLS" warn
ports="$NG_TLS $NG_PLAIN $NG_H2C $HA_TLS $HA_PLAIN $HA_H2C $FP_TLS $FP_PLAIN $FP_WARN"
before=
if [[ -n $FP_BEFORE ]]; then
    # Binaries before 481e008 refuse every request after ~2.2 M with a
    # quota in the hundreds of millions (a governor overflow); 10 M keeps
    # them going for three to four rounds (FP_BEFORE_QUOTA to change it).
    FP_QUOTA=${FP_BEFORE_QUOTA:-10000000} start_fp fb $FB_TLS "https://127.0.0.1:$UP_TLS" info "$FP_BEFORE"
    FP_QUOTA=${FP_BEFORE_QUOTA:-10000000} start_fp fbplain $FB_PLAIN "http://127.0.0.1:$UP_PLAIN" info "$FP_BEFORE"
    ports+=" $FB_TLS $FB_PLAIN"
    before=fb
fi
for p in $ports; do wait_port $p; done
sleep 0.5
ng_workers=$(pgrep -P "$ng_pid" | tr '\n' ' ')

# --- measurement helpers ------------------------------------------------------
# All processes of a target (nginx: master and worker).
procs() {
    case $1 in
    direct) echo "$up_pid" ;;
    nginx) echo "$ng_pid $ng_workers" ;;
    haproxy) echo "$ha_pid" ;;
    fp) echo "$fp_pid" ;;
    fpplain) echo "$fpplain_pid" ;;
    fpwarn) echo "$fpwarn_pid" ;;
    fb) echo "$fb_pid" ;;
    fbplain) echo "$fbplain_pid" ;;
    esac
}
ticks() { # summed utime+stime of the given PIDs
    local t=0 p
    for p in "$@"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
mem_kib() { # field (VmRSS|RssAnon) summed over the given PIDs
    local f=$1 t=0 p
    shift
    for p in "$@"; do
        t=$((t + $(awk -v f="$f:" '$1 == f {print $2}' "/proc/$p/status")))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)

port_of() { # target mode
    case "$1:$2" in
    direct:tls) echo "https://127.0.0.1:$UP_TLS" ;;
    direct:plain) echo "http://127.0.0.1:$UP_PLAIN" ;;
    nginx:tls) echo "http://127.0.0.1:$NG_TLS" ;;
    nginx:plain) echo "http://127.0.0.1:$NG_PLAIN" ;;
    nginx:h2c) echo "http://127.0.0.1:$NG_H2C" ;;
    haproxy:tls) echo "http://127.0.0.1:$HA_TLS" ;;
    haproxy:plain) echo "http://127.0.0.1:$HA_PLAIN" ;;
    haproxy:h2c) echo "http://127.0.0.1:$HA_H2C" ;;
    fp:tls | fp:h2c) echo "http://127.0.0.1:$FP_TLS" ;;
    fpplain:plain) echo "http://127.0.0.1:$FP_PLAIN" ;;
    fpwarn:tls) echo "http://127.0.0.1:$FP_WARN" ;;
    fb:tls | fb:h2c) echo "http://127.0.0.1:$FB_TLS" ;;
    fbplain:plain) echo "http://127.0.0.1:$FB_PLAIN" ;;
    esac
}

# One measured run: wrk (HTTP/1.1 keep-alive) or h2load (h2c prior knowledge).
measure() { # round target mode conns
    local round=$1 target=$2 mode=$3 c=$4 url pids0 t0 t1 res rps p50 p99 n
    url="$(port_of "$target" "$mode")$PATH_Q"
    read -ra pids0 <<<"$(procs "$target")"
    if [[ $mode == h2c ]]; then
        h2load -n $((H2N / 10)) -c "$c" -m 10 -H "$CLIENT_AUTH" "$url" >/dev/null 2>&1 || true # warm-up
        t0=$(ticks "${pids0[@]}")
        timeout 120 h2load -n "$H2N" -c "$c" -m 10 -H "$CLIENT_AUTH" --log-file="$work/h2.log" "$url" >"$work/run.out" 2>&1 || true
        t1=$(ticks "${pids0[@]}")
        res=$(python3 - "$work/run.out" "$work/h2.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
ok = re.search(r"(\d+) succeeded", text)
d = sorted(int(l.split()[2]) for l in open(sys.argv[2]) if l.strip() and l.split()[1] == "200")
if not m or not d:
    print("0 0 0 0"); sys.exit()
q = lambda p: d[min(len(d) - 1, int(p * len(d)))] / 1000
print(m.group(3), f"{q(0.5):.3f}", f"{q(0.99):.3f}", ok.group(1))
PY
)
    else
        wrk -t1 -c "$c" -d1s -H "$CLIENT_AUTH" "$url" >/dev/null 2>&1 || true # warm-up
        t0=$(ticks "${pids0[@]}")
        timeout $((DUR + 30)) wrk -t1 -c "$c" -d"${DUR}s" --latency -H "$CLIENT_AUTH" "$url" >"$work/run.out" 2>&1 || true
        t1=$(ticks "${pids0[@]}")
        res=$(python3 - "$work/run.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s|m)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
rps = re.search(r"Requests/sec:\s*([\d.]+)", text)
p50 = re.search(r"^\s*50%\s+(\S+)", text, re.M)
p99 = re.search(r"^\s*99%\s+(\S+)", text, re.M)
n = re.search(r"(\d+) requests in", text)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if not (rps and p50 and p99 and n) or bad:
    print("0 0 0 0"); sys.exit()
print(rps.group(1), f"{ms(p50.group(1)):.3f}", f"{ms(p99.group(1)):.3f}", n.group(1))
PY
)
    fi
    read -r rps p50 p99 n <<<"$res"
    local cpu=0
    if ((n > 0)); then cpu=$(python3 -c "print(f'{($t1 - $t0) * 1e6 / $HZ / $n:.1f}')"); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$target" "$mode" "$c" "$rps" "$p50" "$p99" "$cpu" >>"$raw"
    { echo "== round $round $target $mode c=$c"; cat "$work/run.out"; } >>"$log"
    printf '  %-8s %-6s c=%-4s %9s req/s  p50 %7s ms  p99 %7s ms  %6s us/req\n' "$target" "$mode" "$c" "$rps" "$p50" "$p99" "$cpu"
}

if [[ ${PROFILE:-0} == 1 ]]; then
    source "$here/profile.sh"
    exit 0
fi

memrow() { # phase target
    local -a ps
    read -ra ps <<<"$(procs "$2")"
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(mem_kib VmRSS "${ps[@]}")" "$(mem_kib RssAnon "${ps[@]}")" >>"$out/memory.tsv"
}
printf 'phase\ttarget\trss_kib\trss_anon_kib\n' >"$out/memory.tsv"
for t in nginx haproxy fp $before; do memrow start $t; done

# --- rounds -------------------------------------------------------------------
# The new and the "before" binary swap places every other round, so that
# neither always runs right after nginx.
pair() { # round a [b]
    if [[ -n ${3:-} && $(($1 % 2)) == 0 ]]; then echo "$3 $2"; else echo "$2 ${3:-}"; fi
}
echo "results: $out"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS"
    if [[ " $MODES " == *" tls "* ]]; then
        for c in $CONNS; do
            for t in direct nginx haproxy $(pair "$round" fp $before); do
                sampler=
                if [[ $round == 1 && $c == 256 && $t != direct ]]; then
                    # Memory under load: sampled half-way through this run.
                    (sleep $((DUR / 2 + 1)); memrow load $t) &
                    sampler=$!
                fi
                measure "$round" $t tls "$c"
                if [[ -n $sampler ]]; then wait "$sampler"; fi
            done
        done
        for t in fp fpwarn; do measure "$round" $t tls 64; done
    fi
    if [[ " $MODES " == *" plain "* ]]; then
        for t in direct nginx haproxy $(pair "$round" fpplain ${before:+fbplain}); do measure "$round" $t plain 64; done
    fi
    if [[ " $MODES " == *" h2c "* ]]; then
        for t in nginx haproxy $(pair "$round" fp $before); do measure "$round" $t h2c 16; done
    fi
done

# --- idle connections ---------------------------------------------------------
if ((IDLE > 0)); then
    echo "idle: $IDLE keep-alive connections each"
    for t in nginx haproxy fp $before; do
        memrow before_idle $t
        port=$(port_of $t tls)
        port=${port##*:}
        coproc IDLER { python3 "$here/idle_clients.py" 127.0.0.1 "$port" "$IDLE" 120; }
        read -r ready <&"${IDLER[0]}"
        echo "  $t: $ready"
        # What the idle connections hold, once each server has settled:
        # fitbit-proxy parks an HTTP/1 connection a second after its last
        # request, and jemalloc returns the freed pages over the next one.
        sleep 5
        memrow idle $t
        idler_pid=$IDLER_PID
        kill "$idler_pid" 2>/dev/null || true
        wait "$idler_pid" 2>/dev/null || true
        sleep 2
    done
fi

# --- table --------------------------------------------------------------------
{
    echo "Machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(uname -r); nginx $(nginx -v 2>&1 | sed 's/.*\///'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}')"
    echo "Run: ROUNDS=$ROUNDS DUR=${DUR}s H2N=$H2N WORKERS=$WORKERS, $(date -u +%Y-%m-%dT%H:%MZ), load average before/after: $load0 / $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    python3 "$here/report.py" "$raw" "$out/memory.tsv" "$IDLE"
} | tee "$out/table.md"
