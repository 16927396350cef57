"""Planning and applying masks: seeded per image, checked, painted on whole batches."""

from __future__ import annotations

import hashlib
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from ..errors import OcclusionError
from .geometry import Bitmap, Box, MaskSpec, check_level, render_masks, target_area
from .patches import PatchType
from .registry import make_patch


def placement_seed(seed: int, image_id: str, patch: str, level: float) -> int:
    """A 64-bit seed for one image in one cell, stable across runs, platforms and processes."""
    key = f"{int(seed)}|{image_id}|{patch}|{float(level):.6f}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def _checked(spec: Any, patch: PatchType, level: float, height: int, width: int) -> MaskSpec:
    """Check one mask from a patch's ``place``: type, shape, bounds and area (names the patch)."""
    name = getattr(patch, "name", repr(patch))
    if isinstance(spec, (np.ndarray, torch.Tensor)):
        if tuple(spec.shape) != (height, width):
            raise OcclusionError(f"patch {name!r} returned a {'x'.join(map(str, spec.shape))} mask for a {height}x{width} image")
        if spec.dtype not in (np.bool_, torch.bool):
            raise OcclusionError(f"patch {name!r} returned a {spec.dtype} array; a pixel mask must be boolean")
        spec = MaskSpec.from_array(spec)
    if not isinstance(spec, MaskSpec):
        raise OcclusionError(f"patch {name!r} returned {type(spec).__name__}, not a MaskSpec or a boolean H x W mask")
    if (spec.height, spec.width) != (height, width):
        raise OcclusionError(f"patch {name!r} returned a {spec.height}x{spec.width} mask for a {height}x{width} image")
    parts: tuple[Box | Bitmap, ...] = (*spec.boxes, *spec.bitmaps)
    for p in parts:
        if p.height < 0 or p.width < 0 or p.top < 0 or p.left < 0 or p.top + p.height > height or p.left + p.width > width:
            raise OcclusionError(f"patch {name!r} placed {p} outside the {height}x{width} image")
        if isinstance(p, Bitmap) and len(p.bits) != (p.height * p.width + 7) // 8:
            raise OcclusionError(f"patch {name!r} returned a bitmap whose bits do not match its {p.height}x{p.width} size")
    target = target_area(level, height, width)
    tolerance = max(height, width)
    if abs(spec.area - target) > tolerance:
        raise OcclusionError(
            f"patch {name!r} occluded {spec.area} pixels at level {level}; "
            f"expected {target} (within one row or column, {tolerance} px)"
        )
    return spec


def _call_place(patch: PatchType, level: float, height: int, width: int, rng: np.random.Generator, at=None) -> Any:
    try:
        if at is None:
            return patch.place(level, height, width, rng)
        fy, fx, count = at
        place_at = getattr(patch, "place_at", None)
        if place_at is not None:
            return place_at(level, height, width, rng, fy=fy, fx=fx, count=count)
        return patch.place(level, height, width, rng)
    except OcclusionError:
        raise
    except Exception as exc:
        raise OcclusionError(f"patch {getattr(patch, 'name', patch)!r} failed to place a mask: {exc!r}") from exc


def place_one(patch: PatchType, level: float, height: int, width: int, rng: np.random.Generator, at=None) -> MaskSpec:
    """One checked mask: seeded random placement, or at ``at = (fy, fx, count)`` for a policy.

    A patch without ``place_at`` gets its ``place`` mask moved so that its bounding box sits at
    the relative position ``(fy, fx)`` of the free range (0 = top/left, 1 = bottom/right)."""
    spec = _checked(_call_place(patch, level, height, width, rng, at), patch, level, height, width)
    if at is not None and getattr(patch, "place_at", None) is None:
        box = spec.bbox()
        if box is not None:
            fy, fx, _ = at
            top = int(round(min(max(fy, 0.0), 1.0) * (height - box.height)))
            left = int(round(min(max(fx, 0.0), 1.0) * (width - box.width)))
            spec = spec.shifted(top - box.top, left - box.left)
    return spec


def _level(level: Any) -> float:
    """``check_level`` for the public entry points, which take a number only: a string such as
    "0.3" is refused rather than parsed (docs/occlusion.md: a non-number is an error), and so is
    a bool. Parsing text is the configuration's job, which names the option it came from."""
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, numbers.Real):
        raise OcclusionError(f"occlusion level must be a number in [0, 1), got {level!r} ({type(level).__name__})")
    return check_level(float(level))


def plan_masks(
    patch: PatchType | str,
    level: float,
    ids: Sequence[str],
    height: int,
    width: int,
    seed: int,
    *,
    policy: Any = None,
) -> list[MaskSpec]:
    """The mask of every image, each drawn from its own seeded generator (or by ``policy``)."""
    patch = make_patch(patch)
    level = _level(level)
    if policy is not None:
        return policy.plan(patch, level, ids, height, width, seed)
    return [
        place_one(patch, level, height, width, np.random.default_rng(placement_seed(seed, image_id, patch.name, level)))
        for image_id in ids
    ]


def _accepts_stats(fill: Any) -> bool:
    try:
        params = inspect.signature(fill).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "stats" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def fill_seeds(ids: Sequence[str], patch_name: str, level: float, seed: int) -> list[int]:
    return [placement_seed(seed, i, patch_name + "/fill", level) for i in ids]


