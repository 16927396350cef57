"""IU X-ray / Open-i ("NLMCXR") loader: ``openi:/data/iu-xray``.

Layout (as NLM distributes it, ``NLMCXR_png.tgz`` and ``NLMCXR_reports.tgz`` extracted side by
side)::

    <root>/NLMCXR_png/CXR3_IM-1384-1001.png          images, flat, named <image id>.png
    <root>/ecgen-radiology/3.xml                     one report XML per study

Each XML names its images with ``<parentImage id="CXR3_IM-1384-1001">`` (the ``url`` inside
points at ``.jpg`` files; the distributed images are ``<id>.png``) and holds the report as
``<AbstractText Label="FINDINGS">`` / ``"IMPRESSION"`` / ``"COMPARISON"`` / ``"INDICATION"``.

Options (besides the common ``limit``, ``seed``, ``on_bad_rows``, ``validate``, ``cache_dir``,
``workers`` of :mod:`pytest_medrobust.datasets.subset`):

``section`` (default ``"both"``)
    ``findings``, ``impression``, ``both`` or ``full`` (see :mod:`.reports`). A study whose
    chosen section is empty (e.g. study 3 has an empty FINDINGS) is a bad row.
``one_image_per_study`` (default False)
    False: one record per image (a study's report is the text of each of its images). True:
    one record per study, with the study's first listed image (``figureId`` F1; the XML has no
    view position, and the first image is usually but not always the frontal one).
``images_dir`` / ``reports_dir``
    Override ``<root>/NLMCXR_png`` / ``<root>/ecgen-radiology``.

Record ids are the image ids (``CXR3_IM-1384-1001``); ``where`` names the XML file and image.
Studies that list no image at all cannot be paired with one; they are not rows, and are counted
in ``info["n_studies_without_images"]`` (their files in ``info["studies_without_images"]``).
An XML file that cannot be parsed is a bad row.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .base import Dataset
from .reports import check_section, labelled_section
from .subset import Row, build_dataset


@dataclass(frozen=True)
class OpenIStudy:
    """One parsed report XML."""

    file: Path
    uid: str  # e.g. "CXR3"
    sections: tuple[tuple[str, str], ...]  # (LABEL, text) of every AbstractText, in order
    images: tuple[str, ...]  # parentImage ids, in order

    def text(self, section: str) -> str:
        return labelled_section(self.sections, section)


def parse_openi_report(path: Path) -> OpenIStudy:
    """Parse one ``ecgen-radiology/*.xml``; raises DatasetError naming the file if it cannot."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{path.name}: cannot parse the report XML ({exc})") from exc
    uid_el = root.find("uId")
    uid = (uid_el.get("id") if uid_el is not None else None) or f"CXR{path.stem}"
    sections = tuple((str(el.get("Label") or ""), "".join(el.itertext())) for el in root.iter("AbstractText"))
    images = tuple(img for el in root.iter("parentImage") if (img := (el.get("id") or "").strip()))
    return OpenIStudy(path, uid, sections, images)


def _study_sort_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def load_openi(
    path: str | Path,
    *,
    section: str = "both",
    one_image_per_study: bool = False,
    images_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
    name: str = "openi",
    **common: Any,
) -> Dataset:
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"OpenI root {root} does not exist or is not a folder")
    check_section(section)
    images = Path(images_dir) if images_dir else root / "NLMCXR_png"
    reports = Path(reports_dir) if reports_dir else root / "ecgen-radiology"
    for what, folder, archive in (("image", images, "NLMCXR_png.tgz"), ("report", reports, "NLMCXR_reports.tgz")):
        if not folder.is_dir():  # checked before resolve(), which raises on a symlink loop
            raise DatasetError(f"OpenI {what} folder {folder} does not exist (extract {archive} into {root})")
    images, reports = images.resolve(), reports.resolve()
    xml_files = sorted(reports.glob("*.xml"), key=_study_sort_key)
    if not xml_files:
        raise DatasetError(f"OpenI report folder {reports} has no .xml files")
    rows: list[Row] = []
    without_images: list[str] = []
    for xml in xml_files:
        rel = f"{reports.name}/{xml.name}"
        try:
            study = parse_openi_report(xml)
        except DatasetError as exc:
            rows.append(Row(f"xml:{xml.name}", rel, None, "", str(exc).removeprefix(f"{xml.name}: ")))
            continue
        if not study.images:
            without_images.append(xml.name)
            continue
        text = study.text(section)
        problem = None if text else f"{section!r} text is empty ({study.uid})"
        chosen = study.images[:1] if one_image_per_study else study.images
        for image_id in chosen:
            image_path: Path | None = images / f"{image_id}.png"
            image_problem = None
            if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
                image_problem, image_path = f"image id {image_id!r} is not a plain file name", None
            rows.append(Row(image_id, f"{rel}, image {image_id}", image_path, text, problem or image_problem))
    info = {
        "section": section,
        "one_image_per_study": bool(one_image_per_study),
        "n_studies": len(xml_files),
        "n_studies_without_images": len(without_images),
        "studies_without_images": without_images,
    }
    if not rows:
        raise DatasetError(f"OpenI {root}: no study lists an image ({len(xml_files)} report files)")
    return build_dataset(name, root, rows, info=info, **common)
