#!/usr/bin/env python3
"""Reads `perf script -F comm,ip,sym --no-inline` and prints, for user-space
samples, where the time goes: the leaf frame and the first caller outside
the allocator, libc and core/alloc/std glue (so that malloc and memmove
are charged to whoever asked for them).

usage: perf script -i perf.data -F comm,ip,sym --no-inline | fold.py [N]
"""
import collections
import re
import sys

GLUE = re.compile(
    r"^(malloc|free|cfree|_int_|__memmove|__memcpy|__memset|__memcmp|realloc|unlink_chunk|"
    r"malloc_consolidate|__libc|_?__GI|core::|alloc::|std::|<alloc::|<core::|<std::|\[unknown\])"
)


def samples(lines):
    stack = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
        elif line.startswith("\t") or line.startswith(" " * 8):
            parts = line.strip().split(" ", 1)
            stack.append(parts[1] if len(parts) > 1 else "?")
    if stack:
        yield stack


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    total = 0
    kernel = 0
    pairs = collections.Counter()
    owners = collections.Counter()
    for stack in samples(sys.stdin):
        total += 1
        leaf = stack[0]
        if re.match(r"^[0-9a-f]{16} ", leaf) or stack[0].startswith("ffffffff"):
            kernel += 1
        caller = next((f for f in stack[1:] if not GLUE.match(f)), "?")
        if GLUE.match(leaf):
            pairs[(leaf[:60], caller[:110])] += 1
        owner = next((f for f in stack if not GLUE.match(f)), "?")
        owners[owner[:140]] += 1
    print(f"{total} samples")
    print("\n## Allocator and copies, by the caller that asked (% of all samples)")
    for (leaf, caller), c in pairs.most_common(n):
        print(f"{100 * c / total:5.2f}%  {leaf:<40} <- {caller}")
    print("\n## Self time by first frame outside the allocator and std glue")
    for owner, c in owners.most_common(n):
        print(f"{100 * c / total:5.2f}%  {owner}")


if __name__ == "__main__":
    main()
