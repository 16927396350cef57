"""Pictures of occlusion masks: PNG bytes for the README, the docs and the HTML report.

Public API::

    mask_overlay(image, mask, *, color=(230, 40, 40), alpha=0.45) -> numpy H x W x 3 uint8
    render_mask_png(image, mask, path=None, *, occluded=None, scale=1, label=None) -> bytes
    contact_sheet(images, masks, labels=None, *, occluded=None, columns=4, scale=1, path=None) -> bytes
    render_policy_png(image, image_id, policy, seed=0, *, patch=None, level=None, stats=None,
                      scale=1, label=None, path=None) -> bytes
    png_data_uri(png) -> str                     # for <img src=...> in a self-contained HTML page

``image`` is a grayscale ``H x W`` or ``C x H x W`` (C = 1 or 3) array or tensor in [0, 1] (uint8
0..255 is accepted too); ``mask`` is a :class:`~pytest_medrobust.occlusion.MaskSpec` or a boolean
``H x W`` array or tensor. The overlay tints the occluded region red and outlines it; with
``occluded`` (the image after the patch was applied), that image is shown beside the overlay.
Only numpy and Pillow are used; torch tensors are converted on the CPU.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["contact_sheet", "mask_overlay", "png_data_uri", "render_mask_png", "render_policy_png"]

_GAP = 4
_LABEL_H = 14


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().to("cpu").float().numpy() if x.dtype.is_floating_point else x.detach().to("cpu").numpy()
    return np.asarray(x)


def _rgb(image: Any) -> np.ndarray:
    """H x W x 3 uint8 from a grayscale or colour image in [0, 1] (or uint8)."""
    a = _to_numpy(image)
    if a.ndim == 3 and a.shape[0] in (1, 3):  # C x H x W (as the engine's batches); else H x W x C
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"expected an H x W or C x H x W image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def _mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    if hasattr(mask, "to_numpy") and hasattr(mask, "boxes"):
        m = mask.to_numpy()
    else:
        m = _to_numpy(mask)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        m = m.astype(bool)
    if m.shape != shape:
        raise ValueError(f"mask is {m.shape[0]}x{m.shape[1]} but the image is {shape[0]}x{shape[1]}")
    return m


def _outline(m: np.ndarray) -> np.ndarray:
    """Mask pixels with at least one 4-neighbour outside the mask (image borders count as outside)."""
    p = np.pad(m, 1, constant_values=False)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def mask_overlay(image: Any, mask: Any, *, color: tuple[int, int, int] = (230, 40, 40), alpha: float = 0.45) -> np.ndarray:
    """The image with the occluded region tinted ``color`` and outlined: H x W x 3 uint8."""
    rgb = _rgb(image)
    m = _mask(mask, rgb.shape[:2])
    out = rgb.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[m] = (1.0 - alpha) * out[m] + alpha * tint
    out[_outline(m)] = tint
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _scaled(a: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(a, scale, axis=0), scale, axis=1) if scale > 1 else a


def _png(img: Image.Image, path: str | Path | None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def _panel(image: Any, mask: Any, occluded: Any | None, scale: int) -> np.ndarray:
    parts = [mask_overlay(image, mask)]
    if occluded is not None:
        occ = _rgb(occluded)
        if occ.shape != parts[0].shape:
            raise ValueError(f"occluded image is {occ.shape[:2]} but the image is {parts[0].shape[:2]}")
        parts.append(occ)
    parts = [_scaled(p, scale) for p in parts]
    if len(parts) == 1:
        return parts[0]
    gap = np.full((parts[0].shape[0], _GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([parts[0], gap, parts[1]], axis=1)


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    return scale


def render_mask_png(
    image: Any,
    mask: Any,
    path: str | Path | None = None,
    *,
    occluded: Any | None = None,
    scale: int = 1,
    label: str | None = None,
) -> bytes:
    """PNG bytes of the image with the occluded region tinted red and outlined; with
    ``occluded``, the occluded image beside it. ``scale`` magnifies (nearest neighbour);
    ``label`` is printed under the picture. Also written to ``path`` when given."""
    panel = _panel(image, mask, occluded, _check_scale(scale))
    img = Image.fromarray(panel)
    if label:
        img = _with_label(img, label)
    return _png(img, path)


def _wrap(text: str, width: int, font: Any) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(lines[-1] + " " + word) <= width - 4:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _with_label(img: Image.Image, label: str) -> Image.Image:
    """The picture with ``label`` under it, wrapped to the picture's width."""
    font = ImageFont.load_default()
    lines = _wrap(label, img.width, font)
    out = Image.new("RGB", (img.width, img.height + _LABEL_H * len(lines)), (255, 255, 255))
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((2, img.height + 1 + k * _LABEL_H), line, fill=(0, 0, 0), font=font)
    return out


def contact_sheet(
    images: Sequence[Any],
    masks: Sequence[Any],
    labels: Sequence[str] | None = None,
    *,
    occluded: Sequence[Any] | None = None,
    columns: int = 4,
    scale: int = 1,
    path: str | Path | None = None,
) -> bytes:
    """A grid of overlays (each with its occluded image beside it when ``occluded`` is given)
    and optional labels, as PNG bytes."""
    n = len(images)
    if n == 0:
        raise ValueError("contact_sheet needs at least one image")
    if len(masks) != n or (labels is not None and len(labels) != n) or (occluded is not None and len(occluded) != n):
        raise ValueError("images, masks, labels and occluded must have the same length")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an integer >= 1, got {columns!r}")
    scale = _check_scale(scale)
    panels = [_panel(images[i], masks[i], occluded[i] if occluded is not None else None, scale) for i in range(n)]
    ph = max(p.shape[0] for p in panels) + (_LABEL_H if labels is not None else 0)
    pw = max(p.shape[1] for p in panels)
    cols = min(columns, n)
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * pw + (cols - 1) * _GAP, rows * ph + (rows - 1) * _GAP), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, p in enumerate(panels):
        x, y = (i % cols) * (pw + _GAP), (i // cols) * (ph + _GAP)
        sheet.paste(Image.fromarray(p), (x, y))
        if labels is not None:
            draw.text((x + 2, y + p.shape[0] + 1), str(labels[i]), fill=(0, 0, 0), font=font)
    return _png(sheet, path)


def render_policy_png(
    image: Any,
    image_id: str,
    policy: Any,
    seed: int = 0,
    *,
    patch: Any = None,
    level: float | None = None,
    stats: Any = None,
    scale: int = 1,
    label: str | None = None,
    path: str | Path | None = None,
) -> bytes:
    """The picture of one image under a placement policy (e.g. the minimal failing policy of a
    search cell): overlay and occluded image side by side, labelled with ``policy.describe()``
    unless ``label`` is given. ``image`` is one image in the model's input space (H x W or
    C x H x W in [0, 1]); the mask is exactly the one the cell used for ``image_id``."""
    import torch  # only here: the rest of this module needs numpy and Pillow alone

    from ..occlusion import occlude_with_policy

    a = _to_numpy(image)
    x = torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))
    if x.ndim == 2:
        x = x.unsqueeze(0)
    occluded, (mask,) = occlude_with_policy(x.unsqueeze(0), [image_id], policy, patch, level, seed, stats=stats)
    text = label if label is not None else policy.describe(patch if isinstance(patch, str) else None, level)
    return render_mask_png(x, mask, path, occluded=occluded[0], scale=scale, label=text)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a picture in a self-contained HTML report."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
