"""MIMIC-CXR-JPG loader: ``mimic-cxr:/data/mimic-cxr-jpg``.

Layout (PhysioNet's MIMIC-CXR-JPG 2.x, with the free-text reports of MIMIC-CXR)::

    <root>/mimic-cxr-2.0.0-split.csv.gz       dicom_id, study_id, subject_id, split
    <root>/mimic-cxr-2.0.0-metadata.csv.gz    dicom_id, ..., ViewPosition, ...  (optional)
    <root>/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    <reports>/files/p10/p10000032/s50414267.txt   the study's report (from mimic-cxr-reports.zip)

Options (besides the common ``limit``, ``seed``, ``on_bad_rows``, ``validate``, ``cache_dir``,
``workers`` of :mod:`pytest_medrobust.datasets.subset`):

``split`` (default ``"test"``)
    ``train``, ``validate`` (also ``val``/``validation``), ``test``, or ``all``. Rows keep the
    split file's order.
``section`` (default ``"both"``)
    ``findings``, ``impression``, ``both`` (FINDINGS then IMPRESSION; bad only when both are
    missing) or ``full`` (see :mod:`.reports`).
``reports_dir`` (default: ``<root>/mimic-cxr-reports.zip`` if present, else ``<root>``)
    Where the ``sNNNNNNNN.txt`` files are: a folder containing ``files/pXX/pNNNNNNNN/``, or that
    ``files`` folder itself, or the ``mimic-cxr-reports.zip`` archive (read in place).
``one_image_per_study`` (default False)
    One record per study: its first image (by ``dicom_id``) whose ViewPosition is the first of
    ``views`` available, then the next, ... Studies with no image in ``views`` are left out and
    counted in ``info["n_studies_without_view"]``. Needs the metadata file.
``views`` (default: all views; with ``one_image_per_study``: ``("PA", "AP")``)
    Keep only images whose ViewPosition is one of these (a list or a comma-separated string).
``split_file`` / ``metadata_file``
    Override the two CSV paths (``.csv`` or ``.csv.gz``).

Record ids are the ``dicom_id``; ``where`` names the split file line, dicom_id and study.
"""

from __future__ import annotations

import csv
import gzip
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from .base import Dataset
from .reports import check_section, free_text_section
from .subset import Row, RowProblem, build_dataset, csv_field_limit, oversized_field

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
REPORTS_ZIP = "mimic-cxr-reports.zip"
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
SPLITS = ("train", "validate", "test")
SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate"}


def _find_csv(root: Path, given: str | Path | None, default: str) -> Path:
    if given is not None:
        return Path(given)
    path = root / default
    plain = root / default.removesuffix(".gz")
    return plain if not path.exists() and plain.exists() else path


def read_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a ``.csv`` or ``.csv.gz`` file, checking its columns first."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f, csv_field_limit():
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise DatasetError(
                    f"{path}: missing required column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}"
                )
            for row in reader:
                yield reader.line_num, row
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


class _Reports:
    """Reads ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt`` from a folder or the reports zip."""

    def __init__(self, root: Path, reports_dir: str | Path | None):
        given = Path(reports_dir) if reports_dir is not None else None
        if given is None:
            given = root / REPORTS_ZIP if (root / REPORTS_ZIP).is_file() else root
        self.source = given
        self._zip: zipfile.ZipFile | None = None
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()
        if given.is_file() and zipfile.is_zipfile(given):
            self._zip = zipfile.ZipFile(given)
            # Members are "files/p10/p10000032/s50414267.txt", possibly under a top folder.
            for member in self._zip.namelist():
                if member.endswith(".txt") and "files/" in member:
                    self._names["files/" + member.split("files/", 1)[1]] = member
            self.base = given
        elif given.is_dir():
            self.base = given / "files" if (given / "files").is_dir() else given
        else:
            raise DatasetError(
                f"MIMIC-CXR reports {given} do not exist (set reports_dir to the folder or {REPORTS_ZIP})"
            )

    def read(self, relative: str) -> str:
        """``relative`` is ``files/pXX/pN/sN.txt``."""
        if self._zip is not None:
            member = self._names.get(relative)
            if member is None:
                raise RowProblem(f"report {relative} not found in {self.source}")
            with self._lock:
                data = self._zip.read(member)
            return data.decode("utf-8", errors="replace")
        path = self.base / relative.removeprefix("files/")
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise RowProblem(f"report not found: {path}") from None


def _views(views: Any, one_image_per_study: bool) -> tuple[str, ...] | None:
    if views is None:
        return ("PA", "AP") if one_image_per_study else None
    if isinstance(views, str):
        views = views.split(",")
    out = tuple(str(v).strip().upper() for v in views if str(v).strip())
    if not out:
        raise ConfigError("views must name at least one ViewPosition (e.g. 'PA,AP')")
    return out


