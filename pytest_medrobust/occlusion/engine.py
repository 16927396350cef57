"""Planning and applying masks: seeded per image, checked, painted on whole batches."""

from __future__ import annotations

import hashlib
import inspect
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from ..errors import OcclusionError
from .geometry import Bitmap, Box, MaskSpec, check_level, render_masks, target_area
from .patches import Patch, PatchType
from .registry import make_patch


def placement_seed(seed: int, image_id: str, patch: str, level: float) -> int:
    """A 64-bit seed for one image in one cell, stable across runs, platforms and processes."""
    key = f"{int(seed)}|{image_id}|{patch}|{float(level):.6f}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


def _checked(spec: Any, patch: PatchType, level: float, height: int, width: int) -> MaskSpec:
    """Check one mask from a patch's ``place``: type, shape, bounds and area (names the patch)."""
    name = patch.name if hasattr(patch, "name") else repr(patch)  # repr only when there is no name
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
    area = _area(spec)
    if abs(area - target) > tolerance:
        raise OcclusionError(
            f"patch {name!r} occluded {area} pixels at level {level}; "
            f"expected {target} (within one row or column, {tolerance} px)"
        )
    return spec


def _area(spec: MaskSpec) -> int:
    """``spec.area``, without rendering the mask for one box or two disjoint ones (a block and
    its short row: every box patch), the common case."""
    boxes = spec.boxes
    if spec.bitmaps or len(boxes) > 2:
        return spec.area
    if len(boxes) == 2:
        a, b = boxes
        rows_meet = a.top < b.top + b.height and b.top < a.top + a.height
        if not (rows_meet and a.left < b.left + b.width and b.left < a.left + a.width):
            return a.area + b.area
        return spec.area
    return sum(b.area for b in boxes)


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
    seeds = [placement_seed(seed, image_id, patch.name, level) for image_id in ids]
    return [place_one(patch, level, height, width, rng) for rng in seeded_generators(seeds, shared=isinstance(patch, Patch))]


# numpy's SeedSequence constants (numpy/random/bit_generator.pyx) and PCG64's LCG multiplier:
# ``np.random.default_rng(seed)`` is SeedSequence(seed) -> 4 words -> PCG64's seeding steps.
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_M128 = (1 << 128) - 1


def _pcg64_states(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """PCG64 ``(state, inc)`` of ``default_rng(seed)`` for every 64-bit seed, the SeedSequence
    hashing done for all seeds at once in numpy (uint32 arithmetic wraps as the C code's does)."""
    n = len(seeds)
    words = np.array(seeds, dtype=np.uint64)
    # A seed is its 32-bit words, low first (one word below 2**32: the missing one mixes as 0).
    entropy = [(words & np.uint64(0xFFFFFFFF)).astype(np.uint32), (words >> np.uint64(32)).astype(np.uint32)]
    const = np.full(n, _INIT_A, dtype=np.uint32)

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal const
        value = value ^ const
        const = const * np.uint32(_MULT_A)
        value = value * const
        return value ^ (value >> np.uint32(16))

    zero = np.zeros(n, dtype=np.uint32)
    pool = [hashmix(entropy[0]), hashmix(entropy[1]), hashmix(zero), hashmix(zero)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                mixed = np.uint32(_MIX_L) * pool[dst] - np.uint32(_MIX_R) * hashmix(pool[src])
                pool[dst] = mixed ^ (mixed >> np.uint32(16))
    out = np.empty((n, 8), dtype=np.uint32)
    hconst = np.full(n, _INIT_B, dtype=np.uint32)
    for i in range(8):
        value = pool[i % 4] ^ hconst
        hconst = hconst * np.uint32(_MULT_B)
        value = value * hconst
        out[:, i] = value ^ (value >> np.uint32(16))
    state64 = (out[:, 0::2].astype(np.uint64) | (out[:, 1::2].astype(np.uint64) << np.uint64(32))).tolist()
    result = []
    for w0, w1, w2, w3 in state64:
        initstate, inc = (w0 << 64) | w1, (((w2 << 64) | w3) << 1 | 1) & _M128
        state = (inc * 1) & _M128  # state 0, one step: 0 * mult + inc
        state = ((state + initstate) * _PCG_MULT + inc) & _M128
        result.append((state, inc))
    return result


_FAST_SEEDING: bool | None = None


def _fast_seeding_works() -> bool:
    """Whether :func:`_pcg64_states` reproduces this numpy's ``default_rng`` (checked once)."""
    global _FAST_SEEDING
    if _FAST_SEEDING is None:
        probe = [0, 1, 2**32 - 1, 2**32, 0x9E3779B97F4A7C15, 2**64 - 1]
        try:
            ours = _pcg64_states(probe)
            theirs = [np.random.default_rng(s).bit_generator.state["state"] for s in probe]
            _FAST_SEEDING = ours == [(t["state"], t["inc"]) for t in theirs]
        except Exception:  # noqa: BLE001 - any surprise: use numpy's own seeding
            _FAST_SEEDING = False
    return _FAST_SEEDING


def seeded_generators(seeds: Sequence[int], *, shared: bool = False) -> Iterator[np.random.Generator]:
    """``np.random.default_rng(seed)`` for every seed, in order, bit for bit.

    ``shared=True`` (for built-in patches, which keep no reference to their generator): one
    PCG64 generator is re-seeded in place per image with states computed for all seeds at once
    -- about ten times cheaper than building a generator per image, the largest cost of planning
    box masks. The shortcut is used only when it reproduces numpy's seeding (checked once)."""
    if not shared or len(seeds) < 8 or not _fast_seeding_works():
        for s in seeds:
            yield np.random.default_rng(s)
        return
    bit_generator = np.random.PCG64()
    generator = np.random.Generator(bit_generator)
    for state, inc in _pcg64_states(seeds):
        bit_generator.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc}, "has_uint32": 0, "uinteger": 0}
        yield generator


_ACCEPTS_STATS: dict[Any, bool] = {}


def _accepts_stats(fill: Any) -> bool:
    """Whether ``fill`` takes a ``stats`` keyword (remembered per function: inspecting a
    signature costs more than painting a batch)."""
    key = getattr(fill, "__func__", None) or fill
    try:
        return _ACCEPTS_STATS[key]
    except (KeyError, TypeError):
        pass
    try:
        params = inspect.signature(fill).parameters.values()
        found = any(p.name == "stats" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    except (TypeError, ValueError):
        found = False
    try:
        _ACCEPTS_STATS[key] = found
    except TypeError:  # an unhashable callable: inspected every time
        pass
    return found


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
