"""Burnt-in annotations: side markers, labels, arrows and dots like those printed on radiographs.

Glyphs
------
Text is rendered once with Pillow's built-in bitmap font (``ImageFont.load_default_imagefont``,
which ships inside Pillow and does not depend on system fonts or FreeType), emboldened by one
pixel, and cached. Markers are drawn once with ``ImageDraw``: an arrow (in four directions) and
a round dot. A glyph is scaled by an integer factor with nearest-neighbour repetition (blocky,
like many burnt-in fonts), and each (glyph, scale) is cached.

Exact-area rule
---------------
With ``T = round(level * H * W)``, items (a text from ``texts`` or, with ``markers``, an arrow or
a dot) are drawn from the per-image generator and stamped one after another. Each item's scale
is chosen so that about ``count`` items reach ``T`` (times a random factor in [0.7, 1.3], capped
so the item fits in the image); its position is random, favouring the edges (a U-shaped
distribution), or clustered around a placement policy's ``(fy, fx)``. An item adds only the
pixels not yet occluded. The item that would pass ``T`` is *trimmed*: only its first
``T - covered`` new pixels in raster order are kept (its lower part is cut off). If 64 items have
not reached ``T`` (very high levels, or an image too small for any glyph), the rest is topped up
with free pixels in raster order from the last item's corner (short one-row boxes). The result
is exactly ``T`` pixels.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .geometry import Bitmap, Box, MaskSpec, fill_free, target_area
from .patches import Geometry, Option, Patch, cluster_position
from .patches import count as _count

DEFAULT_TEXTS = ("L", "R", "PORTABLE", "AP", "SUPINE", "ERECT")
MAX_ITEMS = 64


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError("must be a string or a list of strings") from None
    if not all(isinstance(t, str) for t in items):
        raise ValueError("must be a list of strings")
    if any(not t.strip() or not t.isascii() or not t.isprintable() for t in items):
        raise ValueError("must hold non-blank printable ASCII strings")
    return items


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be True or False")
    return value


@lru_cache(maxsize=1)
def _font() -> Any:
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()


@cache
def base_glyph(token: tuple[str, Any]) -> np.ndarray:
    """The unscaled boolean bitmap of ``("text", s)``, ``("arrow", quarter_turns)`` or ``("dot", 0)``."""
    kind, arg = token
    if kind == "text":
        font = _font()
        l, t, r, b = font.getbbox(arg)
        img = Image.new("L", (r - l + 4, b - t + 4), 0)
        ImageDraw.Draw(img).text((2 - l, 2 - t), arg, fill=255, font=font)
        a = np.asarray(img) > 127
        a = a | np.roll(a, 1, axis=1)  # bold: one pixel wider strokes
    elif kind == "arrow":
        img = Image.new("L", (15, 11), 0)
        d = ImageDraw.Draw(img)
        d.rectangle((0, 4, 8, 6), fill=255)
        d.polygon([(7, 0), (14, 5), (7, 10)], fill=255)
        a = np.rot90(np.asarray(img) > 127, k=int(arg))
    elif kind == "dot":
        img = Image.new("L", (9, 9), 0)
        ImageDraw.Draw(img).ellipse((0, 0, 8, 8), fill=255)
        a = np.asarray(img) > 127
    else:
        raise ValueError(f"unknown annotation token {token!r}")
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    out = np.ascontiguousarray(a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    out.setflags(write=False)
    return out


@lru_cache(maxsize=256)
def scaled_glyph(token: tuple[str, Any], scale: int) -> tuple[np.ndarray, bytes, int]:
    """(bitmap, packed bits, ink pixels) of a glyph magnified ``scale`` times (nearest neighbour)."""
    g = base_glyph(token)
    a = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1) if scale > 1 else g.copy()
    a.setflags(write=False)
    return a, np.packbits(a, axis=None).tobytes(), int(a.sum())


def _menu(options: dict) -> list[tuple[str, Any]]:
    menu: list[tuple[str, Any]] = [("text", t) for t in options["texts"]]
    if options["markers"]:
        menu += [("arrow", k) for k in range(4)] + [("dot", 0)]
    return menu


class AnnotationGeometry(Geometry):
    name = "annotation"
    multi_piece = True
    OPTIONS = {
        "texts": Option(DEFAULT_TEXTS, _texts, "the words and letters to burn in"),
        "markers": Option(True, _flag, "also draw arrows and dots"),
        "count": Option(6, _count, "about how many items reach the level (sets their size)"),
    }

    def validate(self, options):
        if not options["texts"] and not options["markers"]:
            raise ValueError("option 'texts' is empty and option 'markers' is False: nothing to draw")

    def place(self, level, height, width, rng, options, fy=None, fx=None, count=None):
        area = target_area(level, height, width)
        if area == 0:
            return MaskSpec(height, width)
        n = int(count if count is not None else options["count"])
        menu = _fitting_menu(tuple(options["texts"]), bool(options["markers"]), height, width)
        # The occupied pixels are one Python integer, bit y * width + x: masking, counting and
        # marking a glyph are then a few C-level big-integer operations instead of a handful of
        # NumPy calls on small windows: about 2x faster at 128 px (docs/performance.md).
        occupied = 0
        bitmaps: list[Bitmap] = []
        covered, last = 0, 0
        for item in range(MAX_ITEMS if menu else 0):
            token, ink1, s_max = menu[int(rng.integers(len(menu)))]
            s = math.sqrt(area / (n * ink1)) * float(rng.uniform(0.7, 1.3))
            s = min(max(1, int(round(s))), s_max)
            glyph, bits, _ = scaled_glyph(token, s)
            gh, gw = glyph.shape
            ry, rx = cluster_position(rng, fy, fx, item, edges=True)
            top, left = int(round(ry * (height - gh))), int(round(rx * (width - gw)))
            ink = _glyph_bits(token, s, width) << (top * width + left)
            new = ink ^ (ink & occupied)
            added = new.bit_count()
            if not added:
                continue
            last = top * width + left
            if covered + added <= area:
                occupied |= ink
                bitmaps.append(Bitmap(top, left, gh, gw, bits))
                covered += added
            else:  # trim: keep the first new pixels in raster order
                window = _to_array(new >> last, gh, width)[:, :gw]
                keep = np.flatnonzero(window.ravel())[: area - covered]
                part = np.zeros(gh * gw, dtype=bool)
                part[keep] = True
                part = part.reshape(gh, gw)
                occupied |= _from_array(part, width) << last
                bitmaps.append(Bitmap.from_array(part, top, left))
                covered = area
            if covered == area:
                break
        boxes: tuple[Box, ...] = ()
        if covered < area:
            boxes = fill_free(_to_array(occupied, height, width), area - covered, last)
        return MaskSpec(height, width, boxes, tuple(bitmaps))


@lru_cache(maxsize=64)
def _fitting_menu(texts: tuple[str, ...], markers: bool, height: int, width: int) -> tuple[tuple[Any, int, int], ...]:
    """``(token, ink pixels, largest scale)`` of every item of the menu that fits the image."""
    out = []
    for token in _menu({"texts": texts, "markers": markers}):
        g1 = base_glyph(token)
        if g1.shape[0] <= height and g1.shape[1] <= width:
            out.append((token, int(g1.sum()), min(height // g1.shape[0], width // g1.shape[1])))
    return tuple(out)


@lru_cache(maxsize=1024)
def _glyph_bits(token: tuple[str, Any], scale: int, width: int) -> int:
    """The scaled glyph's ink as an integer in a raster ``width`` pixels wide (bit y * width + x)."""
    return _from_array(scaled_glyph(token, scale)[0], width)


def _from_array(array: np.ndarray, width: int) -> int:
    rows, cols = array.shape
    frame = np.zeros((rows, width), dtype=bool)
    frame[:, :cols] = array
    return int.from_bytes(np.packbits(frame, axis=None, bitorder="little").tobytes(), "little")


def _to_array(value: int, rows: int, width: int) -> np.ndarray:
    """The first ``rows`` rows of a raster integer as a boolean ``rows x width`` array."""
    size = rows * width
    raw = np.frombuffer((value & ((1 << size) - 1)).to_bytes((size + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, count=size, bitorder="little").view(bool).reshape(rows, width).copy()


ANNOTATION = AnnotationGeometry()

annotation = Patch(
    "annotation",
    ANNOTATION,
    "constant",
    defaults={"value": 1.0},
    fill_option=True,
    description="burnt-in text and markers ('L', 'R', 'PORTABLE', arrows, dots), white by default",
)
