#!/usr/bin/env python3
"""Exports the reference workloads of the performance benchmarks (issue 4) and their
worker configs. Not part of `scripts/setup.sh`: ResNet-50 needs torchvision, which the
project's virtualenv does not carry (the GPU machine's python3 has it). MiniLM is written
out in plain PyTorch (the HF trace bakes in Python-side shape decisions), so it needs only
torch. Random weights: these measure speed, not accuracy.

    python3 models/export_reference.py --out models/out-ref [--only trivial,tokpool]

Models (leading batch dimension left out):

    resnet50  x u8[3, 224, 224]          -> f16[1000]  torchvision ResNet-50; the module
                                                        casts to its own dtype, scales to
                                                        [0, 1] and normalises (ImageNet
                                                        mean/std) itself
    minilm    ids i64[-1], mask i64[-1]   -> f16[384]   all-MiniLM-L6-v2's architecture
                                                        (BERT, 6 layers, 384 wide) in plain
                                                        PyTorch, scripted; mean pooling over
                                                        the mask, L2-normalised
    trivial   x f32[16]                   -> f32[16]    relu(x * 2 + 1): the queue path alone
    tokpool   ids i64[-1], mask i64[-1]   -> f32[8]     embedding + masked mean: a CPU-sized
                                                        stand-in for minilm (tests the pad spec)

Writes OUT/<model>.pt, OUT/models.reference.cuda.toml (resnet50 and minilm on cuda:0 in
f16, trivial on cpu), OUT/models.reference.cuda.i2.toml (the same with `instances = 2` for
resnet50 and minilm: two executor threads each, sharing one copy of the weights; see
docs/models.md, "Devices and instances") and OUT/models.reference.cpu.toml (trivial and
tokpool on cpu). The
token models carry `pad = [0, 0]`: the worker pads each batch to its longest sequence
(mask 0 marks padding), so sequences of different lengths batch together. All but
`trivial` set `shape_buckets = true` (batch sizes and padded lengths rounded up to a few
buckets, each warmed at load; see worker/src/pad.rs).
"""
import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor, nn


