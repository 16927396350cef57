"""The unit of the grid: a cell (model, patch type, level) and the record of its measurement.

:class:`Cell` names what is measured; :class:`CellRecord` is what a measured (or errored) cell
reports. The same record travels from the item that measured it, through the xdist controller
and ``medrobust merge``, into the results JSON and every renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypedDict

# Levels are stored rounded to this many decimals: 0.1 + 0.2 and 0.3 are one level.
LEVEL_DECIMALS = 6


def level_key(level: float) -> float:
    """An occlusion level as a lookup key (config, cells, thresholds and reports all use it)."""
    return round(float(level), LEVEL_DECIMALS)


def level_id(level: float) -> str:
    """A level as it appears in a cell id: two decimals ("0.30"), more where it has them."""
    key = level_key(level)
    return f"{key:.2f}" if round(key, 2) == key else f"{key:g}"


def same_level(a: float, b: float) -> bool:
    return level_key(a) == level_key(b)


# The grid's node id, and the pytest test name of each kind of cell.
GRID_NODEID = "medrobust"
TEST_NAMES = {"grid": "test_recall", "search": "test_worst_placement"}


@dataclass(frozen=True)
class Cell:
    """One test of the grid: a model under one patch type at one occlusion level."""

    model: str
    patch: str
    level: float
    kind: str = "grid"  # "grid": seeded random placement; "search": Hypothesis worst case

    @property
    def id(self) -> str:
        return f"{self.model}-{self.patch}-{level_id(self.level)}"


def cell_test_name(cell: Cell) -> str:
    """The name of a cell's item (``test_recall[<cell id>]``)."""
    return f"{TEST_NAMES[cell.kind]}[{cell.id}]"


def cell_nodeid(cell: Cell) -> str:
    """The node id of a cell's item (``medrobust::<model>::test_recall[<cell id>]``): collection
    gives it, and ``medrobust merge`` rebuilds it from a shard's configuration."""
    return f"{GRID_NODEID}::{cell.model}::{cell_test_name(cell)}"


class CellRecord(TypedDict, total=False):
    """What one cell reports (one entry of ``cells`` in the results JSON).

    ``outcome`` is "passed", "failed" (the gate: a threshold was not met) or "error" (the cell
    could not be measured: the pipeline is broken, not the model)."""

    id: str
    nodeid: str
    kind: str
    model: str
    patch: str
    level: float
    n_images: int | None
    metrics: dict[str, float]
    intervals: dict[str, list[float]]
    thresholds: dict[str, dict[str, Any]]
    failures: list[str]
    passed: bool
    outcome: str
    error: str | None
    search: dict[str, Any] | None
    duration_s: float | None
    cached: bool
    cache_corrupt: int  # corrupt cache entries found (and recomputed) while measuring the cell
    device: str | None
    hits: dict[str, str]  # metric -> packed per-query hits (see gate.compare), for paired tests
    model_card: dict[str, Any]
    dataset: dict[str, Any]


def finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
