"""Baselines: remember one run's metrics and fail later runs that fall below them.

A baseline file is small JSON (it belongs in version control)::

    {
      "schema": 1,
      "kind": "medrobust-baseline",
      "tool": {"name": "pytest-medrobust", "version": "0.1.0"},
      "created": "2026-11-27T23:00:00Z",
      "dataset": {"name": "phantom", "sha256": "...", "n_images": 300},
      "seed": 0,
      "config": {...the run's config...},
      "cells": {"demo-plain-black_box-0.30": {"id": "demo-plain-black_box-0.30",
                                               "model": "demo-plain", "patch": "black_box",
                                               "level": 0.3, "kind": "grid",
                                               "metrics": {"i2t_unique_R@5": 0.5, ...}},
                "search:demo-plain-black_box-0.30": {..., "kind": "search", ...}}
    }

Only cells that have metrics are stored (error cells have none). Cells are keyed by id, with
``"search:"`` in front for search cells (see :func:`cell_key`). The comparison is per key: a
cell of the new run is compared with the baseline cell of the same key, metric by metric.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..files import atomic_write
from .thresholds import lower_is_better

__all__ = [
    "BASELINE_SCHEMA",
    "Baseline",
    "save_baseline",
    "load_baseline",
    "compare_to_baseline",
    "check_compatible",
    "cell_key",
]

BASELINE_SCHEMA = 1
BASELINE_KIND = "medrobust-baseline"
# Float noise allowed on top of the tolerance, so that 0.80 - 0.75 (= 0.05000000000000004)
# does not exceed a tolerance of 0.05.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Baseline:
    """A loaded baseline file."""

    path: Path
    dataset_sha256: str
    seed: int | None
    config: Mapping
    cells: Mapping[str, Mapping[str, float]]  # cell key (see cell_key) -> metric -> value
    data: Mapping = field(repr=False, default_factory=dict)  # the whole file, as loaded

    @property
    def dataset_name(self) -> str | None:
        name = self.data.get("dataset", {}).get("name")
        return name if isinstance(name, str) else None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cell_key(cell: Mapping) -> str:
    """The key of a cell in a baseline file: its id for grid cells, ``"<kind>:<id>"`` otherwise.

    Search cells may carry the id of the grid cell they search around, so the kind keeps the two
    apart.
    """
    cell_id = str(cell.get("id"))
    kind = cell.get("kind", "grid")
    return cell_id if kind in (None, "grid") else f"{kind}:{cell_id}"


def baseline_dict(results: Mapping) -> dict:
    """The content :func:`save_baseline` writes for ``results``."""
    found = results.get("dataset")
    dataset: Mapping = found if isinstance(found, Mapping) else {}
    sha = dataset.get("sha256")
    if not isinstance(sha, str) or not sha:
        raise ConfigError("cannot save a baseline: the results have no dataset fingerprint (dataset.sha256)")
    cells: dict[str, dict] = {}
    for cell in results.get("cells") or []:
        if not isinstance(cell, Mapping) or not isinstance(cell.get("id"), str):
            continue
        metrics = cell.get("metrics")
        if not isinstance(metrics, Mapping):
            continue
        kept = {name: float(value) for name, value in metrics.items() if _finite(value)}
        if not kept:
            continue
        cells[cell_key(cell)] = {
            "id": cell["id"],
            "model": cell.get("model"),
            "patch": cell.get("patch"),
            "level": cell.get("level"),
            "kind": cell.get("kind", "grid"),
            "metrics": kept,
        }
    return {
        "schema": BASELINE_SCHEMA,
        "kind": BASELINE_KIND,
        "tool": dict(results.get("tool") or {}),
        "created": results.get("created"),
        "dataset": {"name": dataset.get("name"), "sha256": sha, "n_images": dataset.get("n_images")},
        "seed": results.get("seed"),
        "config": dict(results.get("config") or {}),
        "cells": cells,
    }


def save_baseline(results: Mapping, path: str | os.PathLike) -> Path:
    """Write the baseline of ``results`` to ``path`` atomically; returns the path.

    The file is written to a temporary file in the same folder and moved into place with
    :func:`os.replace`, so a reader never sees half a file and a crash leaves the old one.
    """
    path = Path(path)
    atomic_write(path, json.dumps(baseline_dict(results), indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def load_baseline(path: str | os.PathLike) -> Baseline:
    """Read and check a baseline file; any problem is a :class:`ConfigError` naming the file."""
    path = Path(path)
    where = f"baseline file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist; save a baseline first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "re-create it by saving a new baseline"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a JSON object, found {type(data).__name__}")
    if data.get("kind", BASELINE_KIND) != BASELINE_KIND:
        raise ConfigError(f"{where} is not a medrobust baseline (kind {data.get('kind')!r})")
    missing = [key for key in ("schema", "dataset", "cells") if key not in data]
    if missing:
        raise ConfigError(f"{where} is missing key(s): {', '.join(missing)}; re-create the baseline")
    schema = data["schema"]
    if schema != BASELINE_SCHEMA:
        raise ConfigError(
            f"{where} has schema {schema!r}, this version of pytest-medrobust reads schema "
            f"{BASELINE_SCHEMA}; re-create the baseline"
        )
    dataset = data["dataset"]
    if not isinstance(dataset, dict) or not isinstance(dataset.get("sha256"), str) or not dataset["sha256"]:
        raise ConfigError(f"{where}: 'dataset' must be an object with a 'sha256' fingerprint")
    raw_cells = data["cells"]
    if not isinstance(raw_cells, dict):
        raise ConfigError(f"{where}: 'cells' must be an object mapping cell ids to their metrics")
    cells: dict[str, dict[str, float]] = {}
    for cell_id, cell in raw_cells.items():
        metrics = cell.get("metrics") if isinstance(cell, dict) else None
        if not isinstance(metrics, dict):
            raise ConfigError(f"{where}: cell {cell_id!r} has no 'metrics' object")
        for name, value in metrics.items():
            if not _finite(value):
                raise ConfigError(f"{where}: cell {cell_id!r} metric {name!r} is not a finite number: {value!r}")
        cells[cell_id] = {name: float(value) for name, value in metrics.items()}
    seed = data.get("seed")
    raw_config = data.get("config")
    config: Mapping = raw_config if isinstance(raw_config, dict) else {}
    return Baseline(
        path=path,
        dataset_sha256=dataset["sha256"],
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        config=config,
        cells=cells,
        data=data,
    )


def compare_to_baseline(
    cell: Mapping,
    baseline: Baseline,
    *,
    metrics: Iterable[str],
    tolerance_abs: float | None = None,
    tolerance_rel: float | None = None,
) -> list[str]:
    """Failure messages for the metrics of ``cell`` that got worse than the baseline allows.

    A metric "gets worse" when a recall falls, or when a ``*_rank`` metric rises. The allowed
    change is ``tolerance_abs`` (in the metric's unit), or ``tolerance_rel`` times the baseline
    value (0.05 = 5 %); with both, the larger allowance applies; with neither, any worsening
    fails. Cells the baseline does not know, and cells without metrics (errors, which fail on
    their own), give no failures. A metric the baseline has but this cell lacks is a failure.
    """
    for name, tolerance in (("tolerance_abs", tolerance_abs), ("tolerance_rel", tolerance_rel)):
        if tolerance is not None and (not _finite(tolerance) or tolerance < 0):
            raise ConfigError(f"{name} must be a number >= 0, got {tolerance!r}")
    reference = baseline.cells.get(cell_key(cell)) if isinstance(cell.get("id"), str) else None
    current = cell.get("metrics")
    if reference is None or not isinstance(current, Mapping):
        return []
    failures = []
    for metric in metrics:
        if metric not in reference:
            continue
        before = reference[metric]
        after = current.get(metric)
        if not _finite(after):
            failures.append(f"{metric} is missing from this run (baseline {before:.3f})")
            continue
        after = float(after)  # type: ignore[arg-type]  # _finite checked it is a real number
        worse = after - before if lower_is_better(metric) else before - after
        allowed = max(
            tolerance_abs if tolerance_abs is not None else 0.0,
            tolerance_rel * abs(before) if tolerance_rel is not None else 0.0,
        )
        if worse > allowed + _EPSILON:
            verb, sign = ("rose", "+") if lower_is_better(metric) else ("fell", "-")
            how = ""
            if tolerance_rel is not None and (tolerance_abs is None or tolerance_rel * abs(before) > tolerance_abs):
                how = f" ({tolerance_rel * 100:g}% of baseline)"
            failures.append(
                f"{metric} {verb} from {before:.3f} (baseline) to {after:.3f}: "
                f"{sign}{worse:.3f} > tolerance {allowed:.3f}{how}"
            )
    return failures


def check_compatible(
    baseline: Baseline, results_dataset_sha256: str | None, allow_mismatch: bool = False
) -> str | None:
    """Check that the baseline was made on the same dataset as this run.

    Returns None when the fingerprints agree. When they differ, raises :class:`ConfigError`,
    or, with ``allow_mismatch``, returns the warning text instead (the caller shows it).
    """
    if results_dataset_sha256 == baseline.dataset_sha256:
        return None
    ours = f"{results_dataset_sha256[:12]}…" if results_dataset_sha256 else "unknown"
    message = (
        f"baseline file {str(baseline.path)!r} was made on a different dataset: its fingerprint is "
        f"sha256 {baseline.dataset_sha256[:12]}…, this run's is {ours}; metrics on different data "
        "are not comparable. Re-create the baseline on this dataset, or allow the mismatch explicitly."
    )
    if allow_mismatch:
        return message.replace(" Re-create the baseline on this dataset, or allow the mismatch explicitly.",
                               " Comparing anyway because the mismatch is allowed.")
    raise ConfigError(message)
