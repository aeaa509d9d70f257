#!/usr/bin/env bash
# Packs this machine's perf with every library it loads, its loader included, into
# .gpu-perf/perf.tgz, for profiles on the GPU machine (which has no perf); scripts/gpu-bench.sh
# runs it through the packed loader, so the GPU machine's own libc is never mixed in.
set -euo pipefail
cd "$(dirname "$0")/.."
PERF=$(command -v perf) || { echo "no perf here (apt-get install linux-perf)" >&2; exit 1; }
T=$(mktemp -d) && trap 'rm -rf "$T"' EXIT
mkdir -p "$T/perf/lib" .gpu-perf
cp "$PERF" "$T/perf/perf"
for lib in $(ldd "$PERF" | grep -o '/[^ ]*\.so[^ ]*'); do cp -L "$lib" "$T/perf/lib/"; done
tar -czf .gpu-perf/perf.tgz -C "$T" perf
du -h .gpu-perf/perf.tgz
