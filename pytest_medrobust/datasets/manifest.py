"""The manifest contract: a CSV or JSONL file with one image and its report per row.

Columns: ``image`` and ``report`` (text), both required; ``id`` (default: the image path),
``split`` and ``image_root`` optional. An image path is absolute, or relative to its root: the
row's ``image_root`` column when set (itself absolute or relative to the manifest's folder),
else the loader option ``image_root`` (for images on another share than the manifest), else
the manifest's folder. A relative path may not climb out of its root (``../x``); symlinks are
followed. With a ``split`` column, only rows of the requested split are kept (all rows when no
split is requested). Report whitespace is normalised (runs of spaces and newlines become one
space, ends stripped): that is the text the models see and the results JSON records. Images may
be PNG, JPEG or DICOM (``.dcm``). Every row is checked before any model runs (see
:mod:`pytest_medrobust.datasets.subset` for ``limit``, ``seed``, ``on_bad_rows`` and
``validate``); a missing image is reported with the path it was looked for at. A field of more
than 131,072 characters (``subset.MAX_FIELD_CHARS``; CSV or JSONL) makes its row bad, under the
same policy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .base import Dataset, join_image_path
from .reports import normalise_whitespace
from .subset import Row, build_dataset, csv_field_limit, oversized_field

REQUIRED_COLUMNS = ("image", "report")
ROOT_COLUMN = "image_root"


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
        try:
            with csv_field_limit():  # an over-long field is a bad row (load_manifest), not a csv.Error
                for row in reader:
                    rows.append((f"{path.name}, line {reader.line_num}", row))
        except csv.Error as exc:
            raise DatasetError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from exc
        return list(reader.fieldnames or []), rows
    raise DatasetError(f"{path}: a manifest must be .csv or .jsonl, got {suffix or 'no suffix'!r}")


def load_manifest(
    path: str | Path,
    *,
    split: str | None = None,
    name: str | None = None,
    image_root: str | Path | None = None,
    **common: Any,
) -> Dataset:
    """A manifest as a Dataset. ``image_root``: the folder relative image paths are under
    (default: the manifest's folder). ``common``: ``limit``, ``seed``, ``on_bad_rows``,
    ``validate``, ``cache_dir``, ``workers`` (see :mod:`pytest_medrobust.datasets.subset`)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist" if not path.exists() else f"manifest {path} is not a file")
    default_root = path.parent
    if image_root is not None and str(image_root) != "":
        default_root = Path(image_root).expanduser()
        if not default_root.is_dir():
            what = "does not exist" if not default_root.exists() else "is not a folder"
            raise DatasetError(f"{path}: image_root {str(image_root)!r} {what} (resolved: {default_root.absolute()})")
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
    candidates: list[Row] = []
    for where, row in rows:
        too_long = oversized_field(row)
        if too_long:  # not parsed further: the field may be the id or the image path
            candidates.append(Row(f"<{where}>", where, None, "", too_long))
            continue
        image = str(row.get("image") or "").strip()
        report = normalise_report(row.get("report") or "")
        rid = str(row.get("id") or image).strip()
        row_root = str(row.get(ROOT_COLUMN) or "").strip()
        root = path.parent / Path(row_root).expanduser() if row_root else default_root
        try:
            image_path: Path | None = join_image_path(root, image, where)
            problem = None
        except DatasetError as exc:
            image_path, problem = None, str(exc).removeprefix(f"{where}: ")
        if not report:
            problem = problem or f"empty report for image {image!r}"
        candidates.append(Row(rid, where, image_path, report, problem))
    info: dict[str, Any] = {"split": split} if split else {}
    if image_root is not None and str(image_root) != "":
        info["image_root"] = str(default_root)
    return build_dataset(name or path.stem, path, candidates, info=info, **common)
