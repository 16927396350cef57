"""The mimic-cxr loader on the MIMIC-CXR-JPG layout, and its errors."""

from __future__ import annotations

import zipfile

import pytest

from pytest_medrobust.datasets import load_dataset
from pytest_medrobust.errors import ConfigError, DatasetError

from dataset_builders import build_mimic, default_mimic_studies, truncate  # noqa: I001

PA_10000032 = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"


def test_test_split_by_default_one_record_per_image(mimic_root):
    ds = load_dataset(f"mimic-cxr:{mimic_root}")
    assert len(ds.records) == 5  # 4 studies, one of them in train
    assert ds.ids[0] == PA_10000032
    rec = ds.records[0]
    assert rec.image == mimic_root.resolve() / "files/p10/p10000032/s50414267" / f"{PA_10000032}.jpg"
    assert rec.report == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Heart size is normal. "
        "No acute cardiopulmonary process."
    )
    assert "mimic-cxr-2.0.0-split.csv.gz, line 2" in rec.where and PA_10000032 in rec.where
    assert ds.info["split"] == "test" and ds.info["section"] == "both"
    # Two images of one study share the report text.
    assert ds.records[0].report == ds.records[1].report


@pytest.mark.parametrize(("split", "n"), [("train", 1), ("all", 6), ("val", None)])
def test_split_option(mimic_root, split, n):
    if n is None:
        with pytest.raises(DatasetError, match="no rows in split 'val' .*splits present: test, train"):
            load_dataset(f"mimic-cxr:{mimic_root}", split=split)
        return
    assert len(load_dataset(f"mimic-cxr:{mimic_root}", split=split).records) == n


def test_unknown_split_is_a_config_error(mimic_root):
    with pytest.raises(ConfigError, match="split must be one of train, validate, test or 'all'"):
        load_dataset(f"mimic-cxr:{mimic_root}", split="dev")


@pytest.mark.parametrize(
    ("section", "text"),
    [("findings", "Lungs are clear."), ("impression", "No acute cardiopulmonary process.")],
)
def test_section_option(mimic_root, section, text):
    ds = load_dataset(f"mimic-cxr:{mimic_root}", section=section)
    assert ds.records[2].report == text


def test_one_frontal_image_per_study(mimic_root):
    ds = load_dataset(f"mimic-cxr:{mimic_root}", one_image_per_study=True)
    assert ds.ids == [
        PA_10000032,  # PA preferred over the lateral
        "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab",  # only an AP
        "4e4b2d23-22bb33cc-44dd55ee-66ff7700-88990011",  # the PA, not the first-listed lateral
    ]
    assert ds.info["views"] == ["PA", "AP"] and ds.info["n_studies_without_view"] == 0


def test_views_filter_without_one_per_study(mimic_root):
    ds = load_dataset(f"mimic-cxr:{mimic_root}", views="LATERAL")
    assert len(ds.records) == 2


def test_one_per_study_needs_metadata(mimic_root):
    (mimic_root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DatasetError, match=r"metadata file .*mimic-cxr-2.0.0-metadata.csv.gz does not exist"):
        load_dataset(f"mimic-cxr:{mimic_root}", one_image_per_study=True)


def test_reports_dir_elsewhere_and_as_zip(tmp_path):
    reports = tmp_path / "mimic-cxr-reports"
    root = build_mimic(tmp_path / "jpg", reports_in=reports)
    with pytest.raises(DatasetError, match=r"report not found: .*s50414267\.txt"):
        load_dataset(f"mimic-cxr:{root}")
    assert len(load_dataset(f"mimic-cxr:{root}", reports_dir=reports).records) == 5
    assert len(load_dataset(f"mimic-cxr:{root}", reports_dir=reports / "files").records) == 5
    archive = root / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for txt in sorted(reports.rglob("*.txt")):
            zf.write(txt, txt.relative_to(reports).as_posix())
    ds = load_dataset(f"mimic-cxr:{root}")  # the zip in the root is found by default
    assert len(ds.records) == 5 and ds.info["reports"] == str(archive)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"MIMIC-CXR-JPG root .*nowhere does not exist"):
        load_dataset(f"mimic-cxr:{tmp_path / 'nowhere'}")


def test_missing_split_file(mimic_root):
    (mimic_root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DatasetError, match=r"split file .*mimic-cxr-2.0.0-split.csv.gz does not exist"):
        load_dataset(f"mimic-cxr:{mimic_root}")


def test_split_file_without_required_columns(mimic_root):
    import gzip

    (mimic_root / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(gzip.compress(b"dicom_id,split\nabc,test\n"))
    with pytest.raises(DatasetError, match="missing required column.*study_id, subject_id"):
        load_dataset(f"mimic-cxr:{mimic_root}")


def test_listed_image_absent_and_truncated_jpeg_are_listed_together(mimic_root):
    folder = mimic_root / "files/p10/p10000032"
    (folder / "s50414267" / f"{PA_10000032}.jpg").unlink()
    truncate(folder / "s53189527" / "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg")
    with pytest.raises(DatasetError) as err:
        load_dataset(f"mimic-cxr:{mimic_root}")
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert f"line 2 (dicom_id {PA_10000032}, study s50414267): image not found" in msg
    assert "line 4 (dicom_id 2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab, study s53189527): cannot decode" in msg


def test_empty_report_section_is_a_bad_row_or_dropped(tmp_path):
    studies = default_mimic_studies()
    studies[1]["findings"] = ""
    studies[1]["impression"] = ""
    root = build_mimic(tmp_path / "m", studies)
    with pytest.raises(DatasetError, match=r"s53189527\.txt has no FINDINGS or IMPRESSION text"):
        load_dataset(f"mimic-cxr:{root}")
    ds = load_dataset(f"mimic-cxr:{root}", on_bad_rows="drop")
    assert len(ds.records) == 4 and ds.info["n_dropped"] == 1
    assert ds.info["dropped"][0]["id"] == "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab"


def test_missing_report_file_is_a_bad_row(mimic_root):
    (mimic_root / "files/p11/p11000011/s51029426.txt").unlink()
    ds = load_dataset(f"mimic-cxr:{mimic_root}", on_bad_rows="drop")
    assert ds.info["n_dropped"] == 2  # both images of that study
    assert all("report not found" in d["reason"] for d in ds.info["dropped"])


def test_limit_on_mimic(mimic_root):
    small = load_dataset(f"mimic-cxr:{mimic_root}", limit=2)
    large = load_dataset(f"mimic-cxr:{mimic_root}", limit=4)
    assert len(small.records) == 2 and set(small.ids) <= set(large.ids)
