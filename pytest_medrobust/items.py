"""The grid as pytest items: one per (model, patch type, level), plus Hypothesis search cells.

Loading (dataset, model, decoding) happens in an item's setup, so a model or dataset that
cannot be loaded makes its items *error*; a threshold that is not met makes the item *fail*
with a message naming the cell, the metric, the value and the threshold.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from .cells import TEST_NAMES, Cell, CellRecord, cell_nodeid, cell_test_name
from .errors import MedrobustError

if TYPE_CHECKING:
    from .config import Settings
    from .gate import Verdict
    from .runner import GridRunner, Measurement


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
        settings: Settings = self.config.stash[SETTINGS_KEY]
        search_levels = settings.search.levels if settings.search.enabled else ()
        for cell in model_cells(self.name, settings.patches, settings.levels, settings.search.enabled, search_levels):
            kind = RecallCell if cell.kind == "grid" else WorstPlacementCell
            # An explicit node id: pytest re-parses cached ids for --lf, and must find the same one;
            # medrobust merge rebuilds the same ids from a shard's config (cell_nodeid).
            yield kind.from_parent(self, name=cell_test_name(cell), nodeid=cell_nodeid(cell), cell=cell)


def model_cells(
    model: str, patches: Sequence[str], levels: Sequence[float], search: bool, search_levels: Sequence[float] | None
) -> list[Cell]:
    """The cells of one model, in collection order: a grid cell per (patch, level), then, with the
    search on, a search cell per (patch, search level; by default every occluded level)."""
    cells = [Cell(model, patch, level) for patch in patches for level in levels]
    if search:
        chosen = search_levels or tuple(lv for lv in levels if lv > 0)
        cells += [Cell(model, patch, level, kind="search") for patch in patches for level in chosen]
    return cells


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
            first = self.runner.first_cell_with(exc, self.cell.id)
            message = str(exc)
            if first != self.cell.id:
                # The full message stands once, under the first cell; the others point at it.
                message = f"set-up error, as in {first}: {message.splitlines()[0][:160]}"
        # Outside the except block and with pytrace=False, pytest shows just the message.
        pytest.fail(message, pytrace=False)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        # A line number, not None: pytest's skip reports need one (a skipped cell crashed pytest).
        return self.path, 0, f"medrobust {self.cell.kind} cell {self.cell.id}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, (GateFailure, MedrobustError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def base_record(self) -> CellRecord:
        c = self.cell
        return {"id": c.id, "kind": c.kind, "model": c.model, "patch": c.patch, "level": c.level}

    def finish(self, measurement: Measurement, verdict: Verdict, extra: dict[str, Any] | None = None) -> None:
        """Record the cell (for the JSON and junit), then fail if a limit was not met."""
        runner = self.runner
        record: CellRecord = {
            **self.base_record(),
            "n_images": measurement.n_images,
            "metrics": dict(measurement.metrics),  # hook columns must not reach the cached clean one
            "intervals": runner.intervals(measurement),
            "thresholds": verdict.thresholds,
            "failures": list(verdict.failures),
            "search": None,
            "duration_s": round(measurement.seconds, 3),
            "cached": measurement.cached,
            "cache_corrupt": measurement.cache_corrupt,
            "hits": runner.hits(measurement),
            **(extra or {}),  # type: ignore[typeddict-item]
        }
        passed = not record["failures"]
        record["passed"], record["outcome"], record["error"] = passed, "passed" if passed else "failed", None
        record["model_card"] = runner.model_card(self.cell.model)
        record["dataset"] = runner.dataset().card()
        record["device"] = runner.device_name
        self.config.hook.pytest_medrobust_cell_record(record=record, config=self.config)
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

    test_name = TEST_NAMES["grid"]

    def runtest(self) -> None:
        measurement = self.runner.measure(self.cell.model, self.cell.patch, self.cell.level)
        self.finish(measurement, self.runner.verdict(self.cell, measurement))


class WorstPlacementCell(CellItem):
    """Hypothesis searches the placement policies of one cell for one that breaks the gate."""

    test_name = TEST_NAMES["search"]

    def runtest(self) -> None:
        from .search import search_worst_placement

        outcome = search_worst_placement(self.runner, self.cell)
        extra: dict[str, Any] = {"search": outcome.to_json()}
        if outcome.failed:
            from .reporting.pictures import render_mask_png

            image, mask, occluded = self.runner.mask_preview(self.cell, outcome.policy)
            picture = render_mask_png(image, mask, occluded=occluded, scale=2, label=outcome.policy.describe())
            extra["search"]["picture_png_base64"] = base64.b64encode(picture).decode()
        try:
            self.finish(outcome.measurement, outcome.verdict, extra)
        except GateFailure as failure:
            raise GateFailure(
                f"{failure}\nminimal failing placement: {outcome.policy.describe()} "
                f"(placements evaluated: {outcome.evaluations})\nreplay:\n{outcome.replay}"
            ) from None


def error_record(item: CellItem, report: pytest.TestReport) -> CellRecord:
    message = str(report.longrepr) if report.longrepr is not None else "error"
    record: CellRecord = {
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
    item.config.hook.pytest_medrobust_cell_record(record=record, config=item.config)
    return record


def in_shard(item: CellItem, index: int, count: int) -> bool:
    """Whether a cell's item belongs to shard ``index`` of ``count`` (see :func:`cell_in_shard`)."""
    return cell_in_shard(item.cell, index, count)


def cell_in_shard(cell: Cell, index: int, count: int) -> bool:
    """Whether a cell belongs to shard ``index`` of ``count`` (1-based): a hash of the cell, so
    a cell stays in its shard when the grid grows or shrinks around it."""
    digest = hashlib.sha256(f"{cell.kind}:{cell.id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % count == index - 1


SETTINGS_KEY = pytest.StashKey["Settings"]()
RUNNER_KEY = pytest.StashKey["GridRunner"]()
