"""The results JSON (``reports/medrobust.json``): schema 1, written once by the controller.

Stable fields (other tools build on them; add, never rename): ``schema``, ``seed``,
``dataset`` {name, n_images, n_unique_reports, sha256}, ``cells`` [{model, patch, level,
n_images, metrics, thresholds, passed}], with recalls as fractions in [0, 1]; ``warnings`` is a
list of sentences every report shows (the small-data warning). ``summary.verdict``
is ``running`` while a run is under way (or after one was killed before it could finish).
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

from .. import __version__
from ..cells import CellRecord, finite
from ..files import atomic_write
from ..gate import run_verdict, summarise

SCHEMA = 1

# Widest bootstrap interval of a gated metric that the reports take without a "small data"
# warning (README, "Small data"): wider than this, a verdict mostly reflects which few studies
# were drawn. 300 queries at R@5 = 0.5 give about 0.11; 20 queries give about 0.45.
WIDE_INTERVAL = 0.2


def environment(device: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pytest_medrobust": __version__,
        "device": device,
    }
    # Installed versions (not what this process imported: under xdist the controller imports
    # none of the model packages).
    for package in ("torch", "torchvision", "numpy", "pytest", "pytest-xdist", "hypothesis", "open_clip_torch", "transformers"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = None
    return env


def _cell_sort_key(cell: Mapping[str, Any], order: Mapping[str, int], patches: Mapping[str, int]) -> tuple:
    # Models and patch types in the configuration's order (every report shows them so).
    return (
        order.get(cell["model"], 1 << 30), cell["model"], patches.get(cell["patch"], 1 << 30), cell["patch"],
        cell.get("kind", "grid"), cell["level"],
    )


def build_results(
    *,
    seed: int,
    config: Mapping[str, Any],
    records: Iterable[Mapping[str, Any]],
    expected: Iterable[str] | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """Assemble the results from the per-cell records the items produced (on any worker).

    The verdict is "pass" only when every expected cell has a record and passed; a cell that
    never reported (crashed worker, interrupted run) makes it "incomplete"."""
    records = list(records)
    devices = sorted({str(r["device"]) for r in records if r.get("device")})
    dataset: dict[str, Any] = {}
    models: dict[str, Any] = {}
    cells: list[CellRecord] = []
    sensitivity: dict[str, Any] = {}  # per model (items.SensitivityItem): a diagnostic, not a cell
    for rec in records:
        rec = dict(rec)
        if rec.get("kind") == "sensitivity":
            sensitivity[str(rec["model"])] = rec.get("sensitivity") or {"error": rec.get("error")}
            continue
        if rec.get("dataset"):
            dataset = rec.pop("dataset")
        else:
            rec.pop("dataset", None)
        card = rec.pop("model_card", None)
        if card:
            models[rec["model"]] = card
        cells.append(cast(CellRecord, rec))
    order = {name: i for i, name in enumerate(config.get("models", []))}
    patch_order = {str(name): i for i, name in enumerate(config.get("patches") or [])}
    cells.sort(key=lambda c: _cell_sort_key(c, order, patch_order))
    expected = sorted({e for e in expected or () if "::test_sensitivity[" not in e})
    missing = sorted(set(expected) - {c.get("nodeid") for c in cells})
    scores = _model_scores(cells, config, missing, seed)
    model_failures = sum(bool(m["failures"]) for m in scores["models"])
    summary = summarise_cells(cells, expected, interrupted=interrupted, model_failures=model_failures)
    return {
        "schema": SCHEMA,
        "tool": {"name": "pytest-medrobust", "version": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "environment": environment(", ".join(devices) or None),
        "config": dict(config),
        "dataset": dataset,
        "models": models,
        "cells": cells,
        "model_summaries": scores["models"],
        "comparisons": scores["comparisons"],
        "summary": summary,
        **({"sensitivity": dict(sorted(sensitivity.items(), key=lambda kv: (order.get(kv[0], 1 << 30), kv[0])))}
           if sensitivity else {}),
        "warnings": small_data_warnings(cells, config),
    }


def gated_metrics(cell: Mapping[str, Any]) -> list[str]:
    """The metrics a cell's thresholds judge (its ``thresholds`` keys), in their stored order."""
    thresholds = cell.get("thresholds")
    return [str(m) for m in thresholds] if isinstance(thresholds, Mapping) else []


def failing_metrics(cell: Mapping[str, Any]) -> list[str]:
    """The metrics named by a cell's failure messages (thresholds and baseline alike), in the
    order of :func:`gated_metrics` first, then any other measured metric that a message names."""
    failures = [str(f) for f in cell.get("failures") or []]
    metrics = cell.get("metrics")
    names = list(dict.fromkeys([*gated_metrics(cell), *(metrics if isinstance(metrics, Mapping) else [])]))
    # A name counts only as a whole word: i2t_R@1 must not match inside i2t_R@10.
    return [
        m for m in names
        if any(re.search(rf"(?<![\w@]){re.escape(m)}(?![\w@])", f) for f in failures)
    ]


