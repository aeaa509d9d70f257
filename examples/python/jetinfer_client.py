#!/usr/bin/env python3
"""A jetinfer client in Python, written from docs/wire-format.md alone.

Library use (asyncio; msgpack, numpy, nats-py, redis-py):

    nc = await nats.connect(url); js = nc.jetstream()
    r = redis.asyncio.Redis.from_url(redis_url)
    await submit(js, "p1", "mlp", [np.zeros(16, np.float32)], "py-123")
    result = await get_result(r, "py-123")   # None until finished, then a dict

Command line: publishes golden samples of one model as jobs, waits for their results in
Redis and compares them with the golden outputs; exits 0 only when all match.

    python examples/python/jetinfer_client.py --nats-url nats://127.0.0.1:4222 \
        --redis-url redis://127.0.0.1:6379 --golden models/out/golden.json --model mlp --count 20
    python examples/python/jetinfer_client.py --selftest   # encoding check, no servers
"""
import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np

SCHEMA_VERSION = 1
KEY_PREFIX = "jetinfer"
PRIORITIES = ("p0", "p1", "p2")
JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MODEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Wire dtype -> numpy dtype (little-endian). bf16 has no numpy type: see to_numpy.
DTYPES = {"f32": "<f4", "f16": "<f2", "f64": "<f8", "i64": "<i8", "i32": "<i4",
          "i16": "<i2", "i8": "i1", "u8": "u1", "bool": "?"}
NUMPY_TO_WIRE = {np.dtype(v): k for k, v in DTYPES.items()}

# The example job of docs/wire-format.md section 9.1, byte for byte.
JOB_HEX = ("84a17601a26964a26a31a56d6f64656ca36d6c70a6696e707574739183a56474797065a3663332"
           "a573686170659102a464617461c4080000803f00000040")
# The minimal error result of section 9.2.
ERROR_RESULT_HEX = ("85a17601a26964a16aa6737461747573a56572726f72a56d6f64656ca16d"
                    "a56572726f7282a4636f6465ab6261645f7061796c6f6164a76d657373616765a178")


def tensor(sample) -> dict:
    """One sample (no batch dimension) as a wire Tensor: little-endian, row-major bytes."""
    a = np.asarray(sample)
    wire = NUMPY_TO_WIRE.get(a.dtype.newbyteorder("<"))  # the type, whatever its byte order
    if wire is None:
        raise ValueError(f"dtype {a.dtype} has no jetinfer wire type")
    data = np.ascontiguousarray(a, dtype=DTYPES[wire]).tobytes()
    return {"dtype": wire, "shape": [int(d) for d in a.shape], "data": data}


def to_numpy(t: dict) -> np.ndarray:
    """A wire Tensor as a numpy array of its shape."""
    if t["dtype"] == "bf16":
        bits = np.frombuffer(t["data"], "<u2").astype("<u4") << 16
        return bits.view("<f4").reshape(t["shape"])
    return np.frombuffer(t["data"], DTYPES[t["dtype"]]).reshape(t["shape"])


def encode_job(job_id: str, model: str, inputs, deadline_ms=None, version=None, cache=None, meta=None) -> bytes:
    """The Job map as MessagePack; inputs are numpy samples or ready wire Tensor dicts."""
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} is not [A-Za-z0-9._:-]{{1,128}}")
    if not MODEL_NAME.fullmatch(model):
        raise ValueError(f"model name {model!r} is not [A-Za-z0-9_-]{{1,64}}")
    job = {"v": SCHEMA_VERSION, "id": job_id, "model": model}
    if version is not None:
        job["version"] = version
    job["inputs"] = [t if isinstance(t, dict) else tensor(t) for t in inputs]
    for key, value in (("deadline_ms", deadline_ms), ("cache", cache), ("meta", meta)):
        if value is not None:
            job[key] = value
    return msgpack.packb(job, use_bin_type=True)


def decode_result(raw: bytes) -> dict:
    """A stored result with the documented defaults filled in for absent keys."""
    r = msgpack.unpackb(raw, raw=False)
    defaults = {"version": "", "outputs": [], "meta": {}, "worker": "", "cached": False, "attempts": 0,
                "completed_at_ms": 0}
    for key, value in defaults.items():
        r.setdefault(key, value)
    r["timings"] = {"queued_ms": 0.0, "batch_size": 0, "compute_ms": 0.0, "total_ms": 0.0, **r.get("timings", {})}
    return r


def result_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:result:{job_id}"


async def submit(js, priority, model: str, inputs, job_id: str, deadline_ms=None):
    """Publishes a job on jetinfer.jobs.<priority>.<model> with Nats-Msg-Id and returns the
    JetStream ack (its `duplicate` is true when this id was already accepted)."""
    priority = f"p{priority}" if isinstance(priority, int) else str(priority).lower()
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {PRIORITIES}")
    payload = encode_job(job_id, model, inputs, deadline_ms=deadline_ms)
    return await js.publish(f"jetinfer.jobs.{priority}.{model}", payload, headers={"Nats-Msg-Id": job_id})


