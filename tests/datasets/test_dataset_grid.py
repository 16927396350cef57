"""Every loader runs the real grid (pytester, in-process) on its fixture in the publisher's layout,
and OpenI also on the real sample."""

from __future__ import annotations

import json

# pytester's in-process runs cannot re-import C extensions first loaded during a run.
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import pydicom  # noqa: F401
import pytest
import torch  # noqa: F401

import pytest_medrobust.datasets.chexpert  # noqa: F401
import pytest_medrobust.datasets.dicom  # noqa: F401
import pytest_medrobust.datasets.mimic  # noqa: F401
import pytest_medrobust.datasets.openi  # noqa: F401
import pytest_medrobust.runner  # noqa: F401

GRID = (
    "--medrobust", "--medrobust-models", "demo-plain", "--medrobust-levels", "0,0.3", "--medrobust-patches",
    "black_box", "--medrobust-search-examples", "0", "--medrobust-bootstrap", "0", "--medrobust-no-cache",
    "-p", "no:cacheprovider",
)


def run_grid(pytester: pytest.Pytester, spec: str, *extra: str) -> tuple[pytest.RunResult, dict | None]:
    result = pytester.runpytest(*GRID, f"--medrobust-dataset={spec}", *extra)
    path = pytester.path / "reports" / "medrobust.json"
    return result, json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize(
    "fixture, loader, n_images",
    [("mimic_root", "mimic-cxr", 5), ("openi_root", "openi", 5), ("chexpert_root", "chexpert5x200", 10)],
)
def test_each_loader_runs_the_grid_on_its_real_layout(pytester, request, fixture, loader, n_images):
    root = request.getfixturevalue(fixture)
    result, results = run_grid(pytester, f"{loader}:{root}")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 2
    assert results["dataset"]["n_images"] == n_images
    assert all(c["n_images"] == n_images for c in results["cells"])


def test_a_manifest_with_png_jpeg_and_dicom_runs_the_grid(pytester, manifest_path):
    result, results = run_grid(pytester, str(manifest_path))
    assert result.parseoutcomes().get("errors", 0) == 0, result.stdout.str()
    assert results["dataset"]["n_images"] == 6


def test_real_openi_sample_errors_naming_the_missing_images_or_drops_them(pytester, real_data):
    result = pytester.runpytest(*GRID, f"--medrobust-dataset=openi:{real_data / 'openi'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # a set-up error: stops before any cell
    err = result.stderr.str()
    assert "CXR3_IM-1384-2001" in err and "CXR25_IM-1024-3001" in err
    result, results = run_grid(pytester, f"openi:{real_data / 'openi'}", "--medrobust-on-bad-rows", "drop")
    assert result.parseoutcomes().get("errors", 0) == 0
    assert results["dataset"]["n_images"] == 9 and results["dataset"]["n_dropped"] == 2
