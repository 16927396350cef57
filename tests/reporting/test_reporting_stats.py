"""Percentile-bootstrap intervals: exact agreement with a plain loop, determinism, coverage."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pytest_medrobust.stats import bootstrap_intervals, percentile_bounds

KS = (1, 5, 10)


def reference_intervals(ranks, ks, *, resamples, confidence, seed):
    """The textbook computation, one resample at a time (same documented draw order)."""
    rng = np.random.default_rng(seed)
    groups: dict[int, list[str]] = {}
    for direction, values in ranks.items():
        groups.setdefault(len(values), []).append(direction)
    alpha = 1 - confidence
    out = {}
    for n in sorted(groups):
        samples: dict[str, list[float]] = {f"{d}_R@{k}": [] for d in groups[n] for k in ks}
        for _ in range(resamples):
            idx = rng.integers(0, n, size=n)
            for d in groups[n]:
                drawn = np.asarray(ranks[d])[idx]
                for k in ks:
                    samples[f"{d}_R@{k}"].append(np.mean(drawn <= k))
        for name, values in samples.items():
            out[name] = (
                float(np.percentile(values, 100 * alpha / 2)),
                float(np.percentile(values, 100 * (1 - alpha / 2))),
            )
    return out


@pytest.fixture
def ranks():
    rng = np.random.default_rng(42)
    n = 257  # odd on purpose
    return {
        "i2t": rng.integers(1, 40, size=n),
        "t2i": rng.integers(1, 30, size=n),
        "i2t_unique": rng.integers(1, 20, size=n),
    }


def test_matches_reference_loop(ranks):
    got = bootstrap_intervals(ranks, KS, resamples=300, confidence=0.9, seed=7)
    want = reference_intervals(ranks, KS, resamples=300, confidence=0.9, seed=7)
    assert list(got) == [f"{d}_R@{k}" for d in ranks for k in KS]
    for name, (low, high) in want.items():
        assert got[name][0] == pytest.approx(low, abs=1e-12)
        assert got[name][1] == pytest.approx(high, abs=1e-12)


def test_directions_of_different_length_get_their_own_draws(ranks):
    uneven = {"i2t": ranks["i2t"], "t2i": ranks["t2i"][:100], "i2t_unique": ranks["i2t_unique"]}
    got = bootstrap_intervals(uneven, KS, resamples=120, seed=3)
    want = reference_intervals(uneven, KS, resamples=120, confidence=0.95, seed=3)
    for name, bounds in want.items():
        assert got[name] == pytest.approx(bounds, abs=1e-12)


def test_chunk_size_does_not_change_the_result(ranks):
    whole = bootstrap_intervals(ranks, KS, resamples=200, seed=1)
    chunked = bootstrap_intervals(ranks, KS, resamples=200, seed=1, chunk_elements=3 * 257 + 5)
    single = bootstrap_intervals(ranks, KS, resamples=200, seed=1, chunk_elements=1)
    assert whole == chunked == single


def test_deterministic_by_seed(ranks):
    a = bootstrap_intervals(ranks, KS, resamples=200, seed=11)
    b = bootstrap_intervals(ranks, KS, resamples=200, seed=11)
    c = bootstrap_intervals(ranks, KS, resamples=200, seed=12)
    assert a == b
    assert a != c


def test_shared_draw_keeps_recalls_ordered(ranks):
    out = bootstrap_intervals(ranks, KS, resamples=300, seed=0)
    for d in ranks:
        for k_low, k_high in zip(KS, KS[1:], strict=False):  # consecutive pairs
            assert out[f"{d}_R@{k_low}"][0] <= out[f"{d}_R@{k_high}"][0]
            assert out[f"{d}_R@{k_low}"][1] <= out[f"{d}_R@{k_high}"][1]


def test_interval_brackets_the_estimate(ranks):
    out = bootstrap_intervals(ranks, KS, resamples=500, seed=0)
    for d, values in ranks.items():
        for k in KS:
            low, high = out[f"{d}_R@{k}"]
            assert 0.0 <= low <= np.mean(values <= k) <= high <= 1.0


def test_coverage_on_bernoulli_data():
    """About 95% of 95% intervals must contain the true hit rate."""
    rng = np.random.default_rng(2024)
    p, n, trials = 0.3, 400, 200
    covered = 0
    for trial in range(trials):
        hits = rng.random(n) < p
        ranks = {"i2t": np.where(hits, 1, 50)}
        low, high = bootstrap_intervals(ranks, [1], resamples=400, seed=trial)["i2t_R@1"]
        covered += low <= p <= high
    assert 0.88 <= covered / trials <= 0.99


def test_constant_data_gives_a_point_interval():
    out = bootstrap_intervals({"i2t": np.ones(50, dtype=int)}, [1, 5], resamples=50)
    assert out == {"i2t_R@1": (1.0, 1.0), "i2t_R@5": (1.0, 1.0)}


def test_accepts_torch_tensors(ranks):
    tensors = {d: torch.from_numpy(v) for d, v in ranks.items()}
    assert bootstrap_intervals(tensors, KS, resamples=50) == bootstrap_intervals(ranks, KS, resamples=50)


def test_duplicate_ks_are_merged(ranks):
    out = bootstrap_intervals({"i2t": ranks["i2t"]}, [5, 1, 5], resamples=20)
    assert list(out) == ["i2t_R@5", "i2t_R@1"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ranks": {"i2t": np.array([], dtype=int)}}, "empty"),
        ({"ranks": {"i2t": np.ones((3, 3))}}, "1-D"),
        ({"ks": []}, "ks is empty"),
        ({"ks": [0]}, "k must be"),
        ({"resamples": 0}, "resamples"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.0}, "confidence"),
    ],
)
def test_rejects_bad_input(kwargs, match):
    args = {"ranks": {"i2t": np.array([1, 2, 3])}, "ks": [1]}
    args.update(kwargs)
    ranks, ks = args.pop("ranks"), args.pop("ks")
    with pytest.raises(ValueError, match=match):
        bootstrap_intervals(ranks, ks, **args)


def test_empty_mapping_gives_no_intervals():
    assert bootstrap_intervals({}, KS) == {}


def test_percentile_bounds():
    assert percentile_bounds(0.95) == pytest.approx((2.5, 97.5))
    assert percentile_bounds(0.9) == pytest.approx((5.0, 95.0))


def test_fast_enough_for_ten_thousand_queries():
    rng = np.random.default_rng(0)
    n = 10_000
    ranks = {d: rng.integers(1, 100, size=n) for d in ("i2t", "t2i", "i2t_unique")}
    bootstrap_intervals(ranks, KS, resamples=10)  # warm up BLAS
    start = time.perf_counter()
    out = bootstrap_intervals(ranks, KS, resamples=1000, seed=0)
    elapsed = time.perf_counter() - start
    assert len(out) == 9
    assert elapsed < 3.0, f"1000 resamples x 10k queries took {elapsed:.2f} s"
