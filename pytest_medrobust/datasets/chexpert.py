"""CheXpert 5x200 loader: ``chexpert5x200:/data/chexpert5x200.csv`` (or a folder holding it).

The protocol (from the GLoRIA/MedCLIP evaluations): 200 CheXpert images for each of five
findings, each image positive for exactly one of them. Retrieval then pairs each image with its
class's text prompt, so only **5 distinct texts** exist: the paired N x N metrics would count
four other images' identical texts as misses, and the unique-text metric (texts de-duplicated,
hit when the image's class prompt is in the top k) is the meaningful one.

The CSV lists the images and their class, either as

* a path column (``Path``, ``path``, ``imgpath``, ``image`` or ``image_path``) and a class
  column (``label``, ``class``, ``Class``, ``finding``) holding one of the five class names, or
* a path column and the five class columns (``Atelectasis``, ``Cardiomegaly``,
  ``Consolidation``, ``Edema``, ``Pleural Effusion``) with exactly one positive (``1``/``1.0``)
  per row, as the published 5x200 CSVs have.

Image paths are relative to ``image_root`` (default: the CSV's folder). CheXpert CSVs write
paths as ``CheXpert-v1.0-small/train/patient00001/...``; when such a path is not found and its
first folder is the name of ``image_root`` itself, that folder is skipped, so ``image_root`` may
be either the CheXpert folder or its parent.

Options (besides the common ``limit``, ``seed``, ``on_bad_rows``, ``validate``, ``cache_dir``,
``workers`` of :mod:`pytest_medrobust.datasets.subset`):

``prompts``
    The text for each class: a mapping class -> text, the path of a JSON file with that mapping,
    or a template containing ``{label}`` (filled with the lower-case class name). Default:
    :data:`DEFAULT_PROMPTS`.
``image_root``
    See above. ``csv``: the CSV's path when the spec path is a folder with another file name.

Record ids are the image paths as written in the CSV; ``where`` is the CSV line.
"""

from __future__ import annotations

import csv as _csv_module  # the loader has an option named csv
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from .base import Dataset, resolve_inside
from .reports import normalise_whitespace
from .subset import Row, build_dataset, csv_field_limit, oversized_field

CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

# One short sentence per class, in the register of a report's impression.
DEFAULT_PROMPTS = {
    "Atelectasis": "Findings consistent with atelectasis.",
    "Cardiomegaly": "The heart is enlarged, consistent with cardiomegaly.",
    "Consolidation": "There is focal consolidation in the lung.",
    "Edema": "Findings consistent with pulmonary edema.",
    "Pleural Effusion": "There is a pleural effusion.",
}

CSV_NAMES = (
    "chexpert_5x200.csv",
    "chexpert-5x200.csv",
    "chexpert5x200.csv",
    "chexpert_5x200_meta.csv",
    "chexpert-5x200-meta.csv",
)
PATH_COLUMNS = ("Path", "path", "imgpath", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "Class", "Label", "finding")
POSITIVE = {"1", "1.0", "true", "True", "yes"}


def _prompts(prompts: Any) -> dict[str, str]:
    if prompts is None:
        return dict(DEFAULT_PROMPTS)
    if isinstance(prompts, str) and "{label}" in prompts:
        return {c: prompts.format(label=c.lower()) for c in CLASSES}
    if isinstance(prompts, (str, Path)):
        try:
            prompts = json.loads(Path(prompts).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"prompts: cannot read a JSON mapping from {prompts}: {exc}") from exc
    if not isinstance(prompts, dict):
        raise ConfigError("prompts must be a mapping class -> text, a JSON file of one, or a template with {label}")
    missing = [c for c in CLASSES if not normalise_whitespace(prompts.get(c, ""))]
    unknown = [k for k in prompts if k not in CLASSES]
    if missing or unknown:
        raise ConfigError(
            f"prompts must give a non-empty text for each of {', '.join(CLASSES)}"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
        )
    texts = {c: normalise_whitespace(prompts[c]) for c in CLASSES}
    if len(set(texts.values())) != len(CLASSES):
        raise ConfigError("prompts must differ between classes (identical texts make classes indistinguishable)")
    return texts


