"""Writing every report of a run, once, on the controller.

``medrobust.json`` (the results), ``medrobust.html`` (self-contained), ``medrobust.md`` (for a CI
job summary), ``masks/<cell>.png`` (the minimal failing placement of each search cell),
``examples/<patch>-<level>.png`` (one example picture per patch type and level) and, when
asked, the baseline file. Each file is written atomically.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import MedrobustError
from ..files import atomic_write
from .results import build_results, running_results, write_results

RESULTS_FILE = "medrobust.json"
HTML_FILE = "medrobust.html"
MARKDOWN_FILE = "medrobust.md"
# A run that measured nothing (a set-up error) writes only this, beside the last good reports.
ERROR_FILE = "medrobust-error.json"
# The files a finished run writes, which a starting run marks as superseded.
RUN_FILES = (RESULTS_FILE, HTML_FILE, MARKDOWN_FILE)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_(),=+@-][A-Za-z0-9._(),=+@-]*")


def is_safe_name(name: str) -> bool:
    """Whether ``name`` can be a file name in the report folder as it is: no path separator,
    no ``..``, no leading dot (cell ids look like ``demo-plain-black_box-0.30``)."""
    return bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def picture_path(cell_id: str, folder: str = "masks") -> str:
    """``<folder>/<cell id>.png``, relative to the report folder. An id that is not a plain file
    name (a user patch or model name with ``/`` or ``..``) is made one, with a hash of the id
    so that two such ids cannot collide: nothing is ever written outside the report folder."""
    if is_safe_name(cell_id):
        return f"{folder}/{cell_id}.png"
    plain = re.sub(r"[^A-Za-z0-9_(),=+@-]+", "_", cell_id).strip("_")[:80]
    return f"{folder}/{plain}-{hashlib.sha256(cell_id.encode()).hexdigest()[:10]}.png"


def _pictures(records: Sequence[dict[str, Any]], directory: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Move inline PNGs of search cells into files; the JSON keeps their relative paths."""
    pictures: dict[str, bytes] = {}
    out = []
    for rec in records:
        search = rec.get("search")
        if search and search.get("picture_png_base64"):
            search = dict(search)
            data = base64.b64decode(search.pop("picture_png_base64"))
            relative = picture_path(str(rec["id"]))
            target = (directory / relative).resolve()
            if not target.is_relative_to((directory / "masks").resolve()):  # a symlinked masks/, say
                raise MedrobustError(f"cell {rec['id']!r}: its picture {target} would be written outside {directory}")
            atomic_write(target, data)
            search["picture"] = relative
            pictures[relative] = data
            rec = {**rec, "search": search}
        out.append(rec)
    return out, pictures


def _examples(results: dict[str, Any], directory: Path, load: Callable[[], Any] | None) -> dict[str, bytes]:
    """Write one example picture per patch type x occluded level under ``examples/`` (see
    :mod:`.examples`); ``results["examples"]`` lists them, ``results["examples_notes"]`` says
    what has none and why."""
    from .examples import EXAMPLES_DIR, examples_from_config

    found = examples_from_config(results.get("config") or {}, results["seed"], load)
    home = (directory / EXAMPLES_DIR).resolve()
    for relative, data in found.files.items():
        target = (directory / relative).resolve()
        if not target.is_relative_to(home):  # a symlinked examples/, say
            raise MedrobustError(f"example picture {target} would be written outside {directory / EXAMPLES_DIR}")
        atomic_write(target, data)
    results["examples"] = found.index
    results["examples_notes"] = found.notes
    return found.files


