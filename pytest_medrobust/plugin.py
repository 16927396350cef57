"""pytest hooks of pytest-medrobust. Kept thin: the work is in the engine modules.

Without ``--medrobust`` this module only registers options: nothing is collected and torch is
not imported. With it, :class:`GatePlugin` is registered for the session.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from .errors import MedrobustError
from .items import RUNNER_KEY, SETTINGS_KEY, CellItem, MedrobustGrid, error_record

GRID_NODEID = "medrobust"

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
    "medrobust_cache_dir": "cache_dir",
    "medrobust_precision": "precision",
    "medrobust_shard": "shard",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("medrobust", "robustness gate for image-report retrieval models")
    add = group.addoption
    add("--medrobust", action="store_true", default=False, help="run the robustness grid")
    add(
        "--medrobust-only",
        action="store_true",
        default=False,
        help="run the robustness grid and collect nothing else (implies --medrobust)",
    )
    add("--medrobust-models", metavar="NAMES", help="comma-separated model names (default: demo-plain,demo-occaug)")
    add("--medrobust-dataset", metavar="SPEC", help="manifest path, or loader:path (default: bundled phantom)")
    add("--medrobust-limit", metavar="N", type=int, help="use a seeded, stable subset of N rows of the dataset")
    add(
        "--medrobust-on-bad-rows",
        choices=("error", "drop"),
        help="bad dataset rows: error (default) lists them and stops; drop skips and records them",
    )
    add("--medrobust-levels", metavar="LEVELS", help="occluded area fractions in [0, 1), e.g. 0,0.1,0.3,0.5")
    add("--medrobust-patches", metavar="NAMES", help="comma-separated patch types (default: black_box)")
    add("--medrobust-k", metavar="KS", help="Recall@k cut-offs (default: 1,5,10)")
    add("--medrobust-seed", metavar="INT", help="seed of every occluder placement (default: 0)")
    add("--medrobust-device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--medrobust-report-dir", metavar="DIR", help="where reports are written (default: reports/)")
    add("--medrobust-batch-size", metavar="N", help="images per forward pass (default: 64)")
    add("--medrobust-config", metavar="FILE", help="a TOML file with a [tool.medrobust] table")
    add("--medrobust-precision", metavar="P", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16")
    add("--medrobust-cache-dir", metavar="DIR", help="embedding cache (default: .medrobust_cache in the rootdir)")
    add("--medrobust-no-cache", action="store_true", default=False, help="neither read nor write the cache")
    add("--medrobust-cache-clear", action="store_true", default=False, help="empty the cache before the run")
    add("--medrobust-shard", metavar="I/N", help="run the I-th of N stable shares of the grid (merge with `medrobust merge`)")
    add("--medrobust-bootstrap", metavar="N", help="bootstrap resamples per cell for the intervals (default: 1000; 0 off)")
    add("--medrobust-baseline", metavar="PATH", help="fail cells whose metrics fell against this saved baseline")
    add("--medrobust-save-baseline", metavar="PATH", help="save this run's metrics as a baseline")
    add("--medrobust-baseline-tolerance", metavar="DELTA", help="allowed fall against the baseline (default: 0.02)")
    add(
        "--medrobust-allow-baseline-mismatch",
        action="store_true",
        default=None,
        help="compare with a baseline made on a different dataset fingerprint",
    )
    add(
        "--medrobust-search-examples",
        metavar="N",
        type=int,
        help="Hypothesis placements tried per search cell (default: 8; 0 turns the search cells off)",
    )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` starts one worker per GPU when there are GPUs (else xdist's CPU count)."""
    if not (config.getoption("medrobust", default=False) or config.getoption("medrobust_only", default=False)):
        return None
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return True if config.getoption("medrobust_only", default=False) else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "medrobust: a cell of the medrobust robustness grid")
    if config.getoption("medrobust_only", default=False):
        config.option.medrobust = True
    if not config.getoption("medrobust", default=False):
        return
    if getattr(config.option, "dist", None) == "load" and not _dist_given(config):
        # Send every cell of a model (one collector per model) to one worker, which then loads
        # that model once. Other tests are grouped by module, as loadscope does.
        config.option.dist = "loadscope"
    from .config import settings_from_pytest

    try:
        settings = settings_from_pytest(config, _CLI_KEYS)
    except MedrobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(GatePlugin(config, settings), "medrobust-gate")


def _dist_given(config: pytest.Config) -> bool:
    """Whether the user chose --dist explicitly (then it is kept as given)."""
    return any(a == "--dist" or a.startswith("--dist=") or a == "--distload" for a in config.invocation_params.args)


class GatePlugin:
    """Session state of a gate run: the grid, the per-cell records and the reports."""

    def __init__(self, config: pytest.Config, settings: Any):
        from .runner import GridRunner

        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self.records: list[dict[str, Any]] = []
        self.expected: set[str] = set()  # node ids of the cells selected to run
        self.results: dict[str, Any] | None = None
        self.written: list[Path] = []
        config.stash[SETTINGS_KEY] = settings
        runner = GridRunner(settings)
        runner.progress_writer = self._write_past_capture
        config.stash[RUNNER_KEY] = runner
        if config.getoption("medrobust_cache_clear") and not self.is_worker:
            runner.cache_root_clear()

    def _write_past_capture(self, text: str) -> None:
        import sys

        capture = self.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            sys.stderr.write(text)
            sys.stderr.flush()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        # tryfirst: the grid must be in `items` before -k / -m deselection and xdist see them.
        grid = MedrobustGrid.from_parent(session, name=GRID_NODEID, nodeid=GRID_NODEID)
        cells = list(session.genitems(grid))
        if self.settings.shard is not None:
            from .items import in_shard

            index, count = self.settings.shard
            kept = [item for item in cells if in_shard(item, index, count)]
            session.config.hook.pytest_deselected(items=[item for item in cells if item not in kept])
            cells = kept
        items.extend(cells)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # After -k / -m / --lf / shard deselection: what this run is expected to measure.
        self.expected = {item.nodeid for item in session.items if isinstance(item, CellItem)}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Under xdist the controller collects nothing itself; every worker reports the same ids.
        self.expected = {i for i in ids if i.startswith(GRID_NODEID + "::")}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):
        report = yield
        if isinstance(item, CellItem):
            record = None
            if call.when == "call" and item.record is not None:
                record = item.record
            elif call.when in ("setup", "call") and report.failed:
                record = error_record(item, report)
            if record is not None:
                report.medrobust = {**record, "nodeid": item.nodeid}
                if call.when == "call":
                    from .reporting.pytest_html_extras import extras_for

                    report.extras = [*getattr(report, "extras", []), *extras_for(record)]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the controller this also sees every xdist worker's reports, attributes included.
        record = getattr(report, "medrobust", None)
        if record is not None:
            self.records.append(record)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or self.config.option.collectonly:
            return
        from .reporting.outputs import write_reports

        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop
        self.results, self.written = write_reports(
            self.settings, self.records, expected=self.expected, interrupted=bool(interrupted)
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.results or not (self.results["cells"] or self.results["summary"]["missing"]):
            return
        from .reporting.terminal import summary_lines

        terminalreporter.section("medrobust")
        for line in summary_lines(self.results, self.settings.primary_metric):
            terminalreporter.write_line(line)
        for path in self.written:
            terminalreporter.write_line(f"wrote {path}")
        if self.settings.baseline.save_path is not None and self.results["summary"]["verdict"] == "incomplete":
            terminalreporter.write_line(
                f"baseline NOT saved to {self.settings.baseline.save_path}: the run is incomplete", red=True
            )
