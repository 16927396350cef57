"""The manifest loader (CSV/JSONL; PNG, JPEG, DICOM) and its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_medrobust.datasets import decode_dataset, load_dataset
from pytest_medrobust.errors import DatasetError

from dataset_builders import truncate, write_dicom, write_image  # noqa: I001


def test_png_jpeg_dicom_rows_load_and_decode(manifest_path):
    ds = load_dataset(f"manifest:{manifest_path}")
    assert ds.ids == [f"r{i}" for i in range(6)]
    assert ds.reports[0] == "Report number 0. No acute process."
    assert {r.image.suffix for r in ds.records} == {".png", ".jpg", ".dcm"}
    pixels = decode_dataset(ds, (32, 32), "crop")
    assert pixels.shape == (6, 32, 32) and pixels.dtype.is_floating_point is False
    # A bare path is a manifest too.
    assert load_dataset(str(manifest_path)).ids == ds.ids


def test_jsonl_manifest(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "report": " x  y "}) + "\n")
    ds = load_dataset(str(tmp_path / "m.jsonl"))
    assert ds.ids == ["a.png"] and ds.reports == ["x y"]


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest .*none\.csv does not exist"):
        load_dataset(f"manifest:{tmp_path / 'none.csv'}")


def test_manifest_without_required_columns(tmp_path):
    (tmp_path / "m.csv").write_text("path,text\na.png,hello\n")
    with pytest.raises(DatasetError, match="missing required column.*image, report; found path, text"):
        load_dataset(str(tmp_path / "m.csv"))


def test_every_bad_row_listed_with_its_reason(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"ok{i}.png", seed=i)
    write_image(tmp_path / "trunc.jpg")
    truncate(tmp_path / "trunc.jpg")
    write_dicom(tmp_path / "nopix.dcm", np.zeros((4, 4), np.uint8), with_pixels=False)
    write_dicom(tmp_path / "multi.dcm", np.zeros((4, 4), np.uint8), frames=2)
    rows = [
        "id,image,report",
        "a,ok0.png,fine",
        "b,absent.png,listed but absent",
        "c,trunc.jpg,truncated jpeg",
        "d,nopix.dcm,no pixel data",
        "e,ok1.png,",
        "f,../../etc/passwd,escapes",
        "g,multi.dcm,multi-frame",
        "a,ok2.png,duplicate id",
    ]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path / "m.csv"))
    msg = str(err.value)
    assert "7 problem(s)" in msg
    assert "m.csv, line 3: image not found" in msg and "absent.png" in msg
    assert "m.csv, line 4: cannot decode image" in msg and "trunc.jpg" in msg
    assert "m.csv, line 5: cannot decode image" in msg and "no pixel data" in msg
    assert "m.csv, line 6: empty report for image 'ok1.png'" in msg
    assert "m.csv, line 7: image path '../../etc/passwd' escapes the dataset folder" in msg
    assert "m.csv, line 8: cannot decode image" in msg and "multi-frame DICOM (2 frames)" in msg
    assert "m.csv, line 9: duplicate id 'a' (first at m.csv, line 2)" in msg

    ds = load_dataset(str(tmp_path / "m.csv"), on_bad_rows="drop")
    assert ds.ids == ["a"] and ds.info["n_dropped"] == 7
    assert [d["where"] for d in ds.info["dropped"]] == [f"m.csv, line {n}" for n in range(3, 10)]
    assert all(d["reason"] for d in ds.info["dropped"])


def test_validate_exists_defers_decode_errors_to_decode_dataset(tmp_path):
    write_image(tmp_path / "ok.png")
    write_image(tmp_path / "trunc.jpg")
    truncate(tmp_path / "trunc.jpg")
    (tmp_path / "m.csv").write_text("image,report\nok.png,a\ntrunc.jpg,b\n")
    ds = load_dataset(str(tmp_path / "m.csv"), validate="exists")
    assert len(ds.records) == 2
    with pytest.raises(DatasetError, match=r"m.csv, line 3: cannot decode .*trunc\.jpg"):
        decode_dataset(ds, (16, 16), "pad")


def test_all_rows_dropped_is_an_error(tmp_path):
    (tmp_path / "m.csv").write_text("image,report\nnone.png,a\n")
    with pytest.raises(DatasetError, match="every row checked is bad"):
        load_dataset(str(tmp_path / "m.csv"), on_bad_rows="drop")
