"""Atomic file writes: a reader sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

Writer = Callable[[BinaryIO], Any]


def atomic_write(path: Path, data: str | bytes | Writer, *, mode: int = 0o644) -> None:
    """Write ``data`` (text, bytes, or a function that writes into a binary file) to ``path`` via
    a temporary file in the same folder and ``os.replace``. ``mode``: mkstemp creates 0600 files,
    while reports, baselines and caches are for everyone who can read the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
