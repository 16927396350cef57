"""pytest hooks of pytest-medrobust. Kept thin: the work is in the engine modules.

Without ``--medrobust`` this module only registers options: nothing is collected and torch is
not imported. With it, :class:`GatePlugin` is registered for the session.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .cells import GRID_NODEID
from .errors import MedrobustError
from .items import RUNNER_KEY, SETTINGS_KEY, CellItem, MedrobustGrid, error_record

if TYPE_CHECKING:
    from .runner import GridRunner


def pytest_addoption(parser: pytest.Parser) -> None:
    from .options import add_options

    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


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
        settings = settings_from_pytest(config)
        gate = GatePlugin(config, settings)  # may clear the cache folder, which can be refused
    except MedrobustError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(gate, "medrobust-gate")


def describe_cell(cell: Any) -> str:
    """A cell in words, for progress lines: ``demo-plain: black_box over 20% of each image``."""
    from .reporting.values import level_text

    if cell.level <= 0:
        what = "clean images"
    else:
        what = f"{cell.patch} over {level_text(cell.level)} of each image"
    return f"{cell.model}: {what}" + (", searching for the worst placement" if cell.kind == "search" else "")


def _dist_given(config: pytest.Config) -> bool:
    """Whether the user chose --dist explicitly (then it is kept as given)."""
    return any(a == "--dist" or a.startswith("--dist=") or a == "--distload" for a in config.invocation_params.args)


class ProgressLine:
    """Writes the running cell's progress lines (runner.Progress) past pytest's capture.

    In-process, through pytest's terminal reporter, the way pytest ends a line of dots when a
    new test file starts: the dot line is closed with its ``[ nn%]``, the progress line follows,
    and before the next result the line's ``medrobust `` prefix is written again, so the dots
    resume on a whole line of their own (with ``-v``, pytest writes the node id again). The dot
    line is never cut. An xdist worker cannot reach the controller's terminal reporter: it writes
    to the shared stderr only with ``-v`` (one result per line), and stays silent otherwise."""

    def __init__(self, config: pytest.Config, is_worker: bool):
        self.config, self.is_worker = config, is_worker
        self.open = False  # a progress line is the terminal's current line
        self.resume: Any = None  # the dot line's file, to write its prefix again

    def write(self, text: str) -> None:
        import sys

        capture = self.config.pluginmanager.getplugin("capturemanager")
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if self.is_worker or reporter is None:
                if not self.is_worker or self.config.get_verbosity() > 0:
                    sys.stderr.write("\n" + text if self.is_worker else text)
                    sys.stderr.flush()
                return
            text = text.rstrip("\n")
            where = reporter.currentfspath
            dots = isinstance(where, Path) and reporter.verbosity <= 0
            # The line holds only what pytest wrote as the test started (the file's prefix in
            # dots mode, the node id with -v): there is nothing to close with a percentage.
            bare = where not in (None, -2) and reporter._tw.width_of_current_line <= len(self._prefix(reporter, where)) + 1
            if bare and reporter.isatty:
                reporter.rewrite(text, erase=True)  # on a terminal, the bare prefix is overwritten
            else:
                if dots and not bare and reporter._show_progress_info:
                    reporter._write_progress_information_filling_space()  # as pytest does between files
                if where is not None:
                    reporter.ensure_newline()
                elif self.open:
                    reporter._tw.line()
                reporter._tw.write(text, flush=True)
            if dots:
                self.resume = where
            reporter.currentfspath = None
            self.open = True

    @staticmethod
    def _prefix(reporter: Any, where: Any) -> str:
        """What pytest wrote at the start of the current line: a file's relative path, or a node id."""
        if isinstance(where, Path):
            from _pytest.pathlib import bestrelpath

            return bestrelpath(reporter.startpath, where)
        return str(where)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before pytest writes a result after a progress line: a new line, and in dots mode the
        file's prefix, as pytest itself starts a line of dots."""
        # Only a report pytest writes a letter for (a passed setup or teardown writes none).
        if not self.open or (report.when != "call" and report.passed):
            return
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        self.open = False
        if reporter is not None and self.resume is not None:  # with -v pytest writes the node id again
            reporter._tw.line()
            reporter._tw.write(self._prefix(reporter, self.resume) + " ")
            reporter.currentfspath, self.resume = self.resume, None


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
        # The previous run's report files, superseded by "running" while this run is under way.
        self.superseded: dict[Path, bytes | None] | None = None
        self.previous_sigterm: Any = None
        config.stash[SETTINGS_KEY] = settings
        runner = GridRunner(settings)
        self.progress = ProgressLine(config, self.is_worker)
        config.pluginmanager.register(self.progress, "medrobust-progress")
        runner.progress_writer = self.progress.write
        config.stash[RUNNER_KEY] = runner
        if config.getoption("medrobust_cache_clear") and not self.is_worker:
            runner.cache_root_clear()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Check the dataset and every model once, before the grid (and before any xdist worker
        starts): a broken set-up stops here with one message and exit status 4, not one error
        per cell. The reports of the previous run are kept; the error goes beside them. From
        here until the reports are written, ``medrobust.json`` says ``running``."""
        if self.is_worker or self.config.option.collectonly:
            return
        from .reporting.outputs import mark_running, restore, write_error_report, write_interrupted

        self._handle_sigterm()
        try:
            # Before the preflight, which can take minutes on a large dataset: a run killed from
            # here on leaves "running", never the previous run's verdict.
            self.superseded = mark_running(self.settings)
        except OSError as exc:
            raise pytest.UsageError(f"medrobust: cannot write to the report folder {self.settings.report_dir}: {exc}") from None
        runner: GridRunner = self.config.stash[RUNNER_KEY]
        try:
            runner.preflight(distributed=self.config.pluginmanager.has_plugin("dsession"))
        except MedrobustError as exc:
            restore(self.superseded)
            self.superseded = None
            path = write_error_report(self.settings, str(exc))
            raise pytest.UsageError(
                f"medrobust: set-up error, no cell was measured (verdict: error):\n{exc}\n"
                f"wrote {path}; the reports of an earlier run in {path.parent} were left as they were"
            ) from None
        except KeyboardInterrupt:
            # pytest skips pytest_sessionfinish when interrupted inside pytest_sessionstart.
            write_interrupted(self.settings)
            raise
        except BaseException:
            restore(self.superseded)  # any other failure of the set-up, as a set-up error
            self.superseded = None
            raise

    def _handle_sigterm(self) -> None:
        """SIGTERM (what CI time-outs and ``kill`` send) stops the run as Ctrl-C does: the cells
        not yet run are missing, the verdict is ``incomplete`` and the reports are written."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt("SIGTERM received")

        self.previous_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        settings = self.settings
        dataset = settings.dataset or "bundled demo dataset (phantom chest X-rays)"
        lines = [
            f"medrobust: dataset {dataset}",
            f"medrobust: models {', '.join(settings.model_names)}; primary metric {settings.primary_metric}",
        ]
        if settings.shard is not None:
            from .sharding import header_line

            lines.append(header_line(settings))
        return lines

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item):
        from .runner import Progress

        if isinstance(item, CellItem):
            Progress.current = f"{item.cell.model}: loading the model and dataset"
        try:
            return (yield)
        finally:
            Progress.current = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        from .runner import Progress

        if isinstance(item, CellItem):
            Progress.current = describe_cell(item.cell)
        try:
            return (yield)
        finally:
            Progress.current = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        # tryfirst: the grid must be in `items` before -k / -m deselection and xdist see them.
        grid = MedrobustGrid.from_parent(session, name=GRID_NODEID, nodeid=GRID_NODEID)
        cells: list[pytest.Item] = list(session.genitems(grid))
        if self.settings.shard is not None:
            from .sharding import in_share

            mine = in_share(self.settings)
            kept: list[pytest.Item] = [c for c in cells if isinstance(c, CellItem) and mine(c.cell)]
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
            record: dict[str, Any] | None = None
            if call.when == "call" and item.record is not None:
                record = item.record
            elif call.when in ("setup", "call") and report.failed:
                record = dict(error_record(item, report))
            if record is not None:
                report.medrobust = {**record, "nodeid": item.nodeid}
                if call.when == "call":
                    from .reporting.pytest_html_extras import extras_for

                    report.extras = [*getattr(report, "extras", []), *extras_for(record)]
        return report

    @pytest.hookimpl(trylast=True)  # after junitxml opened the case: system-out follows its failure
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the controller this also sees every xdist worker's reports, attributes included.
        record = getattr(report, "medrobust", None)
        if record is not None:
            self.records.append(record)
            if not self.is_worker:
                self._junit_system_out(report, record)

    def _junit_system_out(self, report: pytest.TestReport, record: dict[str, Any]) -> None:
        """The cell's metrics on one line in its junit ``system-out`` (GitLab and Jenkins show it;
        they ignore properties), and its mask picture as a GitLab attachment."""
        import xml.etree.ElementTree as ET

        from _pytest.junitxml import bin_xml_escape, xml_key

        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        from .reporting.outputs import picture_path
        from .reporting.terminal import cell_line

        text = cell_line(record)
        if (record.get("search") or {}).get("picture_png_base64"):
            picture = Path(self.settings.report_dir) / picture_path(str(record["id"]))
            with contextlib.suppress(ValueError):
                picture = picture.resolve().relative_to(self.config.rootpath.resolve())
            text += f"\n[[ATTACHMENT|{picture}]]"  # GitLab's form: the file is written at session end
        node = ET.Element("system-out")
        node.text = bin_xml_escape(text)
        xml.node_reporter(report).nodes.append(node)

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file: the per-model properties
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or self.config.option.collectonly:
            return
        from .reporting.outputs import RESULTS_FILE, write_reports

        hook = self.config.hook
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop
        # Per-study ranks (--medrobust-per-query) go to a side file, not into the results JSON.
        queries = {f"{r.get('kind')}:{r.get('id')}": r.pop("queries") for r in self.records if "queries" in r}
        self.results, self.written = write_reports(
            self.settings,
            self.records,
            expected=self.expected,
            interrupted=bool(interrupted),
            on_results=lambda results: hook.pytest_medrobust_results(results=results, config=self.config),
            extra_sections=lambda results: [
                section
                for sections in hook.pytest_medrobust_html_sections(results=results, config=self.config)
                for section in sections or []
            ],
            dataset=self.config.stash[RUNNER_KEY].dataset,  # already loaded: for the example pictures
        )
        self._settle_superseded(bool(interrupted))
        directory = Path(self.settings.report_dir)
        if queries and directory / RESULTS_FILE in self.written:
            from .reporting.export import QUERIES_FILE, write_queries

            self.written.append(write_queries(self.results, queries, directory / QUERIES_FILE))
        self._junit_properties(self.results)
        if not self.expected and not self.records:
            return  # no grid cell selected (-k, --lf, an empty shard): pytest's status stands
        verdict = self.results["summary"]["verdict"]
        # The exit status tells a broken pipeline from a model that is not robust.
        if verdict == "error":
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        elif verdict in ("fail", "incomplete") and session.exitstatus == pytest.ExitCode.OK:
            # A model-level test (reference) failed, or cells never reported (a skipped cell):
            # neither may exit 0.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _settle_superseded(self, interrupted: bool) -> None:
        """Replace the "running" marker when this run wrote no results JSON of its own: an
        interrupted run says ``incomplete``; a run with no cell selected, or whose every cell
        errored (``medrobust-error.json``), leaves the previous reports as they were."""
        from .reporting.outputs import RESULTS_FILE, restore, write_interrupted

        if self.superseded is None or Path(self.settings.report_dir) / RESULTS_FILE in self.written:
            return
        if interrupted and not self.written:
            self.written.append(write_interrupted(self.settings))
        else:
            restore(self.superseded)
        self.superseded = None

    def _junit_properties(self, results: dict[str, Any]) -> None:
        """Per-model verdicts and scores as junit testsuite properties (controller side, so they
        survive xdist, unlike record_testsuite_property)."""
        from _pytest.junitxml import xml_key

        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        xml.add_global_property("medrobust.verdict", results["summary"]["verdict"])
        for summary in results.get("model_summaries", []):
            name = summary["model"]
            xml.add_global_property(f"medrobust.{name}.verdict", summary["verdict"])
            for key in ("score", "auc", "mean_retention"):
                if summary.get(key) is not None:
                    xml.add_global_property(f"medrobust.{name}.{key}", f"{summary[key]:.6f}")
            occluded = summary["occluded_cells"]
            xml.add_global_property(f"medrobust.{name}.occluded_passed", f"{occluded['passed']}/{occluded['total']}")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any):
        # A wrapper that runs first wraps pytest's own: its code after the yield runs after
        # pytest's short test summary, so the medrobust section is the last thing printed
        # (before pytest's one-line "N failed, M passed" total).
        result = yield
        if self.is_worker or not self.results or not (self.results["cells"] or self.results["summary"]["missing"]):
            return result
        from .reporting.terminal import summary_lines

        quiet = terminalreporter.verbosity < 0
        terminalreporter.section("medrobust")
        for line in summary_lines(self.results, self.settings.primary_metric, quiet=quiet):
            terminalreporter.write_line(line)
        if not quiet:
            for path in self.written:
                terminalreporter.write_line(f"wrote {path}")
        verdict = self.results["summary"]["verdict"]
        if self.settings.baseline.save_path is not None and verdict not in ("pass", "fail"):
            terminalreporter.write_line(
                f"baseline NOT saved to {self.settings.baseline.save_path}: the run is {verdict}", red=True
            )
        return result
