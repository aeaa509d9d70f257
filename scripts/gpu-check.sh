#!/usr/bin/env bash
# GPU check, run on the GPU machine from the repo root after scripts/gpu-bundle.sh:
# the demo on a local stack there with one CUDA worker (models.cuda.toml, f16).
# Writes the demo output and process logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
export LD_LIBRARY_PATH="$TORCH_LIB:$PWD/.gpu/services/lib:${LD_LIBRARY_PATH:-}"
export PATH="$PWD/.gpu/services/bin:$PATH"
export JETINFER_NATS_SERVER="$PWD/.gpu/services/bin/nats-server"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
ldd .gpu/bin/jetinfer-worker | grep -E "torch_cuda|c10_cuda"
for jobs in ${JOBS:-600 3000}; do
  .gpu/bin/jetinfer demo --jobs $jobs --workers 1 --models .gpu/models/models.cuda.toml --golden .gpu/models \
    --atol 2e-2 --rtol 2e-2 --log-dir "$OUT/logs-$jobs" 2>&1 | tee "$OUT/demo-$jobs.txt"
  echo "demo exit: $?"
done
grep -h -E "cuda|loaded|CUDA" "$OUT"/logs-600/worker-0.log | head -20
