#!/usr/bin/env python3
"""Exports jetinfer's sample TorchScript models, their golden data and worker configs.

    .venv/bin/python models/export.py --out models/out [--force]

Models (every input and output has a leading batch dimension, left out below):

    mlp      x f32[16]            -> f32[4]            Linear(16,32), ReLU, Linear(32,4)
    pair     a f32[8], b f32[8]   -> (f32[8], f32[1])  a TUPLE: (a*b + Linear(a), sum(a-b))
    seqpool  x f32[-1, 8]         -> f32[8]            Linear(8,8), mean over the sequence
    imgmean  x u8[3, 8, 8]        -> f32[3]            the model casts and normalises itself

Layout of OUT (paths in golden.json and the TOML files are relative to OUT):

    <model>.pt                            torch.jit.script module, CPU, float32, not frozen
                                          (the worker casts its parameters to f16 on CUDA)
    golden/<model>/set<k>/input_<i>.npy   input i of every sample, shape [N, ...]
    golden/<model>/set<k>/output_<j>.npy  output j computed by the saved module (CPU, f32)
    golden.json                           {"models": [{name, version, sets: [{inputs,
                                          outputs, samples}]}]}
    models.toml                           worker config: cpu, f32, max_batch_size 32
    models.cuda.toml                      worker config: cuda:0, f16, max_batch_size 64
    .stamp                                hashes of this script and every output; when they
                                          all match, a re-run does nothing

Deterministic: fixed seeds and one CPU thread give the same weights, inputs and outputs on
every run. The .pt bytes (and so their sha256) also embed TorchScript debug info naming the
absolute paths of this script and of torch, so they differ between checkouts; the TOML files
always carry the hash of the .pt next to them.
"""
import argparse
import hashlib
import json
import shutil
import sys
import zlib
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn

VERSION = "1"


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
        return a * b + self.lin(a), (a - b).sum(-1, keepdim=True)


class SeqPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x).mean(dim=1)


class ImgMean(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        y = (x.float() / 255.0 - 0.5) / 0.25
        return y.mean(dim=[2, 3])


# name -> (module class, [(dtype, per-sample shape, -1 = dynamic)], [(samples, concrete shapes)])
MODELS = {
    "mlp": (Mlp, [("f32", [16])], [(64, [[16]])]),
    "pair": (Pair, [("f32", [8]), ("f32", [8])], [(64, [[8], [8]])]),
    "seqpool": (SeqPool, [("f32", [-1, 8])], [(16, [[3, 8]]), (16, [[5, 8]]), (16, [[12, 8]])]),
    "imgmean": (ImgMean, [("u8", [3, 8, 8])], [(64, [[3, 8, 8]])]),
}


def seed_of(name: str) -> int:
    """A per-model seed that does not change when other models are added."""
    return zlib.crc32(name.encode())


def random_input(rng: np.random.Generator, dtype: str, shape) -> np.ndarray:
    if dtype == "u8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(size=shape, dtype=np.float32)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_npy(out: Path, rel: Path, array: np.ndarray) -> str:
    """Saves little-endian, C-order .npy under out; returns rel for golden.json."""
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    np.save(out / rel, np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"))))
    return rel.as_posix()


def export_model(out: Path, name: str) -> dict:
    """Scripts and saves one model, then writes its golden sets from the saved file."""
    cls, specs, sets = MODELS[name]
    torch.manual_seed(seed_of(name))
    torch.jit.script(cls().eval()).save(str(out / f"{name}.pt"))
    module = torch.jit.load(str(out / f"{name}.pt"), map_location="cpu")

    rng = np.random.default_rng(seed_of(name))
    entry = {"name": name, "version": VERSION, "sets": []}
    for k, (n, shapes) in enumerate(sets):
        inputs = [random_input(rng, dt, [n, *shape]) for (dt, _), shape in zip(specs, shapes)]
        with torch.no_grad():
            outputs = module(*[torch.from_numpy(x) for x in inputs])
        if isinstance(outputs, Tensor):
            outputs = (outputs,)
        folder = Path("golden") / name / f"set{k}"
        entry["sets"].append({
            "inputs": [save_npy(out, folder / f"input_{i}.npy", x) for i, x in enumerate(inputs)],
            "outputs": [save_npy(out, folder / f"output_{j}.npy", y.numpy()) for j, y in enumerate(outputs)],
            "samples": n,
        })
    return entry


def toml_config(out: Path, device: str, dtype: str, max_batch_size: int) -> str:
    lines = ["# Generated by models/export.py; paths are relative to this file's folder.", ""]
    for name, (_, specs, _) in MODELS.items():
        inputs = ", ".join(f'{{ dtype = "{dt}", shape = [{", ".join(map(str, shape))}] }}' for dt, shape in specs)
        lines += [
            "[[models]]",
            f'name = "{name}"',
            f'version = "{VERSION}"',
            f'path = "{name}.pt"',
            f'sha256 = "{sha256(out / f"{name}.pt")}"',
            f'device = "{device}"',
            f'dtype = "{dtype}"',
            f"max_batch_size = {max_batch_size}",
            "max_queue_delay_ms = 2",
            f"inputs = [{inputs}]",
            "",
        ]
    return "\n".join(lines)


def stamp(out: Path, script_hash: str) -> dict:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != ".stamp")
    return {"script": script_hash, "torch": torch.__version__, "numpy": np.__version__,
            "files": {p.relative_to(out).as_posix(): sha256(p) for p in files}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--force", action="store_true", help="export even when the stamp matches")
    args = parser.parse_args()
    out: Path = args.out
    script_hash = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

    stamp_path = out / ".stamp"
    if not args.force and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == stamp(out, script_hash):
                print(f"export: {out} is up to date")
                return 0
        except ValueError:
            pass

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    shutil.rmtree(out / "golden", ignore_errors=True)
    index = {"models": [export_model(out, name) for name in MODELS]}
    (out / "golden.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "models.toml").write_text(toml_config(out, "cpu", "f32", 32))
    (out / "models.cuda.toml").write_text(toml_config(out, "cuda:0", "f16", 64))
    stamp_path.write_text(json.dumps(stamp(out, script_hash), indent=1) + "\n")
    print(f"export: wrote {len(MODELS)} models, golden data and configs to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