async def get_result(redis, job_id: str):
    """The job's result as a dict, or None while it is not finished."""
    raw = await redis.get(result_key(job_id))
    return None if raw is None else decode_result(raw)


def golden_samples(golden_path: Path, model: str, count: int):
    """(inputs, outputs) per sample, cycling through the model's golden sets."""
    index = json.loads(golden_path.read_text())
    entry = next((m for m in index["models"] if m["name"] == model), None)
    if entry is None:
        raise SystemExit(f"{golden_path}: no model {model!r}")
    root = golden_path.parent
    sets = [([np.load(root / p) for p in s["inputs"]], [np.load(root / p) for p in s["outputs"]], s["samples"])
            for s in entry["sets"]]
    samples = []
    while len(samples) < count:
        for k in range(max(n for _, _, n in sets)):
            for ins, outs, n in sets:
                if k < n and len(samples) < count:
                    samples.append(([a[k] for a in ins], [a[k] for a in outs]))
    return samples


def mismatch(result: dict, expected) -> str:
    """Why a result differs from the golden outputs ("" when it matches)."""
    if result["status"] != "ok":
        err = result.get("error") or {}
        return f"status {result['status']} ({err.get('code')}: {err.get('message')})"
    if len(result["outputs"]) != len(expected):
        return f"{len(result['outputs'])} outputs, expected {len(expected)}"
    for j, (t, want) in enumerate(zip(result["outputs"], expected)):
        got = to_numpy(t)
        if got.shape != want.shape:
            return f"output {j} shape {list(got.shape)}, expected {list(want.shape)}"
        tol = 2e-2 if t["dtype"] in ("f16", "bf16") else 1e-4  # half precision is looser
        if not np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol):
            return f"output {j} differs by {np.abs(got.astype(np.float64) - want).max():.3g}"
    return ""


def redis_url(url: str) -> str:
    return "unix://" + url[len("redis+unix://"):] if url.startswith("redis+unix://") else url


async def run(args) -> int:
    import nats
    import redis.asyncio as aioredis

    samples = golden_samples(Path(args.golden), args.model, args.count)
    nc = await nats.connect(args.nats_url)
    r = aioredis.Redis.from_url(redis_url(args.redis_url))
    try:
        js = nc.jetstream()
        ids = [f"py-{uuid.uuid4()}" for _ in samples]
        start = time.monotonic()
        for job_id, (inputs, _) in zip(ids, samples):
            await submit(js, args.priority, args.model, inputs, job_id)
        results, nap = {}, 0.02
        while len(results) < len(ids) and time.monotonic() - start < args.timeout:
            pending = [i for i in ids if i not in results]
            for job_id, raw in zip(pending, await r.mget([result_key(i) for i in pending])):
                if raw is not None:
                    results[job_id] = decode_result(raw)
            if len(results) < len(ids):
                await asyncio.sleep(nap)
                nap = min(nap * 2, 0.5)
        elapsed = time.monotonic() - start
    finally:
        await r.aclose()
        await nc.close()

    bad = {i: mismatch(results[i], out) for i, (_, out) in zip(ids, samples) if i in results}
    bad = {i: why for i, why in bad.items() if why}
    for job_id, why in list(bad.items())[:5]:
        print(f"  {job_id}: {why}", file=sys.stderr)
    missing = len(ids) - len(results)
    totals = sorted(res["timings"]["total_ms"] for res in results.values())
    p50 = f"{totals[len(totals) // 2]:.1f} ms" if totals else "-"
    ok = not bad and not missing
    print(f"{'PASS' if ok else 'FAIL'} {args.model}: {len(results) - len(bad)}/{len(ids)} match, "
          f"{len(bad)} wrong, {missing} missing after {elapsed:.2f} s (p50 total {p50})")
    return 0 if ok else 1


def selftest() -> int:
    """Checks the encoder and decoder against the documented bytes; needs no servers."""
    job = encode_job("j1", "mlp", [np.array([1.0, 2.0], dtype=np.float32)])
    assert job.hex() == JOB_HEX, f"job encoding differs:\n  got  {job.hex()}\n  want {JOB_HEX}"
    r = decode_result(bytes.fromhex(ERROR_RESULT_HEX))
    assert r["status"] == "error" and r["error"]["code"] == "bad_payload" and r["outputs"] == []
    for sample in (np.arange(6, dtype=np.uint8).reshape(2, 3), np.float16([1.5, -2]), np.int64(7)):
        back = to_numpy(msgpack.unpackb(msgpack.packb(tensor(sample), use_bin_type=True)))
        assert back.dtype == sample.dtype and np.array_equal(back, sample), sample
    print("selftest: ok (job bytes match JOB_HEX, error result and tensors decode)")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description="jetinfer Python client: golden-sample check")
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379",
                   help="redis://host:port, unix:///path or redis+unix:///path")
    p.add_argument("--golden", default="models/out/golden.json")
    p.add_argument("--model", default="mlp")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--priority", default="p1", choices=PRIORITIES)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for all results")
    p.add_argument("--selftest", action="store_true", help="check the encoding against the docs and exit")
    args = p.parse_args()
    if args.selftest:
        return selftest()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