def load_mimic_cxr(
    path: str | Path,
    *,
    split: str | None = "test",
    section: str = "both",
    reports_dir: str | Path | None = None,
    one_image_per_study: bool = False,
    views: Any = None,
    split_file: str | Path | None = None,
    metadata_file: str | Path | None = None,
    name: str = "mimic-cxr",
    **common: Any,
) -> Dataset:
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"MIMIC-CXR-JPG root {root} does not exist or is not a folder")
    root = root.resolve()
    check_section(section)
    wanted = SPLIT_ALIASES.get(str(split).lower(), str(split).lower()) if split not in (None, "", "all") else None
    if wanted is not None and wanted not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)} or 'all'; got {split!r}")
    views_t = _views(views, one_image_per_study)
    split_path = _find_csv(root, split_file, SPLIT_FILE)
    if not split_path.is_file():
        raise DatasetError(
            f"MIMIC-CXR-JPG split file {split_path} does not exist "
            f"(expected {SPLIT_FILE} in {root}, or pass split_file)"
        )
    reports = _Reports(root, reports_dir)

    view_of: dict[str, str] = {}
    if views_t is not None:
        meta_path = _find_csv(root, metadata_file, METADATA_FILE)
        if not meta_path.is_file():
            raise DatasetError(
                f"MIMIC-CXR-JPG metadata file {meta_path} does not exist; it is needed for "
                f"views/one_image_per_study (expected {METADATA_FILE} in {root}, or pass metadata_file)"
            )
        for _, row in read_csv_rows(meta_path, ("dicom_id", "ViewPosition")):
            view_of[row["dicom_id"].strip()] = (row["ViewPosition"] or "").strip().upper()

    entries: list[tuple[int, str, str, str]] = []  # (line, dicom_id, study_id, subject_id)
    too_long: list[Row] = []  # split rows with an over-long field: bad rows, whatever their split
    seen_splits: set[str] = set()
    for line, row in read_csv_rows(split_path, SPLIT_COLUMNS):
        problem = oversized_field(row)
        if problem:
            too_long.append(Row(f"line{line}", f"{split_path.name}, line {line}", None, "", problem))
            continue
        row_split = (row["split"] or "").strip()
        seen_splits.add(row_split)
        if wanted is not None and row_split != wanted:
            continue
        entries.append((line, row["dicom_id"].strip(), row["study_id"].strip(), row["subject_id"].strip()))
    if not entries and not too_long:
        raise DatasetError(
            f"{split_path}: no rows in split {split!r} (splits present: {', '.join(sorted(seen_splits)) or 'none'})"
        )
    n_images_in_split = len(entries)

    n_without_view = 0
    if views_t is not None:
        rank = {v: i for i, v in enumerate(views_t)}
        if one_image_per_study:
            all_studies = {e[2] for e in entries}
            entries = [e for e in entries if view_of.get(e[1]) in rank]
            studies: dict[str, list[tuple[int, str, str, str]]] = {}
            for e in entries:
                studies.setdefault(e[2], []).append(e)
            chosen = {min(group, key=lambda e: (rank[view_of[e[1]]], e[1])) for group in studies.values()}
            n_without_view = len(all_studies) - len(studies)
            entries = [e for e in entries if e in chosen]
        else:
            entries = [e for e in entries if view_of.get(e[1]) in rank]
        if not entries:
            raise DatasetError(f"{split_path}: no image in split {split!r} has a ViewPosition in {', '.join(views_t)}")

    section_of_study: dict[str, Callable[[], str]] = {}

    def report_reader(relative: str) -> Callable[[], str]:
        memo: list[str | RowProblem] = []  # a study's images share one read (threads may race: harmless)

        def read() -> str:
            if not memo:
                try:
                    text = free_text_section(reports.read(relative), section)
                    if not text:
                        what = "FINDINGS or IMPRESSION" if section == "both" else section.upper()
                        raise RowProblem(f"report {relative} has no {what} text (section={section!r})")
                    memo.append(text)
                except RowProblem as exc:
                    memo.append(exc)
            if isinstance(memo[0], RowProblem):
                raise RowProblem(str(memo[0]))
            return memo[0]

        return read

    rows: list[Row] = list(too_long)
    for line, dicom_id, study_id, subject_id in entries:
        where = f"{split_path.name}, line {line} (dicom_id {dicom_id}, study s{study_id})"
        problem = None
        if not (subject_id.isdigit() and study_id.isdigit()) or not dicom_id or "/" in dicom_id or "\\" in dicom_id:
            problem = f"malformed ids: subject_id={subject_id!r}, study_id={study_id!r}, dicom_id={dicom_id!r}"
            rows.append(Row(dicom_id or f"line{line}", where, None, "", problem))
            continue
        folder = f"files/p{subject_id[:2]}/p{subject_id}"
        image = root / folder / f"s{study_id}" / f"{dicom_id}.jpg"
        reader = section_of_study.setdefault(study_id, report_reader(f"{folder}/s{study_id}.txt"))
        rows.append(Row(dicom_id, where, image, reader))

    info = {
        "split": wanted or "all",
        "section": section,
        "reports": str(reports.source),
        "n_images_in_split": n_images_in_split,
        "views": list(views_t) if views_t else None,
        "one_image_per_study": bool(one_image_per_study),
    }
    if one_image_per_study:
        info["n_studies_without_view"] = n_without_view
    return build_dataset(name, root, rows, info=info, **common)