class Normalised(nn.Module):
    """u8 images in, the wrapped network's logits out; normalisation inside."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255.0))

    def forward(self, x: Tensor) -> Tensor:
        # The buffers follow the module's dtype (the worker casts it to f16).
        x = (x.to(self.mean.dtype) - self.mean) * self.inv_std
        return self.net(x)


class Trivial(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x * 2.0 + 1.0)


class TokPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1024, 8)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        m = (mask != 0).to(self.emb.weight.dtype).unsqueeze(-1)
        e = self.emb(ids.clamp(0, 1023)) * m
        return e.sum(1) / m.sum(1).clamp(min=1.0)


class Layer(nn.Module):
    """One BERT encoder layer (post-norm, GELU), attention through SDPA."""

    def __init__(self, d: int = 384, heads: int = 12, ff: int = 1536):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        n, l, d = x.shape
        q, k, v = self.qkv(x).view(n, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        x = self.ln1(x + self.out(a.transpose(1, 2).reshape(n, l, d)))
        return self.ln2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2's architecture (BERT: 30522 tokens, 512 positions, 6 layers, 384
    wide, 12 heads, FFN 1536) written out in plain PyTorch so it scripts with dynamic batch
    and length; sentence embedding as sentence-transformers computes it: mean over the
    mask, L2-normalised. Random weights (the speed is what is measured)."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(30522, 384)
        self.pos = nn.Embedding(512, 384)
        self.typ = nn.Embedding(2, 384)
        self.ln = nn.LayerNorm(384, eps=1e-12)
        self.layers = nn.ModuleList([Layer() for _ in range(6)])

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        n, l = ids.shape
        m = mask != 0
        pos = torch.arange(l, device=ids.device).unsqueeze(0)
        x = self.tok(ids.clamp(0, 30521)) + self.pos(pos) + self.typ(torch.zeros_like(ids))
        x = self.ln(x)
        keep = m.view(n, 1, 1, l)
        for layer in self.layers:
            x = layer(x, keep)
        w = m.unsqueeze(-1).to(x.dtype)
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1e-4)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).to(x.dtype)


def export_resnet50(out: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    module = torch.jit.script(Normalised(torchvision.models.resnet50(weights=None)).eval())
    module.save(str(out / "resnet50.pt"))


def export_minilm(out: Path) -> None:
    torch.manual_seed(0)
    model = MiniLM().eval()
    scripted = torch.jit.script(model)
    # Padding must not change a sequence's embedding.
    ids = torch.randint(1, 30000, (2, 9))
    mask = torch.ones_like(ids)
    padded_ids = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.long)], 1)
    with torch.no_grad():
        a, b = scripted(ids, mask), scripted(padded_ids, padded_mask)
    assert a.shape == (2, 384) and (a - b).abs().max().item() < 1e-4, (a - b).abs().max()
    scripted.save(str(out / "minilm.pt"))


def export_trivial(out: Path) -> None:
    torch.jit.script(Trivial()).save(str(out / "trivial.pt"))


def export_tokpool(out: Path) -> None:
    torch.manual_seed(0)
    torch.jit.script(TokPool().eval()).save(str(out / "tokpool.pt"))


TRIVIAL = """[[models]]
name = "trivial"
version = "1"
path = "trivial.pt"
device = "cpu"
dtype = "f32"
max_batch_size = 64
max_queue_delay_ms = 0
inputs = [{ dtype = "f32", shape = [16] }]
"""

TOKPOOL = """[[models]]
name = "tokpool"
version = "1"
path = "tokpool.pt"
device = "cpu"
dtype = "f32"
max_batch_size = 32
max_queue_delay_ms = 1
inputs = [{ dtype = "i64", shape = [-1] }, { dtype = "i64", shape = [-1] }]
pad = [0, 0]
shape_buckets = true
warm_lengths = [16, 32]
"""

RESNET50 = """[[models]]
name = "resnet50"
version = "1"
path = "resnet50.pt"
device = "cuda:0"
instances = 1
dtype = "f16"
max_batch_size = 128
max_queue_delay_ms = 2
inputs = [{ dtype = "u8", shape = [3, 224, 224] }]
shape_buckets = true
"""

MINILM = """[[models]]
name = "minilm"
version = "1"
path = "minilm.pt"
device = "cuda:0"
instances = 1
dtype = "f16"
max_batch_size = 256
max_queue_delay_ms = 2
inputs = [{ dtype = "i64", shape = [-1] }, { dtype = "i64", shape = [-1] }]
pad = [0, 0]
shape_buckets = true
warm_lengths = [16, 32, 48, 64, 80, 96, 112, 128]
"""

EXPORTS = {
    "trivial": (export_trivial, TRIVIAL),
    "tokpool": (export_tokpool, TOKPOOL),
    "resnet50": (export_resnet50, RESNET50),
    "minilm": (export_minilm, MINILM),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out-ref")
    ap.add_argument("--only", default=",".join(EXPORTS), help="comma-separated models")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    done = []
    for name in args.only.split(","):
        export, _ = EXPORTS[name]
        export(args.out)
        done.append(name)
        print(f"exported {name}", flush=True)
    cuda = [EXPORTS[n][1] for n in ("resnet50", "minilm", "trivial") if n in done]
    cpu = [EXPORTS[n][1] for n in ("trivial", "tokpool") if n in done]
    if cuda:
        (args.out / "models.reference.cuda.toml").write_text("\n".join(cuda))
        # The 1-vs-2-instances comparison: the same file, two threads per GPU model.
        two = [t.replace("instances = 1\n", "instances = 2\n") for t in cuda]
        (args.out / "models.reference.cuda.i2.toml").write_text("\n".join(two))
    if cpu:
        (args.out / "models.reference.cpu.toml").write_text("\n".join(cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
