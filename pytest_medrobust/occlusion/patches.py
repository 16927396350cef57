"""Patch types: how an occluder is placed (geometry) and what it is filled with."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .geometry import MaskSpec, place_box, target_area


@runtime_checkable
class PatchType(Protocol):
    """A named occluder. ``place`` chooses where one image is occluded; ``fill`` paints a batch.

    ``place`` must draw all randomness from ``rng`` (seeded per image and cell by the engine), so
    the same seed gives the same mask on every run, worker and device.
    """

    name: str

    def place(self, level: float, height: int, width: int, rng: np.random.Generator) -> MaskSpec: ...

    def fill(self, images: torch.Tensor, masks: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Return ``images`` (B x C x H x W in [0, 1]) painted where ``masks`` (B x 1 x H x W) is True.

        ``seeds`` holds one integer per image for fills that need randomness."""
        ...


class SolidBox:
    """One axis-aligned box of the level's area, filled with a constant intensity."""

    def __init__(self, name: str, value: float):
        self.name = name
        self.value = float(value)

    def place(self, level: float, height: int, width: int, rng: np.random.Generator) -> MaskSpec:
        area = target_area(level, height, width)
        boxes = (place_box(area, height, width, rng),) if area else ()
        return MaskSpec(height, width, boxes)

    def fill(self, images: torch.Tensor, masks: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return images.masked_fill(masks, self.value)

    def __repr__(self) -> str:
        return f"SolidBox({self.name!r}, value={self.value})"


black_box = SolidBox("black_box", 0.0)
