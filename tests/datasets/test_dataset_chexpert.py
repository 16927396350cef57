"""The chexpert5x200 loader: class prompts as texts, 5 unique texts."""

from __future__ import annotations

import json

import pytest

from pytest_medrobust.datasets import load_dataset
from pytest_medrobust.datasets.chexpert import CLASSES, DEFAULT_PROMPTS
from pytest_medrobust.errors import ConfigError, DatasetError

from dataset_builders import build_chexpert  # noqa: I001


def test_one_hot_csv_with_default_prompts(chexpert_root):
    ds = load_dataset(f"chexpert5x200:{chexpert_root}")
    assert len(ds.records) == 10 and ds.n_unique_reports == 5
    assert ds.ids[0] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert ds.reports[0] == DEFAULT_PROMPTS["Atelectasis"] and ds.reports[-1] == DEFAULT_PROMPTS["Pleural Effusion"]
    assert ds.info["class_counts"] == dict.fromkeys(CLASSES, 2)
    assert ds.info["prompts"] == DEFAULT_PROMPTS
    assert ds.records[0].where == "chexpert_5x200.csv, line 2"


def test_label_column_csv_and_csv_path_spec(tmp_path):
    root = build_chexpert(tmp_path / "c", one_hot=False, csv_name="my.csv")
    with pytest.raises(DatasetError, match="no CheXpert 5x200 CSV found"):
        load_dataset(f"chexpert5x200:{root}")
    ds = load_dataset(f"chexpert5x200:{root / 'my.csv'}")
    assert ds.n_unique_reports == 5 and len(ds.records) == 10


def test_image_root_may_be_the_chexpert_folder(chexpert_root):
    ds = load_dataset(f"chexpert5x200:{chexpert_root}", image_root=chexpert_root / "CheXpert-v1.0-small")
    assert len(ds.records) == 10 and all(r.image.is_file() for r in ds.records)


def test_prompt_template_mapping_and_json(chexpert_root, tmp_path):
    ds = load_dataset(f"chexpert5x200:{chexpert_root}", prompts="chest x-ray showing {label}")
    assert ds.reports[0] == "chest x-ray showing atelectasis"
    mapping = {c: f"Finding: {c}." for c in CLASSES}
    assert load_dataset(f"chexpert5x200:{chexpert_root}", prompts=mapping).reports[-1] == "Finding: Pleural Effusion."
    (tmp_path / "p.json").write_text(json.dumps(mapping))
    assert (
        load_dataset(f"chexpert5x200:{chexpert_root}", prompts=str(tmp_path / "p.json")).reports[0]
        == "Finding: Atelectasis."
    )
    with pytest.raises(ConfigError, match="missing: Edema"):
        load_dataset(f"chexpert5x200:{chexpert_root}", prompts={c: c for c in CLASSES if c != "Edema"})
    with pytest.raises(ConfigError, match="must differ"):
        load_dataset(f"chexpert5x200:{chexpert_root}", prompts=dict.fromkeys(CLASSES, "same"))


def test_bad_rows_named(chexpert_root):
    csv_path = chexpert_root / "chexpert_5x200.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].replace("0.0,0.0,0.0,0.0", "1.0,0.0,0.0,0.0")  # two positives
    lines.append("../../etc/passwd,1.0,0.0,0.0,0.0,0.0")
    csv_path.write_text("\n".join(lines) + "\n")
    (chexpert_root / "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(f"chexpert5x200:{chexpert_root}")
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert "line 2: expected exactly one positive class, found 2 (Atelectasis, Cardiomegaly)" in msg
    assert "line 4: image not found" in msg
    assert "line 12: image path '../../etc/passwd' escapes the dataset folder" in msg
    ds = load_dataset(f"chexpert5x200:{chexpert_root}", on_bad_rows="drop")
    assert ds.info["n_dropped"] == 3 and ds.info["class_counts"]["Atelectasis"] == 1


def test_csv_without_required_columns(tmp_path):
    (tmp_path / "chexpert_5x200.csv").write_text("file,diagnosis\na.jpg,Edema\n")
    with pytest.raises(DatasetError, match="needs an image path column .*found file, diagnosis"):
        load_dataset(f"chexpert5x200:{tmp_path}")


def test_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="CheXpert 5x200 path .*nope does not exist"):
        load_dataset(f"chexpert5x200:{tmp_path / 'nope'}")