def apply_masks(
    images: torch.Tensor,
    ids: Sequence[str],
    specs: Sequence[MaskSpec],
    patch: PatchType | str,
    level: float,
    seed: int,
    *,
    stats: Mapping[str, float] | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """Paint planned masks on a batch with the patch's fill (one batched call)."""
    patch = make_patch(patch)
    masks = render_masks(specs, images.device)
    channels = images.shape[1]
    # A grayscale batch made by expanding one plane to C channels (stride 0): a channel-uniform
    # fill paints the plane once, and the result is expanded again.
    plane = channels > 1 and images.stride(1) == 0 and getattr(patch, "channel_uniform", False)
    target = images[:, :1] if plane else images
    if inplace:
        out = target if plane or not _overlaps(images) else images.contiguous()
    else:
        out = target.clone(memory_format=torch.contiguous_format)
    seeds = fill_seeds(ids, patch.name, level, seed)
    try:
        if _accepts_stats(patch.fill):  # the protocol's fill has no ``stats``; this one was checked to take it
            result = cast(Callable[..., torch.Tensor], patch.fill)(out, masks, seeds, stats=stats)
        else:
            result = patch.fill(out, masks, seeds)
    except OcclusionError:
        raise
    except Exception as exc:
        raise OcclusionError(f"patch {patch.name!r} failed to fill a batch: {exc!r}") from exc
    if not isinstance(result, torch.Tensor) or result.shape != out.shape:
        got = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise OcclusionError(f"patch {patch.name!r} filled a {tuple(out.shape)} batch and returned {got}")
    if inplace and result is not target and not _overlaps(images):
        images.copy_(result)
        result = images
    if plane:
        result = result.expand(-1, channels, -1, -1)
    return result


def _overlaps(t: torch.Tensor) -> bool:
    """Whether some elements share memory (an expanded view): such a tensor cannot be painted in place."""
    return any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape, strict=True))


def occlude(
    images: torch.Tensor,
    ids: Sequence[str],
    patch: PatchType | str,
    level: float,
    seed: int,
    *,
    stats: Mapping[str, float] | None = None,
    policy: Any = None,
    inplace: bool = False,
) -> tuple[torch.Tensor, list[MaskSpec]]:
    """Occlude a batch (B x C x H x W floats in [0, 1], any device); returns the images and masks.

    ``patch``: a name, a specification string (``"grid_cutout(cells=4)"``) or a patch object.
    ``stats``: dataset statistics for fills that use them (``{"mean": m}``; gray_box and
    noise_box fall back to 0.5). ``policy``: a :class:`PlacementPolicy` instead of seeded random
    placement. ``inplace=True`` paints the caller's batch (no copy: faster, for batches made
    fresh for the call); otherwise ``images`` is left untouched. Level 0 returns ``images`` as is.
    """
    patch = make_patch(patch)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] != len(ids):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a B x C x H x W batch with {len(ids)} images, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"expected a floating-point batch in [0, 1], got {images.dtype}")
    height, width = int(images.shape[-2]), int(images.shape[-1])
    level = _level(level)
    specs = plan_masks(patch, level, ids, height, width, seed, policy=policy)
    if level == 0 or len(ids) == 0:
        return images, specs
    return apply_masks(images, ids, specs, patch, level, seed, stats=stats, inplace=inplace), specs


def occlude_with_policy(
    images: torch.Tensor,
    ids: Sequence[str],
    policy: Any,
    patch: PatchType | str | None = None,
    level: float | None = None,
    seed: int = 0,
    *,
    stats: Mapping[str, float] | None = None,
    inplace: bool = False,
) -> tuple[torch.Tensor, list[MaskSpec]]:
    """Occlude a batch with every image placed by a :class:`PlacementPolicy` (a Hypothesis search
    cell). ``patch`` and ``level`` default to the policy's own."""
    patch = patch if patch is not None else policy.patch
    level = level if level is not None else policy.level
    if patch is None or level is None:
        raise OcclusionError(f"{policy!r} names no patch or level; pass them to occlude_with_policy")
    return occlude(images, ids, patch, level, seed, stats=stats, policy=policy, inplace=inplace)


class ImageStats:
    """Running mean and standard deviation of pixel intensities (model input space, [0, 1]).

    Feed it the clean dataset batch by batch (floats in [0, 1], or uint8 0..255), then pass
    ``as_dict()`` as ``occlude(..., stats=...)`` so gray_box and noise_box use the dataset's mean
    rather than a batch's: every image then gets the same fill whatever its batch."""

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0
        self._sumsq = 0.0

    def update(self, images: torch.Tensor | np.ndarray, chunk: int = 256) -> ImageStats:
        x = torch.as_tensor(images)
        scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
        for start in range(0, max(1, x.shape[0] if x.ndim else 1), chunk):
            part = x[start : start + chunk] if x.ndim else x
            part = part.to(torch.float64) * scale
            self.count += part.numel()
            self._sum += float(part.sum())
            self._sumsq += float((part * part).sum())
        return self

    @property
    def mean(self) -> float:
        if not self.count:
            raise OcclusionError("no images seen: update() the statistics before reading them")
        return self._sum / self.count

    @property
    def std(self) -> float:
        m = self.mean
        return max(self._sumsq / self.count - m * m, 0.0) ** 0.5

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


def dataset_stats(batches: Iterable[torch.Tensor | np.ndarray]) -> dict[str, float]:
    """``{"mean": m, "std": s}`` over every pixel of every batch (floats in [0, 1] or uint8)."""
    stats = ImageStats()
    for batch in batches:
        stats.update(batch)
    return stats.as_dict()
