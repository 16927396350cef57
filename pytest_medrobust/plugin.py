"""pytest hooks of pytest-medrobust. Kept thin: the work is in the engine modules.

Without ``--medrobust`` this module only registers options: nothing is collected and torch is
not imported. With it, :class:`GatePlugin` is registered for the session.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from .errors import MedrobustError
from .items import RUNNER_KEY, SETTINGS_KEY, CellItem, MedrobustGrid, error_record

# option dest -> key of the [tool.medrobust] table
_CLI_KEYS = {
    "medrobust_models": "models",
    "medrobust_dataset": "dataset",
    "medrobust_levels": "levels",
    "medrobust_patches": "patches",
    "medrobust_k": "k",
    "medrobust_seed": "seed",
    "medrobust_device": "device",
    "medrobust_report_dir": "report_dir",
    "medrobust_batch_size": "batch_size",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("medrobust", "robustness gate for image-report retrieval models")
    add = group.addoption
    add("--medrobust", action="store_true", default=False, help="run the robustness grid")
    add("--medrobust-models", metavar="NAMES", help="comma-separated model names (default: demo-plain,demo-occaug)")
    add("--medrobust-dataset", metavar="SPEC", help="manifest path, or loader:path (default: bundled phantom)")
    add("--medrobust-levels", metavar="LEVELS", help="occluded area fractions in [0, 1), e.g. 0,0.1,0.3,0.5")
    add("--medrobust-patches", metavar="NAMES", help="comma-separated patch types (default: black_box)")
    add("--medrobust-k", metavar="KS", help="Recall@k cut-offs (default: 1,5,10)")
    add("--medrobust-seed", metavar="INT", help="seed of every occluder placement (default: 0)")
    add("--medrobust-device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--medrobust-report-dir", metavar="DIR", help="where reports are written (default: reports/)")
    add("--medrobust-batch-size", metavar="N", help="images per forward pass (default: 64)")
    add("--medrobust-config", metavar="FILE", help="a TOML file with a [tool.medrobust] table")
    add(
        "--medrobust-search-examples",
        metavar="N",
        type=int,
        help="Hypothesis placements tried per search cell (default: 8; 0 turns the search cells off)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "medrobust: a cell of the medrobust robustness grid")
    if not config.getoption("medrobust", default=False):
        return
    try:
        settings = _settings(config)
    except MedrobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(GatePlugin(config, settings), "medrobust-gate")


def _settings(config: pytest.Config) -> Any:
    from .config import build_settings, validate_names

    cli = {key: config.getoption(dest) for dest, key in _CLI_KEYS.items()}
    settings = build_settings(config.rootpath, config.getoption("medrobust_config"), cli)
    examples = config.getoption("medrobust_search_examples")
    if examples is not None:
        if examples < 0:
            raise MedrobustError(f"--medrobust-search-examples must be >= 0, got {examples}")
        settings = replace(settings, search=replace(settings.search, enabled=examples > 0, max_examples=max(1, examples)))
    validate_names(settings)
    if not settings.report_dir.is_absolute():
        settings = replace(settings, report_dir=config.rootpath / settings.report_dir)
    if not hasattr(config, "workerinput"):
        _check_writable(settings.report_dir)
    return settings


def _check_writable(directory: Path) -> None:
    """Fail before the grid runs, not after, when the reports cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".medrobust-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise MedrobustError(f"--medrobust-report-dir {directory} is not writable: {exc}") from exc


class GatePlugin:
    """Session state of a gate run: the grid, the per-cell records and the reports."""

    def __init__(self, config: pytest.Config, settings: Any):
        from .runner import GridRunner

        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self.records: list[dict[str, Any]] = []
        self.results: dict[str, Any] | None = None
        self.written: list[Path] = []
        config.stash[SETTINGS_KEY] = settings
        config.stash[RUNNER_KEY] = GridRunner(settings)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        # tryfirst: the grid must be in `items` before -k / -m deselection and xdist see them.
        grid = MedrobustGrid.from_parent(session, name="medrobust", nodeid="medrobust")
        items.extend(session.genitems(grid))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):
        report = yield
        if isinstance(item, CellItem):
            if call.when == "call" and item.record is not None:
                report.medrobust = item.record
            elif call.when in ("setup", "call") and report.failed:
                report.medrobust = error_record(item, report)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the controller this also sees every xdist worker's reports, attributes included.
        record = getattr(report, "medrobust", None)
        if record is not None:
            self.records.append(record)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        from .reporting.outputs import write_reports

        device = str(session.config.stash[RUNNER_KEY].device_name)
        self.results, self.written = write_reports(self.settings, self.records, device)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.results or not self.results["cells"]:
            return
        from .reporting.terminal import summary_lines

        terminalreporter.section("medrobust")
        for line in summary_lines(self.results, self.settings.primary_metric):
            terminalreporter.write_line(line)
        for path in self.written:
            terminalreporter.write_line(f"wrote {path}")
