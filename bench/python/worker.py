#!/usr/bin/env python3
"""The Python baseline for `jetinfer bench --python-worker`: the worker a team would write
following the usual pattern, consuming the same JetStream stream and writing the same
result keys and completion notices as jetinfer, so the benchmark measures both the same way.

    NATS_URL=… REDIS_URL=… JETINFER_MODELS=models.toml python3 bench/python/worker.py

The pattern: one nats-py durable pull consumer on `jetinfer.jobs.>` (all priorities, in
arrival order: no priority scheduling), `torch.jit.load` of each model in the models TOML
(device and dtype as configured), batches of up to the model's `max_batch_size` fetched
with the model's `max_queue_delay_ms` (at least 5 ms) as the fetch timeout, inputs stacked with numpy
(padded to the longest job when the model has `pad`), one forward under inference_mode,
one redis-py pipeline per batch (`SET NX PX`, as jetinfer), a `jetinfer.done.<id>` notice
per job, then acks. One loop, one batch at a time. Needs nats-py, redis, msgpack, numpy,
torch; Python ≥ 3.11 (tomllib).
"""
import asyncio
import os
import sys
import time
import tomllib
from pathlib import Path

import msgpack
import nats
import numpy as np
import redis.asyncio as aioredis
import torch

DTYPES = {"f32": "<f4", "f16": "<f2", "f64": "<f8", "i64": "<i8", "i32": "<i4",
          "i16": "<i2", "i8": "i1", "u8": "u1", "bool": "?"}
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}
WIRE = {torch.float32: "f32", torch.float16: "f16", torch.float64: "f8", torch.int64: "i64",
        torch.int32: "i32", torch.uint8: "u8", torch.bool: "bool", torch.bfloat16: "bf16"}
STREAM = "JETINFER_JOBS"
RESULT_TTL_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


class Model:
    def __init__(self, cfg: dict, base: Path):
        self.cfg = cfg
        self.name = cfg["name"]
        self.version = cfg["version"]
        self.device = torch.device(cfg.get("device", "cpu"))
        self.dtype = TORCH_DTYPES.get(cfg.get("dtype", "f32"), torch.float32)
        self.max_batch = int(cfg["max_batch_size"])
        self.delay_s = max(int(cfg.get("max_queue_delay_ms", 2)), 1) / 1000.0
        self.pad = cfg.get("pad")
        path = Path(cfg["path"])
        self.module = torch.jit.load(str(path if path.is_absolute() else base / path), map_location=self.device)
        self.module.eval()
        if self.dtype != torch.float32:
            self.module.to(self.dtype)

    def stack(self, jobs, i):
        arrays = [np.frombuffer(j["inputs"][i]["data"], DTYPES[j["inputs"][i]["dtype"]]).reshape(j["inputs"][i]["shape"]) for j in jobs]
        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            return np.stack(arrays)
        if self.pad is None:
            raise ValueError("jobs of different shapes and no pad")
        target = tuple(max(s) for s in zip(*shapes))
        out = np.full((len(arrays),) + target, self.pad[i], dtype=arrays[0].dtype)
        for k, a in enumerate(arrays):
            out[(k,) + tuple(slice(0, d) for d in a.shape)] = a
        return out

    def run(self, jobs):
        args = []
        for i in range(len(jobs[0]["inputs"])):
            t = torch.from_numpy(self.stack(jobs, i)).to(self.device)
            if t.is_floating_point():
                t = t.to(self.dtype)
            args.append(t)
        with torch.inference_mode():
            out = self.module(*args)
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        outs = [o.to("cpu").contiguous() for o in outs]
        per_job = []
        for k in range(len(jobs)):
            per_job.append([{"dtype": WIRE[o.dtype], "shape": list(o.shape[1:]), "data": o[k].numpy().tobytes()} for o in outs])
        return per_job


def result(job, outputs, batch_size, compute_ms, error=None):
    r = {"v": 1, "id": job["id"], "status": "ok" if error is None else "error", "model": job["model"],
         "version": "1", "outputs": outputs, "meta": job.get("meta") or {}, "worker": "python-baseline",
         "cached": False, "attempts": 1,
         "timings": {"queued_ms": 0.0, "batch_size": batch_size, "compute_ms": compute_ms, "total_ms": 0.0},
         "completed_at_ms": now_ms()}
    if error is not None:
        r["error"] = {"code": "internal", "message": error}
    return msgpack.packb(r, use_bin_type=True)


async def main() -> int:
    models_path = Path(os.environ["JETINFER_MODELS"])
    prefix = os.environ.get("JETINFER_KEY_PREFIX", "jetinfer")
    cfg = tomllib.loads(models_path.read_text())
    models = {m["name"]: Model(m, models_path.parent) for m in cfg["models"]}
    max_batch = max(m.max_batch for m in models.values())
    # nats-py's fetch needs a server round trip within its timeout: at least 5 ms.
    delay = max(min(m.delay_s for m in models.values()), 0.005)
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    js = nc.jetstream()
    # jetinfer's `redis+unix:///path` is redis-py's `unix:///path`.
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").replace("redis+unix://", "unix://", 1)
    r = aioredis.Redis.from_url(redis_url)
    sub = await js.pull_subscribe("jetinfer.jobs.>", durable="python-baseline", stream=STREAM)
    print(f"python baseline ready: {list(models)}", flush=True)
    while True:
        try:
            msgs = await sub.fetch(batch=max_batch, timeout=delay)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        jobs = [msgpack.unpackb(m.data, raw=False) for m in msgs]
        by_model = {}
        for m, j in zip(msgs, jobs):
            by_model.setdefault(j["model"], []).append((m, j))
        pipe = r.pipeline(transaction=False)
        done = []
        groups = []
        for name, items in by_model.items():
            size = models[name].max_batch if name in models else len(items)
            groups += [(name, [j for _, j in items[k:k + size]]) for k in range(0, len(items), size)]
        for name, group in groups:
            t0 = time.perf_counter()
            try:
                if name not in models:
                    raise KeyError(f"unknown model {name}")
                outs = models[name].run(group)
                err = None
            except Exception as e:  # one bad batch fails its jobs, as a simple worker would
                outs, err = [[] for _ in group], str(e).splitlines()[0]
            ms = (time.perf_counter() - t0) * 1000
            for j, o in zip(group, outs):
                pipe.set(f"{prefix}:result:{j['id']}", result(j, o, len(group), ms, err), nx=True, px=RESULT_TTL_MS)
                done.append(j["id"])
        await pipe.execute()
        for job_id in done:
            await nc.publish(f"jetinfer.done.{job_id}", b"ok")
        for m in msgs:
            await m.ack()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
