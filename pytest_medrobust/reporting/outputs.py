"""Writing every report of a run, once, on the controller."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .results import build_results, write_results

RESULTS_FILE = "medrobust.json"


def write_reports(settings: Any, records: Sequence[dict[str, Any]], device: str) -> tuple[dict[str, Any], list[Path]]:
    """Build the results from the cell records and write the report files; returns both."""
    results = build_results(seed=settings.seed, config=settings.to_json(), records=records, device=device)
    directory = Path(settings.report_dir)
    written = []
    if results["cells"]:
        path = directory / RESULTS_FILE
        write_results(results, path)
        written.append(path)
    return results, written
