"""The dataset contract every loader produces: records of (id, image file, report text)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError

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
            h = hashlib.sha256()
            for r in self.records:
                h.update(f"{r.id}\0{r.report}\0".encode())
                h.update(hashlib.sha256(r.image.read_bytes()).digest())
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
