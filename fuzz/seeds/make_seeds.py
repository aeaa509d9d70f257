#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/.

Seeds come from the wire contract and the sample models, not from the fuzzers:
  - the hex examples of docs/wire-format.md section 9 (job 9.1, results 9.2 and 9.3, job by
    reference 9.4, stored inputs 9.5), read from the doc the way schemas/tests/wire_doc.rs
    reads them;
  - one sample of each golden input (models/out/golden.json): as inline and by-reference
    jobs with every optional field, tensors, stored input values, run requests that bundle
    the jobs, `.npy` files (versions 1.0 and 2.0) and JSON input files;
  - a run reply, a heartbeat, and a few edge cases (scalar, zero-size, every dtype).

Run after `source scripts/env.sh` (numpy, msgpack, blake3 come from .venv); then minimise
with `scripts/fuzz.sh --cmin` (docs/fuzzing.md). File names are content hashes, so running
it again adds nothing that is already there.
"""
import hashlib
import io
import json
import os
import re
import struct
import sys

import blake3
import msgpack
import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
DTYPES = {"float32": "f32", "float16": "f16", "float64": "f64", "int64": "i64",
          "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "bool"}


def put(target, data):
    """Stores one seed under its SHA-1, as libFuzzer names corpus files."""
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def doc_hex(doc, heading):
    """The bytes of the first fenced block after `heading`: hex before each `#`."""
    block = doc[doc.index(heading):].split("```")[1]
    return bytes.fromhex("".join(
        "".join(line.split("#")[0].split()) for line in block.splitlines()))


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def tensor(a):
    a = np.ascontiguousarray(a)
    return {"dtype": DTYPES[str(a.dtype)], "shape": list(a.shape), "data": a.astype(a.dtype.newbyteorder("<")).tobytes()}


def digest(tensors):
    """inputs_digest of schemas/src/tensor.rs (docs/wire-format.md section 8)."""
    h = blake3.blake3()
    h.update(struct.pack("<Q", len(tensors)))
    for t in tensors:
        h.update(t["dtype"].encode())
        h.update(struct.pack("<Q", len(t["shape"])))
        for d in t["shape"]:
            h.update(struct.pack("<q", d))
        h.update(struct.pack("<Q", len(t["data"])))
        h.update(t["data"])
    return h.hexdigest()


def npy_bytes(a, version):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), version=version)
    return buf.getvalue()


def golden_samples():
    """(model, [one sample of each input]) for every golden set."""
    out_dir = os.path.join(ROOT, "models", "out")
    golden = json.load(open(os.path.join(out_dir, "golden.json")))
    for m in golden["models"]:
        for s in m["sets"]:
            yield m["name"], [np.load(os.path.join(out_dir, p))[0] for p in s["inputs"]]


def main():
    doc = open(os.path.join(ROOT, "docs", "wire-format.md")).read()
    put("job", doc_hex(doc, "### 9.1 Job"))
    put("job", doc_hex(doc, "### 9.4 Job with inputs by reference"))
    put("result", doc_hex(doc, "### 9.2 Error result"))
    put("result", doc_hex(doc, "### 9.3 Ok result"))
    put("inputs_ref", doc_hex(doc, "### 9.5 Stored inputs"))
    put("tensor", pack(msgpack.unpackb(doc_hex(doc, "### 9.1 Job"))["inputs"][0]))

    run_jobs = []
    for n, (model, arrays) in enumerate(golden_samples()):
        tensors = [tensor(a) for a in arrays]
        job_id = f"seed-{model}-{n}"
        inline = {"v": 1, "id": job_id, "model": model, "version": "1", "inputs": tensors,
                  "deadline_ms": 1700000000000, "cache": False, "meta": {"user": "alice"}}
        put("job", pack(inline))
        stored = pack(tensors)
        put("inputs_ref", stored)
        by_ref = {"v": 1, "id": job_id + "r", "model": model, "inputs": [],
                  "inputs_ref": {"bytes": len(stored), "digest": digest(tensors)}}
        put("job", pack(by_ref))
        for t in tensors:
            put("tensor", pack(t))
        for a in arrays:
            put("npy", npy_bytes(a, (1, 0)))
            put("json_tensor", json.dumps({"dtype": DTYPES[str(a.dtype)], "shape": list(a.shape),
                                           "data": a.tolist()}).encode())
        put("npy", npy_bytes(arrays[0], (2, 0)))
        for i, payload in enumerate((pack(inline), pack(by_ref))):
            run_jobs.append({"payload": payload, "priority": ["p0", "p1", "p2"][n % 3],
                             "deadline_ms": 1700000005000, "remaining_ms": 5000,
                             "published_ms": 1700000000000, "attempt": 1 + i,
                             "suspect": i == 1,
                             "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        ok = {"v": 1, "id": job_id, "status": "ok", "model": model, "version": "1",
              "outputs": tensors, "meta": {"user": "alice"}, "worker": "w-1",
              "inputs_digest": digest(tensors), "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
              "cached": False, "attempts": 1,
              "timings": {"queued_ms": 1.5, "batch_size": 4, "compute_ms": 0.25, "total_ms": 2.0},
              "completed_at_ms": 1700000000000}
        put("result", pack(ok))
        put("result", pack({"v": 1, "outputs": tensors}))  # a cache entry (CachedOutputs)
    for chunk in (run_jobs[:2], run_jobs):
        put("run_request", pack({"v": 1, "jobs": chunk}))
    put("run_request", pack({"v": 1, "outcomes": ["stored", "retry", "failed"]}))
    put("run_request", pack({
        "v": 1, "worker": "w-1", "slots": 64, "free_slots": 60, "devices": ["cpu"],
        "gpu_memory_bytes": None, "accepting": True, "sent_at_ms": 1700000000000,
        "models": [{"name": "seqpool", "version": "1", "max_batch_size": 16,
                    "inputs": [{"dtype": "f32", "shape": [-1, 8]}], "batch_ms": 0.5}]}))

    # Every dtype, a scalar and a zero-size tensor, for the tensor and file parsers.
    for name in DTYPES:
        a = np.arange(6).reshape(2, 3).astype(name)
        put("tensor", pack(tensor(a)))
        put("npy", npy_bytes(a, (1, 0)))
        put("json_tensor", json.dumps({"dtype": DTYPES[name], "shape": [2, 3], "data": a.tolist()}).encode())
    put("tensor", pack({"dtype": "bf16", "shape": [2], "data": b"\x80\x3f\x00\x40"}))
    put("json_tensor", b'{"dtype": "bf16", "shape": [1], "data": [1.5]}')
    put("json_tensor", b'{"dtype": "f32", "shape": [], "data": 4}')
    put("npy", npy_bytes(np.float32(7.0), (1, 0)))
    put("npy", npy_bytes(np.zeros((0, 4), np.float32), (1, 0)))
    put("tensor", pack({"dtype": "f32", "shape": [], "data": b"\x00\x00\x80\x3f"}))
    put("tensor", pack({"dtype": "u8", "shape": [0, 3], "data": b""}))
    # The README's example input file.
    put("json_tensor", b'{"dtype":"f32","shape":[16],"data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}\n')
    for t in sorted(os.listdir(CORPUS)):
        print(f"{t}: {len(os.listdir(os.path.join(CORPUS, t)))} seeds")


if __name__ == "__main__":
    sys.exit(main())
