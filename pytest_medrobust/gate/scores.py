"""A verdict and a robustness score per model, and model-versus-model comparisons.

For one model and one patch type, with the primary metric ``R(l)`` measured at the grid's levels
``0 = l0 < l1 < ... < ln``:

* **retention** ``r(l) = R(l) / R(0)`` (``R(0) / R(l)`` for a rank, where lower is better);
* **robustness score** = area under ``r(l)`` from 0 to ``ln`` (trapezoid rule) divided by ``ln``:
  1.0 means no loss at any level, 0.5 means half the clean value kept on average over the range;
* **AUC** = the same area under ``R(l)`` itself, divided by ``ln``: the metric's mean over the
  occlusion range, in the metric's own unit.

A model's overall score and AUC are the means over its patch types; ``mean_retention`` is the
mean of ``r(l)`` over its occluded grid cells; its worst cell is the occluded grid cell with the
lowest primary metric. Search cells count toward the verdict, not toward the score (their
placement is chosen per cell, so their levels do not form a curve).

Two models measured on the same queries are compared with a paired bootstrap of the score
difference (:mod:`.compare`); "no significant difference" means the interval contains 0. With
``thresholds.reference = {model = "...", margin = m}`` every other model must be non-inferior to
the reference: the lower bound of (its score - the reference's) must be at least ``-m``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cells import CellRecord, finite, level_id, level_key
from .compare import percentile_interval, resample_means, unpack_hits
from .thresholds import lower_is_better

# The share of bootstrap resamples in which a score may be undefined before a comparison is refused.
MAX_UNDEFINED_SHARE = 0.01


@dataclass(frozen=True)
class Curve:
    """Which columns of a (resamples x cells) array form each patch type's level curve."""

    patches: tuple[str, ...]
    levels: tuple[tuple[float, ...], ...]  # per patch, 0 first
    columns: tuple[tuple[int, ...], ...]  # per patch, the column of each level
    lower_better: bool

    def retention(self, values: np.ndarray, columns: tuple[int, ...]) -> np.ndarray:
        """One patch type's retention at each of its levels, clean first (1.0): occluded / clean,
        or clean / occluded for a rank; inf or NaN where the denominator is 0."""
        y = values[:, list(columns)]
        with np.errstate(divide="ignore", invalid="ignore"):
            return y[:, :1] / y if self.lower_better else y / y[:, :1]

    def scores(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row of ``values``: (overall score, per-patch scores, per-patch AUC)."""
        per_patch_score, per_patch_auc = [], []
        with np.errstate(divide="ignore", invalid="ignore"):
            for levels, columns in zip(self.levels, self.columns, strict=True):
                x = np.asarray(levels)
                y = values[:, list(columns)]
                retention = self.retention(values, columns)
                span = x[-1]
                per_patch_score.append(_trapezoid(retention, x) / span)
                per_patch_auc.append(_trapezoid(y, x) / span)
        scores = np.stack(per_patch_score, axis=1)
        return scores.mean(axis=1), scores, np.stack(per_patch_auc, axis=1)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((y[:, 1:] + y[:, :-1]) / 2.0 * np.diff(x)).sum(axis=1)


def _grid_cells(cells: Sequence[CellRecord], model: str) -> list[CellRecord]:
    return [c for c in cells if c.get("model") == model and c.get("kind", "grid") == "grid"]


def curve_of(cells: Sequence[CellRecord], model: str, metric: str) -> tuple[Curve, list[CellRecord]] | None:
    """The level curves of one model's grid cells that have ``metric``; None without any curve
    (no clean cell or no occluded level with a value)."""
    by_patch: dict[str, dict[float, CellRecord]] = {}
    for cell in _grid_cells(cells, model):
        if cell.get("region"):  # a region probe's level is not its occluded share (occlusion/regions.py)
            continue
        if finite((cell.get("metrics") or {}).get(metric)):
            by_patch.setdefault(str(cell.get("patch")), {})[level_key(cell.get("level", 0.0))] = cell
    ordered: list[CellRecord] = []
    patches, levels, columns = [], [], []
    for patch, by_level in by_patch.items():
        if 0.0 not in by_level or len(by_level) < 2:
            continue
        xs = tuple(sorted(by_level))
        patches.append(patch)
        levels.append(xs)
        columns.append(tuple(range(len(ordered), len(ordered) + len(xs))))
        ordered += [by_level[x] for x in xs]
    if not patches:
        return None
    return Curve(tuple(patches), tuple(levels), tuple(columns), lower_is_better(metric)), ordered


def model_verdict(cells: Sequence[CellRecord], missing: int = 0) -> str:
    outcomes = [c.get("outcome") for c in cells]
    if "error" in outcomes:
        return "error"
    if missing:
        return "incomplete"
    if not cells:
        return "error"
    return "pass" if all(o == "passed" for o in outcomes) else "fail"


def summarise_model(
    cells: Sequence[CellRecord], model: str, metric: str, missing: int = 0
) -> dict[str, Any]:
    """The per-model verdict, cell counts and scores (see the module docstring)."""
    own = [c for c in cells if c.get("model") == model]

    def count(selected: list[CellRecord]) -> dict[str, int]:
        return {"passed": sum(c.get("outcome") == "passed" for c in selected), "total": len(selected)}

    grid = [c for c in own if c.get("kind", "grid") == "grid"]
    occluded = [c for c in grid if level_key(c.get("level", 0.0)) > 0]
    summary: dict[str, Any] = {
        "model": model,
        "verdict": model_verdict(own, missing),
        "metric": metric,
        "occluded_cells": count(occluded),
        "clean_cells": count([c for c in grid if level_key(c.get("level", 0.0)) == 0]),
        "search_cells": count([c for c in own if c.get("kind") == "search"]),
        "errors": sum(c.get("outcome") == "error" for c in own),
        "missing": missing,
        "score": None,
        "score_per_patch": {},
        "auc": None,
        "auc_per_patch": {},
        "mean_retention": None,
        "worst_cell": None,
        "failures": [],
    }
    found = curve_of(cells, model, metric)
    if found is not None:
        curve, ordered = found
        values = np.array([[float(c["metrics"][metric]) for c in ordered]])
        overall, per_patch, auc = curve.scores(values)
        summary["score"] = _number(overall[0])
        summary["score_per_patch"] = {p: _number(per_patch[0, i]) for i, p in enumerate(curve.patches)}
        summary["auc"] = _number(auc[0].mean())
        summary["auc_per_patch"] = {p: _number(auc[0, i]) for i, p in enumerate(curve.patches)}
        occluded_retention = np.concatenate([curve.retention(values, columns)[0, 1:] for columns in curve.columns])
        defined = occluded_retention[np.isfinite(occluded_retention)]
        summary["mean_retention"] = _number(defined.mean()) if defined.size else None
    scored = [c for c in occluded if finite((c.get("metrics") or {}).get(metric)) and not c.get("region")]
    if scored:
        pick = max if lower_is_better(metric) else min
        worst = pick(scored, key=lambda c: float(c["metrics"][metric]))
        summary["worst_cell"] = {"id": worst.get("id"), "value": float(worst["metrics"][metric])}
    return summary


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _hits_matrix(ordered: Sequence[CellRecord], metric: str) -> np.ndarray | None:
    rows = []
    for cell in ordered:
        packed = (cell.get("hits") or {}).get(metric)
        if not isinstance(packed, str):
            return None
        try:
            rows.append(unpack_hits(packed))
        except ValueError:
            return None
    if not rows or len({r.size for r in rows}) != 1:
        return None
    return np.stack(rows)


def compare_models(
    cells: Sequence[CellRecord],
    a: str,
    b: str,
    metric: str,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any] | None:
    """Paired bootstrap of ``score(a) - score(b)`` and of each shared cell's metric difference.

    None when the two models do not share a complete curve with per-query hits (then they were
    not measured on the same queries, or the metric has no hits)."""
    found_a, found_b = curve_of(cells, a, metric), curve_of(cells, b, metric)
    if found_a is None or found_b is None:
        return None
    (curve_a, ordered_a), (curve_b, ordered_b) = found_a, found_b
    if (curve_a.patches, curve_a.levels) != (curve_b.patches, curve_b.levels):
        return None
    hits_a, hits_b = _hits_matrix(ordered_a, metric), _hits_matrix(ordered_b, metric)
    if hits_a is None or hits_b is None or hits_a.shape != hits_b.shape:
        return None
    n_cells = hits_a.shape[0]
    point = curve_a.scores(hits_a.mean(axis=1)[None, :])[0][0] - curve_b.scores(hits_b.mean(axis=1)[None, :])[0][0]
    means = resample_means(np.concatenate([hits_a, hits_b]), resamples, seed)
    differences = curve_a.scores(means[:, :n_cells])[0] - curve_b.scores(means[:, n_cells:])[0]
    low, high = percentile_interval(differences, confidence)
    per_cell = {}
    for i, cell_a in enumerate(ordered_a):
        if level_key(cell_a.get("level", 0.0)) == 0:
            continue
        cell_low, cell_high = percentile_interval(means[:, i] - means[:, n_cells + i], confidence)
        key = f"{cell_a.get('patch')}-{level_id(float(cell_a.get('level', 0.0)))}"
        per_cell[key] = {
            "difference": float(hits_a[i].mean() - hits_b[i].mean()),
            "interval": [cell_low, cell_high],
        }
    # A resample whose clean hits are all 0 has no score; an interval over the rest would claim
    # more than the data support once they are more than a few.
    undefined = float(np.mean(~np.isfinite(differences)))
    if not (np.isfinite(point) and np.isfinite(low) and np.isfinite(high)) or undefined > MAX_UNDEFINED_SHARE:
        why = (
            f"a clean {metric} of 0" if not np.isfinite(point)
            else f"in {undefined:.0%} of the bootstrap resamples: too few clean hits"
        )
        return {
            "a": a, "b": b, "metric": metric, "difference": None, "interval": None, "confidence": confidence,
            "resamples": resamples, "n_queries": int(hits_a.shape[1]), "significant": False,
            "statement": f"{a} vs {b}: not comparable, a robustness score is undefined ({why})",
            "cells": per_cell,
        }
    significant = bool(low > 0 or high < 0)
    return {
        "a": a,
        "b": b,
        "metric": metric,
        "difference": _number(point),
        "interval": [low, high],
        "confidence": confidence,
        "resamples": resamples,
        "n_queries": int(hits_a.shape[1]),
        "significant": significant,
        "statement": _statement(a, b, float(point), low, high, significant),
        "cells": per_cell,
    }


def _statement(a: str, b: str, point: float, low: float, high: float, significant: bool) -> str:
    figures = f"{point:+.3f} [{low:+.3f}, {high:+.3f}]"
    if not significant:
        return f"{a} vs {b}: no significant difference in robustness score, {figures}"
    better, worse = (a, b) if point > 0 else (b, a)
    return f"{better} is more robust than {worse}: {a} - {b} = {figures}"


def summarise(
    cells: Sequence[CellRecord],
    models: Sequence[str],
    metric: str,
    *,
    missing: Mapping[str, int] | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    reference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every model's summary and every pair's comparison, in ``models`` order; with a
    ``reference`` ({"model", "margin"}), the non-inferiority test of each other model."""
    summaries = [summarise_model(cells, m, metric, (missing or {}).get(m, 0)) for m in models]
    comparisons = []
    if resamples > 0:
        for i, a in enumerate(models):
            for b in models[i + 1 :]:
                found = compare_models(cells, b, a, metric, resamples=resamples, confidence=confidence, seed=seed)
                if found is not None:
                    comparisons.append(found)
    if reference:
        _non_inferiority(summaries, cells, metric, reference, resamples=resamples, confidence=confidence, seed=seed)
    return {"models": summaries, "comparisons": comparisons}


def _non_inferiority(
    summaries: list[dict[str, Any]],
    cells: Sequence[CellRecord],
    metric: str,
    reference: Mapping[str, Any],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> None:
    name, margin = str(reference["model"]), float(reference.get("margin", 0.0))
    for summary in summaries:
        model = summary["model"]
        if model == name or summary["verdict"] in ("error", "incomplete"):
            continue
        found = compare_models(cells, model, name, metric, resamples=resamples, confidence=confidence, seed=seed)
        if found is None or found["interval"] is None:
            summary["failures"].append(f"{model}: cannot be compared with the reference model {name!r} on the same queries")
        elif not found["interval"][0] >= -margin:
            summary["failures"].append(
                f"{model}: robustness score minus the reference {name!r} = {found['difference']:+.3f} "
                f"[{found['interval'][0]:+.3f}, {found['interval'][1]:+.3f}]; the lower bound is below -{margin:.3f}"
            )
        summary["reference"] = {
            "model": name,
            "margin": margin,
            "difference": found["difference"] if found else None,
            "interval": found["interval"] if found else None,
        }
        if summary["failures"] and summary["verdict"] == "pass":
            summary["verdict"] = "fail"
