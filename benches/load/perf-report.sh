#!/usr/bin/env bash
# The readable part of a `perf record --call-graph dwarf` profile of
# fitbit-proxy (profile.sh writes one): kernel and user-space shares, the
# top frames by self time, inclusive time, and malloc/free/memmove charged
# to their callers (fold.py).
#
#   bash benches/load/perf-report.sh PERF_DATA > perf-top.txt
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=$1
# `head` closes the pipes early: no pipefail here.
section() { grep -v '^#' | grep -v '^$' | head -"$1" || true; }
echo "## Kernel and user space, by self time"
perf report -i "$data" --no-children --sort dso --stdio -g none 2>/dev/null | section 12
echo
echo "## Top frames by self time (user space)"
perf report -i "$data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
    grep -v 'kernel.kallsyms' | section 40
echo
echo "## Top frames by self time (all)"
perf report -i "$data" --no-children --sort sym --stdio -g none 2>/dev/null | section 25
echo
echo "## Inclusive time (children), user space"
perf report -i "$data" --children --sort sym --stdio -g none 2>/dev/null | grep -v '\[k\]' | section 60
echo
perf script -i "$data" -F comm,ip,sym --no-inline 2>/dev/null | python3 "$here/fold.py" 40
