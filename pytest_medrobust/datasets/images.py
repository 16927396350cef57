"""Decoding images and bringing them to a model's input size.

Images are read as 8-bit grayscale (colour images are converted with PIL's "L" weights; chest
X-rays are grayscale) and brought to the model's input size with PIL bicubic resampling, as the
upstream CLIP-style pipelines do:

* ``crop``: resize so the image covers the input size, then centre-crop;
* ``pad``: pad to the input's aspect ratio with black, centred, then resize.

A model may replace this step with its own ``prepare_image(PIL.Image) -> PIL.Image`` (of
``input_size``), for upstream pipelines that differ. The result is kept as uint8 (what PIL's
resize gives upstream too) and turned into float [0, 1] per batch, replicated to 3 channels.

Decoded cache: when the dataset has a ``cache_dir`` (or one is passed), ``decode_dataset``
keeps its N x H x W result in ``<cache_dir>/decoded/<key>.npz``, where the key hashes the
dataset fingerprint (ids, reports, image bytes), the size, the geometry, the ``prepare``
function (its qualified name and its output on a fixed probe image), Pillow's version and
``DECODE_VERSION``. Beside the pixels the file holds a sha256 of the key and the pixels, checked
on every read. Files are written to a temp file and moved in place with ``os.replace``, so a
reader never sees a partial file; an unreadable file, or one whose checksum or shape does not
match (garbled pixels, another entry's data), is corrupt: reported through ``on_corrupt``,
decoded again and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError
from ..files import atomic_write
from .base import Dataset, raise_problems
from .subset import check_pixels

# Bump when read_image/fit/read_dicom change what they produce, to invalidate decoded caches.
DECODE_VERSION = 1

DICOM_SUFFIXES = (".dcm", ".dicom")

Prepare = Callable[[Image.Image], Image.Image]


# What a bad image file raises while it is read: a bad row, never a traceback.
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, DatasetError, Image.DecompressionBombError)


def read_image(path: Path) -> Image.Image:
    """An 8-bit grayscale PIL image from PNG, JPEG or DICOM."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        from .dicom import read_dicom

        return read_dicom(path)
    with Image.open(path) as im:
        check_pixels(*im.size)  # a decompression bomb is a bad row, before it is decoded
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
        resized = image.resize((rw, rh), Image.Resampling.BICUBIC)
        left, top = (rw - tw) // 2, (rh - th) // 2
        return resized.crop((left, top, left + tw, top + th))
    if geometry == "pad":
        # Pad to the target aspect ratio first, then resize (MedCLIP's order).
        ph, pw = (max(h, round(w * th / tw)), max(w, round(h * tw / th)))
        canvas = Image.new("L", (pw, ph), 0)
        canvas.paste(image, ((pw - w) // 2, (ph - h) // 2))
        return canvas.resize((tw, th), Image.Resampling.BICUBIC)
    raise ValueError(f"geometry must be 'crop' or 'pad', got {geometry!r}")


def decode_dataset(
    dataset: Dataset,
    size: tuple[int, int],
    geometry: str,
    prepare: Prepare | None = None,
    *,
    workers: int | None = None,
    cache_dir: Path | str | None = None,
    on_corrupt: Callable[[str], object] | None = None,
) -> torch.Tensor:
    """All images of ``dataset`` at the model's input size: uint8 tensor N x H x W.

    Decoding runs in threads (PIL releases the GIL). Every image is tried; one error lists every
    row that failed, with its file and reason. With a cache folder (``cache_dir``, else
    ``dataset.cache_dir``) the result is cached on disk (see the module docstring);
    ``on_corrupt(where)`` is called for a cached file found corrupt (then decoded again).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else dataset.cache_dir
    cache_file = _decoded_cache_file(dataset, size, geometry, prepare, cache_dir) if cache_dir else None
    if cache_file is not None:
        cached, why = _load_decoded(cache_file, (len(dataset.records), *size))
        if cached is not None:
            return cached
        if why is not None and on_corrupt is not None:
            on_corrupt(f"{cache_file}: {why}")
    pixels = _decode_all(dataset, size, geometry, prepare, workers)
    if cache_file is not None:
        array = pixels.numpy()
        digest = _pixels_checksum(cache_file.stem, array)
        try:
            atomic_write(cache_file, lambda f: np.savez(f, pixels=array, sha256=np.array(digest)))
        except OSError:
            pass  # an unwritable cache only costs decoding again next run
    return pixels


def _pixels_checksum(key: str, array: np.ndarray) -> str:
    """sha256 binding decoded pixels (dtype, shape, bytes) to their cache key."""
    h = hashlib.sha256(f"{key}|{array.dtype}|{array.shape}|".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _prepare_id(prepare: Prepare | None, size: tuple[int, int], geometry: str) -> str | None:
    """What identifies ``prepare``'s behaviour: its name and its output on a fixed probe image."""
    if prepare is None:
        return f"fit:{geometry}"
    probe = np.add.outer(np.arange(97) * 2, np.arange(131)).astype(np.uint8)
    probe[::7, ::5] = 255
    try:
        out = np.asarray(prepare(Image.fromarray(probe, mode="L")).convert("L"), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - a prepare that cannot take the probe: do not cache
        return None
    name = f"{getattr(prepare, '__module__', '?')}.{getattr(prepare, '__qualname__', type(prepare).__qualname__)}"
    return f"{name}:{hashlib.sha256(out.tobytes()).hexdigest()}"


def _decoded_cache_file(
    dataset: Dataset, size: tuple[int, int], geometry: str, prepare: Prepare | None, cache_dir: Path
) -> Path | None:
    prepare_id = _prepare_id(prepare, size, geometry)
    if prepare_id is None:
        return None
    key = json.dumps(
        {
            "v": DECODE_VERSION,
            "dataset": dataset.sha256,
            "size": list(size),
            "geometry": geometry,
            "prepare": prepare_id,
            "pillow": PIL.__version__,
        },
        sort_keys=True,
    )
    return Path(cache_dir) / "decoded" / f"{hashlib.sha256(key.encode()).hexdigest()}.npz"


def _load_decoded(path: Path, shape: tuple[int, ...]) -> tuple[torch.Tensor | None, str | None]:
    """(the cached pixels, None), (None, None) when there is no entry, or (None, why) when the
    entry is corrupt."""
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as entry:
            arr, stored = entry["pixels"], str(entry["sha256"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if arr.dtype != np.uint8 or arr.shape != shape:
        return None, f"holds {arr.dtype} {arr.shape}, expected uint8 {shape}"
    if stored != _pixels_checksum(path.stem, arr):
        return None, "checksum mismatch"
    return torch.from_numpy(np.ascontiguousarray(arr)), None


def _decode_all(
    dataset: Dataset, size: tuple[int, int], geometry: str, prepare: Prepare | None, workers: int | None
) -> torch.Tensor:
    prepare = prepare or (lambda im: fit(im, size, geometry))

    def one(i: int) -> np.ndarray | str:
        record = dataset.records[i]
        try:
            image = prepare(read_image(record.image))
        except DECODE_ERRORS as exc:
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
