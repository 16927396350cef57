"""Named regions per image (boxes or mask PNGs), their loaders, and masks in a model's input frame.

A region is a named area of one image in the image's own pixels: the union of any number of
boxes and mask PNGs of that name (two radiologists' boxes of one finding are one region). A
dataset carries them as ``dataset.regions``: image id -> {region name: :class:`RegionSpec`}.

Files read (``dataset_options.regions``; ``regions_format`` = ``auto`` picks by the header):

* ``nih`` -- NIH ChestX-ray14 ``BBox_List_2017.csv``: header
  ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (the four numbers are the 3rd to 6th
  columns); the finding label is the region name;
* ``vindr`` -- VinDr-CXR box CSV: ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max``
  (``rad_id`` and ``class_id`` optional); ``No finding`` rows have empty boxes and are counted,
  not regions; the class name is the region name;
* ``boxes`` -- the plain format (``.csv``, or ``.json``: a list of objects with the same keys):
  ``image`` (or ``id``), ``region``, then ``x,y,w,h`` or ``x_min,y_min,x_max,y_max`` or
  ``mask`` (a PNG path relative to the regions file: nonzero pixels are the region).

A row's image is matched to a dataset record by the record's id, its file name, or its file
name without the extension (VinDr's ``image_id``); a key that names two records is an error.
What is wrong with a row, and what happens:

* unreadable number, negative or zero size, ``x_max <= x_min``, a box wholly outside its image,
  a mask PNG of another size than its image: :class:`DatasetError` listing every such row;
* a box partly outside its image: clipped to it, with a :class:`RegionWarning` naming the rows;
* a row naming no image of the dataset (NIH's file covers 880 images; a ``limit`` keeps a
  subset): a :class:`RegionWarning` with the count and the first rows, and the count in the
  dataset card (``regions.unmatched_rows``).

:func:`region_masks` gives a region's boolean masks in a model's input frame: the region is
drawn at the image's own size and sent through the very resize/crop/pad the image goes through
(:func:`~.images.fit`, or the model's ``prepare_image``), and a model pixel belongs to the region
when any of the region reaches it (nonzero after resampling). So the mask covers every pixel
the region's content can reach, whatever the geometry.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .base import Dataset, Record, raise_problems

__all__ = [
    "FORMATS",
    "RegionRow",
    "RegionSpec",
    "RegionWarning",
    "attach_regions",
    "load_region_rows",
    "region_masks",
    "region_names",
]

FORMATS = ("auto", "nih", "vindr", "boxes")
# How many unmatched or clipped rows a warning names before "... and N more".
_LISTED = 5
# A box may reach past its image by this many pixels (rounding in exported coordinates) unwarned.
_EDGE_SLACK = 0.5


class RegionWarning(UserWarning):
    """A regions file had rows that were clipped or matched no image (named in the message)."""


@dataclass(frozen=True)
class RegionRow:
    """One row of a regions file: ``key`` names the image, ``box`` is (x0, y0, x1, y1) in the
    image's pixels, or ``mask`` a PNG; ``where`` is "file, line N"."""

    key: str
    name: str
    where: str
    box: tuple[float, float, float, float] | None = None
    mask: Path | None = None


@dataclass(frozen=True)
class RegionSpec:
    """One named region of one image: the union of ``boxes`` (x0, y0, x1, y1 in the original
    image's pixels, x0 < x1, inside the image) and ``masks`` (PNG files of the image's size)."""

    name: str
    image_size: tuple[int, int]  # (height, width) of the original image
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    masks: tuple[Path, ...] = ()
    sources: tuple[str, ...] = ()  # where each box or mask came from ("file, line N")

    def original_mask(self) -> np.ndarray:
        """Boolean H x W at the original size: a pixel is in when any box overlaps it."""
        height, width = self.image_size
        out = np.zeros((height, width), dtype=bool)
        for x0, y0, x1, y1 in self.boxes:
            out[int(math.floor(y0)) : int(math.ceil(y1)), int(math.floor(x0)) : int(math.ceil(x1))] = True
        for path in self.masks:
            out |= _read_mask(path, self.image_size, path.name)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "boxes": [list(b) for b in self.boxes],
                "masks": [str(m) for m in self.masks]}


def region_names(regions: Mapping[str, Mapping[str, RegionSpec]]) -> dict[str, int]:
    """Each region name and how many images have it, by name."""
    counts: dict[str, int] = {}
    for per_image in regions.values():
        for name in per_image:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


# --- reading files -------------------------------------------------------------------------------


