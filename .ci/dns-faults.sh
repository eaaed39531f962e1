#!/usr/bin/env bash
# 4.26 (RELIABILITY.md): tests/upstream_dns.rs against resolvers that fail
# in ways the machine's own does not. Runs inside a private network and
# mount namespace (unshare -n -m, root) whose /etc/resolv.conf names a
# dnsmasq on 127.0.0.1 that answers:
#   api.servfail.test  SERVFAIL: it validates DNSSEC and its only upstream,
#                      a second dnsmasq on 127.0.0.2:5353, answers unsigned
#                      (bogus, so SERVFAIL)
#   api.hang.test      never: forwarded to 127.0.0.3:53, where nothing
#                      listens (glibc gives up after 2 tries of 5 s)
#   api.rebound.test   127.0.0.5, where the test puts a TLS server whose
#                      certificate is for another name
# Each run prints the tests' figures: the 502 causes, the thread peak
# during the burst of 500, the TLS refusal.
#
#   bash .ci/dns-faults.sh
#
# Needs: root, unshare, ip, mount, dnsmasq (Debian `dnsmasq-base`, installed
# here if missing). Nothing leaves the machine: the namespace has only
# loopback. Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "needs root (unshare -n -m)"; exit 2; }
if ! command -v dnsmasq >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dnsmasq-base >/dev/null
fi

cargo test --locked --no-run --test upstream_dns >/dev/null 2>&1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export work

cat >"$work/signer.conf" <<EOF
no-resolv
no-hosts
port=5353
listen-address=127.0.0.2
bind-interfaces
user=root
address=/servfail.test/127.0.0.1
EOF
# The root zone's trust anchor (KSK-2017, IANA): any unsigned answer for a
# name under it is bogus.
cat >"$work/resolver.conf" <<EOF
no-resolv
no-hosts
port=53
listen-address=127.0.0.1
bind-interfaces
user=root
dnssec
dnssec-check-unsigned
trust-anchor=.,20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
server=127.0.0.2#5353
server=/hang.test/127.0.0.3#53
address=/rebound.test/127.0.0.5
# Every hanging lookup waits (the default of 150 answers the rest at once).
dns-forward-max=2000
log-queries
log-facility=$work/dnsmasq.log
EOF
echo "nameserver 127.0.0.1" >"$work/resolv.conf"

unshare -n -m bash -euo pipefail -c '
  ip link set lo up
  mount --bind "$work/resolv.conf" /etc/resolv.conf
  dnsmasq -C "$work/signer.conf" --pid-file="$work/signer.pid"
  dnsmasq -C "$work/resolver.conf" --pid-file="$work/resolver.pid"
  trap "kill \$(cat $work/signer.pid) \$(cat $work/resolver.pid)" EXIT
  for name in api.servfail.test api.rebound.test; do
    echo "getent ahosts $name: $(getent ahosts "$name" | head -1 || echo "exit $?")"
  done
  grep -m2 -E "servfail.test.*(BOGUS|SERVFAIL)|validation.*servfail" "$work/dnsmasq.log" || true
  run() {
    echo "== FITBIT_PROXY_DNS_FAILING=$1"
    FITBIT_PROXY_DNS_FAILING=$1 FITBIT_PROXY_DNS_REBOUND=api.rebound.test \
      FITBIT_PROXY_DNS_BURST=500 \
      cargo test --locked --offline --test upstream_dns -- --nocapture --test-threads 1 2>&1 |
      grep -E "^test |requests for|threads:|->|^test result|panicked" || true
  }
  run api.servfail.test
  run api.hang.test
'
