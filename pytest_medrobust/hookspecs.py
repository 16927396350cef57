"""Hooks that other plugins and a team's ``conftest.py`` can implement.

Example (``conftest.py``)::

    def pytest_medrobust_cell_record(record, config):
        record["metrics"]["i2t_R@5_minus_R@1"] = record["metrics"]["i2t_R@5"] - record["metrics"]["i2t_R@1"]

    def pytest_medrobust_results(results, config):
        post_to_tracker(results["summary"]["verdict"], results["models"])

    def pytest_medrobust_html_sections(results, config):
        return [("Sign-off", "<p>Reviewed by the imaging QA board.</p>")]

The hooks run only with ``--medrobust``. ``medrobust merge`` runs outside pytest and calls none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .cells import CellRecord

hookspec = pytest.hookspec


@hookspec
def pytest_medrobust_cell_record(record: CellRecord, config: pytest.Config) -> None:
    """Called with each cell's record (measured or errored) in the process that produced it,
    before the record is judged final and sent to the controller. Add keys or metrics in place;
    the record must stay JSON-serialisable. Metrics added here are reported, not gated."""


@hookspec
def pytest_medrobust_results(results: dict[str, Any], config: pytest.Config) -> None:
    """Called once on the controller with the whole results dictionary, after the verdicts are
    decided and before any report file is written: add keys, or send the results elsewhere."""


@hookspec
def pytest_medrobust_html_sections(results: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]] | None:
    """Return extra sections for the HTML report as ``(title, html)`` pairs, shown after the
    built-in ones. The title is escaped; the HTML is inserted as given (it comes from code, not
    from data: escape any dataset string you put in it)."""
