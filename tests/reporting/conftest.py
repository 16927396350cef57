"""A realistic results dictionary (the content of ``reports/medrobust.json``) for the report tests.

The metrics are computed from synthetic per-query ranks exactly as the plugin does (R@k is the
share of ranks <= k), and the intervals come from :func:`pytest_medrobust.stats.bootstrap_intervals`,
so the sample is internally consistent: thresholds, ratios, failures and outcomes agree.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest

from pytest_medrobust.stats import bootstrap_intervals

PRIMARY = "i2t_unique_R@5"
KS = (1, 5, 10)
N_IMAGES = 300
N_UNIQUE = 210
DATASET_SHA = "9f2c4e7a1b3d5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4"

# How fast each model's retrieval degrades with occlusion (larger = more fragile).
FRAGILITY = {"demo-plain": 9.0, "demo-robust": 2.0, "clip-base": 4.0, "cxr-clip": 1.2, "tiny": 14.0}
SKILL = {"demo-plain": 4.0, "demo-robust": 3.2, "clip-base": 6.0, "cxr-clip": 2.5, "tiny": 9.0}


def _ranks(rng: np.random.Generator, model: str, level: float, n: int) -> dict[str, np.ndarray]:
    scale = SKILL.get(model, 5.0) * (1.0 + FRAGILITY.get(model, 5.0) * level**1.5)
    out = {}
    for direction, gallery in (("i2t", n), ("t2i", n), ("i2t_unique", N_UNIQUE)):
        ranks = 1 + np.floor(rng.exponential(scale * (1.2 if direction == "i2t" else 1.0), size=n))
        out[direction] = np.minimum(ranks, gallery).astype(np.int64)
    return out


def _metrics(ranks: dict[str, np.ndarray]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for direction in ("i2t", "t2i", "i2t_unique"):
        r = ranks[direction]
        for k in KS:
            metrics[f"{direction}_R@{k}"] = float(np.mean(r <= k))
        metrics[f"{direction}_mean_rank"] = float(np.mean(r))
        metrics[f"{direction}_median_rank"] = float(np.median(r))
    return metrics


def evaluate(cell_id, level, metrics, clean, intervals, gate, minimum, retention):
    """The plugin's threshold rules (min and retention on the primary metric, retention on t2i_R@5)."""
    thresholds, failures = {}, []
    for metric, limit in ((PRIMARY, {"min": minimum, "retention": retention}), ("t2i_R@5", {"retention": retention})):
        value = metrics[metric]
        row = dict(limit)
        gated, shown = value, f"{metric} = {value:.3f}"
        if gate == "lower":
            gated = row["lower_bound"] = intervals[metric][0]
            shown = f"{metric} = {value:.3f} (lower bound {gated:.3f})"
        if "min" in limit and gated < limit["min"]:
            failures.append(f"{cell_id}: {shown} < min {limit['min']:.3f}")
        if level > 0:
            base = row["clean"] = clean[metric]
            ratio = row["ratio"] = gated / base if base > 0 else None
            if ratio is not None and ratio < limit["retention"]:
                failures.append(
                    f"{cell_id}: {metric} retention = {ratio:.3f} ({gated:.3f} occluded vs {base:.3f} clean)"
                    f" < {limit['retention']:.2f}"
                )
        thresholds[metric] = row
    return thresholds, failures


