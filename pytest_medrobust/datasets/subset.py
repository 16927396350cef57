"""From a loader's candidate rows to a validated Dataset: subset, checks, bad-row policy.

Every loader lists its rows (:class:`Row`: id, image path, report or a function that reads it,
and any problem already found while listing) and hands them to :func:`build_dataset`, which
applies the options every loader shares:

``limit`` (int or None)
    Measure a seeded, stable subset of ``limit`` rows. Rows are ranked by
    ``sha256(f"{seed}:{id}")`` and taken in that order; the kept rows are then put back in dataset
    order. The same ``limit`` and ``seed`` give the same rows on every run and machine, and the
    rows of a smaller limit are the first rows of a larger one (the ranking does not depend on
    ``limit``). Only the rows taken are read and checked, so ``limit`` also makes loading a big
    split fast.
``seed`` (int, default 0)
    The seed of that ranking.
``on_bad_rows`` (``"error"``, the default, or ``"drop"``)
    ``"error"``: one :class:`~pytest_medrobust.errors.DatasetError` lists every bad row among
    those checked (up to a cap, with the count) and its reason. ``"drop"``: bad rows are left
    out and recorded in ``dataset.info["dropped"]`` (``[{"id", "where", "reason"}]``) and
    ``info["n_dropped"]``; with a ``limit``, the next rows in the ranking take their place, so
    a dataset with enough good rows still gives ``limit`` rows (and a smaller limit's rows are
    still the first of a larger one's). Nothing is dropped silently.
``validate`` (``"decode"``, the default, or ``"exists"``)
    What is checked per row before any model runs: the report is non-empty, the id unique and
    the image file exists; with ``"decode"`` every image is also fully decoded once (in threads),
    so an undecodable image is a bad row here, under the same policy, rather than an error in
    the middle of a run. The bytes read for that are hashed on the way (the dataset's fingerprint
    then costs nothing more). ``"exists"`` skips decoding (faster on a huge dataset); an
    undecodable image then stops :func:`~pytest_medrobust.datasets.images.decode_dataset` with
    an error that lists every such row.
``cache_dir`` (path or None; default: environment variable ``MEDROBUST_CACHE_DIR``)
    Folder for the per-file hash cache and the decoded-image cache.
``workers`` (int or None)
    Threads for reading and checking rows (default: up to 8).

Limits that make a row bad (under the same policy) instead of exhausting memory or stopping
the run with a traceback:

* an image of more than :data:`MAX_IMAGE_PIXELS` pixels (89,478,485, Pillow's own default
  limit, fixed here so that a process that raised or removed Pillow's limit does not remove
  this one): a decompression bomb, e.g. a 400 KB PNG that claims 20,000 x 20,000 pixels. The
  size is read from the header, before any pixel is decoded;
* a manifest field of more than :data:`MAX_FIELD_CHARS` characters (131,072, the csv module's
  own default limit);
* an image path that cannot be looked at (a symlink loop, a name too long for the file system).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DatasetError
from .base import Dataset, Record, file_sha256, raise_problems

ON_BAD_ROWS = ("error", "drop")
VALIDATE = ("decode", "exists")
CACHE_ENV = "MEDROBUST_CACHE_DIR"
# Pillow's default MAX_IMAGE_PIXELS (1024 * 1024 * 1024 // 4 // 3); a chest X-ray has ~10-20 M.
MAX_IMAGE_PIXELS = 89_478_485
# The csv module's default field_size_limit: no report or path comes near it.
MAX_FIELD_CHARS = 131_072


class RowProblem(Exception):
    """Raised by a row's report reader: the reason the row is bad (the row's ``where`` is added)."""


@dataclass(frozen=True)
class Row:
    """A candidate record. ``report`` may be a function that reads it (called only if needed)."""

    id: str
    where: str
    image: Path | None
    report: str | Callable[[], str]
    problem: str | None = None  # found while listing (path escapes the root, bad CSV value...)


def rank_key(seed: int, row_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).digest()


def check_options(limit: Any, seed: Any, on_bad_rows: Any, validate: Any) -> tuple[int | None, int]:
    if on_bad_rows not in ON_BAD_ROWS:
        raise ConfigError(f"on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}; got {on_bad_rows!r}")
    if validate not in VALIDATE:
        raise ConfigError(f"validate must be one of {', '.join(VALIDATE)}; got {validate!r}")
    if limit is not None:
        try:
            limit_int = int(limit)
        except (TypeError, ValueError):
            raise ConfigError(f"limit must be a positive integer; got {limit!r}") from None
        if isinstance(limit, float) and limit != limit_int or limit_int < 1:
            raise ConfigError(f"limit must be a positive integer; got {limit!r}")
        limit = limit_int
    try:
        seed_int = int(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be an integer; got {seed!r}") from None
    return limit, seed_int


def resolve_cache_dir(cache_dir: str | Path | None) -> Path | None:
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or None
    return Path(cache_dir) if cache_dir is not None else None


@contextlib.contextmanager
def csv_field_limit() -> Iterator[None]:
    """Let the csv module read fields of any length while the block runs.

    Its default limit raises ``csv.Error`` mid-file, which loses every later row; read in full,
    an over-long field is a bad row (:func:`oversized_field`) under the bad-row policy. The limit
    is process-wide, so it is restored afterwards (loaders read their CSVs in one thread)."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def oversized_field(row: Mapping[Any, Any]) -> str | None:
    """The problem of a row with a field over :data:`MAX_FIELD_CHARS` characters, naming it."""
    for column, value in row.items():
        for item in value if isinstance(value, list) else [value]:  # DictReader's extra fields: a list
            if isinstance(item, str) and len(item) > MAX_FIELD_CHARS:
                name = "an unnamed extra column" if column is None else f"column {column!r}"
                return f"{name} holds {len(item):,} characters, over the limit of {MAX_FIELD_CHARS:,}"
    return None


