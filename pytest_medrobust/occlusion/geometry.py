"""Occluder geometry: masks whose area is an exact share of the image.

Rounding rule
-------------
The target area of level ``p`` on an ``H x W`` image is ``T = round(p * H * W)`` pixels, with
Python's ``round`` (half to even; ``p * H * W`` is a float product, so ``0.3 * 224 * 224 =
15052.8`` gives 15053). Every built-in patch occludes **exactly** ``T`` pixels: not one more, not
one less, for any ``H x W`` (square or not) and any level in ``[0, 1)``. Level 0 occludes nothing
(``T = 0``); levels below 0, at or above 1, or NaN raise :class:`OcclusionError`.

A single occluder of area ``T`` is a *block*: ``h`` full rows of width ``w`` plus, when ``T`` is
not a multiple of ``w``, one partial row of ``r = T - h * w < w`` pixels under them, left-aligned
(see :func:`block_shape`). The width is ``round(sqrt(T / aspect))`` (a square for ``aspect = 1``),
widened where needed so that the block's ``ceil(T / w)`` rows fit in the image, and never wider
than the image. A block is therefore a rectangle with at most one short row, and it always fits.

Masks are unions of primitives kept as small, hashable, JSON-able values:

* :class:`Box` -- an axis-aligned rectangle;
* :class:`Bitmap` -- an arbitrary bit pattern inside a rectangle (glyphs, user masks).

:class:`MaskSpec` holds one image's primitives. Overlaps are allowed; the area is the size of the
union, which is what the engine checks.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import torch

from ..errors import OcclusionError

__all__ = [
    "Bitmap",
    "Box",
    "MaskSpec",
    "block_boxes",
    "block_shape",
    "box_shape",
    "check_level",
    "fill_free",
    "place_box",
    "render_masks",
    "target_area",
]


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned rectangle in pixel coordinates: rows [top, top+height), cols [left, left+width)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def area(self) -> int:
        return self.height * self.width


@dataclass(frozen=True, slots=True)
class Bitmap:
    """An arbitrary bit pattern whose bounding rectangle is rows [top, top+height), cols [left, left+width).

    ``bits`` is ``numpy.packbits`` of the ``height x width`` boolean array (row-major), so a
    bitmap is hashable, comparable and small in JSON (base64).
    """

    top: int
    left: int
    height: int
    width: int
    bits: bytes

    @classmethod
    def from_array(cls, array: Any, top: int = 0, left: int = 0) -> Bitmap:
        a = np.asarray(array, dtype=bool)
        if a.ndim != 2:
            raise OcclusionError(f"a bitmap needs a 2-D array, got shape {a.shape}")
        return cls(int(top), int(left), int(a.shape[0]), int(a.shape[1]), np.packbits(a, axis=None).tobytes())

    def to_numpy(self) -> np.ndarray:
        """The ``height x width`` boolean array (read-only; small ones are cached, as glyphs repeat)."""
        if self.height * self.width <= 1 << 15:
            return _unpack(self.bits, self.height, self.width)
        return _unpack.__wrapped__(self.bits, self.height, self.width)

    @property
    def area(self) -> int:
        """Set bits (the bitmap alone; overlaps with other primitives are not subtracted)."""
        return int(np.count_nonzero(self.to_numpy()))


@lru_cache(maxsize=1024)
def _unpack(bits: bytes, height: int, width: int) -> np.ndarray:
    n = height * width
    flat = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=n) if n else np.zeros(0, np.uint8)
    out = flat.view(bool).reshape(height, width)
    out.setflags(write=False)
    return out


def _in_bounds(top: int, left: int, h: int, w: int, height: int, width: int) -> bool:
    return h >= 0 and w >= 0 and top >= 0 and left >= 0 and top + h <= height and left + w <= width


@dataclass(frozen=True)
class MaskSpec:
    """Where one image is occluded: the union of ``boxes`` and ``bitmaps`` inside an H x W image.

    The v1 form (boxes only) is unchanged: ``MaskSpec(h, w, (Box(...), ...))``.
    """

    height: int
    width: int
    boxes: tuple[Box, ...] = ()
    bitmaps: tuple[Bitmap, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.boxes, tuple):
            object.__setattr__(self, "boxes", tuple(self.boxes))
        if not isinstance(self.bitmaps, tuple):
            object.__setattr__(self, "bitmaps", tuple(self.bitmaps))

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_array(cls, mask: Any) -> MaskSpec:
        """An arbitrary boolean H x W mask (numpy or torch), stored as one bitmap cropped to its extent."""
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().to("cpu").numpy()
        a = np.asarray(mask)
        if a.ndim != 2:
            raise OcclusionError(f"a mask must be 2-D (H x W), got shape {a.shape}")
        a = a.astype(bool)
        height, width = a.shape
        rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
        if rows.size == 0:
            return cls(height, width)
        t, b, l, r = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return cls(height, width, (), (Bitmap.from_array(a[t:b, l:r], t, l),))

    @classmethod
    def from_json(cls, data: dict) -> MaskSpec:
        try:
            boxes = tuple(Box(*map(int, b)) for b in data.get("boxes", ()))
            bitmaps = tuple(
                Bitmap(int(t), int(l), int(h), int(w), base64.b64decode(bits)) for t, l, h, w, bits in data.get("bitmaps", ())
            )
            return cls(int(data["height"]), int(data["width"]), boxes, bitmaps)
        except (KeyError, TypeError, ValueError) as exc:
            raise OcclusionError(f"not a mask specification: {exc}") from exc

    # -- views ----------------------------------------------------------------------------------

    def paint(self, out: np.ndarray) -> np.ndarray:
        """OR this mask into a boolean H x W array (in place) and return it."""
        for b in self.boxes:
            out[b.top : b.top + b.height, b.left : b.left + b.width] = True
        for m in self.bitmaps:
            out[m.top : m.top + m.height, m.left : m.left + m.width] |= m.to_numpy()
        return out

    def to_numpy(self) -> np.ndarray:
        """Boolean H x W array, True where occluded."""
        return self.paint(np.zeros((self.height, self.width), dtype=bool))

    def render(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean H x W tensor, True where occluded."""
        return torch.from_numpy(self.to_numpy()).to(device)

    @cached_property
    def area(self) -> int:
        """Pixels in the union of all primitives."""
        if not self.bitmaps and len(self.boxes) <= 1:
            return sum(b.area for b in self.boxes)
        return int(np.count_nonzero(self.to_numpy()))

    @property
    def level(self) -> float:
        return self.area / (self.height * self.width)

    def _primitives(self) -> tuple[Box | Bitmap, ...]:
        return (*self.boxes, *self.bitmaps)

    def in_bounds(self) -> bool:
        return all(_in_bounds(p.top, p.left, p.height, p.width, self.height, self.width) for p in self._primitives())

    def bbox(self) -> Box | None:
        """The smallest box holding every primitive (None for an empty mask)."""
        prims = [p for p in self._primitives() if p.height and p.width]
        if not prims:
            return None
        top, left = min(p.top for p in prims), min(p.left for p in prims)
        bottom, right = max(p.top + p.height for p in prims), max(p.left + p.width for p in prims)
        return Box(top, left, bottom - top, right - left)

    def shifted(self, dy: int, dx: int) -> MaskSpec:
        """The same shape moved by (dy, dx) pixels (the caller keeps it inside the image)."""
        return MaskSpec(
            self.height,
            self.width,
            tuple(Box(b.top + dy, b.left + dx, b.height, b.width) for b in self.boxes),
            tuple(Bitmap(m.top + dy, m.left + dx, m.height, m.width, m.bits) for m in self.bitmaps),
        )

    def to_json(self) -> dict:
        out: dict = {
            "height": self.height,
            "width": self.width,
            "boxes": [[b.top, b.left, b.height, b.width] for b in self.boxes],
        }
        if self.bitmaps:
            out["bitmaps"] = [[m.top, m.left, m.height, m.width, base64.b64encode(m.bits).decode("ascii")] for m in self.bitmaps]
        return out


