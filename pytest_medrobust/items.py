"""The grid as pytest items: one per (model, patch type, level), plus Hypothesis search cells.

Loading (dataset, model, decoding) happens in an item's setup, so a model or dataset that
cannot be loaded makes its items *error*; a threshold that is not met makes the item *fail*
with a message naming the cell, the metric, the value and the threshold.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .errors import MedrobustError

if TYPE_CHECKING:
    from .config import Settings
    from .runner import Cell, GridRunner, Measurement
    from .thresholds import Verdict

class GateFailure(AssertionError):
    """A cell's metrics do not meet its thresholds; the message lists every failed limit."""


class MedrobustGrid(pytest.Collector):
    """The virtual module that holds the grid (node id ``medrobust``), one collector per model."""

    def collect(self) -> Iterator[pytest.Collector]:
        settings: Settings = self.config.stash[SETTINGS_KEY]
        for spec in settings.models:
            yield ModelCells.from_parent(self, name=spec.name, nodeid=f"{self.nodeid}::{spec.name}")


class ModelCells(pytest.Collector):
    """Every cell of one model (node id ``medrobust::<model>``): under xdist's ``loadscope``
    they run on one worker, which loads the model once."""

    def collect(self) -> Iterator[pytest.Item]:
        from .runner import Cell

        settings: Settings = self.config.stash[SETTINGS_KEY]
        cells = [Cell(self.name, patch, level) for patch in settings.patches for level in settings.levels]
        if settings.search.enabled:
            levels = settings.search.levels or tuple(lv for lv in settings.levels if lv > 0)
            cells += [Cell(self.name, patch, level, kind="search") for patch in settings.patches for level in levels]
        for cell in cells:
            kind = RecallCell if cell.kind == "grid" else WorstPlacementCell
            name = f"{kind.test_name}[{cell.id}]"
            # An explicit node id: pytest re-parses cached ids for --lf, and must find the same one.
            yield kind.from_parent(self, name=name, nodeid=f"{self.nodeid}::{name}", cell=cell)


class CellItem(pytest.Item):
    def __init__(self, *, cell: Cell, **kwargs: Any):
        super().__init__(**kwargs)
        self.cell = cell
        self.record: dict[str, Any] | None = None
        self.add_marker(pytest.mark.medrobust)

    @property
    def runner(self) -> GridRunner:
        return self.config.stash[RUNNER_KEY]

    @property
    def settings(self) -> Settings:
        return self.config.stash[SETTINGS_KEY]

    def setup(self) -> None:
        try:
            self.runner.prepare(self.cell.model)
            return
        except MedrobustError as exc:
            message = str(exc)
        # A setup failure is reported as an error; outside the except block and with
        # pytrace=False it shows just the message, once.
        pytest.fail(message, pytrace=False)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"medrobust {self.cell.kind} cell {self.cell.id}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, (GateFailure, MedrobustError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def base_record(self) -> dict[str, Any]:
        c = self.cell
        return {"id": c.id, "kind": c.kind, "model": c.model, "patch": c.patch, "level": c.level}

    def judge(self, measurement: Measurement) -> Verdict:
        """The cell's thresholds, on the point estimate or the bootstrap lower bound (the baseline
        is checked in :meth:`finish`, once per cell, not per search example)."""
        c = self.cell
        clean = self.runner.clean(c.model).metrics if c.level > 0 else None
        intervals = self.runner.intervals(measurement)
        chance = self.runner.chance(list(measurement.metrics))
        return self.settings.thresholds.evaluate(
            c.id, c.model, c.patch, c.level, measurement.metrics, clean, intervals, chance
        )

    def finish(self, measurement: Measurement, verdict: Verdict, extra: dict[str, Any] | None = None) -> None:
        """Record the cell (for the JSON and junit), then fail if a limit was not met."""
        runner = self.runner
        record = {
            **self.base_record(),
            "n_images": measurement.n_images,
            "metrics": measurement.metrics,
            "intervals": runner.intervals(measurement),
            "thresholds": verdict.thresholds,
            "failures": list(verdict.failures),
            "search": None,
            "duration_s": round(measurement.seconds, 3),
            "cached": measurement.cached,
            **(extra or {}),
        }
        record["failures"] += runner.baseline_failures(record)
        passed = not record["failures"]
        record.update(passed=passed, outcome="passed" if passed else "failed", error=None)
        record["model_card"] = runner.model_card(self.cell.model)
        record["dataset"] = runner.dataset().card()
        record["device"] = runner.device_name
        # Plain JSON values only (a user's card() may hold paths or numpy numbers): the record
        # travels to the xdist controller and into the results JSON.
        self.record = json.loads(json.dumps(record, default=str))
        for name, value in measurement.metrics.items():
            self.user_properties.append((f"medrobust.{name}", f"{value:.6f}"))
        self.user_properties.append(("medrobust.passed", str(passed).lower()))
        if not passed:
            raise GateFailure("\n".join(record["failures"]))


class RecallCell(CellItem):
    """Recall@k of one model with every image occluded by the seeded placement of one cell."""

    test_name = "test_recall"

    def runtest(self) -> None:
        measurement = self.runner.measure(self.cell.model, self.cell.patch, self.cell.level)
        self.finish(measurement, self.judge(measurement))


class WorstPlacementCell(CellItem):
    """Hypothesis searches the placement policies of one cell for one that breaks the gate."""

    test_name = "test_worst_placement"

    def runtest(self) -> None:
        from .search import search_worst_placement

        outcome = search_worst_placement(self.runner, self.cell, self.judge)
        extra: dict[str, Any] = {"search": outcome.to_json()}
        if outcome.picture is not None:
            extra["search"]["picture_png_base64"] = base64.b64encode(outcome.picture).decode()
        try:
            self.finish(outcome.measurement, outcome.verdict, extra)
        except GateFailure as failure:
            raise GateFailure(
                f"{failure}\nminimal failing placement: {outcome.policy.describe()} "
                f"(placements evaluated: {outcome.evaluations})\nreplay:\n{outcome.replay}"
            ) from None


def error_record(item: CellItem, report: pytest.TestReport) -> dict[str, Any]:
    message = str(report.longrepr) if report.longrepr is not None else "error"
    return {
        **item.base_record(),
        "n_images": None,
        "metrics": {},
        "thresholds": {},
        "failures": [],
        "passed": False,
        "outcome": "error",
        "error": message,
        "search": None,
        "intervals": {},
        "cached": False,
        "duration_s": None,
        "device": item.runner.device_name,
    }


def in_shard(item: CellItem, index: int, count: int) -> bool:
    """Whether a cell belongs to shard ``index`` of ``count`` (1-based): a hash of the cell, so
    a cell stays in its shard when the grid grows or shrinks around it."""
    digest = hashlib.sha256(f"{item.cell.kind}:{item.cell.id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % count == index - 1


SETTINGS_KEY = pytest.StashKey["Settings"]()
RUNNER_KEY = pytest.StashKey["GridRunner"]()
