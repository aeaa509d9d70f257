#!/usr/bin/env python3
"""Reads what scripts/cpu-sampler.sh wrote and prints, per process, its user and system CPU
and context switches per second over its busy seconds (those above --busy of a core),
and, given each system's jobs/s, the same per job.

    scripts/cpu-split.py samples.tsv [--jobs label=jobs_per_s ...] [--busy 0.05]
"""
import argparse
import collections
import os

ap = argparse.ArgumentParser()
ap.add_argument("tsv")
ap.add_argument("--jobs", nargs="*", default=[], help="label=jobs_per_s (a label of cpu-sampler.sh)")
ap.add_argument("--busy", type=float, default=0.05)
a = ap.parse_args()
hz = os.sysconf("SC_CLK_TCK")
jobs = dict((k, float(v)) for k, v in (j.split("=") for j in a.jobs))
series = collections.defaultdict(list)
for line in open(a.tsv):
    f = line.split()
    if len(f) < 8:
        continue
    t, name, pid, ut, st, vol, inv, n = f[:8]
    series[(name, pid)].append((int(t) / 1000, int(ut), int(st), int(vol), int(inv), int(n)))
print(f"{'process':28} {'busy s':>6} {'cores':>6} {'user %':>6} {'ctxsw/s vol':>12} {'invol':>8} {'thr':>4}  per job (µs user+sys, switches)")
for (name, pid), s in sorted(series.items(), key=lambda kv: kv[1][0][0]):
    tot = [0.0] * 5
    for a0, b0 in zip(s, s[1:]):
        dt = b0[0] - a0[0]
        du, ds = (b0[1] - a0[1]) / hz, (b0[2] - a0[2]) / hz
        if dt <= 0 or (du + ds) / dt < a.busy:
            continue
        for i, v in enumerate((dt, du, ds, b0[3] - a0[3], b0[4] - a0[4])):
            tot[i] += v
    dt, du, ds, vol, inv = tot
    if dt == 0:
        continue
    cpu = du + ds
    line = f"{name[:20]+' '+pid:28} {dt:6.1f} {cpu/dt:6.2f} {100*du/max(cpu,1e-9):6.1f} {vol/dt:12.0f} {inv/dt:8.0f} {s[-1][5]:4}"
    rate = jobs.get(name)
    if rate:
        line += f"  {1e6*du/dt/rate:.1f}+{1e6*ds/dt/rate:.1f} µs, {(vol+inv)/dt/rate:.2f}"
    print(line)
