"""Datasets: where the images and reports under test come from.

Public API::

    load_dataset(spec, **options) -> Dataset   # spec: None (bundled phantom), a manifest path,
                                               # or "loader:path" (e.g. "manifest:/data/x.csv")
    available_loaders() -> list[str]
    Dataset, Record                             # the contract every loader produces
    decode_dataset(dataset, size, geometry)    # uint8 N x H x W at a model's input size

Loaders are named ``"package.module:function"`` paths so that optional dependencies (pydicom)
load only when used. A loader is called as ``loader(path, **options)`` and returns a Dataset
whose every record's image exists and whose every report is non-empty, or raises
:class:`~pytest_medrobust.errors.DatasetError` listing every bad row.

Every loader takes the common options ``limit``, ``seed``, ``on_bad_rows`` ("error"/"drop"),
``validate`` ("decode"/"exists"), ``cache_dir`` and ``workers``; see
:mod:`pytest_medrobust.datasets.subset` and ``docs/datasets.md``.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .base import Dataset, Record
from .images import decode_dataset, fit, read_image, to_batch
from .manifest import load_manifest, normalise_report

LOADERS: dict[str, str] = {
    "manifest": "pytest_medrobust.datasets.manifest:load_manifest",
    "phantom": "pytest_medrobust.datasets:load_bundled_phantom",
    "mimic-cxr": "pytest_medrobust.datasets.mimic:load_mimic_cxr",
    "openi": "pytest_medrobust.datasets.openi:load_openi",
    "chexpert5x200": "pytest_medrobust.datasets.chexpert:load_chexpert5x200",
}

__all__ = [
    "Dataset",
    "LOADERS",
    "Record",
    "available_loaders",
    "bundled_phantom_manifest",
    "decode_dataset",
    "fit",
    "load_dataset",
    "load_manifest",
    "normalise_report",
    "read_image",
    "to_batch",
]


def available_loaders() -> list[str]:
    return sorted(LOADERS)


def bundled_phantom_manifest() -> Path:
    return Path(str(resources.files("pytest_medrobust.fixtures") / "phantom" / "manifest.csv"))


def load_bundled_phantom(path: str | None = None, **options: Any) -> Dataset:
    """The bundled phantom test split (or a phantom split written elsewhere by the same tool)."""
    manifest = Path(path) if path else bundled_phantom_manifest()
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    return load_manifest(manifest, name="phantom", **options)


def parse_spec(spec: str | None) -> tuple[str, str | None]:
    """``None`` -> phantom; ``"openi:/data/x"`` -> (openi, /data/x); a bare path -> manifest."""
    if not spec:
        return "phantom", None
    loader, sep, rest = spec.partition(":")
    if sep and loader in LOADERS:
        return loader, rest or None
    if sep and not Path(spec).exists() and "/" not in loader and "\\" not in loader and len(loader) > 1:
        raise DatasetError(f"unknown dataset loader {loader!r}; available: {', '.join(available_loaders())}")
    return "manifest", spec


def load_dataset(spec: str | None = None, **options: Any) -> Dataset:
    loader, path = parse_spec(spec)
    module_name, _, attr = LOADERS[loader].partition(":")
    function = getattr(importlib.import_module(module_name), attr)
    if path is None and loader != "phantom":
        raise DatasetError(f"dataset loader {loader!r} needs a path, as '{loader}:/path/to/data'")
    # Every loader takes ``regions`` (a box file) and ``regions_format``: see datasets/regions.py.
    regions, regions_format = options.pop("regions", None), options.pop("regions_format", "auto")
    dataset = function(path, **options) if path is not None else function(**options)
    from .regions import attach_regions_option

    return attach_regions_option(dataset, loader, regions, regions_format, subset=options.get("limit") is not None)
