"""Per-model scores and the paired bootstrap, checked against hand computation and simulation."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_medrobust.gate import run_verdict, summarise
from pytest_medrobust.gate.compare import pack_hits, resample_means, unpack_hits
from pytest_medrobust.gate.scores import compare_models, summarise_model

METRIC = "i2t_unique_R@5"


def cell(model, patch, level, value=None, hits=None, outcome="passed", kind="grid"):
    record = {"id": f"{model}-{patch}-{level:.2f}", "model": model, "patch": patch, "level": level, "kind": kind}
    record["outcome"] = outcome
    if hits is not None:
        hits = np.asarray(hits, dtype=bool)
        value = float(hits.mean())
        record["hits"] = {METRIC: pack_hits(hits)}
    record["metrics"] = {} if value is None else {METRIC: value}
    return record


@given(st.lists(st.booleans(), max_size=70))
def test_hits_pack_and_unpack(bits):
    assert unpack_hits(pack_hits(bits)).tolist() == bits


@pytest.mark.parametrize("packed", ["", "x:AAAA", "9:AA==", "3:AAA=", "16:!!!!"])
def test_malformed_hits_are_refused(packed):
    with pytest.raises(ValueError):
        unpack_hits(packed)


def test_score_auc_and_retention_match_a_hand_computation():
    cells = [
        cell("m", "black_box", 0.0, 0.5), cell("m", "black_box", 0.1, 0.4), cell("m", "black_box", 0.2, 0.3),
        cell("m", "blur_box", 0.0, 0.5), cell("m", "blur_box", 0.1, 0.5), cell("m", "blur_box", 0.2, 0.5, outcome="failed"),
    ]
    summary = summarise_model(cells, "m", METRIC)
    # black_box: retention 1, 0.8, 0.6 -> area 0.1 * (0.9 + 0.7) = 0.16 over 0.2 -> 0.8; blur_box: 1.0.
    assert summary["score_per_patch"] == pytest.approx({"black_box": 0.8, "blur_box": 1.0})
    assert summary["score"] == pytest.approx(0.9)
    # AUC: black_box 0.1 * (0.45 + 0.35) / 0.2 = 0.4; blur_box 0.5.
    assert summary["auc"] == pytest.approx(0.45)
    assert summary["mean_retention"] == pytest.approx((0.8 + 0.6 + 1.0 + 1.0) / 4)
    assert summary["worst_cell"] == {"id": "m-black_box-0.20", "value": pytest.approx(0.3)}
    assert summary["occluded_cells"] == {"passed": 3, "total": 4}
    assert summary["clean_cells"] == {"passed": 2, "total": 2}
    assert summary["verdict"] == "fail"


def test_rank_metrics_retain_clean_over_occluded():
    cells = [cell("m", "p", 0.0, 2.0), cell("m", "p", 0.5, 4.0)]
    for c in cells:
        c["metrics"] = {"i2t_mean_rank": c["metrics"][METRIC]}
    summary = summarise_model(cells, "m", "i2t_mean_rank")
    assert summary["score"] == pytest.approx((1.0 + 0.5) / 2)
    assert summary["worst_cell"]["value"] == 4.0  # the highest rank is the worst


@pytest.mark.parametrize(
    "outcomes, missing, expected",
    [
        (["passed", "passed"], 0, "pass"),
        (["passed", "failed"], 0, "fail"),
        (["failed", "error"], 0, "error"),
        (["passed"], 1, "incomplete"),
        ([], 0, "error"),
    ],
)
def test_verdicts(outcomes, missing, expected):
    cells = [cell("m", "p", 0.1 * i, 0.5, outcome=o) for i, o in enumerate(outcomes)]
    assert summarise_model(cells, "m", METRIC, missing)["verdict"] == expected
    assert run_verdict(cells, missing=missing, interrupted=False) == expected


def test_resample_means_are_means_over_resampled_queries():
    rng = np.random.default_rng(1)
    hits = rng.random((3, 50)) < 0.4
    means = resample_means(hits, 200, seed=7)
    assert means.shape == (200, 3)
    # Every resample is a mean of 50 of the queries: a multiple of 1/50 within [0, 1].
    assert np.allclose(means * 50, np.round(means * 50))
    # The average over resamples estimates the mean (bootstrap is unbiased for a mean).
    assert np.allclose(means.mean(axis=0), hits.mean(axis=1), atol=0.02)
    assert np.array_equal(means, resample_means(hits, 200, seed=7))


def _pair(rng, n, p_clean, p_a, p_b):
    """Hits of two models on the same n queries, correlated through a shared difficulty."""
    difficulty = rng.random(n)
    a = [difficulty < p_clean, difficulty < p_a]
    b = [difficulty < p_clean, (difficulty < p_b) & (rng.random(n) < 0.98)]
    return a, b


def test_paired_interval_covers_the_true_difference_at_its_nominal_rate():
    """Simulation: the true score difference is known; a 90 % interval covers it ~90 % of the time."""
    rng = np.random.default_rng(0)
    n, trials, covered = 300, 120, 0
    true = 0.5 * (0.6 / 0.8) - 0.5 * (0.5 * 0.98 / 0.8)  # score = (1 + r) / 2 with one occluded level
    for trial in range(trials):
        a, b = _pair(rng, n, 0.8, 0.6, 0.5)
        cells = [cell("a", "p", lv, hits=h) for lv, h in zip((0.0, 0.5), a, strict=True)]
        cells += [cell("b", "p", lv, hits=h) for lv, h in zip((0.0, 0.5), b, strict=True)]
        found = compare_models(cells, "a", "b", METRIC, resamples=400, confidence=0.9, seed=trial)
        low, high = found["interval"]
        covered += low <= true <= high
    assert 0.8 <= covered / trials <= 0.98, covered / trials


def test_paired_interval_is_narrower_than_independent_intervals():
    rng = np.random.default_rng(3)
    a, b = _pair(rng, 400, 0.8, 0.6, 0.5)
    cells = [cell("a", "p", lv, hits=h) for lv, h in zip((0.0, 0.5), a, strict=True)]
    cells += [cell("b", "p", lv, hits=h) for lv, h in zip((0.0, 0.5), b, strict=True)]
    found = compare_models(cells, "a", "b", METRIC, resamples=1000, confidence=0.95, seed=0)
    paired_width = found["interval"][1] - found["interval"][0]
    # Unpaired: each model's score resampled on its own queries.
    widths = []
    for model, seed in (("a", 1), ("b", 2)):
        hits = np.stack([unpack_hits(c["hits"][METRIC]) for c in cells if c["model"] == model])
        means = resample_means(hits, 1000, seed)
        scores = (1 + means[:, 1] / means[:, 0]) / 2
        widths.append(np.percentile(scores, 97.5) - np.percentile(scores, 2.5))
    assert paired_width < 0.75 * float(np.hypot(*widths))  # measured: 0.037 vs 0.072
    assert found["significant"] and found["statement"].startswith("a is more robust than b: a - b = +")


def test_identical_models_show_no_significant_difference():
    rng = np.random.default_rng(5)
    hits = [rng.random(100) < 0.7, rng.random(100) < 0.4]
    cells = [cell(m, "p", lv, hits=h) for m in ("a", "b") for lv, h in zip((0.0, 0.3), hits, strict=True)]
    found = compare_models(cells, "b", "a", METRIC, resamples=200, confidence=0.95, seed=0)
    assert found["difference"] == 0.0 and found["interval"] == [0.0, 0.0]
    assert not found["significant"] and "no significant difference" in found["statement"]


def test_models_on_other_queries_are_not_compared():
    cells = [cell("a", "p", lv, hits=[True, False, True]) for lv in (0.0, 0.3)]
    cells += [cell("b", "p", lv, hits=[True, False]) for lv in (0.0, 0.3)]
    assert compare_models(cells, "a", "b", METRIC, resamples=10, confidence=0.9, seed=0) is None


@pytest.mark.parametrize("margin, verdict", [(0.0, "fail"), (0.5, "pass")])
def test_non_inferiority_to_a_reference_model(margin, verdict):
    rng = np.random.default_rng(2)
    a, b = _pair(rng, 300, 0.8, 0.6, 0.4)
    cells = [cell("ref", "p", lv, hits=h) for lv, h in zip((0.0, 0.5), a, strict=True)]
    cells += [cell("new", "p", lv, hits=h) for lv, h in zip((0.0, 0.5), b, strict=True)]
    found = summarise(cells, ["ref", "new"], METRIC, resamples=300, seed=0, reference={"model": "ref", "margin": margin})
    new = found["models"][1]
    assert new["verdict"] == verdict
    assert new["reference"]["model"] == "ref" and new["reference"]["difference"] < 0
    assert bool(new["failures"]) == (verdict == "fail")
    assert found["models"][0]["verdict"] == "pass"  # the reference itself is not compared with itself


def test_a_comparison_with_scores_undefined_in_many_resamples_is_refused():
    """1 clean hit in 30 queries: a third of the resamples lose it and have no score."""
    clean, occluded = np.zeros(30, bool), np.zeros(30, bool)
    clean[0] = occluded[0] = True
    cells = [cell(m, "p", lv, hits=h) for m in ("a", "b") for lv, h in zip((0.0, 0.3), (clean, occluded), strict=True)]
    found = compare_models(cells, "a", "b", METRIC, resamples=200, confidence=0.95, seed=0)
    assert found["difference"] is None and found["interval"] is None
    share = re.search(r"undefined \(in (\d+)% of the bootstrap resamples: too few clean hits\)", found["statement"])
    assert share and 25 <= int(share.group(1)) <= 50, found["statement"]  # (29/30)^30 = 36 % expected