def render_masks(specs: Sequence[MaskSpec], device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean B x 1 x H x W tensor of a batch of masks (drawn on the CPU, moved once)."""
    if not specs:
        raise OcclusionError("no masks to render")
    height, width = specs[0].height, specs[0].width
    out = np.zeros((len(specs), height, width), dtype=bool)
    for i, spec in enumerate(specs):
        spec.paint(out[i])
    return torch.from_numpy(out).unsqueeze(1).to(device)


# -- levels and areas ---------------------------------------------------------------------------


def check_level(level: float) -> float:
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise OcclusionError(f"occlusion level must be a number in [0, 1), got {level!r}") from None
    if math.isnan(level) or not (0.0 <= level < 1.0):
        raise OcclusionError(f"occlusion level must be in [0, 1), got {level}")
    return level


def target_area(level: float, height: int, width: int) -> int:
    """Pixels to occlude: ``round(level * height * width)`` (half to even)."""
    return int(round(check_level(level) * height * width))


def block_shape(area: int, max_height: int, max_width: int, aspect: float = 1.0) -> tuple[int, int, int]:
    """``(rows, width, rest)`` of a block of exactly ``area`` pixels fitting ``max_height x max_width``.

    The block is ``rows`` full rows of ``width`` pixels plus a partial row of ``rest < width``
    pixels; its bounding box is ``rows + (rest > 0)`` by ``width``. ``aspect`` is the wanted
    height / width ratio. Requires ``0 <= area <= max_height * max_width``.
    """
    if area <= 0:
        return 0, 0, 0
    if area > max_height * max_width:
        raise OcclusionError(f"a block of {area} px does not fit in {max_height}x{max_width}")
    w = int(round(math.sqrt(area / aspect)))
    w = min(max(w, -(-area // max_height), 1), max_width, area)
    rows, rest = divmod(area, w)
    return rows, w, rest


def block_boxes(top: int, left: int, rows: int, width: int, rest: int) -> tuple[Box, ...]:
    """The boxes of a block (see :func:`block_shape`) whose bounding box starts at (top, left)."""
    out = []
    if rows:
        out.append(Box(top, left, rows, width))
    if rest:
        out.append(Box(top + rows, left, 1, rest))
    return tuple(out)


def fill_free(occupied: np.ndarray, need: int, start: int) -> tuple[Box, ...]:
    """Top-up: ``need`` unoccupied pixels, taken in raster order from flat index ``start`` (wrapping),
    as one-row boxes. Marks them in ``occupied``. Used when pieces cannot be packed without overlap."""
    if need <= 0:
        return ()
    flat = occupied.reshape(-1)
    free = np.flatnonzero(~flat)
    if free.size < need:
        raise OcclusionError(f"cannot occlude {need} more pixels: only {free.size} are free")
    k = int(np.searchsorted(free, start % flat.size))
    chosen = np.sort(np.concatenate([free[k:], free[:k]])[:need])
    flat[chosen] = True
    width = occupied.shape[1]
    # split into runs of consecutive pixels on one row
    breaks = np.flatnonzero((np.diff(chosen) != 1) | (np.diff(chosen // width) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [chosen.size]])
    return tuple(
        Box(int(chosen[s] // width), int(chosen[s] % width), 1, int(e - s))
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    )


# -- v1 helpers (kept for callers of the first engine) ---------------------------------------------


def box_shape(area: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) of one plain rectangle of about ``area`` pixels, as square as the image allows.

    v1 helper: the rectangle's area is within half a row or column of ``area``. Built-in patches
    now use :func:`block_shape`, which is exact.
    """
    if area <= 0:
        return 0, 0
    side = max(1, int(round(math.sqrt(area))))
    short, long_ = min(height, width), max(height, width)
    if side <= short:
        other = min(long_, max(1, int(round(area / side))))
        return (side, other) if other <= width else (other, side)
    other = min(long_, max(1, int(round(area / short))))
    return (short, other) if height <= width else (other, short)


def place_box(area: int, height: int, width: int, rng: np.random.Generator) -> Box:
    """v1 helper: one rectangle of about ``area`` pixels at a uniformly random position inside the image."""
    h, w = box_shape(area, height, width)
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return Box(top, left, h, w)
