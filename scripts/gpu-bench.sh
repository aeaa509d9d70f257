#!/usr/bin/env bash
# The performance runs of docs/benchmarks.md on the GPU machine (the `device` tool), with
# what scripts/gpu-bench-bundle.sh packed into .gpu-perf/ (carry [".gpu-perf"]):
#   bash scripts/gpu-bench.sh            # all runs, results under $OUT
#   STEPS="resnet minilm" bash scripts/gpu-bench.sh
# Exports the reference models there (torchvision, transformers), then runs `jetinfer bench`
# for: ResNet-50 saturated (+ ceiling, + Python baseline), ResNet-50 at 80 % of that rate
# (Poisson, + Python), MiniLM saturated (+ ceiling), priority isolation on MiniLM (idle vs
# P2 at 2x capacity), and the trivial model's queue path (+ bare loop, + Python); on request
# ResNet-50 with every job inline (resnet-inline), a nats-server CPU profile (profile), the
# services' own profiles on the trivial model (trivial-profile: perf, packed by
# scripts/pack-perf.sh), two or more builds alternating on it (trivial-ab) and settings of the services'
# environment alternating on it (trivial-env).
# Every result goes into $OUT/results.tgz (JSON, SVG, logs) as soon as it exists.
# DRY=1 runs the same steps on this machine's CPU with small models and short durations.
set -uo pipefail
cd "$(dirname "$0")/.."
G=$PWD/.gpu-perf
OUT=${OUT:-/tmp/gpu-bench-out}
RES=/tmp/gpu-bench-res
rm -rf "$RES" && mkdir -p "$RES" "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
pack() { tar -czf "$OUT/results.tgz" -C "$RES" --exclude=./ref . ; }

if [ "${DRY:-0}" = 1 ]; then
  B=target/debug/jetinfer; PY=.venv/bin/python
  IMG=trivial; TXT=tokpool; SAT=4; D=3; W=1; CEIL=1; DYN=4,24
  python=$PY
  $PY models/export_reference.py --out "$RES/ref" --only trivial,tokpool
  M=$RES/ref/models.reference.cpu.toml
