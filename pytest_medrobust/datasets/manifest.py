"""The manifest contract: a CSV or JSONL file with one image and its report per row.

Columns: ``image`` (path relative to the manifest's folder) and ``report`` (text), both
required; ``id`` (default: the image path) and ``split`` optional. With a ``split`` column, only
rows of the requested split are kept (all rows when no split is requested). Report whitespace
is normalised (runs of spaces and newlines become one space, ends stripped): that is the text
the models see and the results JSON records. Images may be PNG, JPEG or DICOM (``.dcm``).
Every row is checked before any model runs (see :mod:`pytest_medrobust.datasets.subset` for
``limit``, ``seed``, ``on_bad_rows`` and ``validate``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .base import Dataset, resolve_inside
from .reports import normalise_whitespace
from .subset import Row, build_dataset

REQUIRED_COLUMNS = ("image", "report")


def normalise_report(text: str) -> str:
    return normalise_whitespace(text)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    """(columns, [(where, row)]) from a CSV or JSONL file."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from exc
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        columns: dict[str, None] = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}, line {lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{path}, line {lineno}: expected a JSON object per line")
            columns.update(dict.fromkeys(row))
            rows.append((f"{path.name}, line {lineno}", row))
        return list(columns), rows
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines(keepends=True))
        # Data rows start on line 2; a quoted report may span several lines, so use the reader's count.
        rows = []
        for row in reader:
            rows.append((f"{path.name}, line {reader.line_num}", row))
        return list(reader.fieldnames or []), rows
    raise DatasetError(f"{path}: a manifest must be .csv or .jsonl, got {suffix or 'no suffix'!r}")


def load_manifest(
    path: str | Path, *, split: str | None = None, name: str | None = None, **common: Any
) -> Dataset:
    """A manifest as a Dataset. ``common``: ``limit``, ``seed``, ``on_bad_rows``, ``validate``,
    ``cache_dir``, ``workers`` (see :mod:`pytest_medrobust.datasets.subset`)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist" if not path.exists() else f"manifest {path} is not a file")
    columns, rows = _read_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}: missing required column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}"
        )
    if split is not None and "split" in columns:
        rows = [(w, r) for w, r in rows if (r.get("split") or "") == split]
    if not rows:
        raise DatasetError(f"{path}: no rows" + (f" in split {split!r}" if split else ""))
    root = path.parent
    candidates: list[Row] = []
    for where, row in rows:
        image = str(row.get("image") or "").strip()
        report = normalise_report(row.get("report") or "")
        rid = str(row.get("id") or image).strip()
        try:
            image_path: Path | None = resolve_inside(root, image, where)
            problem = None
        except DatasetError as exc:
            image_path, problem = None, str(exc).removeprefix(f"{where}: ")
        if not report:
            problem = problem or f"empty report for image {image!r}"
        candidates.append(Row(rid, where, image_path, report, problem))
    info = {"split": split} if split else {}
    return build_dataset(name or path.stem, path, candidates, info=info, **common)
