"""Content-addressed on-disk cache of embeddings (``.medrobust_cache/`` by default).

An entry is keyed by everything its numbers depend on: the model fingerprint (weights hash and
preprocessing), the dataset fingerprint (ids, reports, image bytes), what was encoded (the
report texts, or the images under one occlusion: patch spec, level, seed or placement policy)
and the inference settings (dtype, batch size). Change any of them and the key changes, so a
stale entry is never read.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a killed run
leaves at most an orphaned temporary file, never a corrupt entry. Several xdist workers may
share one cache: an exclusive file lock per key makes the first worker compute an entry while
the others wait and then read it. An entry that cannot be read (damaged by hand, disk error) is
treated as missing and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

# Bump when the meaning of a cached embedding changes (how images are decoded, occluded, batched).
CACHE_VERSION = 1

try:  # POSIX only; elsewhere workers may compute the same entry twice, which is still correct.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def cache_key(fields: Mapping[str, Any]) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class EmbeddingCache:
    """``get_or_compute(fields, compute)`` returns the cached tensor or computes and stores it."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.last_hit = False  # whether the last get_or_compute read the cache

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / "embeddings" / key[:2] / f"{key}.safetensors"

    def get_or_compute(self, fields: Mapping[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        self.last_hit = False
        if self.root is None:
            return compute()
        key = cache_key(fields)
        path = self.path(key)
        found = self._read(path, key)
        if found is None:
            with self._lock(path):
                found = self._read(path, key)  # another worker may have written it meanwhile
                if found is None:
                    value = compute()
                    self._write(path, key, value, fields)
                    return value
        self.last_hit = True
        return found

    def _read(self, path: Path, key: str) -> torch.Tensor | None:
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("key") != key:
                    return None
                return f.get_tensor("embeddings")
        except Exception:  # unreadable entry: recompute and overwrite it
            return None

    def _write(self, path: Path, key: str, value: torch.Tensor, fields: Mapping[str, Any]) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            metadata = {"key": key, "fields": json.dumps(fields, sort_keys=True, default=str)}
            save_file({"embeddings": value.detach().float().cpu().contiguous()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def clear(self) -> None:
        """Remove the entries this cache wrote (never anything else under its folder)."""
        if self.root is not None:
            shutil.rmtree(self.root / "embeddings", ignore_errors=True)


def tensor_fingerprint(module: Any) -> str | None:
    """sha256 over a torch module's parameters and buffers (names, dtypes, shapes, bytes)."""
    state = getattr(module, "state_dict", None)
    if not callable(state):
        return None
    h = hashlib.sha256()
    for name, tensor in sorted(state().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
