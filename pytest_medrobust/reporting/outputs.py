"""Writing every report of a run, once, on the controller.

``medrobust.json`` (the results), ``medrobust.html`` (self-contained), ``medrobust.md`` (for a CI
job summary), ``masks/<cell>.png`` (the minimal failing placement of each search cell) and, when
asked, the baseline file. Each file is written atomically.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .results import build_results, write_results

RESULTS_FILE = "medrobust.json"
HTML_FILE = "medrobust.html"
MARKDOWN_FILE = "medrobust.md"
# A run that measured nothing (a set-up error) writes only this, beside the last good reports.
ERROR_FILE = "medrobust-error.json"


def _pictures(records: Sequence[dict[str, Any]], directory: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Move inline PNGs of search cells into files; the JSON keeps their relative paths."""
    pictures: dict[str, bytes] = {}
    out = []
    for rec in records:
        search = rec.get("search")
        if search and search.get("picture_png_base64"):
            search = dict(search)
            data = base64.b64decode(search.pop("picture_png_base64"))
            relative = f"masks/{rec['id']}.png"
            atomic_write(directory / relative, data)
            search["picture"] = relative
            pictures[relative] = data
            rec = {**rec, "search": search}
        out.append(rec)
    return out, pictures


def write_reports(
    settings: Any,
    records: Sequence[dict[str, Any]],
    *,
    expected: Iterable[str] | None = None,
    interrupted: bool = False,
    on_results: Callable[[dict[str, Any]], None] | None = None,
    extra_sections: Callable[[dict[str, Any]], Iterable[tuple[str, str]]] | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Build the results from the cell records and write the report files; returns both.

    ``expected``: node ids of the cells selected to run; any without a record (a crashed
    worker, an interrupted run) makes the verdict "incomplete", never "pass". A run whose every
    cell errored writes only ``medrobust-error.json``: the previous run's reports stay, rather
    than being replaced by an empty page. ``on_results`` and ``extra_sections`` are the
    plugin hooks (see hookspecs)."""
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
    write_results(results, directory / RESULTS_FILE)
    written.append(directory / RESULTS_FILE)
    sections = list(extra_sections(results)) if extra_sections is not None else []
    atomic_write(directory / HTML_FILE, render_html(results, pictures=pictures, extra_sections=sections))
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
    from .results import build_results

    results = build_results(seed=settings.seed, config=settings.to_json(), records=[])
    results["summary"]["verdict"] = "error"
    results["summary"]["error"] = message
    path = Path(settings.report_dir) / ERROR_FILE
    write_results(results, path)
    return path
