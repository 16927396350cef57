"""Writing every report of a run, once, on the controller.

``medrobust.json`` (the results), ``medrobust.html`` (self-contained), ``medrobust.md`` (for a CI
job summary), ``masks/<cell>.png`` (the minimal failing placement of each search cell) and, when
asked, the baseline file. Each file is written atomically.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .results import atomic_write, build_results, write_results

RESULTS_FILE = "medrobust.json"
HTML_FILE = "medrobust.html"
MARKDOWN_FILE = "medrobust.md"


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
) -> tuple[dict[str, Any], list[Path]]:
    """Build the results from the cell records and write the report files; returns both.

    ``expected``: node ids of the cells selected to run; any without a record (a crashed
    worker, an interrupted run) makes the verdict "incomplete", never "pass"."""
    from .html import render_html
    from .markdown import render_markdown

    directory = Path(settings.report_dir)
    records, pictures = _pictures(records, directory)
    results = build_results(
        seed=settings.seed, config=settings.to_json(), records=records, expected=expected, interrupted=interrupted
    )
    written: list[Path] = []
    if not results["cells"] and not results["summary"]["missing"]:
        return results, written
    write_results(results, directory / RESULTS_FILE)
    written.append(directory / RESULTS_FILE)
    atomic_write(directory / HTML_FILE, render_html(results, pictures=pictures))
    written.append(directory / HTML_FILE)
    atomic_write(directory / MARKDOWN_FILE, render_markdown(results))
    written.append(directory / MARKDOWN_FILE)
    if settings.baseline.save_path is not None and results["summary"]["verdict"] != "incomplete":
        from .baseline import save_baseline

        written.append(save_baseline(results, settings.baseline.save_path))
    return results, written
