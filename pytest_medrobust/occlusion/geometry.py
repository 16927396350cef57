"""Occluder geometry: boxes whose total area is an exact share of the image.

Rounding rule (README, "Occlusion"): the target area is ``round(level * H * W)`` pixels. A single
box is a square of side ``round(sqrt(target))`` where that fits; its other side is then
``round(target / side)``, so the box's area differs from the target by at most half a row or
column (< one pixel row or column). Where a square does not fit (a level close to 1 on a
non-square image), the short side spans the image and the long side is rounded the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import OcclusionError


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle in pixel coordinates: rows [top, top+height), cols [left, left+width)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def area(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class MaskSpec:
    """Where one image is occluded: a union of boxes, all inside an H x W image."""

    height: int
    width: int
    boxes: tuple[Box, ...]

    def render(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean H x W mask, True where occluded."""
        mask = torch.zeros(self.height, self.width, dtype=torch.bool, device=device)
        for b in self.boxes:
            mask[b.top : b.top + b.height, b.left : b.left + b.width] = True
        return mask

    @property
    def area(self) -> int:
        return int(self.render().sum())

    def to_json(self) -> dict:
        return {
            "height": self.height,
            "width": self.width,
            "boxes": [[b.top, b.left, b.height, b.width] for b in self.boxes],
        }


def check_level(level: float) -> float:
    level = float(level)
    if not (0.0 <= level < 1.0) or math.isnan(level):
        raise OcclusionError(f"occlusion level must be in [0, 1), got {level}")
    return level


def target_area(level: float, height: int, width: int) -> int:
    return int(round(check_level(level) * height * width))


def box_shape(area: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) of one box of the given pixel area, as square as the image allows."""
    if area <= 0:
        return 0, 0
    side = max(1, int(round(math.sqrt(area))))
    short, long_ = min(height, width), max(height, width)
    if side <= short:
        other = min(long_, max(1, int(round(area / side))))
        # Keep the box square-ish in the orientation that fits.
        return (side, other) if other <= width else (other, side)
    # Too large for a square: span the short side.
    other = min(long_, max(1, int(round(area / short))))
    return (short, other) if height <= width else (other, short)


def place_box(area: int, height: int, width: int, rng: np.random.Generator) -> Box:
    """One box of ``area`` pixels at a uniformly random position fully inside the image."""
    h, w = box_shape(area, height, width)
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return Box(top, left, h, w)
