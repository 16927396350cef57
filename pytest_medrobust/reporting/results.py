"""The results JSON (``reports/medrobust.json``): schema 1, written once by the controller.

Stable fields (other tools build on them; add, never rename): ``schema``, ``seed``,
``dataset`` {name, n_images, n_unique_reports, sha256}, ``cells`` [{model, patch, level,
n_images, metrics, thresholds, passed}], with recalls as fractions in [0, 1].
"""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__

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
    cells = []
    for rec in records:
        rec = dict(rec)
        if rec.get("dataset"):
            dataset = rec.pop("dataset")
        else:
            rec.pop("dataset", None)
        card = rec.pop("model_card", None)
        if card:
            models[rec["model"]] = card
        cells.append(rec)
    order = {name: i for i, name in enumerate(config.get("models", []))}
    cells.sort(key=lambda c: _cell_sort_key(c, order))
    outcomes = [c.get("outcome") for c in cells]
    summary = {
        "cells": len(cells),
        "passed": outcomes.count("passed"),
        "failed": outcomes.count("failed"),
        "errors": outcomes.count("error"),
    }
    recorded = {c.get("nodeid") for c in cells}
    missing = sorted(set(expected or ()) - recorded)
    summary["missing"] = missing
    summary["complete"] = not missing and not interrupted
    if not summary["complete"]:
        summary["verdict"] = "incomplete"
    else:
        summary["verdict"] = "pass" if cells and summary["passed"] == len(cells) else "fail"
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
        "summary": summary,
    }


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are for everyone who reads the folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(results: Mapping[str, Any], path: Path) -> None:
    atomic_write(path, json.dumps(results, indent=2, sort_keys=False, allow_nan=False) + "\n")
