"""Patch types: how an occluder is placed (geometry) and what it is filled with (fill).

A patch type is any object with a ``name``, ``place(level, H, W, rng) -> MaskSpec`` and
``fill(images, masks, seeds) -> images`` (the :class:`PatchType` protocol). The built-in ones
are :class:`Patch` objects: one :class:`Geometry` plus one :class:`Fill`, with validated options.

Geometries (every one occludes exactly ``round(level * H * W)`` pixels, see ``geometry``):

* ``box`` -- one block (a rectangle with at most one short row), options ``aspect``;
* ``grid`` -- one small block per cell of a regular grid, ``cells`` per shorter side;
* ``erase`` -- ``count`` non-overlapping blocks of random aspect up to ``max_aspect``;
* ``annotation`` -- burnt-in text and markers (see :mod:`.annotation`).

Fills (all paint in place and only where the mask is True):

* ``constant`` -- one intensity ``value`` in [0, 1], or ``"mean"``: the dataset mean the engine
  passes as ``stats={"mean": m}`` (0.5 when it passes none);
* ``noise`` -- Gaussian noise ``clip(mean + std * z, 0, 1)``, the same on every channel, ``z``
  drawn on the CPU from a generator seeded per image, so CPU and CUDA give the same pixels;
* ``blur`` -- a strong Gaussian blur of the image (standard deviation ``sigma`` times the shorter
  side), computed at reduced resolution, pasted inside the mask;
* ``shuffle`` -- the masked pixels permuted among themselves (same permutation on every channel),
  seeded per image.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OcclusionError
from .geometry import Bitmap, Box, MaskSpec, block_boxes, block_shape, fill_free, target_area


@runtime_checkable
class PatchType(Protocol):
    """A named occluder. ``place`` chooses where one image is occluded; ``fill`` paints a batch.

    ``place`` must draw all randomness from ``rng`` (seeded per image and cell by the engine), so
    the same seed gives the same mask on every run, worker and device. It returns a
    :class:`MaskSpec` (or a boolean H x W array) of ``round(level * H * W)`` pixels, within one
    row or column; the engine checks shape, bounds and area and names the patch when they are wrong.

    Optional extras the engine uses when present:

    * ``place_at(level, H, W, rng, *, fy, fx, count=None) -> MaskSpec`` -- placement under a
      :class:`PlacementPolicy` (relative position ``(fy, fx)`` in [0, 1]^2, piece count). Without
      it, the mask from ``place`` is moved so that its bounding box sits at ``(fy, fx)``.
    * ``fill(..., *, stats=None)`` -- a ``stats`` keyword receives dataset statistics
      (``{"mean": m, "std": s}``, model input space).
    * ``with_options(**options) -> PatchType`` -- a configured copy (``make_patch(name, **opts)``).
    * ``multi_piece: bool`` -- whether a policy's ``count`` applies.
    """

    name: str

    def place(self, level: float, height: int, width: int, rng: np.random.Generator) -> MaskSpec: ...

    def fill(self, images: torch.Tensor, masks: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Return ``images`` (B x C x H x W in [0, 1]) painted where ``masks`` (B x 1 x H x W) is True.

        ``seeds`` holds one integer per image for fills that need randomness. The engine hands
        ``fill`` a batch it may paint in place."""
        ...


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of a geometry or fill: default, a checker (returns the normalised value or
    raises ``ValueError`` with what is expected), and a line of documentation."""

    default: Any
    check: Callable[[Any], Any]
    doc: str


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError("must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


def positive(value: Any) -> float:
    value = _number(value)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def at_least_one(value: Any) -> float:
    value = _number(value)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError("must be an integer >= 1")
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return int(value)


def intensity_or_mean(value: Any) -> float | str:
    if value == "mean":
        return "mean"
    value = _number(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be an intensity in [0, 1] or 'mean'")
    return value


def _stat_mean(stats: Mapping[str, float] | None) -> float:
    if stats and stats.get("mean") is not None:
        return float(stats["mean"])
    return 0.5


def _resolve_intensity(value: float | str, stats: Mapping[str, float] | None) -> float:
    return _stat_mean(stats) if value == "mean" else float(value)


def _seed63(seed: int) -> int:
    return int(seed) & 0x7FFF_FFFF_FFFF_FFFF


# -- fills --------------------------------------------------------------------------------------


def mask_regions(masks: torch.Tensor) -> list[tuple[int, int, int, int, int]]:
    """``(i, top, bottom, left, right)`` of the bounding box of every non-empty mask of a
    B x 1 x H x W batch (one small device-to-host copy). Fills work on these crops: the same
    result as whole-batch operations, with far less memory traffic."""
    plane = masks[:, 0].view(torch.uint8)
    rows = plane.amax(dim=2).cpu().numpy()
    cols = plane.amax(dim=1).cpu().numpy()
    out = []
    for i in range(rows.shape[0]):
        r, c = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if r.size:
            out.append((i, int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1))
    return out


class Fill:
    """What an occluder is filled with. ``apply`` paints ``images`` in place where ``masks``."""

    name: str = ""
    OPTIONS: dict[str, Option] = {}

    def apply(
        self, images: torch.Tensor, masks: torch.Tensor, seeds: list[int], options: Mapping[str, Any], stats
    ) -> torch.Tensor:
        raise NotImplementedError


class ConstantFill(Fill):
    name = "constant"
    OPTIONS = {"value": Option(0.0, intensity_or_mean, "intensity in [0, 1], or 'mean' for the dataset mean")}

    def apply(self, images, masks, seeds, options, stats):
        # One call for the whole batch: the same pixels as painting each image's crop.
        return images.masked_fill_(masks, _resolve_intensity(options["value"], stats))


def _generator(seed: int) -> torch.Generator:
    """A CPU generator for one image: fills draw on the CPU and move the result, so every device
    gets the same pixels."""
    return torch.Generator().manual_seed(_seed63(seed))


def _scatter(region: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> None:
    """Write ``values`` (n, or C x n) at the True pixels of ``mask`` (h x w, raster order) of
    every channel of ``region`` (C x h x w), in place."""
    for c in range(region.shape[0]):
        region[c].masked_scatter_(mask, values if values.ndim == 1 else values[c])


class NoiseFill(Fill):
    name = "noise"
    OPTIONS = {
        "mean": Option("mean", intensity_or_mean, "centre of the noise: an intensity, or 'mean' (dataset mean)"),
        "std": Option(0.2, positive, "standard deviation of the noise (intensity units)"),
    }

    def apply(self, images, masks, seeds, options, stats):
        centre, std = _resolve_intensity(options["mean"], stats), float(options["std"])
        counts = masks.sum(dim=(1, 2, 3)).tolist()
        # Each image draws from its own generator, in raster order of its masked pixels; one
        # masked_scatter_ then writes them all (the batch's raster order is image by image, then
        # channel by channel), instead of a handful of small calls per image.
        draws = [torch.randn(int(n), generator=_generator(seeds[i])) for i, n in enumerate(counts) if n]
        if not draws:
            return images
        values = [(z * std + centre).clamp_(0.0, 1.0) for z in draws]
        channels = images.shape[1]
        source = torch.cat([v for v in values for _ in range(channels)])
        return images.masked_scatter_(masks, source.to(device=images.device, dtype=images.dtype))


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


@lru_cache(maxsize=64)
def _blur_matrix(size: int, small: int, sigma_small: float) -> torch.Tensor:
    """``size x small`` float32 matrix: Gaussian blur on the reduced grid (replicated borders),
    then bilinear upsampling (pixel centres aligned, as ``align_corners=False``) to ``size``."""
    k = _gaussian_kernel(sigma_small)
    r = (k.numel() - 1) // 2
    g = torch.zeros(small, small, dtype=torch.float64)
    idx = torch.arange(small)
    for j in range(-r, r + 1):
        g.index_put_((idx, (idx + j).clamp(0, small - 1)), k[j + r].expand(small), accumulate=True)
    if small == size:
        return g.float()
    src = ((torch.arange(size, dtype=torch.float64) + 0.5) * (small / size) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=small - 1)
    i1 = (i0 + 1).clamp(max=small - 1)
    frac = src - i0
    u = torch.zeros(size, small, dtype=torch.float64)
    rows = torch.arange(size)
    u.index_put_((rows, i0), 1.0 - frac, accumulate=True)
    u.index_put_((rows, i1), frac, accumulate=True)
    return (u @ g).float()


def gaussian_blur(images: torch.Tensor, sigma_px: float, regions=None) -> torch.Tensor | list[torch.Tensor]:
    """Strong Gaussian blur (standard deviation ``sigma_px`` pixels) of a B x C x H x W batch.

    Computed at reduced resolution, as linear maps: area-downsample by
    ``f = max(1, floor(sigma_px / 1.5))``, separable Gaussian of ``sigma_px / f`` with replicated
    borders, bilinear upsample -- ``A_h @ pooled @ A_w.T`` per image. Without ``regions`` returns
    the blurred float32 batch; with ``regions`` (from :func:`mask_regions`) only those crops, as a
    list of C x h x w tensors (much cheaper). An image whose channels are equal is blurred once
    and the result repeated, so a grayscale image stays exactly grayscale."""
    x = images.float()
    B, C, H, W = x.shape
    f = max(1, int(sigma_px // 1.5))
    h, w = -(-H // f), -(-W // f)
    s = sigma_px / f
    ah = _blur_matrix(H, h, s).to(x.device)
    aw = _blur_matrix(W, w, s).to(x.device)
    todo = regions if regions is not None else [(i, 0, H, 0, W) for i in range(B)]
    out = []
    for i, t, b, l, r in todo:
        image = x[i]
        gray = C > 1 and all(torch.equal(image[0], image[c]) for c in range(1, C))
        src = image[:1] if gray else image
        pooled = F.adaptive_avg_pool2d(src, (h, w)) if f > 1 else src
        crop = torch.matmul(ah[t:b], torch.matmul(pooled, aw[l:r].T))
        out.append(crop.expand(C, -1, -1) if gray else crop)
    return out if regions is not None else torch.stack(out)


class BlurFill(Fill):
    name = "blur"
    OPTIONS = {"sigma": Option(0.04, positive, "Gaussian standard deviation as a fraction of the shorter image side")}

    def apply(self, images, masks, seeds, options, stats):
        regions = mask_regions(masks)
        if not regions:
            return images
        H, W = images.shape[-2:]
        crops = gaussian_blur(images, float(options["sigma"]) * min(H, W), regions)
        for (i, t, b, l, r), blurred in zip(regions, crops, strict=True):
            region = images[i, :, t:b, l:r]
            region.copy_(torch.where(masks[i, :, t:b, l:r], blurred.to(images.dtype), region))
        return images


class ShuffleFill(Fill):
    name = "shuffle"
    OPTIONS: dict[str, Option] = {}

    def apply(self, images, masks, seeds, options, stats):
        for i, t, b, l, r in mask_regions(masks):
            region = images[i, :, t:b, l:r]
            m = masks[i, 0, t:b, l:r]
            values = torch.masked_select(region, m).view(region.shape[0], -1)  # C x n, raster order
            perm = torch.randperm(values.shape[1], generator=_generator(seeds[i])).to(images.device)
            _scatter(region, m, values[:, perm])
        return images


FILLS: dict[str, Fill] = {f.name: f for f in (ConstantFill(), NoiseFill(), BlurFill(), ShuffleFill())}


def fill_choice(value: Any) -> str:
    if not isinstance(value, str) or value not in FILLS:
        raise ValueError(f"must be one of {', '.join(repr(k) for k in FILLS)}")
    return value


# -- geometries ---------------------------------------------------------------------------------


class Geometry:
    """Where an occluder goes. ``place`` returns one image's mask of exactly the level's area.

    ``fy, fx`` (both None for seeded random placement) is a relative position in [0, 1]^2 from a
    placement policy: 0 = top / left edge, 1 = bottom / right edge, 0.5 = centred. ``count``
    overrides the number of pieces of a multi-piece geometry."""

    name: str = ""
    multi_piece = False
    OPTIONS: dict[str, Option] = {}

    def place(self, level, height, width, rng, options, fy=None, fx=None, count=None) -> MaskSpec:
        raise NotImplementedError

    def validate(self, options: Mapping[str, Any]) -> None:
        """Checks across options (each option alone is checked by its :class:`Option`); raise
        ``ValueError`` naming the options."""


def _offset(rel: float, span: int) -> int:
    return int(round(min(max(rel, 0.0), 1.0) * span))


class BoxGeometry(Geometry):
    name = "box"
    OPTIONS = {"aspect": Option(1.0, positive, "height / width of the box (1 = square)")}

    def place(self, level, height, width, rng, options, fy=None, fx=None, count=None):
        area = target_area(level, height, width)
        if area == 0:
            return MaskSpec(height, width)
        rows, w, rest = block_shape(area, height, width, options["aspect"])
        bh = rows + (rest > 0)
        if fy is None:
            top, left = int(rng.integers(0, height - bh + 1)), int(rng.integers(0, width - w + 1))
        else:
            top, left = _offset(fy, height - bh), _offset(fx, width - w)
        return MaskSpec(height, width, block_boxes(top, left, rows, w, rest))


def split_area(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` summing exactly to ``total`` (largest remainder, ties
    to the earlier index). Each share is at most ``ceil(total * w / sum(w))``."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(np.int64)
    rest = int(total - base.sum())
    if rest:
        order = np.argsort(-(exact - base), kind="stable")
        base[order[:rest]] += 1
    return base


@lru_cache(maxsize=256)
def _grid_template(height: int, width: int, area: int, cells: int):
    """Everything about a grid mask but its phase: per piece, the free span inside its cell
    (rows, cols), the cell's origin, and the piece's pixels as flat offsets from its corner."""
    short = min(height, width)
    ny = max(1, min(height, int(round(cells * height / short))))
    nx = max(1, min(width, int(round(cells * width / short))))
    ys = (np.arange(ny + 1) * height) // ny
    xs = (np.arange(nx + 1) * width) // nx
    ch, cw = np.diff(ys), np.diff(xs)
    quotas = split_area(area, np.outer(ch, cw).ravel()).reshape(ny, nx)
    origin, span, sizes, offsets = [], [], [], []
    shapes: dict[tuple[int, int, int], np.ndarray] = {}
    for i in range(ny):
        for j in range(nx):
            a = int(quotas[i, j])
            if not a:
                continue
            rows, w, rest = block_shape(a, int(ch[i]), int(cw[j]))
            key = (rows, w, rest)
            if key not in shapes:
                full = (np.arange(rows)[:, None] * width + np.arange(w)[None, :]).ravel()
                shapes[key] = np.concatenate([full, rows * width + np.arange(rest)])
            origin.append((ys[i], xs[j]))
            span.append((ch[i] - rows - (rest > 0), cw[j] - w))
            sizes.append(a)
            offsets.append(shapes[key])
    return (
        np.array(origin, dtype=np.int64).reshape(-1, 2),
        np.array(span, dtype=np.float64).reshape(-1, 2),
        np.array(sizes, dtype=np.int64),
        np.concatenate(offsets),
    )


class GridGeometry(Geometry):
    """One block per cell of a regular grid; the blocks' shares of the area are proportional to
    the cells' areas (largest remainder), so the total is exact. All blocks of an image share one
    position inside their cells (the phase): random, or the policy's (fy, fx). Stored as one
    bitmap (fast to plan and to paint)."""

    name = "grid"
    multi_piece = True
    OPTIONS = {"cells": Option(8, count, "grid cells along the shorter side (capped at the image size)")}

    def place(self, level, height, width, rng, options, fy=None, fx=None, count=None):
        area = target_area(level, height, width)
        if area == 0:
            return MaskSpec(height, width)
        cells = int(count if count is not None else options["cells"])
        origin, span, sizes, offsets = _grid_template(height, width, area, cells)
        phase = rng.random(2) if fy is None else np.array([min(max(fy, 0.0), 1.0), min(max(fx, 0.0), 1.0)])
        corner = origin + np.round(span * phase).astype(np.int64)
        flat = np.zeros(height * width, dtype=bool)
        flat[offsets + np.repeat(corner[:, 0] * width + corner[:, 1], sizes)] = True
        return MaskSpec(height, width, (), (Bitmap(0, 0, height, width, np.packbits(flat).tobytes()),))


def cluster_position(rng: np.random.Generator, fy, fx, attempt: int, *, edges: bool = False) -> tuple[float, float]:
    """Relative position of one piece of a multi-piece occluder.

    Seeded random placement (``fy is None``): uniform in [0, 1]^2 (or U-shaped toward the edges
    with ``edges=True``, like burnt-in annotations). Under a policy: attempt 0 is exactly
    ``(fy, fx)``; later attempts scatter around it with a spread growing with the attempt."""
    if fy is None:
        v = rng.beta(0.5, 0.5, 2) if edges else rng.random(2)
        return float(v[0]), float(v[1])
    if attempt == 0:
        return float(fy), float(fx)
    spread = 0.08 + 0.04 * attempt
    dy, dx = rng.normal(0.0, spread, 2)
    return min(max(fy + float(dy), 0.0), 1.0), min(max(fx + float(dx), 0.0), 1.0)


class EraseGeometry(Geometry):
    name = "erase"
    multi_piece = True
    ATTEMPTS = 24
    OPTIONS = {
        "count": Option(4, count, "number of rectangles"),
        "max_aspect": Option(3.0, at_least_one, "largest height/width (or width/height) ratio of a rectangle"),
    }

    def place(self, level, height, width, rng, options, fy=None, fx=None, count=None):
        area = target_area(level, height, width)
        if area == 0:
            return MaskSpec(height, width)
        n = int(count if count is not None else options["count"])
        log_ma = math.log(float(options["max_aspect"]))
        split = split_area(area, rng.uniform(0.5, 1.5, n))
        shares = sorted((int(s) for s in split if s > 0), reverse=True)
        occupied = np.zeros((height, width), dtype=bool)
        boxes: list[Box] = []
        covered = 0
        last = 0
        for k, share in enumerate(shares):
            aspect = math.exp(rng.uniform(-log_ma, log_ma)) if log_ma > 0 else 1.0
            rows, w, rest = block_shape(share, height, width, aspect)
            bh = rows + (rest > 0)
            for attempt in range(self.ATTEMPTS):
                ry, rx = cluster_position(rng, fy, fx, attempt + (k > 0))
                top, left = _offset(ry, height - bh), _offset(rx, width - w)
                if not occupied[top : top + bh, left : left + w].any():
                    break
            piece = block_boxes(top, left, rows, w, rest)
            for b in piece:  # on overlap (crowded high levels) the union falls short: topped up below
                occupied[b.top : b.top + b.height, b.left : b.left + b.width] = True
            boxes.extend(piece)
            last = top * width + left
        covered = int(np.count_nonzero(occupied))
        if covered < area:
            boxes.extend(fill_free(occupied, area - covered, last))
        return MaskSpec(height, width, tuple(boxes))


# -- patch = geometry + fill ----------------------------------------------------------------------


BOX, GRID, ERASE = BoxGeometry(), GridGeometry(), EraseGeometry()


class Patch:
    """A built-in (or user-built) patch type: one geometry plus one fill, with validated options.

    ``fixed`` options are part of the patch's identity (white_box's value 1) and cannot be
    changed; ``defaults`` override the geometry's and fill's own defaults; ``fill_option`` lets
    users pick the fill (``grid_cutout(fill='noise')``). ``with_options(**opts)`` returns a
    configured copy; invalid options raise :class:`OcclusionError` naming the patch and option.
    """

    def __init__(
        self,
        name: str,
        geometry: Geometry,
        fill: str = "constant",
        *,
        description: str = "",
        fixed: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
        fill_option: bool = False,
        **options: Any,
    ):
        self.name = name
        self.geometry = geometry
        self.description = description
        self._base_fill = fill
        self._fixed = dict(fixed or {})
        self._defaults = dict(defaults or {})
        self._fill_option = fill_option
        self._given: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        self._configure(options)

    # -- options --------------------------------------------------------------------------------

    def _fill_of(self, options: Mapping[str, Any]) -> Fill:
        name = options.get("fill", self._defaults.get("fill", self._base_fill)) if self._fill_option else self._base_fill
        try:
            return FILLS[fill_choice(name)]
        except ValueError as exc:
            raise OcclusionError(f"patch {self.name!r}: option 'fill' {exc}, got {name!r}") from None

    def option_specs(self, options: Mapping[str, Any] | None = None) -> dict[str, Option]:
        """The options this patch accepts (with the fill chosen by ``options``)."""
        specs = dict(self.geometry.OPTIONS)
        if self._fill_option:
            specs["fill"] = Option(self._defaults.get("fill", self._base_fill), fill_choice, "fill: " + ", ".join(FILLS))
        specs.update(self._fill_of(options or self._given).OPTIONS)
        return {k: v for k, v in specs.items() if k not in self._fixed}

    def _configure(self, given: Mapping[str, Any]) -> None:
        specs = self.option_specs(given)
        resolved: dict[str, Any] = {k: self._defaults.get(k, spec.default) for k, spec in specs.items()}
        for key, value in given.items():
            if key not in specs:
                others = [f.name for f in FILLS.values() if key in f.OPTIONS]
                if key in self._fixed:
                    raise OcclusionError(f"patch {self.name!r}: option {key!r} is fixed at {self._fixed[key]!r}")
                if others and self._fill_option:
                    raise OcclusionError(f"patch {self.name!r}: option {key!r} applies only with fill={others[0]!r}")
                valid = ", ".join(sorted(specs)) or "none"
                raise OcclusionError(f"patch {self.name!r} has no option {key!r} (its options: {valid})")
            try:
                resolved[key] = specs[key].check(value)
            except ValueError as exc:
                raise OcclusionError(f"patch {self.name!r}: option {key!r} {exc}, got {value!r}") from None
        resolved.update(self._fixed)
        try:
            self.geometry.validate(resolved)
        except ValueError as exc:
            raise OcclusionError(f"patch {self.name!r}: {exc}") from None
        self._given = dict(given)
        self.options = resolved

    def with_options(self, **options: Any) -> Patch:
        new = copy.copy(self)
        new._configure({**self._given, **options})
        return new

    @property
    def label(self) -> str:
        """``name`` or ``name(opt=value, ...)`` for the options given; ``make_patch`` parses it back."""
        if not self._given:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in sorted(self._given.items()))})"

    @property
    def multi_piece(self) -> bool:
        return self.geometry.multi_piece

    # Every built-in fill treats the channels alike (same constant, noise, blur, permutation), so
    # a grayscale batch whose channels are one expanded plane is painted once, on that plane.
    channel_uniform = True

    # -- the protocol ---------------------------------------------------------------------------

    def place(self, level: float, height: int, width: int, rng: np.random.Generator) -> MaskSpec:
        return self.geometry.place(level, height, width, rng, self.options)

    def place_at(self, level, height, width, rng, *, fy: float, fx: float, count: int | None = None) -> MaskSpec:
        return self.geometry.place(level, height, width, rng, self.options, fy, fx, count)

    def fill(
        self, images: torch.Tensor, masks: torch.Tensor, seeds: list[int], *, stats: Mapping[str, float] | None = None
    ) -> torch.Tensor:
        return self._fill_of(self.options).apply(images, masks, seeds, self.options, stats)

    def __repr__(self) -> str:
        return f"<patch {self.label}>"


class SolidBox(Patch):
    """One box of the level's area filled with a constant intensity (the v1 patch class)."""

    def __init__(self, name: str, value: float, description: str = ""):
        super().__init__(name, BOX, "constant", description=description, fixed={"value": float(value)})
        self.value = float(value)


black_box = SolidBox("black_box", 0.0, "one box filled with 0 (black)")
white_box = SolidBox("white_box", 1.0, "one box filled with 1 (white)")
gray_box = Patch(
    "gray_box",
    BOX,
    "constant",
    defaults={"value": "mean"},
    description="one box filled with the dataset's mean intensity (stats['mean'], 0.5 without stats)",
)
noise_box = Patch("noise_box", BOX, "noise", description="one box of Gaussian noise around the dataset mean")
blur_box = Patch("blur_box", BOX, "blur", description="one box of the image under a strong Gaussian blur")
shuffle_box = Patch("shuffle_box", BOX, "shuffle", description="one box whose pixels are randomly permuted")
grid_cutout = Patch("grid_cutout", GRID, "constant", fill_option=True, description="small blocks on a regular grid, one per cell")
random_erase = Patch(
    "random_erase", ERASE, "constant", fill_option=True, description="several non-overlapping rectangles of random aspect"
)