def write_reports(
    settings: Any,
    records: Sequence[dict[str, Any]],
    *,
    expected: Iterable[str] | None = None,
    interrupted: bool = False,
    on_results: Callable[[dict[str, Any]], None] | None = None,
    extra_sections: Callable[[dict[str, Any]], Iterable[tuple[str, str]]] | None = None,
    dataset: Callable[[], Any] | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Build the results from the cell records and write the report files; returns both.

    ``expected``: node ids of the cells selected to run; any without a record (a crashed
    worker, an interrupted run) makes the verdict "incomplete", never "pass". A run whose every
    cell errored writes only ``medrobust-error.json``: the previous run's reports stay, rather
    than being replaced by an empty page. ``on_results`` and ``extra_sections`` are the
    plugin hooks (see hookspecs). ``dataset`` returns the run's dataset for the gallery's example
    pictures (default: loaded from the configuration; none when it does not load)."""
    from .html import render_html
    from .markdown import render_markdown

    directory = Path(settings.report_dir)
    results = build_results(
        seed=settings.seed, config=settings.to_json(), records=records, expected=expected, interrupted=interrupted
    )
    if on_results is not None:
        on_results(results)
    written: list[Path] = []
    if not results["cells"] and not results["summary"]["missing"]:
        return results, written
    measured = any(c.get("outcome") in ("passed", "failed") for c in results["cells"])
    if results["summary"]["verdict"] == "error" and not measured:
        write_results(results, directory / ERROR_FILE)
        return results, [directory / ERROR_FILE]
    results["cells"], pictures = _pictures(results["cells"], directory)
    pictures.update(_examples(results, directory, dataset))
    write_results(results, directory / RESULTS_FILE)
    written.append(directory / RESULTS_FILE)
    sections = list(extra_sections(results)) if extra_sections is not None else []
    atomic_write(directory / HTML_FILE, render_html(results, pictures=pictures, extra_sections=sections, root=directory))
    written.append(directory / HTML_FILE)
    atomic_write(directory / MARKDOWN_FILE, render_markdown(results))
    written.append(directory / MARKDOWN_FILE)
    (directory / ERROR_FILE).unlink(missing_ok=True)  # an earlier set-up error is no longer current
    if settings.baseline.save_path is not None and results["summary"]["verdict"] in ("pass", "fail"):
        from ..gate import save_baseline

        written.append(save_baseline(results, settings.baseline.save_path))
    return results, written


def write_error_report(settings: Any, message: str) -> Path:
    """The results of a run stopped by a set-up error before any cell: verdict "error" and the
    message, in ``medrobust-error.json`` beside the last good reports (which are kept)."""
    results = build_results(seed=settings.seed, config=settings.to_json(), records=[])
    results["summary"]["verdict"] = "error"
    results["summary"]["error"] = message
    path = Path(settings.report_dir) / ERROR_FILE
    write_results(results, path)
    return path


_RUNNING_PAGE = (
    "A pytest-medrobust run started at {created}. It is still running, or it was stopped before it "
    "could write its reports: there is no verdict. The previous run's reports were superseded."
)


def mark_running(settings: Any) -> dict[Path, bytes | None]:
    """Supersede the report folder's results as a run starts: ``medrobust.json`` says verdict
    ``running`` (and the HTML and Markdown say so), each written atomically, so that a run killed
    before its own reports (SIGKILL, a lost machine) never leaves the previous verdict standing.

    Returns the previous content of each file (``None``: there was none), for :func:`restore`."""
    directory = Path(settings.report_dir)
    previous: dict[Path, bytes | None] = {}
    for name in RUN_FILES:
        path = directory / name
        try:
            previous[path] = path.read_bytes()
        except FileNotFoundError:
            previous[path] = None
    results = running_results(seed=settings.seed, config=settings.to_json())
    text = _RUNNING_PAGE.format(created=results["created"])
    write_results(results, directory / RESULTS_FILE)  # first: it is what CI reads
    atomic_write(directory / HTML_FILE, f"<!doctype html><meta charset=utf-8><title>medrobust: running</title><p>{text}</p>\n")
    atomic_write(directory / MARKDOWN_FILE, f"**pytest-medrobust: no verdict.** {text}\n")
    return previous


def restore(previous: dict[Path, bytes | None]) -> None:
    """Put back the files :func:`mark_running` superseded, for a run that ends without reports
    of its own (a set-up error, no grid cell selected): they stand as they were."""
    for path, data in previous.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, data)


def write_interrupted(settings: Any) -> Path:
    """The results of a run stopped before any cell was selected (SIGTERM or Ctrl-C during the
    set-up): verdict ``incomplete``, in place of the ``running`` marker."""
    results = build_results(seed=settings.seed, config=settings.to_json(), records=[], interrupted=True)
    path = Path(settings.report_dir) / RESULTS_FILE
    write_results(results, path)
    return path
