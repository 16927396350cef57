"""Helpers shared by the occlusion engine's self-tests (imported by name: the tests folder is not a package)."""

from __future__ import annotations

import torch

from pytest_medrobust import occlusion

BUILTIN = sorted(occlusion.registry._BUILTIN)


def gray_batch(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A B x 3 x H x W grayscale batch (channels equal, contiguous) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    plane = torch.rand(n, 1, height, width, generator=g)
    return plane.expand(-1, 3, -1, -1).contiguous()


def ids(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]
