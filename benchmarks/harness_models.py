"""Stand-in models for measuring the harness alone (benchmarks/bench_harness.py).

``fixed``: a model whose forward is a fixed linear projection so cheap that the wall time of a
cell is the harness's own (decode, occlusion, batching, ranking): each image is average-pooled
to 8 x 8 (a fixed projection of its pixels, so every occluded pixel is read), each report is
hashed to a fixed random vector. Not a retrieval model: its recalls mean nothing.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F


class FixedProjection:
    name = "fixed"
    geometry = "pad"

    def __init__(self, device: torch.device, size: int = 128, dim: int = 64):
        self.device = torch.device(device)
        self.input_size = (size, size)
        self.dim = dim

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x[:, :1].to(self.device), 8).flatten(1)
        return F.normalize(pooled[:, : self.dim], dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = [torch.Generator().manual_seed(zlib.crc32(t.encode())) for t in texts]
        out = torch.stack([torch.randn(self.dim, generator=g) for g in rows])
        return F.normalize(out, dim=-1).to(self.device)

    def fingerprint(self) -> str:
        return f"fixed-projection-{self.input_size[0]}-{self.dim}"


def fixed(device: torch.device, size: int = 128, dim: int = 64, **options: object) -> FixedProjection:
    return FixedProjection(device, int(size), int(dim))