def _read_mask(path: Path, size: tuple[int, int], where: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("L"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{where}: cannot read the region mask {path}: {exc}") from exc
    if array.shape != tuple(size):
        raise DatasetError(
            f"{where}: region mask {path} is {array.shape[1]}x{array.shape[0]}, its image is {size[1]}x{size[0]} (WxH)"
        )
    return array > 0


def _number(value: Any, column: str, where: str, problems: list[str]) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        problems.append(f"{where}: {column} = {value!r} is not a number")
        return None
    if not math.isfinite(number):
        problems.append(f"{where}: {column} = {value!r} is not finite")
        return None
    return number


def _box(values: Sequence[Any], columns: Sequence[str], corners: bool, where: str, problems: list[str]
         ) -> tuple[float, float, float, float] | None:
    numbers = [_number(v, c, where, problems) for v, c in zip(values, columns, strict=True)]
    if any(n is None for n in numbers):
        return None
    a, b, c, d = (float(n) for n in numbers if n is not None)
    x0, y0, x1, y1 = (a, b, c, d) if corners else (a, b, a + c, b + d)
    if x1 <= x0 or y1 <= y0:
        what = f"x_max {c:g} <= x_min {a:g} or y_max {d:g} <= y_min {b:g}" if corners else f"width {c:g}, height {d:g}"
        problems.append(f"{where}: empty or negative box ({what})")
        return None
    return x0, y0, x1, y1


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"regions file {path}: cannot read it as UTF-8 text ({exc})") from exc
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader, [])
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise DatasetError(f"regions file {path}, line {reader.line_num}: not valid CSV ({exc})") from exc
    return [h.strip() for h in header], rows


def _detect(header: Sequence[str]) -> str:
    if header[:2] == ["Image Index", "Finding Label"]:
        return "nih"
    if "image_id" in header and "class_name" in header:
        return "vindr"
    return "boxes"


