#!/usr/bin/env python3
"""Publishes golden samples of one model through the jetinfer Python package
(clients/python; `pip install -e clients/python`) and checks every result against the
outputs PyTorch computed; prints PASS and exits 0 only when all match.

    python examples/python/jetinfer_client.py --nats-url nats://127.0.0.1:4222 \
        --redis-url redis://127.0.0.1:6379 --golden models/out/golden.json --model mlp --count 20
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import jetinfer


def golden_samples(path: Path, model: str, count: int):
    """`count` (inputs, outputs) pairs of one sample each, cycling through the model's sets."""
    entry = next(m for m in json.loads(path.read_text())["models"] if m["name"] == model)
    samples = []
    for s in entry["sets"]:
        ins = [np.load(path.parent / p) for p in s["inputs"]]
        outs = [np.load(path.parent / p) for p in s["outputs"]]
        samples += [([a[k] for a in ins], [a[k] for a in outs]) for k in range(s["samples"])]
    return [samples[i % len(samples)] for i in range(count)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    p.add_argument("--golden", default="models/out/golden.json", type=Path)
    p.add_argument("--model", default="mlp")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--priority", default="p1", choices=["p0", "p1", "p2"])
    p.add_argument("--inline-limit", type=int, default=jetinfer.INLINE_LIMIT, metavar="BYTES",
                   help="inputs of this many bytes or more go by reference through Redis (0 = all)")
    p.add_argument("--inputs-redis-url", action="append", metavar="URL",
                   help="an extra Redis for inputs sent by reference (input stores 1, 2, ... in the order "
                        "given; repeatable or comma-separated; default $JETINFER_INPUTS_REDIS_URLS; the same "
                        "list as the workers')")
    p.add_argument("--no-cache", action="store_true", help="run every job on a model, never from the result cache")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for all results")
    args = p.parse_args()

    samples = golden_samples(args.golden, args.model, args.count)
    given = args.inputs_redis_url or [os.environ.get("JETINFER_INPUTS_REDIS_URLS", "")]
    extra = [u for arg in given for u in arg.split(",") if u]
    with jetinfer.Client(args.nats_url, args.redis_url, inline_limit=args.inline_limit,
                         inputs_redis_urls=extra) as client:
        start = time.monotonic()
        ids = [client.submit(args.model, inputs, priority=args.priority,
                             cache=False if args.no_cache else None).id for inputs, _ in samples]
        try:
            results = client.wait_many(ids, timeout=args.timeout)
        except jetinfer.WaitManyTimeout as e:
            results = e.results
        elapsed = time.monotonic() - start

    wrong = 0
    for result, (_, expected) in zip(results, samples):
        if result is None:
            continue
        ok = result.ok and len(result.outputs) == len(expected) and all(
            got.shape == want.shape and np.allclose(got, want, rtol=1e-3, atol=1e-4)
            for got, want in zip(result.outputs, expected))
        if not ok:
            wrong += 1
            print(f"  {result.id}: {result.status} {result.error or ''}", file=sys.stderr)
    missing = sum(r is None for r in results)
    cached = sum(bool(r and r.cached) for r in results)
    passed = not wrong and not missing
    print(f"{'PASS' if passed else 'FAIL'} {args.model}: {len(ids) - wrong - missing}/{len(ids)} match, "
          f"{wrong} wrong, {missing} missing, {cached} from the cache, after {elapsed:.2f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
