"""One self-contained HTML report from the results JSON.

:func:`render_html` turns the results dictionary (the content of ``reports/medrobust.json``)
into a single HTML page: the view model (:mod:`.view`) rendered by Jinja2 templates
(``templates/*.j2``, package data) with the style sheet (``static/report.css``) inlined, charts
as inline SVG (geometry from :mod:`.charts`), pictures embedded once each as ``data:`` URIs.
The page contains no JavaScript and loads nothing from the network, so it can be archived as a
CI artefact and opened offline.

Safety: the templates are rendered with autoescape on, so every string taken from the results
(model and dataset names, paths, messages, replay strings ...) is escaped, in text and in
attributes alike. Only the style sheet and the sections returned by the
``pytest_medrobust_html_sections`` hook (trusted HTML from the user's own plugins) are inserted
as they are. Element ids and CSS classes are generated, never taken from the data.

Numbers are shown rounded (recalls to 3 decimals) and every shown number carries its exact
value, ``repr(float)`` of the JSON number, in a ``data-value`` attribute (and in its tooltip).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from .view import build_view, metric_order, read_picture, required

__all__ = ["render_html", "collect_pictures", "metric_order"]

# Kept importable here for callers of the earlier single-module report.
_required = required


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pytest_medrobust.reporting", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


@cache
def _css() -> str:
    return files("pytest_medrobust.reporting").joinpath("static/report.css").read_text(encoding="utf-8")


def collect_pictures(results: Mapping[str, Any], root: str | Path) -> dict[str, bytes]:
    """Read every search cell's ``search.picture`` (a path relative to ``root``) that exists.

    Paths that leave ``root`` (absolute, or with ``..``) are skipped, so a tampered results
    file cannot make the report embed arbitrary files.
    """
    pictures: dict[str, bytes] = {}
    for cell in results.get("cells") or []:
        search = cell.get("search") if isinstance(cell, Mapping) else None
        name = search.get("picture") if isinstance(search, Mapping) else None
        if not isinstance(name, str) or not name or name in pictures:
            continue
        data = read_picture(root, name)
        if data is not None:
            pictures[name] = data
    return pictures


def render_html(
    results: Mapping[str, Any],
    *,
    pictures: Mapping[str, bytes] | None = None,
    extra_sections: Iterable[tuple[str, str]] = (),
    root: str | Path | None = None,
) -> str:
    """The whole report as one self-contained HTML page.

    ``results`` is the results dictionary (``reports/medrobust.json``); ``pictures`` maps a
    search cell's ``search.picture`` path to the image's bytes (see :func:`collect_pictures`),
    which are embedded as ``data:`` URIs. ``root`` is the report folder: pictures named by the
    optional sections (``results["sensitivity"]``) are read from there, never from outside it.
    ``extra_sections`` are ``(title, html)`` pairs from the ``pytest_medrobust_html_sections``
    hook; the title is escaped, the HTML is inserted as it is. Missing or partial entries (error
    cells without metrics, no search cells, a single level or model) render as such.
    """
    sections = [(title, Markup(content)) for title, content in extra_sections]  # trusted: the user's plugins
    view = build_view(results, pictures or {}, sections, Path(root) if root is not None else None)
    return _environment().get_template("report.html.j2").render(css=Markup(_css()), **view)