def load_region_rows(path: str | Path, fmt: str = "auto") -> tuple[list[RegionRow], dict[str, Any]]:
    """Every region row of a file, and facts about the file (format, counts) for the card."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DatasetError(f"regions format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not path.is_file():
        raise DatasetError(f"regions file {path} does not exist" if not path.exists() else f"regions file {path} is not a file")
    if path.suffix.lower() == ".json":
        if fmt not in ("auto", "boxes"):
            raise DatasetError(f"regions file {path}: the {fmt} format is a CSV file, got .json")
        return _plain_json(path), {"format": "boxes"}
    header, rows = _csv_rows(path)
    fmt = _detect(header) if fmt == "auto" else fmt
    reader = {"nih": _nih, "vindr": _vindr, "boxes": _plain_csv}[fmt]
    found, info = reader(path, header, rows)
    return found, {"format": fmt, **info}


def _nih(path: Path, header: list[str], rows: list[tuple[int, list[str]]]) -> tuple[list[RegionRow], dict]:
    # The real header is "Image Index,Finding Label,Bbox [x,y,w,h],,," : the box's four numbers
    # sit under "Bbox [x", "y", "w", "h]" (the header itself was split at its commas).
    if header[:2] != ["Image Index", "Finding Label"] or len(header) < 6 or not header[2].startswith("Bbox [x"):
        raise DatasetError(
            f"regions file {path}: not an NIH BBox_List_2017.csv header (expected 'Image Index,Finding Label,"
            f"Bbox [x,y,w,h],,,'), got {','.join(header)!r}"
        )
    out: list[RegionRow] = []
    problems: list[str] = []
    for line, row in rows:
        where = f"{path.name}, line {line}"
        if len(row) < 6:
            problems.append(f"{where}: expected 6 columns (image, label, x, y, w, h), got {len(row)}")
            continue
        box = _box(row[2:6], ("x", "y", "w", "h"), False, where, problems)
        if box is not None:
            out.append(RegionRow(row[0].strip(), row[1].strip(), where, box=box))
    raise_problems(f"regions file {path}", problems)
    return out, {}


def _vindr(path: Path, header: list[str], rows: list[tuple[int, list[str]]]) -> tuple[list[RegionRow], dict]:
    need = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
    missing = [c for c in need if c not in header]
    if missing:
        raise DatasetError(f"regions file {path}: missing VinDr column(s) {', '.join(missing)}; found {','.join(header)}")
    at = {c: header.index(c) for c in need}
    corners = ("x_min", "y_min", "x_max", "y_max")
    out: list[RegionRow] = []
    problems: list[str] = []
    no_finding = 0
    for line, row in rows:
        where = f"{path.name}, line {line}"
        cells = {c: (row[i].strip() if i < len(row) else "") for c, i in at.items()}
        if not any(cells[c] for c in corners):
            if cells["class_name"].lower() == "no finding":
                no_finding += 1  # a study-level statement, not a region
            else:
                problems.append(f"{where}: {cells['class_name']!r} has an empty box (only 'No finding' rows may)")
            continue
        box = _box([cells[c] for c in corners], corners, True, where, problems)
        if box is not None:
            out.append(RegionRow(cells["image_id"], cells["class_name"], where, box=box))
    raise_problems(f"regions file {path}", problems)
    return out, {"no_finding_rows": no_finding}


def _plain_row(path: Path, where: str, row: Mapping[str, Any], problems: list[str]) -> RegionRow | None:
    key = str(row.get("image") or row.get("id") or "").strip()
    name = str(row.get("region") or "").strip()
    if not key or not name:
        problems.append(f"{where}: needs 'image' (or 'id') and 'region'")
        return None
    present = {k for k, v in row.items() if v not in (None, "")}
    if "mask" in present:
        return RegionRow(key, name, where, mask=(path.parent / str(row["mask"])).resolve())
    for columns, corners in ((("x_min", "y_min", "x_max", "y_max"), True), (("x", "y", "w", "h"), False)):
        if set(columns) <= present:
            box = _box([row[c] for c in columns], columns, corners, where, problems)
            return None if box is None else RegionRow(key, name, where, box=box)
    problems.append(f"{where}: needs x,y,w,h or x_min,y_min,x_max,y_max or mask")
    return None


def _plain_csv(path: Path, header: list[str], rows: list[tuple[int, list[str]]]) -> tuple[list[RegionRow], dict]:
    out: list[RegionRow] = []
    problems: list[str] = []
    for line, cells in rows:
        row = dict(zip(header, (c.strip() for c in cells), strict=False))
        found = _plain_row(path, f"{path.name}, line {line}", row, problems)
        if found is not None:
            out.append(found)
    raise_problems(f"regions file {path}", problems)
    return out, {}


def _plain_json(path: Path) -> list[RegionRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"regions file {path}: not readable JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise DatasetError(f"regions file {path}: expected a JSON list of objects (image, region, x, y, w, h, ...)")
    out: list[RegionRow] = []
    problems: list[str] = []
    for i, item in enumerate(data):
        found = _plain_row(path, f"{path.name}, item {i}", item, problems)
        if found is not None:
            out.append(found)
    raise_problems(f"regions file {path}", problems)
    return out


# --- joining to a dataset ----------------------------------------------------------------------


def _index(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Keys a row may use for a record: its id, file name, and file name without extension."""
    index: dict[str, list[Record]] = {}
    for record in records:
        for key in dict.fromkeys((record.id, record.image.name, record.image.stem)):
            index.setdefault(key, []).append(record)
    return index


def _image_size(record: Record) -> tuple[int, int]:
    """(height, width) of a record's image as decoded (a header read for PNG/JPEG)."""
    from .images import DICOM_SUFFIXES, read_image

    if record.image.suffix.lower() in DICOM_SUFFIXES:
        width, height = read_image(record.image).size
    else:
        with Image.open(record.image) as im:
            width, height = im.size
    return height, width


def _listed(rows: Sequence[str]) -> str:
    more = len(rows) - _LISTED
    return "; ".join(rows[:_LISTED]) + (f"; ... and {more} more" if more > 0 else "")


