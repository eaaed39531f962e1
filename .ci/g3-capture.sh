#!/usr/bin/env bash
# G3 (RELIABILITY.md §0.2) on the wire: the proxy opens connections only to
# the upstream and token endpoint it was given. Runs test binaries inside a
# private network namespace (unshare -n, root) whose default route points at
# its own loopback (packets for other hosts are seen there, then dropped:
# the namespace has no way out), captures with tcpdump, and fails if
# any TCP or UDP packet went anywhere but loopback (where the tests put the
# simulator, the relays and the proxy). Nothing leaves the machine.
#
#   bash .ci/g3-capture.sh [cargo test target args]
#
# Default: the test binaries that exercise forwarding, tokens, pacing and
# the security cases. Not tests/upstream_dns.rs, whose point is a lookup
# through the resolver.
# Needs: root, unshare, ip, tcpdump (Debian `tcpdump`, ~15 s to install).
# Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(--test forwarding --test token --test pacing --test security)
command -v tcpdump >/dev/null || { echo "tcpdump missing: apt-get install tcpdump"; exit 2; }

cargo test --locked --no-run "${targets[@]}" >/dev/null 2>&1
cap=$(mktemp -d)
trap 'rm -rf "$cap"' EXIT
export cap
unshare -n bash -euo pipefail -c '
  ip link set lo up
  ip route add default dev lo
  tcpdump -i any -nn -U -w "$cap/g3.pcap" \
    "(tcp or udp) and not dst net 127.0.0.0/8 and not dst host ::1" 2>"$cap/tcpdump.log" &
  dump=$!
  for _ in $(seq 50); do grep -q listening "$cap/tcpdump.log" && break; sleep 0.1; done
  cargo test --locked --offline "$@" 2>&1 | grep -E "^test result|FAILED|panicked" || true
  kill "$dump"; wait "$dump" || true
' g3 "${targets[@]}"
leaks=$(tcpdump -nn -r "$cap/g3.pcap" 2>/dev/null | wc -l)
tcpdump -nn -r "$cap/g3.pcap" 2>/dev/null | head -20 || true
echo "G3: $leaks packets to addresses other than loopback"
[ "$leaks" -eq 0 ]
