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
keeps its N x H x W result in ``<cache_dir>/decoded/<key>.npy``, where the key hashes the
dataset fingerprint (ids, reports, image bytes), the size, the geometry, the ``prepare``
function (its qualified name and its output on a fixed probe image), Pillow's version and
``DECODE_VERSION``. The file is a plain ``.npy`` array followed by a trailer holding a sha256 of
the key and the pixels, checked on every read (streamed, 1 MB at a time). A cached dataset is
*memory-mapped*, not read into memory: a 100k-image dataset costs the pages a batch touches, not
N x H x W bytes of RAM, and a cold decode streams chunks of images into the file (it never holds
every decoded image at once either). Files are written to a temp file and moved in place with
``os.replace``, so a reader never sees a partial file (and a mapped file is never changed under
its reader); an unreadable file, or one whose checksum or shape does not match (garbled pixels,
another entry's data), is corrupt: reported through ``on_corrupt``, decoded again and rewritten.
Without a cache folder the pixels are decoded into one in-memory array.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

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

    Decoding runs in threads (PIL releases the GIL), a chunk of images at a time. Every image is
    tried; one error lists every row that failed, with its file and reason. With a cache folder
    (``cache_dir``, else ``dataset.cache_dir``) the result is a read-only-on-disk, memory-mapped
    cache entry (see the module docstring); ``on_corrupt(where)`` is called for a cached file
    found corrupt (then decoded again).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else dataset.cache_dir
    cache_file = _decoded_cache_file(dataset, size, geometry, prepare, cache_dir) if cache_dir else None
    shape = (len(dataset.records), *size)
    if cache_file is not None:
        cached, why = _load_decoded(cache_file, shape)
        if cached is not None:
            return cached
        if why is not None and on_corrupt is not None:
            on_corrupt(f"{cache_file}: {why}")
        try:
            atomic_write(cache_file, lambda f: _write_decoded(f, cache_file.stem, dataset, size, geometry, prepare, workers))
        except OSError:
            pass  # an unwritable cache only costs decoding into memory (and again next run)
        else:
            mapped, why = _map_decoded(cache_file, shape)
            if mapped is not None:
                return mapped
    out = np.empty(shape, dtype=np.uint8)
    for start, chunk in _decode_chunks(dataset, size, geometry, prepare, workers):
        out[start : start + len(chunk)] = chunk
    return torch.from_numpy(out)


# Images decoded per chunk: bounds a cold decode's memory at CHUNK x H x W (16 MB at 128 x 128).
CHUNK = 1024
# The cache entry's trailer: this tag, then the sha256 in hex (after the .npy array's bytes).
TRAILER_TAG = b"\nmedrobust-sha256:"
TRAILER_SIZE = len(TRAILER_TAG) + 64


def _checksum_start(key: str, shape: tuple[int, ...]) -> Any:
    """sha256 binding decoded pixels (dtype, shape, bytes) to their cache key: the pixels' bytes
    are fed to it next, in order."""
    return hashlib.sha256(f"{key}|uint8|{tuple(shape)}|".encode())


def _pixels_checksum(key: str, array: np.ndarray) -> str:
    """The checksum of ``array`` under ``key`` (what the trailer holds)."""
    h = _checksum_start(key, tuple(int(n) for n in array.shape))
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _write_decoded(
    f: BinaryIO, key: str, dataset: Dataset, size: tuple[int, int], geometry: str, prepare: Prepare | None,
    workers: int | None,
) -> None:
    """Stream the decoded dataset into ``f`` as .npy + trailer, one chunk of images at a time."""
    shape = (len(dataset.records), *size)
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
    checksum = _checksum_start(key, shape)
    for _, chunk in _decode_chunks(dataset, size, geometry, prepare, workers):
        data = np.ascontiguousarray(chunk)  # hashed and written in place, without a copy
        checksum.update(data)
        f.write(data.data)
    f.write(TRAILER_TAG + checksum.hexdigest().encode("ascii"))


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
    return Path(cache_dir) / "decoded" / f"{hashlib.sha256(key.encode()).hexdigest()}.npy"


def _load_decoded(path: Path, shape: tuple[int, ...]) -> tuple[torch.Tensor | None, str | None]:
    """(the cached pixels, memory-mapped, None), (None, None) when there is no entry, or (None,
    why) when the entry is corrupt. The checksum is streamed over the file (bounded memory)."""
    if not path.is_file():
        return None, None
    try:
        with open(path, "rb") as f:
            offset, why = _check_header(f, shape)
            if why is not None:
                return None, why
            f.seek(offset + int(np.prod(shape)))
            trailer = f.read(TRAILER_SIZE + 1)
            if len(trailer) != TRAILER_SIZE or not trailer.startswith(TRAILER_TAG):
                return None, "no checksum trailer (truncated, or not written by this version)"
            f.seek(offset)
            checksum = _checksum_start(path.stem, shape)
            left = int(np.prod(shape))
            buffer = bytearray(min(left, 1 << 20) or 1)
            view = memoryview(buffer)
            while left:
                got = f.readinto(view[: min(left, len(buffer))])
                if not got:
                    return None, "truncated pixels"
                checksum.update(view[:got])
                left -= got
    except (OSError, ValueError, EOFError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if trailer[len(TRAILER_TAG) :].decode("ascii", "replace") != checksum.hexdigest():
        return None, "checksum mismatch"
    return _map_decoded(path, shape)


def _check_header(f: BinaryIO, shape: tuple[int, ...]) -> tuple[int, str | None]:
    """(offset of the pixels, None) for a uint8 C-order .npy of ``shape``, else (0, why)."""
    version = np.lib.format.read_magic(f)
    header = np.lib.format.read_array_header_1_0(f) if version == (1, 0) else np.lib.format.read_array_header_2_0(f)
    found, fortran, dtype = header
    if dtype != np.uint8 or tuple(found) != tuple(shape) or fortran:
        return 0, f"holds {dtype} {tuple(found)}, expected uint8 {tuple(shape)}"
    return f.tell(), None


def _map_decoded(path: Path, shape: tuple[int, ...]) -> tuple[torch.Tensor | None, str | None]:
    """The entry's pixels as a copy-on-write memory map (a write would never reach the file)."""
    try:
        mapped = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if mapped.dtype != np.uint8 or mapped.shape != shape:
        return None, f"holds {mapped.dtype} {mapped.shape}, expected uint8 {shape}"
    return torch.from_numpy(mapped), None


def _decode_chunks(
    dataset: Dataset, size: tuple[int, int], geometry: str, prepare: Prepare | None, workers: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, uint8 chunk x H x W) for consecutive chunks of the dataset. Every image is
    tried: the problems of all chunks are raised together once every image has been read."""
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
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=workers or min(8, max(1, n))) as pool:
        for start in range(0, n, CHUNK):
            results = list(pool.map(one, range(start, min(start + CHUNK, n))))
            problems += [r for r in results if isinstance(r, str)]
            if not problems:
                yield start, np.stack([r for r in results if not isinstance(r, str)])
    raise_problems(f"dataset {dataset.name} ({dataset.source})", problems)


def to_batch(pixels: torch.Tensor, indices: Sequence[int] | slice, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W -> float B x 3 x H x W in [0, 1] on ``device`` (grayscale replicated).

    The uint8 batch travels (a quarter of the float bytes) and is converted on ``device``. For a
    GPU it is staged in pinned memory first, so the copy runs asynchronously; the pixels
    themselves stay where they are (a memory-mapped cache entry is never pinned whole)."""
    part = pixels[indices]
    if device.type == "cuda" and not part.is_pinned():
        part = part.pin_memory()
    batch = part.to(device, non_blocking=True).float().div_(255.0)
    return batch.unsqueeze(1).expand(-1, 3, -1, -1)
