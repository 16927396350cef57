"""The results JSON (``reports/medrobust.json``): schema 1, written once by the controller.

Stable fields (other tools build on them; add, never rename): ``schema``, ``seed``,
``dataset`` {name, n_images, n_unique_reports, sha256}, ``cells`` [{model, patch, level,
n_images, metrics, thresholds, passed}], with recalls as fractions in [0, 1]. ``summary.verdict``
is ``running`` while a run is under way (or after one was killed before it could finish).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

from .. import __version__
from ..cells import CellRecord
from ..files import atomic_write
from ..gate import run_verdict, summarise

SCHEMA = 1


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


def _cell_sort_key(cell: Mapping[str, Any], order: Mapping[str, int]) -> tuple:
    return (order.get(cell["model"], 1 << 30), cell["model"], cell["patch"], cell.get("kind", "grid"), cell["level"])


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
    for rec in records:
        rec = dict(rec)
        if rec.get("dataset"):
            dataset = rec.pop("dataset")
        else:
            rec.pop("dataset", None)
        card = rec.pop("model_card", None)
        if card:
            models[rec["model"]] = card
        cells.append(cast(CellRecord, rec))
    order = {name: i for i, name in enumerate(config.get("models", []))}
    cells.sort(key=lambda c: _cell_sort_key(c, order))
    expected = sorted(set(expected or ()))
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
    }


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
