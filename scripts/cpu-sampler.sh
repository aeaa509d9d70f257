#!/usr/bin/env bash
# Samples, once a second, each process whose command line matches one of the patterns:
# user and system CPU ticks (/proc/PID/stat, whole process) and the voluntary and
# involuntary context switches summed over its threads (/proc/PID/task/*/status).
#   scripts/cpu-sampler.sh OUT.tsv jetinfer-dispatcher jetinfer-worker 'python=^python3 w.py' &
# A pattern may carry a label (`label=pattern`, for patterns with spaces).
# Lines: unix_ms label pid utime_ticks stime_ticks voluntary involuntary threads
# (ticks are 1/`getconf CLK_TCK` s). Read it with scripts/cpu-split.py.
out=$1; shift
while :; do
  now=$(date +%s%3N)
  for arg in "$@"; do
    label=${arg%%=*} pat=${arg#*=}
    for pid in $(pgrep -f -- "$pat"); do
      [ -r /proc/$pid/stat ] || continue
      # Not this sampler (its subshells share its command line).
      grep -qa cpu-sampler /proc/$pid/cmdline 2>/dev/null && continue
      read -r ut st < <(sed 's/.*) //' /proc/$pid/stat | awk '{print $12, $13}')
      vol=0; inv=0; n=0
      for s in /proc/$pid/task/*/status; do
        while read -r k v; do
          case $k in voluntary_ctxt_switches:) vol=$((vol+v));; nonvoluntary_ctxt_switches:) inv=$((inv+v)); n=$((n+1));; esac
        done < "$s" 2>/dev/null
      done
      echo "$now $label $pid $ut $st $vol $inv $n"
    done
  done >> "$out"
  sleep 1
done
