"""The three real DICOM files decode and look like chest radiographs (lungs dark, bone bright)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom")

from pytest_medrobust.datasets import decode_dataset, load_dataset  # noqa: E402
from pytest_medrobust.datasets.dicom import read_dicom  # noqa: E402

# name prefix -> (width, height)
EXPECTED = {
    "RG1_J2KI": (1841, 1955),  # JPEG 2000, MONOCHROME1, 15 bit, window 15000/30000
    "CR-MONO1-10-chest": (440, 440),  # ACR-NEMA (no preamble/meta), MONOCHROME1, 10 bit
    "nih_cxr_": (1024, 1024),  # MONOCHROME2, 8 bit
}


def _file(real_data, prefix):
    (path,) = sorted((real_data / "dicom").glob(f"{prefix}*.dcm"))
    return path


@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_real_dicom_decodes_and_looks_right(real_data, prefix):
    im = read_dicom(_file(real_data, prefix))
    assert im.mode == "L" and im.size == EXPECTED[prefix]
    arr = np.asarray(im, dtype=np.float64)
    h, w = arr.shape
    assert arr.max() - arr.min() > 150  # uses the 8-bit range
    # Lungs (left and right of the middle, upper-middle height) are darker than the spine/
    # mediastinum between them; with MONOCHROME1 not inverted this would be the other way round.
    band = arr[int(h * 0.3) : int(h * 0.55)]
    lungs = np.concatenate([band[:, int(w * 0.2) : int(w * 0.38)], band[:, int(w * 0.62) : int(w * 0.8)]], axis=1)
    spine = band[:, int(w * 0.46) : int(w * 0.54)]
    assert lungs.mean() + 30 < spine.mean(), (lungs.mean(), spine.mean())


def test_real_dicoms_through_a_manifest(real_data, tmp_path):
    # A manifest next to copies of the files (the real folder is read-only and has no manifest).
    rows = ["image,report"]
    for prefix in sorted(EXPECTED):
        src = _file(real_data, prefix)
        (tmp_path / src.name).write_bytes(src.read_bytes())
        rows.append(f"{src.name},Chest radiograph {prefix}.")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(tmp_path / "m.csv"))
    pixels = decode_dataset(ds, (64, 64), "pad")
    assert pixels.shape == (3, 64, 64)
