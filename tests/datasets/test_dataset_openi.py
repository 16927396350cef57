"""The openi loader on the NLMCXR layout, generated and real."""

from __future__ import annotations

import tarfile
import time

import pytest

from pytest_medrobust.datasets import load_dataset
from pytest_medrobust.datasets.openi import parse_openi_report
from pytest_medrobust.errors import ConfigError, DatasetError

from dataset_builders import build_openi, default_openi_studies  # noqa: I001


def test_one_record_per_image(openi_root):
    ds = load_dataset(f"openi:{openi_root}")
    assert ds.ids == [
        "CXR1_1_IM-0001-3001",
        "CXR1_1_IM-0001-4001",
        "CXR2_IM-0652-1001",
        "CXR10_IM-0002-1001",
        "CXR10_IM-0002-2001",
    ]
    assert ds.records[2].report == "Borderline cardiomegaly. Midline sternotomy XXXX. No acute pulmonary findings."
    assert ds.records[2].where == "ecgen-radiology/2.xml, image CXR2_IM-0652-1001"
    assert ds.records[2].image.name == "CXR2_IM-0652-1001.png"
    assert ds.info["n_studies_without_images"] == 1 and ds.info["studies_without_images"] == ["11.xml"]


def test_one_image_per_study(openi_root):
    ds = load_dataset(f"openi:{openi_root}", one_image_per_study=True)
    assert ds.ids == ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001", "CXR10_IM-0002-1001"]


def test_empty_findings_is_a_bad_row_per_policy(openi_root):
    with pytest.raises(DatasetError) as err:
        load_dataset(f"openi:{openi_root}", section="findings")
    assert "2 problem(s)" in str(err.value)
    assert "ecgen-radiology/10.xml, image CXR10_IM-0002-1001: 'findings' text is empty (CXR10)" in str(err.value)
    ds = load_dataset(f"openi:{openi_root}", section="findings", on_bad_rows="drop")
    assert len(ds.records) == 3 and ds.info["n_dropped"] == 2


def test_impression_section(openi_root):
    ds = load_dataset(f"openi:{openi_root}", section="impression")
    assert ds.reports[0] == "Normal chest x-XXXX."


def test_bad_section_option(openi_root):
    with pytest.raises(ConfigError, match="section must be one of"):
        load_dataset(f"openi:{openi_root}", section="summary")


def test_missing_root_and_folders(tmp_path, openi_root):
    with pytest.raises(DatasetError, match=r"OpenI root .*absent does not exist"):
        load_dataset(f"openi:{tmp_path / 'absent'}")
    (openi_root / "NLMCXR_png").rename(openi_root / "png")
    with pytest.raises(DatasetError, match=r"OpenI image folder .*NLMCXR_png does not exist \(extract NLMCXR_png.tgz"):
        load_dataset(f"openi:{openi_root}")
    assert len(load_dataset(f"openi:{openi_root}", images_dir=openi_root / "png").records) == 5


def test_missing_image_and_malformed_xml(tmp_path):
    studies = default_openi_studies()
    studies[0]["missing"] = ["CXR1_1_IM-0001-4001"]
    studies.append({"n": 12, "images": [], "xml": "<eCitation><uId id='CXR12'/>"})  # truncated XML
    root = build_openi(tmp_path / "o", studies)
    with pytest.raises(DatasetError) as err:
        load_dataset(f"openi:{root}")
    msg = str(err.value)
    assert "ecgen-radiology/1.xml, image CXR1_1_IM-0001-4001: image not found" in msg
    assert "ecgen-radiology/12.xml: cannot parse the report XML" in msg
    ds = load_dataset(f"openi:{root}", on_bad_rows="drop")
    assert [d["where"] for d in ds.info["dropped"]] == [
        "ecgen-radiology/1.xml, image CXR1_1_IM-0001-4001",
        "ecgen-radiology/12.xml",
    ]


# --- real data ------------------------------------------------------------------------------


def test_real_sample_complete_studies_load_and_partial_ones_are_named(real_data, tmp_path):
    root = real_data / "openi"
    with pytest.raises(DatasetError) as err:
        load_dataset(f"openi:{root}")
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert "ecgen-radiology/3.xml, image CXR3_IM-1384-2001: image not found" in msg
    assert "ecgen-radiology/25.xml, image CXR25_IM-1024-3001: image not found" in msg

    ds = load_dataset(f"openi:{root}", on_bad_rows="drop")
    assert ds.info["n_dropped"] == 2
    assert {d["id"] for d in ds.info["dropped"]} == {"CXR3_IM-1384-2001", "CXR25_IM-1024-3001"}
    complete = {
        "CXR7_IM-2263-1001",
        "CXR7_IM-2263-2001",
        "CXR54_IM-2145-1001",
        "CXR54_IM-2145-1002",
        "CXR303_IM-1404-1001",
        "CXR1900_IM-0584-1001",
        "CXR1900_IM-0584-2001",
    }
    assert complete <= set(ds.ids) and len(ds.records) == 9
    by_id = dict(zip(ds.ids, ds.reports, strict=True))
    assert by_id["CXR54_IM-2145-1001"].startswith("The lungs are clear bilaterally.")
    assert by_id["CXR54_IM-2145-1002"].endswith("No acute cardiopulmonary abnormality.")
    # Study 3 has an empty FINDINGS: with section="findings" its present image is dropped too.
    findings = load_dataset(f"openi:{root}", section="findings", on_bad_rows="drop")
    assert "CXR3_IM-1384-1001" not in findings.ids
    # The complete studies alone load without any problem.
    only = tmp_path / "complete"
    (only / "ecgen-radiology").mkdir(parents=True)
    for n in (7, 54, 303, 1900):
        (only / "ecgen-radiology" / f"{n}.xml").write_bytes((root / "ecgen-radiology" / f"{n}.xml").read_bytes())
    ds = load_dataset(f"openi:{only}", images_dir=root / "NLMCXR_png")
    assert set(ds.ids) == complete and ds.info["n_dropped"] == 0


def test_real_archive_all_3955_reports_parse(real_data, tmp_path):
    archive = real_data / "openi" / "NLMCXR_reports.tgz"
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    files = sorted((tmp_path / "ecgen-radiology").glob("*.xml"))
    assert len(files) == 3955
    start = time.perf_counter()
    studies = [parse_openi_report(f) for f in files]
    elapsed = time.perf_counter() - start
    print(f"parsed {len(studies)} OpenI XMLs in {elapsed:.2f} s")
    assert elapsed < 20
    assert sum(len(s.images) for s in studies) == 7470
    assert sum(1 for s in studies if not s.images) == 104
    assert all(s.uid.startswith("CXR") for s in studies)
    with_images = [s for s in studies if s.images]
    assert sum(1 for s in with_images if not s.text("both")) < 50  # almost every study has a report
    # The whole archive through the loader (no images on disk): every image row is named as missing.
    (tmp_path / "NLMCXR_png").mkdir()
    with pytest.raises(DatasetError, match=r"(?s)7470 problem\(s\).*image not found.*and 7450 more"):
        load_dataset(f"openi:{tmp_path}", validate="exists")