def attach_regions(dataset: Dataset, rows: Iterable[RegionRow], source: Path | str, info: Mapping[str, Any] | None = None,
                   *, subset: bool = False) -> Dataset:
    """Join region rows to ``dataset``'s records and set ``dataset.regions`` (see the module docstring).

    ``subset``: the dataset is a ``limit`` of the file's images, so rows of the images left out
    are expected; they are counted in the card, and warned about only when no row matched."""
    index = _index(dataset.records)
    unmatched: list[str] = []
    clipped: list[str] = []
    problems: list[str] = []
    sizes: dict[str, tuple[int, int]] = {}
    parts: dict[str, dict[str, dict[str, list]]] = {}  # id -> name -> {"boxes", "masks", "sources"}
    for row in rows:
        matches = index.get(row.key, [])
        if not matches:
            unmatched.append(f"{row.where} ({row.key!r})")
            continue
        if len(matches) > 1:
            problems.append(f"{row.where}: {row.key!r} names {len(matches)} images ({', '.join(r.id for r in matches[:3])})")
            continue
        record = matches[0]
        if record.id not in sizes:
            sizes[record.id] = _image_size(record)
        height, width = sizes[record.id]
        entry = parts.setdefault(record.id, {}).setdefault(row.name, {"boxes": [], "masks": [], "sources": []})
        if row.mask is not None:
            if not row.mask.is_file():
                problems.append(f"{row.where}: mask file {row.mask} does not exist")
                continue
            entry["masks"].append(row.mask)
        elif row.box is not None:
            x0, y0, x1, y1 = row.box
            inside = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
            if inside[2] <= inside[0] or inside[3] <= inside[1]:
                problems.append(f"{row.where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside its {width}x{height} image "
                                f"{record.image.name}")
                continue
            if x0 < -_EDGE_SLACK or y0 < -_EDGE_SLACK or x1 > width + _EDGE_SLACK or y1 > height + _EDGE_SLACK:
                clipped.append(f"{row.where} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) in {width}x{height}")
            entry["boxes"].append(inside)
        entry["sources"].append(row.where)
    raise_problems(f"regions file {source}", problems)
    regions = {
        rid: {
            name: RegionSpec(name, sizes[rid], tuple(p["boxes"]), tuple(p["masks"]), tuple(p["sources"]))
            for name, p in by_name.items()
        }
        for rid, by_name in parts.items()
    }
    for rid, by_name in regions.items():  # a mask of the wrong size is an error now, not mid-run
        for spec in by_name.values():
            for mask in spec.masks:
                _read_mask(mask, spec.image_size, f"regions file {source}, image {rid}")
    if clipped:
        warnings.warn(RegionWarning(f"regions file {source}: {len(clipped)} box(es) reach past their image and were "
                                    f"clipped to it: {_listed(clipped)}"), stacklevel=2)
    if unmatched and not (subset and regions):
        warnings.warn(RegionWarning(f"regions file {source}: {len(unmatched)} row(s) name no image of dataset "
                                    f"{dataset.name} and are not used: {_listed(unmatched)}"), stacklevel=2)
    dataset.regions = regions
    dataset.info["regions"] = {
        "file": str(source),
        **(info or {}),
        "names": region_names(regions),
        "images_with_regions": len(regions),
        "unmatched_rows": len(unmatched),
        "clipped_boxes": len(clipped),
    }
    return dataset


def load_regions(dataset: Dataset, path: str | Path, fmt: str = "auto", *, subset: bool = False) -> Dataset:
    """Read a regions file and join it to ``dataset`` (sets ``dataset.regions``)."""
    rows, info = load_region_rows(path, fmt)
    return attach_regions(dataset, rows, Path(path), info, subset=subset)


# The phantom generator writes its regions beside its manifest (scripts/make_phantom_fixtures.py).
PHANTOM_REGIONS = "regions.csv"


def attach_regions_option(
    dataset: Dataset, loader: str, path: str | Path | None, fmt: str = "auto", *, subset: bool = False
) -> Dataset:
    """``load_dataset``'s ``regions`` option: that file's regions; for the phantom loader with no
    file given, the ``regions.csv`` its generator wrote beside the manifest (when there is one)."""
    if path is not None and str(path).strip():
        return load_regions(dataset, Path(path).expanduser(), fmt, subset=subset)
    if loader == "phantom":
        beside = Path(dataset.source).parent / PHANTOM_REGIONS
        if beside.is_file():
            return load_regions(dataset, beside, "boxes", subset=subset)
    return dataset


# --- masks in a model's input frame -----------------------------------------------------------


Prepare = Callable[[Image.Image], Image.Image]


def region_masks(
    dataset: Dataset,
    names: str | Sequence[str],
    size: tuple[int, int],
    geometry: str,
    prepare: Prepare | None = None,
) -> dict[str, np.ndarray]:
    """Boolean H x W masks at the model input ``size`` of the union of region(s) ``names``, for
    every image that has at least one of them (id -> mask); see the module docstring."""
    from .images import fit

    wanted = [names] if isinstance(names, str) else list(names)
    step = prepare or (lambda im: fit(im, size, geometry))
    out: dict[str, np.ndarray] = {}
    for record in dataset.records:
        specs = [s for n, s in dataset.regions.get(record.id, {}).items() if n in wanted]
        if not specs:
            continue
        original = np.logical_or.reduce([s.original_mask() for s in specs])
        prepared = np.asarray(step(Image.fromarray(original.astype(np.uint8) * 255)).convert("L"))
        if prepared.shape != tuple(size):
            raise DatasetError(f"image {record.id}: its region mask was prepared to {prepared.shape}, expected {tuple(size)}")
        out[record.id] = prepared > 0
    return out