else
  # The bundle may carry gzipped binaries (the working tree a call may carry is 64 MiB).
  for f in "$G"/bin/*.gz "$G"/services/bin/*.gz; do [ -e "$f" ] && gunzip -f "$f" && chmod +x "${f%.gz}"; done
  B=$G/bin/jetinfer; python=python3
  TORCH_LIB=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
  export LD_LIBRARY_PATH="$TORCH_LIB:$G/services/lib:${LD_LIBRARY_PATH:-}"
  export PATH="$G/services/bin:$PATH" JETINFER_NATS_SERVER="$G/services/bin/nats-server"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $G/whl/*.whl && export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c 'import torch,sys;print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "python", sys.version.split()[0])'
  nproc; grep -m1 "model name" /proc/cpuinfo
  IMG=resnet50; TXT=minilm; SAT=12; D=10; W=3; CEIL=${CEIL_S:-4}; DYN=16,128
  t0=$(date +%s)
  # EXPORT narrows the models exported (ResNet-50 alone takes most of the export's time).
  python3 models/export_reference.py --out "$RES/ref" --only ${EXPORT:-resnet50,minilm,trivial} || exit 1
  echo "export took $(( $(date +%s) - t0 )) s"
  M=$RES/ref/models.reference.cuda.toml
  rm -f "$RES"/ref/*.pt.bak
fi
PYW="$python bench/python/worker.py"
# NO_PYTHON=1 leaves the Python baseline out (it adds ~40 s per run); PULL sets the
# dispatcher's --pull-batch for the MiniLM runs.
PY_ARGS=(--python-worker "$PYW"); [ "${NO_PYTHON:-0}" = 1 ] && PY_ARGS=()
PULL=${PULL:-32}
# STORES=N gives the ResNet-50 runs N extra redis-servers for the inputs sent by reference
# (`jetinfer bench --input-stores`).
ST_ARGS=(--input-stores "${STORES:-0}")
jobs_per_s() { $python -c "import json,sys;r=json.load(open(sys.argv[1]));print([x for x in r['runs'] if x['system']=='jetinfer'][0]['jobs_per_s'])" "$1"; }
# LINGER: a models file (in M) whose trivial model has that linger_ms (docs/models.md); the
# caller keeps the previous M in M0 to restore it.
with_linger() {
  [ -n "${LINGER:-}" ] || return 0
  sed "/^name = \"trivial\"/a linger_ms = $LINGER" "$M" > "$RES/ref/models.linger$LINGER.toml"
  M=$RES/ref/models.linger$LINGER.toml
}
# PERF: a perf command, or empty: the host's, else .gpu-perf/perf.tgz (scripts/pack-perf.sh:
# perf with every library it loads, its own loader included, so the host's libc is not mixed in).
find_perf() {
  PERF=$(command -v perf || true)
  if [ -z "$PERF" ] && [ -f "$G/perf.tgz" ]; then
    tar -xzf "$G/perf.tgz" -C /tmp && PERF="/tmp/perf/lib/ld-linux-x86-64.so.2 --library-path /tmp/perf/lib /tmp/perf/perf"
  fi
}
bench() { # name, args...
  local name=$1; shift
  echo "=== $name: jetinfer bench $*"
  local t=$(date +%s) sampler=
  # SAMPLE=1: user/system CPU and context switches of the services, once a second
  # (scripts/cpu-sampler.sh; read with scripts/cpu-split.py).
  if [ "${SAMPLE:-0}" = 1 ]; then
    scripts/cpu-sampler.sh "$RES/$name-cpu.tsv" jetinfer-dispatcher jetinfer-worker "python=^[^ ]*python[^ ]* bench/python/worker.py" nats-server redis-server & sampler=$!
  fi
  $B bench --models "$M" --json "$RES/$name.json" --svg "$RES/$name.svg" --log-dir "$RES/logs-$name" --label "$name" "$@"
  echo "=== $name exit $? in $(( $(date +%s) - t )) s"
  [ -n "$sampler" ] && kill "$sampler"
  pack
}

for step in ${STEPS:-ceilings resnet minilm isolation trivial}; do case $step in
ceilings)
  # The model alone, libtorch's JIT optimisation on and off (varying batch sizes show the difference).
  for jit in 1 0; do
    JETINFER_JIT_OPTIMIZE=$jit ${B%/*}/jetinfer-worker ceiling --models "$M" --model $IMG --seconds $CEIL | tee "$RES/ceiling-$IMG-jit$jit.json"
    JETINFER_JIT_OPTIMIZE=$jit ${B%/*}/jetinfer-worker ceiling --models "$M" --model $TXT --seconds $CEIL --dyn-len ${DYN#*,} | tee "$RES/ceiling-$TXT-jit$jit.json"
  done; pack
  # Keep the setting under which the model ran faster with varying batch sizes.
  best=$($python -c "import json,sys;a,b=(json.loads(open(f).read().strip().splitlines()[-1]) for f in sys.argv[1:]);print(1 if a['varying_batch_jobs_per_s']>=b['varying_batch_jobs_per_s'] else 0)" "$RES/ceiling-$IMG-jit1.json" "$RES/ceiling-$IMG-jit0.json")
  export JETINFER_JIT_OPTIMIZE=$best; echo "JETINFER_JIT_OPTIMIZE=$best from here on"
  ;;
resnet-mem)
  # The same with the stream in memory (the broker's disk out of the path), then 80 % of
  # that rate, Poisson.
  RC=${RC:-512}
  bench resnet-sat-memory --model $IMG --concurrency $RC --duration-s $SAT --warmup-s $W --storage memory "${ST_ARGS[@]}" \
    --ceiling --ceiling-seconds $CEIL --dispatcher-arg "--in-flight 64,$((2*RC)),256" --worker-arg "--slots $RC"
  C=$(jobs_per_s "$RES/resnet-sat-memory.json")
  R=$($python -c "print(round(0.8*$C))")
  bench resnet-80pct-memory --model $IMG --rate "$R" --arrival poisson --duration-s $D --warmup-s $W --storage memory "${ST_ARGS[@]}" \
    --dispatcher-arg "--in-flight 64,$((2*RC)),256" --worker-arg "--slots $RC"
  ;;
resnet-mem-t4)
  # The memory run with 4 runtime threads per process instead of one per core.
  bench resnet-sat-memory-t4 --model $IMG --concurrency 512 --duration-s $SAT --warmup-s $W --storage memory \
    --dispatcher-arg "--in-flight 64,1024,256 --threads 4" --worker-arg "--slots 512 --threads 4"
  ;;
minilm-2k)
  # More jobs in flight (MC, default 2048): does throughput follow (latency-bound) or not
  # (a limit)?
  MC=${MC:-2048}
  bench minilm-sat-c$MC --model $TXT --concurrency $MC --duration-s $SAT --warmup-s $W --ceiling --ceiling-seconds $CEIL \
    --dyn-len $DYN --dispatcher-arg "--in-flight 64,$((2*MC)),256 --pull-batch $PULL" --worker-arg "--slots $MC"
  ;;
sim-parts)
  # MiniLM's jobs (two i64 token inputs of 16-128, max batch 256) served by the simulated
  # device (worker/src/sim.rs: SIM_MS per batch, no GPU) on SIM_WORKERS workers (1 2),
  # over PARTS partitions (4): what the queue path alone carries, and whether a second
  # worker doubles it (a per-worker limit) or not (the dispatcher's or the broker's).
  MC=${MC:-2048}; PARTS=${PARTS:-4}
  printf '[[models]]\nname = "minisim"\nversion = "1"\nmax_batch_size = 256\nmax_queue_delay_ms = 2\ninputs = [{ dtype = "i64", shape = [-1] }, { dtype = "i64", shape = [-1] }]\npad = [0, 0]\nshape_buckets = true\nsim = { batch_ms = %s }\n' "${SIM_MS:-1.0}" > "$RES/sim.toml"
  M0=$M; M=$RES/sim.toml
  for w in ${SIM_WORKERS:-1 2}; do
    bench sim-p$PARTS-w$w --model minisim --workers $w --concurrency $MC --duration-s $SAT --warmup-s $W \
      --dyn-len $DYN --dispatcher-arg "--in-flight 64,$((2*MC)),256 --pull-batch $PULL ${DX:-}" --partitions $PARTS --worker-arg "--slots $MC ${WX:-}"
  done
  M=$M0
  ;;
minilm-open)
  # Open loop: MiniLM offered at RATE jobs/s (Poisson) over PARTS partitions (4): the rate
  # served when offered more than capacity, free of the closed loop's latency coupling.
  RATE=${RATE:-60000}; PARTS=${PARTS:-4}
  bench minilm-open-$RATE-p$PARTS --model $TXT --rates "0,$RATE,0" --arrival poisson --max-publishing 4096 --duration-s $SAT --warmup-s $W --drain-s 30 \
    --dyn-len $DYN --dispatcher-arg "--in-flight 64,4096,256 --pull-batch $PULL" --partitions $PARTS --worker-arg "--slots 2048"
  ;;
minilm-parts|minilm-parts-profile)
  # Each priority spread over n partition streams for each n in PARTS (default 4), MC jobs
  # in flight: whether the one-stream limit was the limit. -profile adds nats-server's pprof.
  # BARE=1 adds the bare loop over as many streams (same generator, same jobs);
  # I2=1: two instances per model (models.reference.cuda.i2.toml); DX / WX: more dispatcher
  # / worker arguments; TAG names the variant.
  MC=${MC:-2048}; M0=$M; [ "${I2:-0}" = 1 ] && M=${M%.toml}.i2.toml
  for n in ${PARTS:-4}; do
    if [ $step = minilm-parts-profile ]; then
      export JETINFER_NATS_ARGS="--profile 6061"
      ( sleep 9; exec $python -c "import urllib.request,sys;open(sys.argv[1],'wb').write(urllib.request.urlopen('http://127.0.0.1:6061/debug/pprof/profile?seconds=6',timeout=30).read())" "$RES/nats-minilm-p$n.pprof" ) &
    fi
    bench minilm-sat-p$n${TAG:-} --model $TXT --concurrency $MC --duration-s $SAT --warmup-s $W --ceiling --ceiling-seconds $CEIL \
      --dyn-len $DYN --dispatcher-arg "--in-flight 64,$((2*MC)),256 --pull-batch $PULL ${DX:-}" --partitions $n ${BARE:+--bare-loop} --worker-arg "--slots $MC ${WX:-}"
    unset JETINFER_NATS_ARGS
  done
  M=$M0
  ;;
disk)
  # What the broker's disk takes: sequential writes, 1 MiB blocks, direct I/O, in the
  # folder nats-server stores into (the system temp folder).
  dd if=/dev/zero of="${TMPDIR:-/tmp}/jetinfer-dd" bs=1M count=2048 oflag=direct 2>&1 | tail -1
  rm -f "${TMPDIR:-/tmp}/jetinfer-dd"; df -h "${TMPDIR:-/tmp}" | tail -1
  ;;
resnet-io)
  # Saturated, with redis-server's I/O threads on (the inputs sent by reference cross Redis
  # twice: its one command thread is the next limit).
  JETINFER_REDIS_ARGS="--io-threads 4 --io-threads-do-reads yes" bench resnet-sat-redis-io --model $IMG --concurrency 512 \
    --duration-s $SAT --warmup-s $W --ceiling --ceiling-seconds $CEIL --dispatcher-arg "--in-flight 64,1024,256" --worker-arg "--slots 512"
  ;;
resnet-inline)
  # The same saturated run with every job inline (the path before the claim check), beside
  # the default: what taking the images off the broker gives, per storage.
  for st in file memory; do
    bench resnet-sat-inline-$st --model $IMG --concurrency 512 --duration-s $SAT --warmup-s $W --storage $st \
      --inline-limit 1000000000 --dispatcher-arg "--in-flight 64,1024,256" --worker-arg "--slots 512"
  done
  ;;
profile)
  # nats-server's and the services' CPU profile inside a saturated ResNet-50 run (file storage):
  # Go pprof of nats-server (--profile), fetched 8 s into the run for 6 s.
  export JETINFER_NATS_ARGS="--profile 6061"
  ( sleep 9; exec $python -c "import urllib.request,sys;open(sys.argv[1],'wb').write(urllib.request.urlopen('http://127.0.0.1:6061/debug/pprof/profile?seconds=6',timeout=30).read())" "$RES/nats-resnet-file.pprof" ) & fetch=$!
  bench resnet-sat-profile --model $IMG --concurrency 512 --duration-s $SAT --warmup-s $W \
    --dispatcher-arg "--in-flight 64,1024,256" --worker-arg "--slots 512"
  wait $fetch; unset JETINFER_NATS_ARGS; pack
  ;;
resnet-80pct-batch|resnet-80pct-batch-i2)
  # ResNet-50 at RATE jobs/s (80 % of a saturated run), Poisson, with the model's max batch
  # capped at each of BATCHES: smaller batches take less time each, so a job waits less for
  # the one running, as long as the device still keeps up with the rate. -i2: two
  # instances (two batches on the device at once).
  I=; [ $step = resnet-80pct-batch-i2 ] && I=.i2
  for mb in ${BATCHES:-32 64}; do
    sed "/^name = \"$IMG\"/,/^\[/ s/^max_batch_size = .*/max_batch_size = $mb/" "${M%.toml}$I.toml" > "$RES/ref/models.b$mb$I.toml"
    grep -A12 "name = \"$IMG\"" "$RES/ref/models.b$mb$I.toml" | grep -E "max_batch_size|instances"
    M0=$M; M=$RES/ref/models.b$mb$I.toml
    ${B%/*}/jetinfer-worker ceiling --models "$M" --model $IMG --batch $mb --seconds 2 | tee "$RES/ceiling-$IMG-b$mb$I.json"
    bench resnet-80pct-b$mb$I --model $IMG --rate "${RATE:-7300}" --arrival poisson --duration-s $D --warmup-s $W "${ST_ARGS[@]}" \
      --dispatcher-arg "--in-flight 64,2048,256" --worker-arg "--slots 1024"
    M=$M0
  done
  ;;
resnet-sat0)
  # Saturated only, inputs in the result store alone (no input stores): the same-run
  # baseline for STORES=N.
  RC=${RC:-512}
  bench resnet-sat-stores0 --model $IMG --concurrency $RC --duration-s $SAT --warmup-s $W --ceiling --ceiling-seconds $CEIL \
    --dispatcher-arg "--in-flight 64,$((2*RC)),256" --worker-arg "--slots $RC"
  ;;
resnet)
  # RC jobs in flight (closed loop); the worker holds them all, the dispatcher twice that.
  RC=${RC:-512}
  bench resnet-sat --model $IMG --concurrency $RC --duration-s $SAT --warmup-s $W "${ST_ARGS[@]}" --ceiling --ceiling-seconds $CEIL \
    "${PY_ARGS[@]}" --dispatcher-arg "--in-flight 64,$((2*RC)),256" --worker-arg "--slots $RC"
  C=$(jobs_per_s "$RES/resnet-sat.json")
  R=$($python -c "print(round(0.8*$C))")
  bench resnet-80pct --model $IMG --rate "$R" --arrival poisson --duration-s $D --warmup-s $W "${ST_ARGS[@]}" \
    "${PY_ARGS[@]}" --dispatcher-arg "--in-flight 64,$((2*RC)),256" --worker-arg "--slots $RC"
  ;;
minilm)
  # INTAKE intake tasks per priority in the dispatcher (--intake-tasks).
  bench minilm-sat --model $TXT --concurrency 1024 --duration-s $SAT --warmup-s $W --ceiling --ceiling-seconds $CEIL \
    --dyn-len $DYN --dispatcher-arg "--in-flight 64,2048,256 --pull-batch $PULL --intake-tasks ${INTAKE:-1}" --worker-arg "--slots 1024"
  ;;
minilm-mix)
  # The MiniLM load spread evenly over P0, P1, P2: three streams instead of one, each with
  # the same in-flight cap. Does one stream bound small inline jobs?
  bench minilm-sat-mix --model $TXT --concurrency 1024 --mix 1,1,1 --duration-s $SAT --warmup-s $W \
    --dyn-len $DYN --dispatcher-arg "--in-flight 1024,1024,1024 --pull-batch $PULL" --worker-arg "--slots 1024"
  ;;
minilm-profile)
  # Where a saturated MiniLM run's CPU goes: nats-server's Go pprof and, where perf exists,
  # the dispatcher's and the worker's (8 s into the run, for 6 s).
  export JETINFER_NATS_ARGS="--profile 6061"
  ( sleep 9; exec $python -c "import urllib.request,sys;open(sys.argv[1],'wb').write(urllib.request.urlopen('http://127.0.0.1:6061/debug/pprof/profile?seconds=6',timeout=30).read())" "$RES/nats-minilm-file.pprof" ) & fetch=$!
  find_perf
  if [ -n "$PERF" ]; then
    # The load generator too: in a closed loop its notice handling is part of the latency.
    ( sleep 9; for b in jetinfer-dispatcher jetinfer-worker "jetinfer bench"; do
        pid=$(pgrep -f "bin/$b " | head -1); f=${b/ /-}
        [ -n "$pid" ] && $PERF record -F 499 -g -p "$pid" -o "$RES/perf-$f.data" -- sleep 6 > "$RES/perf-$f.log" 2>&1 &
      done; wait
      for b in jetinfer-dispatcher jetinfer-worker jetinfer-bench; do
        $PERF report -i "$RES/perf-$b.data" --no-children --sort comm,dso,symbol --percent-limit 0.7 --stdio -g none 2>>"$RES/perf-$b.log" | head -120 > "$RES/perf-$b.txt"
        $PERF report -i "$RES/perf-$b.data" --no-children --sort comm --stdio -g none 2>/dev/null | head -40 > "$RES/perf-$b-threads.txt"
        # Inclusive time per function (who the hot leaves above are called from).
        $PERF report -i "$RES/perf-$b.data" --children --sort symbol --percent-limit 3 --stdio -g none 2>/dev/null | head -150 > "$RES/perf-$b-children.txt"; rm -f "$RES/perf-$b.data"
      done ) & perfjob=$!
  fi
  # MC jobs in flight (1024), PROFILE_PARTS partition streams (1).
  PMC=${MC:-1024}
  bench minilm-sat-profile --model $TXT --concurrency $PMC --duration-s $SAT --warmup-s $W \
    --dyn-len $DYN --dispatcher-arg "--in-flight 64,$((2*PMC)),256 --pull-batch $PULL" --partitions ${PROFILE_PARTS:-1} --worker-arg "--slots $PMC"
  wait $fetch; [ -n "${perfjob:-}" ] && wait $perfjob; unset JETINFER_NATS_ARGS; pack
  ;;
resnet-80pct-i2)
  # ResNet-50 at RATE jobs/s (80 % of the two-instance saturated rate), Poisson, two instances.
  M0=$M; M=${M%.toml}.i2.toml
  bench resnet-80pct-i2 --model $IMG --rate "${RATE:-7000}" --arrival poisson --duration-s $D --warmup-s $W "${ST_ARGS[@]}" \
    --dispatcher-arg "--in-flight 64,2048,256" --worker-arg "--slots 1024"
  M=$M0
  ;;
minilm-i2|resnet-i2|resnet-mem-i2)
  # The same saturated runs with two instances per model (instances = 2: two executor
  # threads sharing the module; export_reference.py's models.reference.cuda.i2.toml).
  M0=$M; M=${M%.toml}.i2.toml; RC=${RC:-512}
  case $step in
  minilm-i2) bench minilm-sat-i2 --model $TXT --concurrency 1024 --duration-s $SAT --warmup-s $W --ceiling --ceiling-seconds $CEIL \
    --dyn-len $DYN --dispatcher-arg "--in-flight 64,2048,256 --pull-batch $PULL" --worker-arg "--slots 1024" ;;
  resnet-i2) bench resnet-sat-i2 --model $IMG --concurrency $RC --duration-s $SAT --warmup-s $W "${ST_ARGS[@]}" --ceiling --ceiling-seconds $CEIL \
    --dispatcher-arg "--in-flight 64,$((2*RC)),256" --worker-arg "--slots $RC" ;;
  resnet-mem-i2) bench resnet-sat-memory-i2 --model $IMG --concurrency $RC --duration-s $SAT --warmup-s $W --storage memory "${ST_ARGS[@]}" \
    --ceiling --ceiling-seconds $CEIL --dispatcher-arg "--in-flight 64,$((2*RC)),256" --worker-arg "--slots $RC" ;;
  esac
  M=$M0
  ;;
minilm-bare)
  # MiniLM saturated beside the bare loop carrying the same 2 KB jobs (publish, pull, ack,
  # Redis SET; no dispatcher, no worker, no GPU) with the same load generator and storage:
  # what the broker and the generator carry without jetinfer in the path.
  bench minilm-sat-bare --model $TXT --concurrency 1024 --duration-s $SAT --warmup-s $W --ceiling --ceiling-seconds $CEIL \
    --bare-loop --dyn-len $DYN --dispatcher-arg "--in-flight 64,2048,256 --pull-batch $PULL" --worker-arg "--slots 1024"
  ;;
minilm-intake4)
  bench minilm-sat-intake4 --model $TXT --concurrency 1024 --duration-s $SAT --warmup-s $W \
    --dyn-len $DYN --dispatcher-arg "--in-flight 64,2048,256 --pull-batch $PULL --intake-tasks 4" --worker-arg "--slots 1024"
  ;;
isolation)
  # CAP: the saturated rate to size the loads from (default: this call's minilm step);
  # ISO_PARTS: partition streams per priority.
  C=${CAP:-$(jobs_per_s "$RES/minilm-sat.json")}
  ISO=(); [ -n "${ISO_PARTS:-}" ] && ISO=(--partitions $ISO_PARTS)
  P0=$($python -c "print(round(0.05*$C))"); P2=$($python -c "print(round(2*$C))")
  # The load generator on cores 12-15, the stack on 0-11 (JETINFER_BENCH_CPUS, devkit/src/bench/cpu.rs).
  export JETINFER_BENCH_CPUS=12-15; B="taskset -c 0-11 $B"
  bench isolation-idle --model $TXT --rates "$P0,0,0" --duration-s $D --warmup-s $W --dyn-len $DYN "${ISO[@]}" --dispatcher-arg "--pull-batch $PULL"
  bench isolation-p2x2 --model $TXT --rates "$P0,0,$P2" --duration-s $D --warmup-s $W --dyn-len $DYN --drain-s 60 "${ISO[@]}" --dispatcher-arg "--pull-batch $PULL"
  unset JETINFER_BENCH_CPUS; B=${B#taskset -c 0-11 }
  ;;
trivial-profile)
  # Where the services' CPU per trivial job goes on this host: jetinfer alone, saturated,
  # --threads 1, LINGER as in the trivial step; perf with DWARF call graphs on the
  # dispatcher and the worker for 6 s from 5 s into the run. Leaves folded stacks
  # (scripts/perf-fold.py: read them with scripts/perf-shares.py) and the shares per thread
  # and per library.
  M0=$M; with_linger; find_perf
  if [ -n "$PERF" ]; then
    ( sleep $((W + 5)); for b in jetinfer-dispatcher jetinfer-worker; do
        pid=$(pgrep -f "/$b " | head -1)
        [ -n "$pid" ] && $PERF record -F 999 --call-graph dwarf,16384 -p "$pid" -o "/tmp/perf-$b.data" -- sleep 6 > "$RES/perf-$b.log" 2>&1 &
      done; wait
      for b in jetinfer-dispatcher jetinfer-worker; do
        $PERF report -i "/tmp/perf-$b.data" --no-children --sort comm --stdio -g none 2>/dev/null | head -40 > "$RES/perf-trivial-$b-threads.txt"
        $PERF report -i "/tmp/perf-$b.data" --no-children --sort dso --stdio -g none 2>/dev/null | head -40 > "$RES/perf-trivial-$b-dso.txt"
        $PERF script --no-inline -i "/tmp/perf-$b.data" 2>>"$RES/perf-$b.log" | $python scripts/perf-fold.py > "$RES/perf-trivial-$b-folded.txt"
        rm -f "/tmp/perf-$b.data"
      done ) & perfjob=$!
  else
    echo "no perf here: the run goes on unprofiled"
  fi
  bench trivial-profile --model trivial --concurrency 256 --duration-s 20 --warmup-s $W \
    --dispatcher-arg "--threads 1" --worker-arg "--threads 1"
  [ -n "${perfjob:-}" ] && wait $perfjob; M=$M0; pack
  ;;
trivial-ab)
  # The trivial model's queue path, jetinfer alone, alternating the build in .gpu-perf/bin
  # with earlier ones in .gpu-perf/base/ (gzipped dispatcher and worker, run beside a copy
  # of this jetinfer: the bench finds the services next to itself), PAIRS times (3).
  # LINGER: the trivial model's linger_ms, as in the trivial step. BASE: other folders of
  # .gpu-perf/ to take the earlier builds from (base), each run in turn before this one.
  # ORDER: the order of each round, naming the builds as BASE does and this one `new`
  # (e.g. "new lto base", to see whether a place in the round favours a build).
  M0=$M; with_linger
  for O in ${BASE:-base}; do
    A=/tmp/$O-bin; mkdir -p $A && cp "$B" $A/
    # Gzipped or, to fit two builds in what a call carries, xz-compressed (read with Python's lzma).
    for f in "$G"/$O/*.gz "$G"/$O/*.xz; do
      [ -e "$f" ] || continue; n=$A/$(basename "${f%.*}")
      case $f in *.gz) gunzip -c "$f" > "$n";; *.xz) python3 -c 'import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],"wb"))' "$f" "$n";; esac
      chmod +x "$n"
    done
  done
  B0=$B
  for i in $(seq ${PAIRS:-3}); do
    for which in ${ORDER:-${BASE:-base} new}; do
      B=$B0; [ $which != new ] && B=/tmp/$which-bin/jetinfer
      bench trivial-ab-$which-$i --model trivial --concurrency 256 --duration-s $D --warmup-s $W \
        --dispatcher-arg "--threads 1" --worker-arg "--threads 1"
    done
  done
  B=$B0; M=$M0
  ;;
trivial-env)
  # The trivial model's queue path, jetinfer alone, alternating the services' environment:
  # VARIANTS is a list of VAR=value ("-": none), each run PAIRS times (3) in turn.
  M0=$M; with_linger
  for i in $(seq ${PAIRS:-3}); do
    for v in ${VARIANTS:--}; do
      ( [ "$v" != - ] && export "$v"
        bench trivial-env-${v//[^A-Za-z0-9]/_}-$i --model trivial --concurrency 256 --duration-s $D --warmup-s $W \
          --dispatcher-arg "--threads 1" --worker-arg "--threads 1" )
    done
  done
  M=$M0
  ;;
trivial)
  # THREADS: the services' --threads for each run (default: one run with their default);
  # e.g. THREADS="default 1 4". LINGER: the trivial model's linger_ms (docs/models.md) in
  # the models file both jetinfer and the Python baseline read.
  M0=$M; with_linger
  # CONC: jobs in flight (256), with the dispatcher's P1 in-flight cap at twice CONC (its
  # default, 128, without CONC); SLOTS: the worker's --slots (its default: 128 here).
  # PIN: a CPU list (e.g. 0-1) the whole bench runs on: stack, services, Python baseline
  # and load generator alike, as on a small machine.
  C=${CONC:-256}; B0=$B; [ -n "${PIN:-}" ] && B="taskset -c $PIN $B"
  for t in ${THREADS:-default}; do
    TA=(); [ "$t" != default ] && TA=(--threads $t)
    bench trivial-sat${t/default/}${LINGER:+-linger$LINGER}${CONC:+-c$C}${SLOTS:+-s$SLOTS}${PIN:+-pin$PIN} --model trivial --concurrency $C --duration-s $D --warmup-s $W --bare-loop --bare-relay "${PY_ARGS[@]}" \
      --dispatcher-arg "${CONC:+--in-flight 64,$((2*C)),256} ${TA[*]}" --worker-arg "${SLOTS:+--slots $SLOTS} ${TA[*]}"
  done
  M=$M0; B=$B0
  ;;
esac; done
ls -la "$RES"
for f in "$RES"/*.json; do $python - "$f" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if "runs" not in r:
    sys.exit(0)
print(sys.argv[1].split('/')[-1], {k: round(v, 3) for k, v in r["ratios"].items()})
for x in r["runs"]:
    a = x["all"]["latency_ms"]
    print(f'  {x["system"]:10} {x["jobs_per_s"]:9.1f}/s batch {x["mean_batch_size"]} p50 {a["p50"]:.2f} p99 {a["p99"]:.2f} missing {x["missing"]} errors {x["errors"]}',
          ' '.join(f'{p["priority"]}:p99={p["latency_ms"]["p99"]:.2f}' for p in x["per_priority"]))
PY
done
