#!/usr/bin/env python3
"""Exports the reference workloads of the performance benchmarks (issue 4) and their
worker configs. Not part of `scripts/setup.sh`: ResNet-50 needs torchvision and MiniLM
needs transformers, which the project's virtualenv does not carry (the GPU machine's
python3 has both). Random weights: these measure speed, not accuracy.

    python3 models/export_reference.py --out models/out-ref [--only trivial,tokpool]

Models (leading batch dimension left out):

    resnet50  x u8[3, 224, 224]          -> f16[1000]  torchvision ResNet-50; the module
                                                        casts to its own dtype, scales to
                                                        [0, 1] and normalises (ImageNet
                                                        mean/std) itself
    minilm    ids i64[-1], mask i64[-1]   -> f16[384]   all-MiniLM-L6-v2's architecture
                                                        (BERT, 6 layers, 384 wide), mean
                                                        pooling over the mask, L2-normalised;
                                                        traced in f16 on cuda:0
    trivial   x f32[16]                   -> f32[16]    relu(x * 2 + 1): the queue path alone
    tokpool   ids i64[-1], mask i64[-1]   -> f32[8]     embedding + masked mean: a CPU-sized
                                                        stand-in for minilm (tests the pad spec)

Writes OUT/<model>.pt, OUT/models.reference.cuda.toml (resnet50 and minilm on cuda:0 in
f16, trivial on cpu) and OUT/models.reference.cpu.toml (trivial and tokpool on cpu). The
token models carry `pad = [0, 0]`: the worker pads each batch to its longest sequence
(mask 0 marks padding), so sequences of different lengths batch together.
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


class MiniLM(nn.Module):
    """Sentence embedding as sentence-transformers computes it: mean over the mask, L2."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        m = (mask != 0).to(torch.long)
        hidden = self.bert(input_ids=ids.clamp(0, 30521), attention_mask=m)[0]
        w = m.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1e-4)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).to(hidden.dtype)


def export_resnet50(out: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    module = torch.jit.script(Normalised(torchvision.models.resnet50(weights=None)).eval())
    module.save(str(out / "resnet50.pt"))


def export_minilm(out: Path) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536, max_position_embeddings=512, torchscript=True,
    )
    try:
        bert = BertModel(config, add_pooling_layer=False, attn_implementation="sdpa")
    except TypeError:
        bert = BertModel(config, add_pooling_layer=False)
    model = MiniLM(bert).eval().half().cuda()
    ids = torch.randint(1, 30000, (4, 64), device="cuda")
    mask = torch.ones_like(ids)
    with torch.no_grad():
        traced = torch.jit.trace(model, (ids, mask), check_trace=False)
        # The trace must not have baked in the sequence length or batch size.
        ids2 = torch.randint(1, 30000, (3, 17), device="cuda")
        mask2 = torch.ones_like(ids2)
        mask2[0, 9:] = 0
        got, want = traced(ids2, mask2), model(ids2, mask2)
        assert got.shape == (3, 384), got.shape
        assert (got.float() - want.float()).abs().max().item() < 2e-2
    traced.save(str(out / "minilm.pt"))


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
"""

RESNET50 = """[[models]]
name = "resnet50"
version = "1"
path = "resnet50.pt"
device = "cuda:0"
dtype = "f16"
max_batch_size = 128
max_queue_delay_ms = 2
inputs = [{ dtype = "u8", shape = [3, 224, 224] }]
"""

MINILM = """[[models]]
name = "minilm"
version = "1"
path = "minilm.pt"
device = "cuda:0"
dtype = "f16"
max_batch_size = 256
max_queue_delay_ms = 2
inputs = [{ dtype = "i64", shape = [-1] }, { dtype = "i64", shape = [-1] }]
pad = [0, 0]
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
    if cpu:
        (args.out / "models.reference.cpu.toml").write_text("\n".join(cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
