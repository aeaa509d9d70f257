#!/usr/bin/env python3
"""A jetinfer client in Python, written from docs/wire-format.md alone.

Library use (asyncio; msgpack, numpy, blake3, nats-py, redis-py):

    nc = await nats.connect(url); js = nc.jetstream()
    r = redis.asyncio.Redis.from_url(redis_url)
    await submit(js, r, "p1", "mlp", [np.zeros(16, np.float32)], "py-123")
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
import struct
import sys
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
from blake3 import blake3

SCHEMA_VERSION = 1
KEY_PREFIX = "jetinfer"
PRIORITIES = ("p0", "p1", "p2")
JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MODEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
INLINE_LIMIT = 32 * 1024        # bytes of tensor data from which inputs go by reference
INPUTS_TTL_MS = 3_600_000       # stored inputs of a job without deadline live 1 h,
INPUTS_TTL_MARGIN_MS = 60_000   # else until a minute past the deadline

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
# The digest test vector of section 8: the inputs of the 9.1 job.
DIGEST_VECTOR = "616909a58984fc5a61a53d6e9a25dad25c527795275b4855a6d41d84282e30e6"
# Those inputs sent by reference: the job of section 9.4 and the stored value of 9.5.
REF_JOB_HEX = ("85a17601a26964a26a32a56d6f64656ca36d6c70a6696e7075747390aa696e707574735f726566"
               "82a5627974657323a6646967657374d940" + DIGEST_VECTOR.encode().hex())
STORED_INPUTS_HEX = "9183a56474797065a3663332a573686170659102a464617461c4080000803f00000040"


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


def inputs_digest(tensors) -> str:
    """BLAKE3 of the wire Tensors as section 8 feeds them (the cache key and inputs_ref.digest)."""
    h = blake3(struct.pack("<Q", len(tensors)))
    for t in tensors:
        h.update(t["dtype"].encode())
        h.update(struct.pack(f"<Q{len(t['shape'])}q", len(t["shape"]), *t["shape"]))
        h.update(struct.pack("<Q", len(t["data"])))
        h.update(t["data"])
    return h.hexdigest()


def store_inputs(tensors):
    """(value, inputs_ref) for inputs sent by reference (section 10): the value is the
    MessagePack array of the Tensors, stored under jetinfer:input:<id>."""
    value = msgpack.packb(tensors, use_bin_type=True)
    return value, {"bytes": len(value), "digest": inputs_digest(tensors)}


def encode_job(job_id: str, model: str, inputs, deadline_ms=None, version=None, cache=None, meta=None,
               inputs_ref=None) -> bytes:
    """The Job map as MessagePack; inputs are numpy samples or ready wire Tensor dicts
    (empty when inputs_ref, from store_inputs, is given)."""
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} is not [A-Za-z0-9._:-]{{1,128}}")
    if not MODEL_NAME.fullmatch(model):
        raise ValueError(f"model name {model!r} is not [A-Za-z0-9_-]{{1,64}}")
    job = {"v": SCHEMA_VERSION, "id": job_id, "model": model}
    if version is not None:
        job["version"] = version
    job["inputs"] = [t if isinstance(t, dict) else tensor(t) for t in inputs]
    for key, value in (("inputs_ref", inputs_ref), ("deadline_ms", deadline_ms), ("cache", cache),
                       ("meta", meta)):
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


def input_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:input:{job_id}"


async def submit(js, redis, priority, model: str, inputs, job_id: str, deadline_ms=None,
                 inline_limit=INLINE_LIMIT):
    """Publishes a job on jetinfer.jobs.<priority>.<model> with Nats-Msg-Id and returns the
    JetStream ack (its `duplicate` is true when this id was already accepted). Inputs with
    at least `inline_limit` bytes of tensor data go by reference: SET in Redis first, so the
    published job always finds them (0 = always; redis may be None while all go inline)."""
    priority = f"p{priority}" if isinstance(priority, int) else str(priority).lower()
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {PRIORITIES}")
    tensors = [t if isinstance(t, dict) else tensor(t) for t in inputs]
    if sum(len(t["data"]) for t in tensors) < inline_limit:
        payload = encode_job(job_id, model, tensors, deadline_ms=deadline_ms)
    else:
        value, ref = store_inputs(tensors)
        payload = encode_job(job_id, model, [], deadline_ms=deadline_ms, inputs_ref=ref)
        left_ms = None if deadline_ms is None else max(deadline_ms - int(time.time() * 1000), 0)
        ttl_ms = INPUTS_TTL_MS if left_ms is None else left_ms + INPUTS_TTL_MARGIN_MS
        await redis.set(input_key(job_id), value, px=ttl_ms)
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
            await submit(js, r, args.priority, args.model, inputs, job_id, inline_limit=args.inline_limit)
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


class _Recorder:
    """Stands in for both JetStream and Redis in the selftest: records what submit sends."""
    def __init__(self):
        self.calls = []

    async def set(self, key, value, px):
        self.calls.append(("SET", key, value, px))

    async def publish(self, subject, payload, headers):
        self.calls.append(("publish", subject, msgpack.unpackb(payload), headers))


def selftest() -> int:
    """Checks the encoder and decoder against the documented bytes; needs no servers."""
    sample = [np.array([1.0, 2.0], dtype=np.float32)]
    job = encode_job("j1", "mlp", sample)
    assert job.hex() == JOB_HEX, f"job encoding differs:\n  got  {job.hex()}\n  want {JOB_HEX}"
    digest = inputs_digest([tensor(a) for a in sample])
    assert digest == DIGEST_VECTOR, f"digest differs:\n  got  {digest}\n  want {DIGEST_VECTOR}"
    value, ref = store_inputs([tensor(a) for a in sample])
    assert value.hex() == STORED_INPUTS_HEX, value.hex()
    assert encode_job("j2", "mlp", [], inputs_ref=ref).hex() == REF_JOB_HEX
    # submit: small inputs go inline; large ones (any with inline_limit=0) are SET, then published
    big = [np.zeros(8192, np.float32)]  # 32 KiB of tensor data: at the limit, so by reference
    in_10s = int(time.time() * 1000) + 10_000
    for inputs, limit, deadline, by_ref in ((sample, INLINE_LIMIT, None, False), (sample, 0, None, True),
                                            (big, INLINE_LIMIT, in_10s, True)):
        rec = _Recorder()
        asyncio.run(submit(rec, rec, "p1", "mlp", inputs, "j3", deadline, inline_limit=limit))
        *stored, (_, subject, sent, headers) = rec.calls  # the SET comes before the publish
        assert subject == "jetinfer.jobs.p1.mlp" and headers == {"Nats-Msg-Id": "j3"}
        assert bool(stored) == by_ref and (sent["inputs"] == []) == by_ref, (limit, rec.calls)
        if by_ref:
            (_, key, value, px), = stored
            want_value, want_ref = store_inputs([tensor(a) for a in inputs])
            assert key == "jetinfer:input:j3" and value == want_value and sent["inputs_ref"] == want_ref
            want_px = INPUTS_TTL_MS if deadline is None else 10_000 + INPUTS_TTL_MARGIN_MS
            assert want_px - 1000 < px <= want_px, px
    r = decode_result(bytes.fromhex(ERROR_RESULT_HEX))
    assert r["status"] == "error" and r["error"]["code"] == "bad_payload" and r["outputs"] == []
    for sample in (np.arange(6, dtype=np.uint8).reshape(2, 3), np.float16([1.5, -2]), np.int64(7)):
        back = to_numpy(msgpack.unpackb(msgpack.packb(tensor(sample), use_bin_type=True)))
        assert back.dtype == sample.dtype and np.array_equal(back, sample), sample
    print("selftest: ok (job bytes, digest vector and inputs by reference match the docs; "
          "error result and tensors decode)")
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
    p.add_argument("--inline-limit", type=int, default=INLINE_LIMIT, metavar="N",
                   help="send jobs with N or more bytes of tensor data by reference through Redis "
                        "(default 32768; 0 = every job)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for all results")
    p.add_argument("--selftest", action="store_true", help="check the encoding against the docs and exit")
    args = p.parse_args()
    if args.selftest:
        return selftest()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