def small_data_warnings(cells: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[str]:
    """One warning per gated metric whose bootstrap interval is wider than :data:`WIDE_INTERVAL`
    in some cell: on so few queries the gate's verdict is mostly chance (README, "Small data")."""
    confidence = float((config.get("bootstrap") or {}).get("confidence", 0.95))
    wide: dict[str, list[tuple[float, str, Any]]] = {}
    judged: dict[str, int] = {}
    for cell in cells:
        intervals = cell.get("intervals")
        if not isinstance(intervals, Mapping):
            continue
        for metric in gated_metrics(cell):
            bounds = intervals.get(metric)
            if not isinstance(bounds, Sequence) or len(bounds) != 2 or not all(finite(b) for b in bounds):
                continue
            judged[metric] = judged.get(metric, 0) + 1
            width = float(bounds[1]) - float(bounds[0])
            if width > WIDE_INTERVAL:
                wide.setdefault(metric, []).append((width, str(cell.get("id")), cell.get("n_images")))
    out = []
    for metric, found in wide.items():
        width, cell_id, n = max(found)
        out.append(
            f"small data: the {confidence:.0%} bootstrap interval of {metric} is wider than {WIDE_INTERVAL:.2f} in "
            f"{len(found)} of {judged[metric]} cells (widest {width:.2f}, {cell_id}, {n} queries): "
            "a pass or fail there says little; use more studies"
        )
    return out


def summarise_cells(
    cells: Sequence[Mapping[str, Any]], expected: Sequence[str], *, interrupted: bool, model_failures: int
) -> dict[str, Any]:
    """The run's ``summary`` from its cells and the node ids it was expected to measure.

    ``expected`` is stored (sorted) so that ``medrobust merge`` can recompute a shard's summary
    from its cells and refuse a shard whose cells were removed or whose outcomes were edited."""
    outcomes = [c.get("outcome") for c in cells]
    missing = sorted(set(expected) - {c.get("nodeid") for c in cells})
    return {
        "cells": len(cells),
        "passed": outcomes.count("passed"),
        "failed": outcomes.count("failed"),
        "errors": outcomes.count("error"),
        "cache_corrupt": sum(int(c.get("cache_corrupt") or 0) for c in cells),
        "missing": missing,
        "expected": sorted(expected),
        "complete": not missing and not interrupted,
        "verdict": run_verdict(
            cast(Sequence[CellRecord], cells), missing=len(missing), interrupted=interrupted, model_failures=model_failures
        ),
    }


def running_results(*, seed: int, config: Mapping[str, Any]) -> dict[str, Any]:
    """What ``medrobust.json`` says while a run is under way: verdict ``running``, no cells.

    Written when a run starts, so that a run killed before it writes its own results (SIGKILL,
    a machine lost) leaves "running", never the previous run's verdict."""
    return {
        "schema": SCHEMA,
        "tool": {"name": "pytest-medrobust", "version": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "environment": environment(None),
        "config": dict(config),
        "dataset": {},
        "models": {},
        "cells": [],
        "model_summaries": [],
        "comparisons": [],
        "warnings": [],
        "summary": {
            "cells": 0, "passed": 0, "failed": 0, "errors": 0, "missing": [], "expected": [],
            "complete": False, "verdict": "running",
        },
    }


def _model_scores(
    cells: Sequence[CellRecord], config: Mapping[str, Any], missing: Sequence[str], seed: int
) -> dict[str, Any]:
    """Per-model verdicts and scores, and the paired comparisons (see gate.scores)."""
    names = [str(n) for n in config.get("models") or []]
    names += [m for m in dict.fromkeys(str(c.get("model")) for c in cells) if m not in names]
    # Missing node ids look like medrobust::<model>::test_...[...]
    missing_per_model = {n: sum(1 for m in missing if m.split("::")[1:2] == [n]) for n in names}
    # A model none of whose cells was selected (-k, a shard) has no verdict to give.
    names = [n for n in names if missing_per_model[n] or any(c.get("model") == n for c in cells)]
    bootstrap = config.get("bootstrap") or {}
    thresholds = config.get("thresholds") or {}
    # A shard holds part of each curve: comparisons and the reference test wait for the merge.
    sharded = bool(config.get("shard"))
    return summarise(
        cells,
        names,
        str(config.get("primary_metric") or "i2t_unique_R@5"),
        missing=missing_per_model,
        resamples=0 if sharded else int(bootstrap.get("resamples", 1000)),
        confidence=float(bootstrap.get("confidence", 0.95)),
        seed=seed,
        reference=None if sharded else thresholds.get("reference"),
    )


def write_results(results: Mapping[str, Any], path: Path) -> None:
    atomic_write(path, json.dumps(results, indent=2, sort_keys=False, allow_nan=False) + "\n")