def build_results(
    models=("demo-plain", "demo-robust"),
    patches=("black_box", "white_box"),
    levels=(0.0, 0.1, 0.2, 0.3, 0.5),
    *,
    minimum: float = 0.3,
    retention: float = 0.6,
    search: bool = True,
    error: bool = True,
    gate: str = "point",
    n_images: int = N_IMAGES,
    seed: int = 0,
) -> dict:
    rng = np.random.default_rng(seed)
    cells = []
    for model in models:
        for patch in patches:
            clean = None
            for level in levels:
                ranks = _ranks(rng, model, level * (1.3 if patch == "white_box" else 1.0), n_images)
                metrics = _metrics(ranks)
                intervals = {
                    k: list(v) for k, v in bootstrap_intervals(ranks, KS, resamples=200, seed=seed).items()
                }
                if clean is None:
                    clean = metrics
                cell_id = f"{model}-{patch}-{level:.2f}"
                thresholds, failures = evaluate(cell_id, level, metrics, clean, intervals, gate, minimum, retention)
                cells.append(
                    {
                        "id": cell_id,
                        "kind": "grid",
                        "model": model,
                        "patch": patch,
                        "level": level,
                        "n_images": n_images,
                        "metrics": metrics,
                        "intervals": intervals,
                        "thresholds": thresholds,
                        "failures": failures,
                        "outcome": "failed" if failures else "passed",
                        "passed": not failures,
                        "error": None,
                        "search": None,
                        "duration_s": round(float(rng.uniform(0.4, 2.5)), 3),
                    }
                )
    if error and len(models) > 1 and len(levels) > 1:
        # The last model's last white_box (or last patch) cell crashed: no metrics.
        target = f"{models[-1]}-{patches[-1]}-{levels[-1]:.2f}"
        for cell in cells:
            if cell["id"] == target:
                cell.update(
                    n_images=None,
                    metrics={},
                    intervals={},
                    thresholds={},
                    failures=[],
                    outcome="error",
                    passed=False,
                    error="RuntimeError: model forward pass failed: expected 3 channels, got 1",
                )
    if search:
        level = max(levels) if max(levels) < 0.3 else 0.3
        for model, value in ((models[0], 0.212), (models[-1], 0.541)):
            failed = value < minimum
            cell_id = f"{model}-{patches[0]}-{level:.2f}"  # the plugin gives search cells the grid id
            cells.append(
                {
                    "id": cell_id,
                    "kind": "search",
                    "model": model,
                    "patch": patches[0],
                    "level": level,
                    "n_images": n_images,
                    "metrics": {PRIMARY: value},
                    "intervals": {},
                    "thresholds": {PRIMARY: {"min": minimum}},
                    "failures": [f"{cell_id}: {PRIMARY} = {value:.3f} < min {minimum:.3f}"] if failed else [],
                    "outcome": "failed" if failed else "passed",
                    "passed": not failed,
                    "error": None,
                    "search": {
                        "placement": {"policy": "fixed_centre", "centre": [0.25, 0.7], "level": level},
                        "description": f"{patches[0]} at {level * 100:.0f}% centred at (0.25, 0.70) on every image",
                        "metric": PRIMARY,
                        "value": value,
                        "replay": "@reproduce_failure('6.170.17', b'AXicY2BgAAAAAwAB')",
                        "picture": f"masks/{model}-{patches[0]}-{level:.2f}.png",
                    },
                    "duration_s": 14.2,
                }
            )
    passed = sum(c["outcome"] == "passed" for c in cells)
    failed = sum(c["outcome"] == "failed" for c in cells)
    errors = sum(c["outcome"] == "error" for c in cells)
    return {
        "schema": 1,
        "tool": {"name": "pytest-medrobust", "version": "0.1.0"},
        "created": "2026-11-27T23:00:00Z",
        "seed": seed,
        "environment": {
            "python": "3.11.7",
            "torch": "2.14.1",
            "numpy": "2.4.6",
            "platform": "Linux-6.8.0-x86_64-with-glibc2.36",
            "device": "cpu",
            "hostname": "ci-runner-7",
        },
        "config": {
            "levels": list(levels),
            "patches": list(patches),
            "ks": list(KS),
            "primary_metric": PRIMARY,
            "thresholds": {
                "gate": gate,
                "rules": [
                    {"metric": PRIMARY, "model": "*", "patch": "*", "min": minimum},
                    {"metric": PRIMARY, "model": "*", "patch": "*", "retention": retention},
                    {"metric": "t2i_R@5", "model": "*", "patch": "*", "retention": retention},
                ],
            },
            "bootstrap": {"resamples": 1000, "confidence": 0.95},
        },
        "dataset": {
            "name": "phantom",
            "source": "fixtures/phantom/test.csv",
            "n_images": n_images,
            "n_unique_reports": N_UNIQUE,
            "sha256": DATASET_SHA,
        },
        "models": {
            m: {
                "name": m,
                "adapter": "demo" if m.startswith("demo") else "open_clip",
                "sha256": hashlib.sha256(m.encode()).hexdigest(),
                "n_parameters": 123_456 + 1000 * i,
                "embedding_dim": 128,
                "input_size": [128, 128],
                "geometry": "pad",
            }
            for i, m in enumerate(models)
        },
        "cells": cells,
        "summary": {
            "passed": passed,
            "failed": failed,
            "errors": errors,
            "verdict": "fail" if failed or errors else "pass",
        },
    }


_SAMPLE = build_results()


@pytest.fixture
def sample_results() -> dict:
    """Two models x two patch types x five levels, one error cell, two search cells."""
    return copy.deepcopy(_SAMPLE)


@pytest.fixture
def make_results():
    """Factory: ``make_results(models=..., patches=..., levels=..., search=..., error=...)``."""
    return build_results