def _find_csv(path: Path, csv_name: str | Path | None) -> Path:
    if csv_name is not None:
        given = Path(csv_name)
        return given if given.is_absolute() else path / given
    if path.is_file():
        return path
    if not path.exists():
        raise DatasetError(f"CheXpert 5x200 path {path} does not exist")
    for candidate in CSV_NAMES:
        if (path / candidate).is_file():
            return path / candidate
    raise DatasetError(f"{path}: no CheXpert 5x200 CSV found (looked for {', '.join(CSV_NAMES)}; or pass csv)")


def _class_of(row: dict[str, str], label_column: str | None) -> tuple[str | None, str | None]:
    """(class, problem)."""
    if label_column is not None:
        value = (row.get(label_column) or "").strip()
        for c in CLASSES:
            if value.lower() == c.lower():
                return c, None
        return None, f"class {value!r} is not one of {', '.join(CLASSES)}"
    positives = [c for c in CLASSES if (row.get(c) or "").strip() in POSITIVE]
    if len(positives) != 1:
        return None, f"expected exactly one positive class, found {len(positives)} ({', '.join(positives) or 'none'})"
    return positives[0], None


def load_chexpert5x200(
    path: str | Path,
    *,
    prompts: Any = None,
    image_root: str | Path | None = None,
    csv: str | Path | None = None,
    name: str = "chexpert5x200",
    **common: Any,
) -> Dataset:
    texts = _prompts(prompts)
    csv_path = _find_csv(Path(path), csv)
    if not csv_path.is_file():
        raise DatasetError(f"CheXpert 5x200 CSV {csv_path} does not exist")
    root = Path(image_root) if image_root is not None else csv_path.parent
    if not root.is_dir():
        raise DatasetError(f"CheXpert image root {root} does not exist")
    root = root.resolve()
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f, csv_field_limit():
            reader = _csv_module.DictReader(f)
            columns = list(reader.fieldnames or [])
            lines = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, _csv_module.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read ({type(exc).__name__}: {exc})") from exc
    path_column = next((c for c in PATH_COLUMNS if c in columns), None)
    label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
    missing_classes = [c for c in CLASSES if c not in columns]
    if path_column is None or (label_column is None and missing_classes):
        raise DatasetError(
            f"{csv_path}: needs an image path column ({' / '.join(PATH_COLUMNS)}) and either a class column "
            f"({' / '.join(LABEL_COLUMNS)}) or the five class columns ({', '.join(CLASSES)}); "
            f"found {', '.join(columns) or 'none'}"
        )
    if not lines:
        raise DatasetError(f"{csv_path}: no rows")
    rows: list[Row] = []
    counts = dict.fromkeys(CLASSES, 0)
    for line, row in lines:
        where = f"{csv_path.name}, line {line}"
        too_long = oversized_field(row)
        if too_long:  # not parsed further: the field may be the path
            rows.append(Row(f"line{line}", where, None, "", too_long))
            continue
        relative = (row.get(path_column) or "").strip()
        cls, problem = _class_of(row, label_column)
        image: Path | None = None
        try:
            image = resolve_inside(root, relative, where)
            first, _, rest = relative.replace("\\", "/").partition("/")
            if not image.exists() and rest and first == root.name:
                image = resolve_inside(root, rest, where)
        except DatasetError as exc:
            problem = problem or str(exc).removeprefix(f"{where}: ")
        except (RuntimeError, OSError) as exc:  # resolve(): "Symlink loop from ..." (RuntimeError before 3.13)
            image, problem = None, problem or f"cannot resolve image path {relative!r}: {exc}"
        if cls is not None:
            counts[cls] += 1
        rows.append(Row(relative or f"line{line}", where, image, texts[cls] if cls else "", problem))
    info = {
        "protocol": "CheXpert 5x200: 5 classes, each image paired with its class prompt; use unique-text retrieval",
        "classes": list(CLASSES),
        "prompts": texts,
        "class_counts_listed": counts,
    }
    dataset = build_dataset(name, csv_path, rows, info=info, **common)
    kept = dict.fromkeys(CLASSES, 0)
    by_text = {t: c for c, t in texts.items()}
    for record in dataset.records:
        kept[by_text[record.report]] += 1
    dataset.info["class_counts"] = kept
    return dataset
