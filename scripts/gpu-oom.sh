#!/usr/bin/env bash
# A real CUDA out-of-memory on the GPU machine, through the normal worker path: a model
# that materialises a [batch, N, N] outer product. 32 jobs of N = 30,000 need ~115 GB as one
# batch (more than an 80 GB H100), ~58 GB in halves: the worker must split and answer all
# of them. One job of N = 150,000 needs ~90 GB alone: it must get `resource_exhausted`.
# Run from the repo root on the GPU machine after scripts/gpu-bundle.sh (carry [".gpu"]).
set -uo pipefail
cd "$(dirname "$0")/.."
TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
export LD_LIBRARY_PATH="$TORCH_LIB:$PWD/.gpu/services/lib:${LD_LIBRARY_PATH:-}"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; W=/tmp/oom; rm -rf $W; mkdir -p $W
# TorchScript compiles from source: the exporter must be a file, not stdin.
cat > $W/export.py <<'PY'
import sys, json, torch
w = sys.argv[1]
class Outer(torch.nn.Module):
    def forward(self, x):
        return (x.unsqueeze(-1) * x.unsqueeze(-2)).sum(-1)
torch.jit.script(Outer()).save(f"{w}/outer.pt")
json.dump({"dtype": "f32", "shape": [30000], "data": [(i % 7) / 7 for i in range(30000)]}, open(f"{w}/small.json", "w"))
json.dump({"dtype": "f32", "shape": [150000], "data": [1.0] * 150000}, open(f"{w}/huge.json", "w"))
open(f"{w}/outer.toml", "w").write(f"""[[models]]
name = "outer"
version = "1"
path = "{w}/outer.pt"
device = "cuda:0"
dtype = "f32"
max_batch_size = 32
max_queue_delay_ms = 200
inputs = [{{ dtype = "f32", shape = [-1] }}]
""")
PY
python3 $W/export.py "$W" || { echo "model export failed"; exit 1; }
.gpu/services/bin/nats-server -js -a 127.0.0.1 -p 14222 -sd $W/js > $W/nats.log 2>&1 &
.gpu/services/bin/redis-server --port 16379 --save '' --appendonly no --daemonize yes > /dev/null
sleep 1
N=nats://127.0.0.1:14222; R=redis://127.0.0.1:16379
.gpu/bin/jetinfer-dispatcher --nats-url $N --redis-url $R > $OUT/oom-dispatcher.log 2>&1 &
.gpu/bin/jetinfer-worker --nats-url $N --redis-url $R --models $W/outer.toml --id gpu-0 > $OUT/oom-worker.log 2>&1 &
for _ in $(seq 1 90); do grep -q "worker ready" $OUT/oom-worker.log && break; sleep 1; done
grep -q "worker ready" $OUT/oom-worker.log || { echo "worker not ready"; tail -5 $OUT/oom-worker.log; exit 1; }
pids=()
for i in $(seq 1 32); do
  .gpu/bin/jetinfer --nats-url $N --redis-url $R submit --model outer --id small-$i --no-cache --input $W/small.json > /dev/null &
  pids+=($!)
done
wait "${pids[@]}"   # the submits only, not the servers running in the background
.gpu/bin/jetinfer --nats-url $N --redis-url $R submit --model outer --id huge --no-cache --input $W/huge.json > /dev/null
ok=0
for i in $(seq 1 32); do
  s=$(.gpu/bin/jetinfer --nats-url $N --redis-url $R wait small-$i --timeout-s 20 | python3 -c 'import sys,json; r=json.load(sys.stdin); print(r["status"], r["timings"]["batch_size"])')
  echo "small-$i $s"; [[ $s == ok* ]] && ok=$((ok+1))
done
.gpu/bin/jetinfer --nats-url $N --redis-url $R wait huge --timeout-s 20 | python3 -c 'import sys,json; r=json.load(sys.stdin); print("huge", r["status"], r["error"])'
echo "small jobs ok: $ok/32"
grep -E "out of device memory|safe_batch" $OUT/oom-worker.log | sed 's/\x1b\[[0-9;]*m//g' | head -5
