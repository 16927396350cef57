"""The dataset contract every loader produces: records of (id, image file, report text)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..files import atomic_write

# How many bad rows one error message lists before it says "... and N more".
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Record:
    """One image and its report. ``where`` names the source row for error messages."""

    id: str
    image: Path
    report: str
    where: str


@dataclass
class Dataset:
    name: str
    source: Path  # the manifest file or dataset root the records came from
    records: list[Record]
    # Loader-specific facts for the results JSON (split, section, dropped rows, ...).
    info: dict[str, Any] = field(default_factory=dict)
    # Where per-file hashes and decoded images are cached on disk (None: in-process only).
    cache_dir: Path | None = field(default=None, repr=False)
    # Named regions per image (datasets/regions.py): image id -> {region name: RegionSpec}.
    regions: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _sha256: str | None = field(default=None, repr=False)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def reports(self) -> list[str]:
        return [r.report for r in self.records]

    @property
    def n_unique_reports(self) -> int:
        return len(set(self.reports))

    @property
    def sha256(self) -> str:
        """Fingerprint of what was measured: ids, report texts and image bytes, in order."""
        if self._sha256 is None:
            digests = file_digests([r.image for r in self.records], self.cache_dir, self.source)
            h = hashlib.sha256()
            for r, digest in zip(self.records, digests, strict=True):
                h.update(f"{r.id}\0{r.report}\0".encode())
                h.update(bytes.fromhex(digest))
            self._sha256 = h.hexdigest()
        return self._sha256

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": str(self.source),
            "n_images": len(self.records),
            "n_unique_reports": self.n_unique_reports,
            "sha256": self.sha256,
            **self.info,
        }


def raise_problems(what: str, problems: Iterable[str]) -> None:
    """One error listing every problem (up to a cap, with the total count)."""
    problems = list(problems)
    if not problems:
        return
    listed = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise DatasetError(f"{what}: {len(problems)} problem(s):\n{listed}{tail}")


def resolve_inside(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refusing paths that escape the dataset root."""
    if not relative:
        raise DatasetError(f"{where}: empty image path")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise DatasetError(f"{where}: image path {relative!r} must be relative to the manifest's folder")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DatasetError(f"{where}: image path {relative!r} escapes the dataset folder {root}")
    return resolved


def join_image_path(root: Path, image: str, where: str) -> Path:
    """Where a manifest row's image is: an absolute path as written, a relative one under ``root``.

    A relative path must stay under ``root`` as written (``a/../b`` is fine, ``../x`` is not): it
    was meant relative to that folder, so climbing out of it is almost always a mistake, and a
    file elsewhere is named by an absolute path or an ``image_root``. The check is on the path
    as written, not on where symlinks lead, so a symlinked image folder (or file) is accepted.
    The result is absolute and normalised, not resolved through symlinks: it is the path the
    user can look for when the file is missing.
    """
    if not image:
        raise DatasetError(f"{where}: empty image path")
    candidate = Path(image).expanduser()
    if candidate.is_absolute():
        return Path(os.path.normpath(candidate))
    base = Path(os.path.abspath(root))
    joined = Path(os.path.normpath(base / candidate))
    if not joined.is_relative_to(base):
        raise DatasetError(
            f"{where}: image path {image!r} escapes the dataset folder {root}; name a file elsewhere by an "
            f"absolute path, or set image_root"
        )
    return joined


# --- Per-file sha256 cache ---------------------------------------------------------------------
# A file's hash is reused while its path and stat (size, mtime_ns, ctime_ns, inode, device) are
# unchanged: in-process always, and across runs in
# ``<cache_dir>/file-sha256/<hash of the dataset source>.json`` when a cache folder is given.
# Size and mtime alone are not enough: a same-size file put in place with its mtime set back
# (``cp -p``, ``touch -r``, ``os.utime``) keeps them, but it gets another ctime (which no user
# call can set) and, when moved in, another inode. That file is written atomically (temp file +
# os.replace); concurrent writers (xdist workers) can only lose each other's new entries, never
# corrupt the file.

Stat = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device
_FILE_HASHES: dict[str, tuple[Stat, str]] = {}
_LOADED_CACHE_FILES: set[str] = set()
_HASH_LOCK = threading.Lock()


def _stat_key(path: Path) -> tuple[str, Stat]:
    st = path.stat()
    return str(path), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def file_sha256(path: Path, data: bytes | None = None) -> str:
    """sha256 of a file's bytes, cached by its path and stat. ``data``: its bytes, if read (then
    they are hashed: cheaper than trusting the stat)."""
    key, stat = _stat_key(path)
    hit = _FILE_HASHES.get(key)
    if hit is not None and hit[0] == stat and data is None:
        return hit[1]
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()
    else:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
    with _HASH_LOCK:
        _FILE_HASHES[key] = (stat, digest)
    return digest


def _hash_cache_file(cache_dir: Path, source: Path) -> Path:
    tag = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir) / "file-sha256" / f"{tag}.json"


def _read_hash_cache(file: Path) -> dict[str, list]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_digests(paths: list[Path], cache_dir: Path | None = None, source: Path | None = None) -> list[str]:
    """sha256 hex digests of ``paths`` (threaded), through the per-file cache."""
    cache_file = _hash_cache_file(cache_dir, source or Path(".")) if cache_dir is not None else None
    if cache_file is not None and str(cache_file) not in _LOADED_CACHE_FILES:
        with _HASH_LOCK:
            for key, entry in _read_hash_cache(cache_file).items():
                # [size, mtime_ns, ctime_ns, inode, device, sha256]; older 3-item entries
                # (no ctime, no inode) are not trusted: those files are hashed again.
                if isinstance(entry, list) and len(entry) == 6 and key not in _FILE_HASHES:
                    try:
                        stat = (int(entry[0]), int(entry[1]), int(entry[2]), int(entry[3]), int(entry[4]))
                    except (TypeError, ValueError):
                        continue
                    _FILE_HASHES[key] = (stat, str(entry[5]))
            _LOADED_CACHE_FILES.add(str(cache_file))
    before = {str(p): _FILE_HASHES.get(str(p)) for p in paths}
    if len(paths) > 1:
        with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
            digests = list(pool.map(file_sha256, paths))
    else:
        digests = [file_sha256(p) for p in paths]
    if cache_file is not None and any(_FILE_HASHES.get(k) != v for k, v in before.items()):
        merged = _read_hash_cache(cache_file)
        merged.update({str(p): [*_FILE_HASHES[str(p)][0], _FILE_HASHES[str(p)][1]] for p in paths})
        try:
            atomic_write(cache_file, json.dumps(merged))
        except OSError:
            pass  # a read-only cache folder only costs re-hashing next run
    return digests