def check_pixels(width: int, height: int) -> None:
    """Refuse an image larger than :data:`MAX_IMAGE_PIXELS` (a decompression bomb) by its header."""
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"{width} x {height} = {width * height:,} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
            "(a decompression bomb?)"
        )


def check_decodes(path: Path, data: bytes) -> None:
    """Fully decode an image from its bytes, as :func:`read_image` would; raise if it cannot be.

    The pixel count is checked from the header first (:func:`check_pixels`). JPEGs are decoded
    at a reduced DCT scale (PIL ``draft``): every byte of the entropy-coded data is still read
    and checked, so truncated and damaged files still fail, at a fraction of the cost of a
    full-size decode.
    """
    if path.suffix.lower() in (".dcm", ".dicom"):
        from .dicom import read_dicom

        read_dicom(io.BytesIO(data), name=str(path))
        return
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_pixels(im.width, im.height)
            if im.format == "JPEG":
                im.draft("L", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check fires in open(), before the size is known here: past twice its
        # limit, or past it under -W error.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else f"too many pixels ({exc})"
        raise DatasetError(f"{size}, over the limit of {MAX_IMAGE_PIXELS:,} (a decompression bomb?)") from exc


def _missing_image(image: Path) -> str:
    """Why ``image`` is not a file it can read, for the bad-row list."""
    try:
        image.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"image path {image} is a symlink loop"
        if exc.errno == errno.ENAMETOOLONG:
            return f"image path {str(image)[:200]}... is too long for the file system"
        return f"image not found: {image}"
    return f"image {image} is not a file"


def _checker(validate: str) -> Callable[[Row], Record | tuple[str, str]]:
    def check(row: Row) -> Record | tuple[str, str]:
        if row.problem:
            return row.where, row.problem
        try:
            report = row.report() if callable(row.report) else row.report
        except RowProblem as exc:
            return row.where, str(exc)
        except OSError as exc:
            return row.where, f"cannot read the report: {exc}"
        if not report or not report.strip():
            return row.where, "empty report"
        if row.image is None:
            return row.where, "no image path"
        try:
            is_file = row.image.is_file()
        except OSError:  # is_file() passes on some errors (ENAMETOOLONG); _missing_image names them
            is_file = False
        if not is_file:
            return row.where, _missing_image(row.image)
        if validate == "decode":
            try:
                data = row.image.read_bytes()
                file_sha256(row.image, data)
                check_decodes(row.image, data)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError, DatasetError) as exc:
                return row.where, f"cannot decode image {row.image}: {exc}"
        return Record(row.id, row.image, report, row.where)

    return check


def _mark_duplicates(rows: Sequence[Row]) -> list[Row]:
    seen: dict[str, str] = {}
    out = []
    for row in rows:
        if row.id in seen and not row.problem:
            row = Row(row.id, row.where, row.image, row.report, f"duplicate id {row.id!r} (first at {seen[row.id]})")
        seen.setdefault(row.id, row.where)
        out.append(row)
    return out


def build_dataset(
    name: str,
    source: Path,
    rows: Sequence[Row],
    *,
    info: dict[str, Any] | None = None,
    limit: int | None = None,
    seed: int = 0,
    on_bad_rows: str = "error",
    validate: str = "decode",
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> Dataset:
    """Select, check and assemble rows into a Dataset (see the module docstring for options)."""
    limit, seed = check_options(limit, seed, on_bad_rows, validate)
    rows = _mark_duplicates(rows)
    n = len(rows)
    if n == 0:
        raise DatasetError(f"dataset {name} ({source}): no rows")
    order = sorted(range(n), key=lambda i: rank_key(seed, rows[i].id)) if limit else list(range(n))
    target = min(limit or n, n)
    check = _checker(validate)
    kept: list[tuple[int, Record]] = []
    bad: list[tuple[int, str, str]] = []
    pos = 0
    with ThreadPoolExecutor(max_workers=workers or 8) as pool:
        while pos < n:
            done = len(kept) + (len(bad) if on_bad_rows == "error" else 0)
            need = target - done
            if need <= 0:
                break
            batch = order[pos : pos + need]
            pos += len(batch)
            # Submit in chunks: one future per row costs more than a stat() on big splits.
            step = max(1, min(256, len(batch) // (4 * (workers or 8)) or 1))
            chunks = [batch[k : k + step] for k in range(0, len(batch), step)]
            results = [r for part in pool.map(lambda c: [check(rows[i]) for i in c], chunks) for r in part]
            for i, result in zip(batch, results, strict=True):
                if isinstance(result, Record):
                    kept.append((i, result))
                else:
                    bad.append((i, *result))
    bad.sort()
    if on_bad_rows == "error":
        raise_problems(f"dataset {name} ({source})", [f"{where}: {reason}" for _, where, reason in bad])
    if not kept:
        raise_problems(
            f"dataset {name} ({source}): every row checked is bad, nothing left to measure",
            [f"{where}: {reason}" for _, where, reason in bad],
        )
    kept.sort(key=lambda pair: pair[0])
    full_info: dict[str, Any] = dict(info or {})
    full_info.update(
        {
            "n_rows_available": n,
            "limit": limit,
            "seed": seed,
            "on_bad_rows": on_bad_rows,
            "validate": validate,
            "n_dropped": len(bad),
            "dropped": [{"id": rows[i].id, "where": where, "reason": reason} for i, where, reason in bad],
        }
    )
    return Dataset(
        name=name,
        source=source,
        records=[record for _, record in kept],
        info=full_info,
        cache_dir=resolve_cache_dir(cache_dir),
    )
