"""Tests for the procedural phantom chest X-ray generator (pytest_medrobust.datasets.phantom).

Speed (measured while writing this module, one core, CPU time): about 8-12 ms per study at
size 128 (rendered at 256 and area-averaged), i.e. roughly 20 s for 2,000 studies. These tests
render only a few dozen images and use ``describe_study`` (no rendering) for the statistics.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pytest_medrobust.datasets import phantom
from pytest_medrobust.datasets.phantom import (
    FINDING_KINDS,
    NORMAL_REPORTS,
    Finding,
    PhantomStudy,
    describe_study,
    findings_summary,
    generate_study,
    write_split,
)

N_STATS = 600  # studies described (not rendered) for the distribution tests


@pytest.fixture(scope="module")
def described():
    return [describe_study(0, i) for i in range(N_STATS)]


# ---------------------------------------------------------------------------------------------
# Determinism and independence
# ---------------------------------------------------------------------------------------------


def test_same_seed_and_index_give_identical_study():
    a, b = generate_study(3, 7), generate_study(3, 7)
    assert a.id == b.id == "phantom-3-00007"
    assert a.image.tobytes() == b.image.tobytes()
    assert a.findings == b.findings
    assert a.report == b.report
    assert a == b


def test_different_index_or_seed_gives_different_images():
    images = [generate_study(1, i, 64).image.tobytes() for i in range(6)]
    assert len(set(images)) == 6
    assert generate_study(2, 0, 64).image.tobytes() != generate_study(1, 0, 64).image.tobytes()


def test_order_independence():
    forward = [generate_study(5, i, 64) for i in (0, 1, 2, 3)]
    backward = [generate_study(5, i, 64) for i in (3, 2, 1, 0)][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert x.image.tobytes() == y.image.tobytes() and x.report == y.report


def test_findings_and_report_do_not_depend_on_size():
    small, large = generate_study(4, 11, 64), generate_study(4, 11, 160)
    assert small.findings == large.findings
    assert small.report == large.report
    assert (small.findings, small.report) == describe_study(4, 11)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=-(2**40), max_value=2**40), index=st.integers(min_value=0, max_value=10**6),
       size=st.sampled_from([32, 48, 64, 100]))
def test_images_are_valid_and_reproducible(seed, index, size):
    study = generate_study(seed, index, size)
    assert isinstance(study, PhantomStudy)
    img = study.image
    assert img.dtype == np.uint8 and img.shape == (size, size)
    # a radiograph, not a flat field: dark air and bright tissue both present (exposure varies:
    # over 400 random studies the brightest pixel was >= 176 and the contrast >= 167)
    assert img.min() < 60 and img.max() > 150 and int(img.max()) - int(img.min()) > 120
    assert len(np.unique(img)) > 40
    assert study.id == f"phantom-{seed}-{index:05d}"
    again = generate_study(seed, index, size)
    assert again.image.tobytes() == img.tobytes() and again.report == study.report


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        generate_study(0, -1)
    with pytest.raises(ValueError):
        generate_study(0, 0, size=8)
    with pytest.raises(TypeError):
        generate_study(0, 0, size=64.0)
    with pytest.raises(TypeError):
        generate_study("0", 0)


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


def test_finding_validation():
    Finding("effusion", side="left", severity="small")
    Finding("cardiomegaly", severity="severe")
    Finding("nodule", side="right", zone="upper")
    for bad in (
        dict(kind="fracture"),
        dict(kind="effusion", side="up", severity="small"),
        dict(kind="effusion", side="left", severity="huge"),
        dict(kind="cardiomegaly", side="left", severity="mild"),
        dict(kind="nodule", side="left"),
    ):
        with pytest.raises(ValueError):
            Finding(**bad)


def test_finding_mix_is_realistic(described):
    counts = collections.Counter(len(f) for f, _ in described)
    normal = counts[0] / len(described)
    assert 0.28 <= normal <= 0.42
    assert set(counts) <= {0, 1, 2, 3}
    kinds = collections.Counter(x.kind for f, _ in described for x in f)
    assert set(kinds) == set(FINDING_KINDS)
    assert min(kinds.values()) >= 30
    # laterality, zones and severities all occur
    attrs = collections.Counter((x.kind, x.side, x.zone, x.severity) for f, _ in described for x in f)
    assert {x[1] for x in attrs if x[0] == "effusion"} == {"left", "right"}
    assert {x[3] for x in attrs if x[0] == "cardiomegaly"} == {"mild", "moderate", "severe"}
    assert {x[2] for x in attrs if x[0] == "consolidation"} == {"upper", "middle", "lower"}
    assert any(len([x for x in f if x.kind == "effusion"]) == 2 for f, _ in described)  # bilateral


def test_findings_are_in_render_order(described):
    for findings, _ in described:
        keys = [(FINDING_KINDS.index(x.kind), ("right", "left").index(x.side) if x.side else -1) for x in findings]
        assert keys == sorted(keys)
        assert len(set(findings)) == len(findings)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

_KIND_WORDS = {
    "cardiomegaly": r"cardiomegaly|enlarge",
    "effusion": r"effusion",
    "pneumothorax": r"pneumothorax",
    "consolidation": r"consolidation|airspace",
    "nodule": r"nodul",
    "pacemaker": r"pacemaker",
    "central_line": r"central (venous catheter|line)",
}
_NEGATION = re.compile(r"^(no|there is no|negative for|no evidence of)\b|\bwithout\b")


def _sentences(text: str) -> list[str]:
    text = re.sub(r"\b\d+\. ", "", text)  # impression numbering
    return [s.strip() for s in re.split(r"(?<=[.;])\s+", text) if s.strip()]


def test_report_format(described):
    for _, report in described:
        assert report.startswith("FINDINGS: ")
        assert report.count(" IMPRESSION: ") == 1
        assert report == " ".join(report.split())  # already whitespace-normalised


def test_normal_reports_repeat_exactly(described):
    normal = collections.Counter(r for f, r in described if not f)
    assert set(normal) <= set(NORMAL_REPORTS)
    assert 2 <= len(normal) <= 8
    assert normal.most_common(1)[0][1] >= 30  # the commonest normal wording recurs a lot
    abnormal = {r for f, r in described if f}
    assert not abnormal & set(NORMAL_REPORTS)


def test_reports_describe_every_finding(described):
    for findings, report in described:
        if not findings:
            continue
        low = report.lower()
        for x in findings:
            assert re.search(_KIND_WORDS[x.kind], low), (x, report)
            if x.side:
                assert x.side in low, (x, report)
            if x.zone:
                assert f"{x.side} {x.zone}" in low, (x, report)
            if x.severity:
                assert x.severity in low, (x, report)
        for sev in ("small", "large", "mild", "severe"):  # no severity without a finding that has it
            if re.search(rf"\b{sev}", low):
                assert any(x.severity == sev for x in findings), (sev, report)


def test_reports_mention_absent_findings_only_as_negations(described):
    for findings, report in described:
        present = {x.kind for x in findings}
        body = report.replace("FINDINGS: ", "").replace("IMPRESSION: ", "")
        for sentence in _sentences(body):
            for kind, pattern in _KIND_WORDS.items():
                hit = re.search(pattern, sentence.lower())
                if kind in present or not hit:
                    continue
                cue = _NEGATION.search(sentence.lower()[: hit.start()])
                assert cue or "normal" in sentence.lower(), (kind, sentence, report)


def test_abnormal_wording_varies(described):
    single = collections.defaultdict(set)
    for findings, report in described:
        if len(findings) == 1:
            single[findings[0].kind].add(report)
    assert all(len(v) >= 3 for v in single.values())


def test_findings_summary():
    assert findings_summary(()) == "normal"
    text = findings_summary((Finding("effusion", side="left", severity="small"), Finding("pacemaker", side="left")))
    assert text == "effusion(left,small); pacemaker(left)"


# ---------------------------------------------------------------------------------------------
# Images show the findings
# ---------------------------------------------------------------------------------------------


def _first_with(kind: str, seed: int = 0) -> int:
    for i in range(2000):
        findings, _ = describe_study(seed, i)
        if any(x.kind == kind for x in findings):
            return i
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [k for k in FINDING_KINDS if k != "cardiomegaly"])
def test_each_finding_is_visible_at_128px(kind):
    """Render the same anatomy with and without the finding: the difference must be plain to see."""
    index = _first_with(kind)
    find_rng, anat_rng, _, _ = phantom._streams(0, index)
    findings = phantom._sample_findings(find_rng)
    anatomy = phantom._sample_anatomy(anat_rng, findings)
    keep = tuple(x for x in findings if x.kind != kind)
    anatomy_without = phantom._Anatomy()
    anatomy_without.__dict__.update(anatomy.__dict__)
    anatomy_without.fx = [g for x, g in zip(findings, anatomy.fx, strict=True) if x.kind != kind]
    with_it = phantom._render(anatomy, findings, 256).reshape(128, 2, 128, 2).mean(axis=(1, 3))
    without = phantom._render(anatomy_without, keep, 256).reshape(128, 2, 128, 2).mean(axis=(1, 3))
    changed = np.abs(with_it - without) > 12 / 255
    assert changed.sum() >= 8, (kind, int(changed.sum()))


def test_cardiomegaly_enlarges_the_heart():
    def ctr(index):
        findings, _ = describe_study(0, index)
        _, anat_rng, _, _ = phantom._streams(0, index)
        a = phantom._sample_anatomy(anat_rng, findings)
        return sum(a.heart_ext) / sum(a.lat), findings

    ratios = collections.defaultdict(list)
    for i in range(150):
        r, findings = ctr(i)
        sev = next((x.severity for x in findings if x.kind == "cardiomegaly"), "none")
        ratios[sev].append(r)
    assert max(ratios["none"]) < 0.5 < min(ratios["mild"])
    assert np.mean(ratios["mild"]) < np.mean(ratios["moderate"]) < np.mean(ratios["severe"])


def test_side_marker_is_burnt_in():
    img = generate_study(0, 0, 128).image
    corners = [img[:20, :20], img[:20, -20:]]
    assert max(c.max() for c in corners) >= 235


# ---------------------------------------------------------------------------------------------
# write_split
# ---------------------------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_split_manifest_matches_generate_study(tmp_path):
    manifest = write_split(tmp_path / "split", seed=9, n=6, size=64, split="test")
    assert manifest == tmp_path / "split" / "manifest.csv"
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["id", "image", "report", "split"]
        rows = list(reader)
    assert len(rows) == 6
    for i, row in enumerate(rows):
        study = generate_study(9, i, 64)
        assert row["id"] == study.id
        assert row["image"] == f"images/{study.id}.png"
        assert row["report"] == study.report
        assert row["split"] == "test"
        with Image.open(manifest.parent / row["image"]) as im:
            assert im.mode == "L"
            assert np.array_equal(np.asarray(im), study.image)
    leftovers = [p.name for p in (tmp_path / "split").rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    assert manifest.stat().st_mode & 0o444 == 0o444  # readable by all (shipped as package data)


def test_write_split_is_byte_reproducible(tmp_path):
    first = write_split(tmp_path / "a", seed=1, n=4, size=64)
    second = write_split(tmp_path / "b", seed=1, n=4, size=64)
    assert first.read_bytes() == second.read_bytes()
    names = sorted(p.name for p in (first.parent / "images").iterdir())
    assert len(names) == 4
    for name in names:
        assert _sha(first.parent / "images" / name) == _sha(second.parent / "images" / name)
    # rewriting in place gives the same bytes again
    before = _sha(first)
    write_split(tmp_path / "a", seed=1, n=4, size=64)
    assert _sha(first) == before


def test_write_split_rejects_bad_n(tmp_path):
    with pytest.raises(ValueError):
        write_split(tmp_path, seed=0, n=-1)
