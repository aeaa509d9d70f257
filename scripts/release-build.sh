#!/usr/bin/env bash
# The services' release build, optimised with a profile of their own queue path (PGO):
#   scripts/release-build.sh                  # binaries in target/pgo/release-bin/
# 1. builds the three binaries instrumented (`-Cprofile-generate`), with the release
#    profile of Cargo.toml (fat LTO, one codegen unit);
# 2. runs them on this machine's real stack: `jetinfer bench` with the trivial model
#    (nats-server, redis-server, dispatcher and worker, a saturated closed loop), which
#    exercises every step of a job's path that does not depend on the model;
# 3. merges the profile (llvm-profdata of the toolchain's llvm-tools component) and builds
#    again with `-Cprofile-use`.
# A plain `cargo build --release` (Dockerfile, scripts/gpu-bench-bundle.sh with PGO=0) gets
# the LTO half of the gain; docs/benchmarks.md ("Whole-program builds") has both measured.
# Needs scripts/setup.sh first. ~20 min on 2 cores from a cold cache (two full builds and
# a 25 s run); a second run took 10 min.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
T=${PGO_TARGET_DIR:-target/pgo}
HOST=$(rustc -vV | sed -n 's/^host: //p')
BINS=(-p jetinfer-cli -p jetinfer-dispatcher -p jetinfer-worker)
# `--target` keeps RUSTFLAGS off build scripts and proc macros: only the binaries'
# own code is instrumented and optimised with the profile.
build() { CARGO_TARGET_DIR=$T RUSTFLAGS="$1" nice cargo build --release --target "$HOST" "${BINS[@]}"; }

SYSROOT=$(rustc --print sysroot)
PROFDATA=$(ls "$SYSROOT"/lib/rustlib/"$HOST"/bin/llvm-profdata 2>/dev/null || true)
if [ -z "$PROFDATA" ]; then
  rustup component add llvm-tools
  PROFDATA=$SYSROOT/lib/rustlib/$HOST/bin/llvm-profdata
fi

RAW=$PWD/$T/pgo-raw
rm -rf "$RAW" && mkdir -p "$RAW"
build "-Cprofile-generate=$RAW"
GEN=$PWD/$T/$HOST/release
MODELS=$PWD/$T/pgo-models
[ -f "$MODELS/models.reference.cpu.toml" ] || python models/export_reference.py --out "$MODELS" --only trivial
"$GEN/jetinfer" bench --models "$MODELS/models.reference.cpu.toml" --model trivial \
  --concurrency 256 --duration-s "${PGO_SECONDS:-20}" --warmup-s 3 \
  --json "$T/pgo-run.json" > "$T/pgo-run.log" 2>&1 || { cat "$T/pgo-run.log"; exit 1; }
"$PROFDATA" merge -o "$T/merged.profdata" "$RAW"
build "-Cprofile-use=$PWD/$T/merged.profdata"
mkdir -p "$T/release-bin"
cp "$GEN"/jetinfer "$GEN"/jetinfer-dispatcher "$GEN"/jetinfer-worker "$T/release-bin/"
echo "PGO build in $T/release-bin/"
