"""Fixtures for the dataset tests: each dataset's real layout, generated small in tmp folders.

The builders live in ``dataset_builders.py`` (importable by the tests); here they become
fixtures. Real-data tests use ``real_data``, which skips with the reason when the samples are
absent (a fresh clone has no ``../shared/real-data``; ``MEDROBUST_REAL_DATA`` points elsewhere).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dataset_builders, in any import mode

from dataset_builders import (  # noqa: E402
    REAL_DATA_ENV,
    build_chexpert,
    build_manifest,
    build_mimic,
    build_openi,
    real_data_root,
)


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = real_data_root()
    if not (root / "openi").is_dir() or not (root / "dicom").is_dir():
        pytest.skip(
            f"real-data samples not found at {root} (a fresh clone has no ../shared/real-data; "
            f"set {REAL_DATA_ENV} to a copy to run these tests)"
        )
    return root


@pytest.fixture
def mimic_root(tmp_path: Path) -> Path:
    """MIMIC-CXR-JPG layout: 3 test studies (5 images, PA/AP/LATERAL) and 1 train study."""
    return build_mimic(tmp_path / "mimic-cxr-jpg")


@pytest.fixture
def openi_root(tmp_path: Path) -> Path:
    """OpenI layout: 4 studies, 5 images; study 10 has no FINDINGS, study 11 no image."""
    return build_openi(tmp_path / "openi")


@pytest.fixture
def chexpert_root(tmp_path: Path) -> Path:
    """CheXpert 5x200 layout, 2 images per class, one-hot CSV with CheXpert-v1.0-small/ paths."""
    return build_chexpert(tmp_path / "chexpert")


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    """A 6-row CSV manifest with PNG, JPEG and DICOM images."""
    return build_manifest(tmp_path / "ds")


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write to a cache folder taken from the environment."""
    monkeypatch.delenv("MEDROBUST_CACHE_DIR", raising=False)
