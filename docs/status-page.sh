#!/usr/bin/env bash
# Takes docs/status-page.png: the status page of `fitbit-proxy demo` after
# some traffic, rendered by the same headless Chromium the tests use.
# Usage: docs/status-page.sh   (from the repository; builds the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/fitbit-proxy
out=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$out"' EXIT
listen=127.0.0.1:28480
"$bin" demo --listen "$listen" >"$out/demo.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  admin=$(sed -n 's/^ *admin: *//p' "$out/demo.log")
  [ -n "$admin" ] && curl -sf "$admin/readyz" >/dev/null && break
  sleep 0.1
done
# 20 requests at once from two callers: a burst of 10 goes through, one
# waits, the rest are refused.
for i in $(seq 1 20); do
  caller=billing; [ $((i % 3)) -eq 0 ] && caller=reports
  curl -s -o /dev/null --max-time 40 -H "x-caller: $caller" "http://$listen/1/user/-/profile.json" &
done
sleep 2
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$out/profile" --hide-scrollbars --virtual-time-budget=5000 \
  --window-size=1150,1500 --screenshot="$PWD/docs/status-page.png" "$admin/" 2>/dev/null
wait_jobs=$(jobs -p | grep -v "^$pid\$" || true)
[ -z "$wait_jobs" ] || kill $wait_jobs 2>/dev/null || true
echo "wrote docs/status-page.png"
