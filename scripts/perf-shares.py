#!/usr/bin/env python3
"""Shares of samples from folded stacks (scripts/perf-fold.py): per function inclusive
(on the stack) and self (the leaf), or, with a pattern, only the functions it matches.

    python3 scripts/perf-shares.py folded.txt              # top inclusive and self
    python3 scripts/perf-shares.py folded.txt 'jetinfer'   # inclusive, matching functions
"""
import collections
import re
import sys

total = 0
inclusive = collections.Counter()
leaf = collections.Counter()
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    total += n
    fs = stack.split(";")
    for f in set(fs):
        inclusive[f] += n
    leaf[fs[-1]] += n
pattern = re.compile(sys.argv[2]) if len(sys.argv) > 2 else None
print("samples", total)
print("== inclusive")
shown = 0
for f, n in inclusive.most_common():
    if pattern and not pattern.search(f):
        continue
    print(f"{100 * n / total:6.2f}% {f[:160]}")
    shown += 1
    if shown >= 80:
        break
if not pattern:
    print("== self")
    for f, n in leaf.most_common(40):
        print(f"{100 * n / total:6.2f}% {f[:160]}")
