"""The decision: a cell's verdict from its metrics, and the run's verdict from its cells.

Pure functions of numbers and settings: nothing here measures, loads or writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..cells import Cell, CellRecord
from .baseline import Baseline, compare_to_baseline
from .thresholds import Thresholds, Verdict

# The run's verdicts, most severe first: a broken pipeline says nothing about the model, an
# incomplete run says nothing about the cells that never ran.
VERDICTS = ("error", "incomplete", "fail", "pass")


def judge_cell(
    thresholds: Thresholds,
    cell: Cell,
    metrics: Mapping[str, float],
    *,
    clean: Mapping[str, float] | None,
    intervals: Mapping[str, Sequence[float]] | None,
    chance: Mapping[str, float] | None,
    baseline: Baseline | None = None,
    baseline_options: Any = None,
) -> Verdict:
    """Every threshold of the cell, then the baseline comparison (when a baseline is given)."""
    verdict = thresholds.evaluate(
        cell.id, cell.model, cell.patch, cell.level, metrics, clean if cell.level > 0 else None, intervals, chance,
        kind=cell.kind,
    )
    if baseline is None or baseline_options is None:
        return verdict
    chosen = baseline_options.metrics or [m for m in metrics if "_R@" in m]
    fell = compare_to_baseline(
        {"id": cell.id, "kind": cell.kind, "metrics": dict(metrics)},
        baseline,
        metrics=chosen,
        tolerance_abs=baseline_options.tolerance_abs,
        tolerance_rel=baseline_options.tolerance_rel,
    )
    return Verdict(verdict.thresholds, [*verdict.failures, *(f"{cell.id}: {f}" for f in fell)])


def run_verdict(cells: Sequence[CellRecord], *, missing: int, interrupted: bool, model_failures: int = 0) -> str:
    """``error`` when any cell could not be measured; ``incomplete`` when cells never reported;
    ``fail`` when a cell or a model-level test failed; ``pass`` only when every cell passed."""
    outcomes = [c.get("outcome") for c in cells]
    if "error" in outcomes:
        return "error"
    if missing or interrupted:
        return "incomplete"
    if not cells:
        return "error"
    if model_failures or any(o != "passed" for o in outcomes):
        return "fail"
    return "pass"
