#!/usr/bin/env python3
"""Folds `perf script` output (samples with call chains) into one line per distinct stack,
root first: `frame;frame;...;leaf count`. Read the result with scripts/perf-shares.py.

    perf script -i perf.data | python3 scripts/perf-fold.py > folded.txt
"""
import collections
import re
import sys


def frames(lines):
    """Yields each sample's frames, leaf first."""
    cur = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if cur:
                yield cur
            cur = []
        elif line[0] in " \t":
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                # "addr symbol+0xoff (dso)" -> "symbol"
                sym = re.sub(r"\s+\(\S+\)$", "", parts[1])
                cur.append(re.sub(r"\+0x[0-9a-f]+$", "", sym))
        else:
            cur = []  # a sample's header line: its frames follow
    if cur:
        yield cur


stacks = collections.Counter(";".join(reversed(f)) for f in frames(sys.stdin))
for stack, n in stacks.most_common():
    print(stack, n)
