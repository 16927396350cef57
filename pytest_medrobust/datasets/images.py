"""Decoding images and bringing them to a model's input size.

Images are read as 8-bit grayscale (colour images are converted with PIL's "L" weights; chest
X-rays are grayscale) and brought to the model's input size with PIL bicubic resampling, as the
upstream CLIP-style pipelines do:

* ``crop``: resize so the image covers the input size, then centre-crop;
* ``pad``: pad to the input's aspect ratio with black, centred, then resize.

A model may replace this step with its own ``prepare_image(PIL.Image) -> PIL.Image`` (of
``input_size``), for upstream pipelines that differ. The result is kept as uint8 (what PIL's
resize gives upstream too) and turned into float [0, 1] per batch, replicated to 3 channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .base import Dataset, raise_problems

DICOM_SUFFIXES = (".dcm", ".dicom")

Prepare = Callable[[Image.Image], Image.Image]


def read_image(path: Path) -> Image.Image:
    """An 8-bit grayscale PIL image from PNG, JPEG or DICOM."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        from .dicom import read_dicom

        return read_dicom(path)
    with Image.open(path) as im:
        im.load()  # decode now: a truncated file fails here, not later
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
            return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
        return im.convert("L")


def fit(image: Image.Image, size: tuple[int, int], geometry: str) -> Image.Image:
    """Resize to ``size`` = (H, W) by centre-crop or black padding, bicubic."""
    th, tw = size
    w, h = image.size
    if geometry == "crop":
        scale = max(th / h, tw / w)
        rw, rh = max(tw, round(w * scale)), max(th, round(h * scale))
        resized = image.resize((rw, rh), Image.BICUBIC)
        left, top = (rw - tw) // 2, (rh - th) // 2
        return resized.crop((left, top, left + tw, top + th))
    if geometry == "pad":
        # Pad to the target aspect ratio first, then resize (MedCLIP's order).
        ph, pw = (max(h, round(w * th / tw)), max(w, round(h * tw / th)))
        canvas = Image.new("L", (pw, ph), 0)
        canvas.paste(image, ((pw - w) // 2, (ph - h) // 2))
        return canvas.resize((tw, th), Image.BICUBIC)
    raise ValueError(f"geometry must be 'crop' or 'pad', got {geometry!r}")


def decode_dataset(
    dataset: Dataset,
    size: tuple[int, int],
    geometry: str,
    prepare: Prepare | None = None,
    *,
    workers: int | None = None,
) -> torch.Tensor:
    """All images of ``dataset`` at the model's input size: uint8 tensor N x H x W.

    Decoding runs in threads (PIL releases the GIL). Every image is tried; one error lists every
    row that failed, with its file and reason.
    """
    prepare = prepare or (lambda im: fit(im, size, geometry))

    def one(i: int) -> np.ndarray | str:
        record = dataset.records[i]
        try:
            image = prepare(read_image(record.image))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            return f"{record.where}: cannot decode {record.image}: {exc}"
        arr = np.asarray(image.convert("L"), dtype=np.uint8)
        if arr.shape != tuple(size):
            return f"{record.where}: prepared image is {arr.shape}, expected {tuple(size)}"
        return arr

    n = len(dataset.records)
    with ThreadPoolExecutor(max_workers=workers or min(8, max(1, n))) as pool:
        results = list(pool.map(one, range(n)))
    raise_problems(f"dataset {dataset.name} ({dataset.source})", [r for r in results if isinstance(r, str)])
    return torch.from_numpy(np.stack(results))


def to_batch(pixels: torch.Tensor, indices: Sequence[int] | slice, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W -> float B x 3 x H x W in [0, 1] on ``device`` (grayscale replicated)."""
    batch = pixels[indices].to(device, non_blocking=True).float().div_(255.0)
    return batch.unsqueeze(1).expand(-1, 3, -1, -1)
