"""The grid as pytest items: one per (model, patch type, level), plus Hypothesis search cells.

Loading (dataset, model, decoding) happens in an item's setup, so a model or dataset that
cannot be loaded makes its items *error*; a threshold that is not met makes the item *fail*
with a message naming the cell, the metric, the value and the threshold.
"""

from __future__ import annotations

import base64
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
        if settings.sensitivity.enabled:  # under a shard, kept by the shard that owns the model (plugin)
            yield SensitivityItem.for_model(self)


def model_cells(
    model: str, patches: Sequence[str], levels: Sequence[float], search: bool, search_levels: Sequence[float] | None
) -> list[Cell]:
    """The cells of one model, in collection order: a grid cell per (patch, level), then, with the
    search on, a search cell per (patch, search level; by default every occluded level)."""
    from .occlusion.regions import cell_levels, is_region_patch

    # A region probe has no placement to search; inside/outside ones run at one level (occlusion/regions.py).
    cells = [Cell(model, patch, level) for patch in patches for level in cell_levels(patch, levels)]
    if search:
        chosen = search_levels or tuple(lv for lv in levels if lv > 0)
        cells += [Cell(model, patch, level, kind="search") for patch in patches if not is_region_patch(patch) for level in chosen]
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
            **(measurement.extra or {}),  # type: ignore[typeddict-item]
            **(extra or {}),
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
        if self.config.getoption("medrobust_per_query", default=False):
            # Per-study ranks for the side file (plugin: popped before the results JSON).
            ranks = measurement.ranks
            self.record["queries"] = {
                "ids": [str(i) for i in runner.dataset().ids],
                **{d: [int(r) for r in getattr(ranks, d).tolist()] for d in ("i2t", "t2i", "i2t_unique")},
            }
        # Properties travel with the report (xdist included) into the junit file.
        self.user_properties += junit_properties(self.record, measurement.metrics)
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
            from .sensitivity import guides

            shown = outcome.shown.policy
            image, mask, occluded = self.runner.mask_preview(self.cell, shown.with_guides(guides(self.runner, self.cell.model)))
            picture = render_mask_png(image, mask, occluded=occluded, scale=2, label=shown.describe())
            extra["search"]["picture_png_base64"] = base64.b64encode(picture).decode()
        try:
            self.finish(outcome.measurement, outcome.verdict, extra)
        except GateFailure as failure:
            metric, worst = outcome.metric, outcome.worst
            raise GateFailure(
                f"{failure}\nworst placement found: {worst.policy.describe()} ({metric} = "
                f"{worst.measurement.metrics[metric]:.3f}; grid cell {outcome.grid_value:.3f}, guided "
                f"{outcome.guided_value:.3f})\nminimal failing placement: {outcome.shown.policy.describe()} "
                f"(placements evaluated: {outcome.evaluations} of a budget of {outcome.budget}"
                f"{f', then {outcome.shrink_evaluations} while shrinking' if outcome.shrink_evaluations else ''})"
                f"\nreplay:\n{_printed_replay(outcome)}"
            ) from None


def _printed_replay(outcome: Any) -> str:
    """The replay for the terminal: a per-image placement's snippet carries every image's guide,
    too long to print; it stays in the results JSON."""
    if outcome.worst.policy.mode in ("fixed", "grid"):
        return str(outcome.replay)
    command = str(outcome.replay).split("\n", 1)[0]
    return command + "\n# the Python snippet, with every image's guide: search.replay in the results JSON"


def junit_properties(record: dict[str, Any], metrics: dict[str, float]) -> list[tuple[str, str]]:
    """A cell's junit properties: what it is (model, patch, level), every metric, and for each
    gated metric its interval, threshold(s) and clean value (``medrobust.<metric>.lo`` ...)."""
    props = [
        ("medrobust.model", str(record["model"])),
        ("medrobust.patch", str(record["patch"])),
        ("medrobust.level", f"{record['level']:g}"),
        ("medrobust.kind", str(record["kind"])),
    ]
    props += [(f"medrobust.{name}", f"{value:.6f}") for name, value in metrics.items()]
    intervals = record.get("intervals") or {}
    for metric, row in (record.get("thresholds") or {}).items():
        if metric in intervals:
            props += [(f"medrobust.{metric}.lo", f"{intervals[metric][0]:.6f}"),
                      (f"medrobust.{metric}.hi", f"{intervals[metric][1]:.6f}")]
        for kind in ("min", "max", "retention", "above_chance"):
            if kind in row:
                props.append((f"medrobust.{metric}.threshold.{kind}", f"{row[kind]:g}"))
        if "clean" in row:
            props.append((f"medrobust.{metric}.clean", f"{row['clean']:.6f}"))
    props.append(("medrobust.passed", str(bool(record["passed"])).lower()))
    return props


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


SETTINGS_KEY = pytest.StashKey["Settings"]()
RUNNER_KEY = pytest.StashKey["GridRunner"]()


class SensitivityItem(CellItem):
    """The occlusion sensitivity maps of one model (``test_sensitivity[<model>]``, see
    :mod:`pytest_medrobust.sensitivity`). Not a gate: it passes unless it cannot be computed; its
    record goes to ``results["sensitivity"][<model>]``, not among the cells."""

    test_name = "test_sensitivity"

    @classmethod
    def for_model(cls, parent: ModelCells) -> SensitivityItem:
        settings: Settings = parent.config.stash[SETTINGS_KEY]
        cell = Cell(parent.name, settings.sensitivity.patch, 0.0, kind="sensitivity")
        name = f"{cls.test_name}[{parent.name}]"
        return cls.from_parent(parent, name=name, nodeid=f"{parent.nodeid}::{name}", cell=cell)

    def runtest(self) -> None:
        from .sensitivity import run_model

        summary = run_model(self.runner, self.cell.model)
        record = {**self.base_record(), "outcome": "passed", "passed": True, "error": None, "failures": [],
                  "metrics": {}, "search": None, "sensitivity": summary, "device": self.runner.device_name}
        self.record = json.loads(json.dumps(record))
