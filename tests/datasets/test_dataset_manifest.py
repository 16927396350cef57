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


# --- images outside the manifest's folder (a manifest in a repository, images on a share) ------


def _share(tmp_path, n=3):
    """A read-only 'share' of images, away from the folder that holds the manifest."""
    share = tmp_path / "share" / "images"
    for i in range(n):
        write_image(share / "p1" / f"s{i}.png", seed=i)
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    return share, repo


def test_absolute_image_paths_on_another_folder(tmp_path, monkeypatch):
    share, repo = _share(tmp_path)
    rows = ["id,image,report"] + [f"r{i},{share / 'p1' / f's{i}.png'},report {i}" for i in range(3)]
    (repo / "test.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)  # nothing depends on the current folder
    ds = load_dataset(str(repo / "test.csv"))
    assert [r.image for r in ds.records] == [share / "p1" / f"s{i}.png" for i in range(3)]
    assert decode_dataset(ds, (16, 16), "pad").shape == (3, 16, 16)


def test_symlinked_image_folder_is_followed(tmp_path):
    share, repo = _share(tmp_path)
    (repo / "images").symlink_to(share, target_is_directory=True)
    (repo / "test.csv").write_text("image,report\nimages/p1/s0.png,a\nimages/p1/s1.png,b\n")
    ds = load_dataset(str(repo / "test.csv"))
    assert [r.image for r in ds.records] == [repo / "images" / "p1" / "s0.png", repo / "images" / "p1" / "s1.png"]
    assert decode_dataset(ds, (16, 16), "crop").shape == (2, 16, 16)
    # the same images under their real paths: same fingerprint (ids, reports and bytes are what count)
    rows = [f"images/p1/s{i}.png,{share}/p1/s{i}.png,{'ab'[i]}" for i in range(2)]
    (repo / "real.csv").write_text("id,image,report\n" + "\n".join(rows) + "\n")
    assert load_dataset(str(repo / "real.csv")).sha256 == ds.sha256


def test_image_root_option(tmp_path, monkeypatch):
    share, repo = _share(tmp_path)
    (repo / "test.csv").write_text("image,report\np1/s0.png,a\np1/s2.png,b\n")
    monkeypatch.chdir(tmp_path / "repo")
    ds = load_dataset(f"manifest:{repo / 'test.csv'}", image_root=str(share))
    assert [r.image for r in ds.records] == [share / "p1" / "s0.png", share / "p1" / "s2.png"]
    assert ds.card()["image_root"] == str(share)
    # a relative image_root is taken against the current folder (config files resolve it first)
    assert load_dataset(str(repo / "test.csv"), image_root="../share/images").ids == ds.ids
    # without image_root the relative paths are still under the manifest's folder
    with pytest.raises(DatasetError) as err:
        load_dataset(str(repo / "test.csv"))
    assert f"test.csv, line 2: image not found: {repo / 'p1' / 's0.png'}" in str(err.value)


def test_missing_file_names_the_path_it_was_looked_for_at(tmp_path):
    share, repo = _share(tmp_path)
    (repo / "test.csv").write_text(f"image,report\np1/s0.png,a\np1/absent.png,b\n{share}/p9/x.png,c\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(str(repo / "test.csv"), image_root=str(share))
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert f"test.csv, line 3: image not found: {share / 'p1' / 'absent.png'}" in msg
    assert f"test.csv, line 4: image not found: {share / 'p9' / 'x.png'}" in msg


def test_per_row_image_root_column(tmp_path):
    share, repo = _share(tmp_path)
    other = tmp_path / "other"
    write_image(other / "o.png", seed=9)
    write_image(repo / "local" / "l.png", seed=8)
    (repo / "test.csv").write_text(
        "id,image_root,image,report\n"
        f"a,{share},p1/s0.png,absolute root\n"
        "b,local,l.png,root relative to the manifest\n"
        f"c,,{other / 'o.png'},absolute image\n"
        "d,,p1/s1.png,the image_root option\n"
    )
    ds = load_dataset(str(repo / "test.csv"), image_root=str(share))
    assert [r.image for r in ds.records] == [
        share / "p1" / "s0.png", repo / "local" / "l.png", other / "o.png", share / "p1" / "s1.png"
    ]
    jsonl = repo / "test.jsonl"
    jsonl.write_text(json.dumps({"image_root": str(share), "image": "p1/s2.png", "report": "x"}) + "\n")
    assert load_dataset(str(jsonl)).records[0].image == share / "p1" / "s2.png"


def test_image_root_must_be_a_folder(tmp_path):
    share, repo = _share(tmp_path)
    (repo / "test.csv").write_text("image,report\np1/s0.png,a\n")
    with pytest.raises(DatasetError, match=r"test\.csv: image_root '.*nowhere' does not exist"):
        load_dataset(str(repo / "test.csv"), image_root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"image_root '.*s0\.png' is not a folder"):
        load_dataset(str(repo / "test.csv"), image_root=str(share / "p1" / "s0.png"))


def test_relative_path_may_not_climb_out_of_its_root(tmp_path):
    """Kept from before: ``../`` out of the root is refused (a file elsewhere is named by an
    absolute path or an image_root); ``..`` that stays inside is fine."""
    share, repo = _share(tmp_path)
    write_image(repo / "a" / "x.png")
    (repo / "test.csv").write_text("image,report\na/../a/x.png,inside\n../../share/images/p1/s0.png,outside\n")
    with pytest.raises(DatasetError) as err:
        load_dataset(str(repo / "test.csv"))
    msg = str(err.value)
    assert "1 problem(s)" in msg
    assert "test.csv, line 3: image path '../../share/images/p1/s0.png' escapes the dataset folder" in msg
    assert "absolute path, or set image_root" in msg
    assert load_dataset(str(repo / "test.csv"), on_bad_rows="drop").records[0].image == repo / "a" / "x.png"
