"""Occlusion engine: seeded, exact-area occluders applied to batches in model input space.

Public API::

    get_patch(name) -> PatchType          # registered patch types (built-in + entry points)
    available_patches() -> list[str]
    register_patch(patch)                 # add a PatchType at run time
    placement_seed(seed, image_id, patch, level) -> int
    plan_masks(patch, level, ids, height, width, seed) -> list[MaskSpec]
    occlude(images, ids, patch, level, seed) -> (images, masks)

Placement depends only on (seed, image id, patch name, level): never on batch order, worker or
device. Every model sees the same masks in the same cell, so models compare fairly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.metadata import entry_points

import numpy as np
import torch

from ..errors import OcclusionError
from .geometry import Box, MaskSpec, box_shape, check_level, place_box, target_area
from .patches import PatchType, SolidBox, black_box

ENTRY_POINT_GROUP = "pytest_medrobust.patches"

_BUILTIN: dict[str, PatchType] = {p.name: p for p in (black_box,)}
_registered: dict[str, PatchType] = {}
_entry_points_loaded = False

__all__ = [
    "Box",
    "MaskSpec",
    "PatchType",
    "SolidBox",
    "available_patches",
    "box_shape",
    "check_level",
    "get_patch",
    "occlude",
    "place_box",
    "placement_seed",
    "plan_masks",
    "register_patch",
    "target_area",
]


def register_patch(patch: PatchType) -> PatchType:
    if not isinstance(patch, PatchType):
        raise OcclusionError(f"{patch!r} is not a patch type (needs name, place() and fill())")
    _registered[patch.name] = patch
    return patch


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plugin must say which one
            raise OcclusionError(f"patch entry point {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        patch = obj if isinstance(obj, PatchType) else obj()
        if not isinstance(patch, PatchType):
            raise OcclusionError(f"patch entry point {ep.name!r} ({ep.value}) did not give a patch type")
        _registered.setdefault(ep.name, patch)


def available_patches() -> list[str]:
    _load_entry_points()
    return sorted({**_BUILTIN, **_registered})


def get_patch(name: str) -> PatchType:
    _load_entry_points()
    patch = _registered.get(name) or _BUILTIN.get(name)
    if patch is None:
        raise OcclusionError(f"unknown patch type {name!r}; registered: {', '.join(available_patches())}")
    return patch


def placement_seed(seed: int, image_id: str, patch: str, level: float) -> int:
    """A 64-bit seed for one image in one cell, stable across runs, platforms and processes."""
    key = f"{int(seed)}|{image_id}|{patch}|{float(level):.6f}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def _checked(spec: MaskSpec, patch: PatchType, level: float, height: int, width: int) -> MaskSpec:
    if (spec.height, spec.width) != (height, width):
        raise OcclusionError(
            f"patch {patch.name!r} returned a {spec.height}x{spec.width} mask for a {height}x{width} image"
        )
    for b in spec.boxes:
        if b.height < 0 or b.width < 0 or b.top < 0 or b.left < 0 or b.top + b.height > height or b.left + b.width > width:
            raise OcclusionError(f"patch {patch.name!r} placed {b} outside the {height}x{width} image")
    target = target_area(level, height, width)
    tolerance = max(height, width)
    if abs(spec.area - target) > tolerance:
        raise OcclusionError(
            f"patch {patch.name!r} occluded {spec.area} pixels at level {level}; "
            f"expected {target} (within one row or column, {tolerance} px)"
        )
    return spec


def plan_masks(
    patch: PatchType | str, level: float, ids: Sequence[str], height: int, width: int, seed: int
) -> list[MaskSpec]:
    """The mask of every image, each drawn from its own seeded generator."""
    patch = get_patch(patch) if isinstance(patch, str) else patch
    level = check_level(level)
    specs = []
    for image_id in ids:
        rng = np.random.default_rng(placement_seed(seed, image_id, patch.name, level))
        specs.append(_checked(patch.place(level, height, width, rng), patch, level, height, width))
    return specs


def occlude(
    images: torch.Tensor, ids: Sequence[str], patch: PatchType | str, level: float, seed: int
) -> tuple[torch.Tensor, list[MaskSpec]]:
    """Occlude a batch (B x C x H x W in [0, 1]); returns the new images and each image's mask."""
    patch = get_patch(patch) if isinstance(patch, str) else patch
    if images.ndim != 4 or images.shape[0] != len(ids):
        raise ValueError(f"expected a B x C x H x W batch with {len(ids)} images, got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    specs = plan_masks(patch, level, ids, height, width, seed)
    if level == 0:
        return images, specs
    masks = torch.stack([s.render(images.device) for s in specs]).unsqueeze(1)
    seeds = [placement_seed(seed, i, patch.name + "/fill", level) for i in ids]
    return patch.fill(images, masks, seeds), specs
