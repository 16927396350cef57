"""One self-contained HTML report from the results JSON.

:func:`render_html` turns the results dictionary (the content of ``reports/medrobust.json``)
into a single HTML page: inline CSS, charts drawn as inline SVG here in Python, pictures
embedded as ``data:`` URIs. The page contains no JavaScript and loads nothing from the network,
so it can be archived as a CI artefact and opened offline.

Safety: every string taken from the results (model and dataset names, paths, messages, replay
strings, environment values ...) goes through :func:`html.escape` with ``quote=True`` before it
reaches the page, in text and in attributes alike. Element ids and CSS classes are generated
here, never taken from the data, and colours in ``style`` attributes are computed here.

Numbers are shown rounded (recalls to 3 decimals) and every shown number carries its exact
value, ``repr(float)`` of the JSON number, in a ``data-value`` attribute (and in its tooltip).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..gate import lower_is_better
from .values import as_mapping, as_number, level_key, level_text, unique

__all__ = ["render_html", "collect_pictures", "metric_order"]

# Categorical palette for models (chosen for contrast on white and between neighbours).
PALETTE = (
    "#2f6db5",
    "#e07b28",
    "#2f9a62",
    "#c43d5a",
    "#7b58a8",
    "#8a6a3c",
    "#cf6fb8",
    "#56636f",
    "#aa9a12",
    "#1f9fb4",
)
# Dash patterns that tell models apart once the palette repeats.
DASHES = ("", "7 3", "2 3", "9 3 2 3")
FAIL_COLOUR = "#c62828"
PASS_COLOUR = "#2e7d32"
ERROR_COLOUR = "#8d6e00"
# Sequential scale for heatmap cells, value 0 -> 1.
HEAT_STOPS = ((0.0, (250, 246, 240)), (0.5, (142, 182, 214)), (1.0, (26, 72, 122)))

_RECALL = re.compile(r"^(?P<direction>.+)_R@(?P<k>\d+)$")
_DIRECTION_ORDER = {"i2t_unique": 0, "i2t": 1, "t2i": 2}
_DIRECTION_TEXT = {
    "i2t_unique": "image → unique report",
    "i2t": "image → report (paired)",
    "t2i": "report → image (paired)",
}


# --------------------------------------------------------------------------------------------
# Small helpers


def _e(value: object) -> str:
    """Escape anything for HTML text or a double-quoted attribute."""
    return html.escape(str(value), quote=True)


def _fmt(value: object, digits: int | None = 3) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    number = as_number(value)
    if number is None:
        return "n/a"
    if digits is None:  # general values (configuration, cards): shortest readable form
        return f"{number:.6g}"
    return f"{number:.{digits}f}"


def _exact(value: float) -> str:
    """The exact JSON number as text (``repr`` of the float, or the integer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(float(value))


def _num(value: object, digits: int | None = 3, *, cls: str = "num", extra_title: str = "") -> str:
    """A shown number with its exact value in ``data-value`` and the tooltip."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return '<span class="na">—</span>' if value is None else _e(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f'<span class="na" title="{_e(repr(value))}">n/a</span>'
    exact = _exact(value)
    title = exact + (f" · {extra_title}" if extra_title else "")
    return f'<span class="{cls}" data-value="{_e(exact)}" title="{_e(title)}">{_e(_fmt(value, digits))}</span>'


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    red, green, blue = (int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))
    return red, green, blue


def _heat(value: float) -> tuple[str, str]:
    """Background and text colour of a heatmap cell."""
    value = min(1.0, max(0.0, value))
    for (p0, c0), (p1, c1) in zip(HEAT_STOPS, HEAT_STOPS[1:], strict=False):  # consecutive pairs
        if value <= p1:
            rgb = _mix(c0, c1, (value - p0) / (p1 - p0))
            break
    luminance = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255.0
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if luminance < 0.55 else "#1b1f24")


def metric_order(metrics: Iterable[str], primary: str | None = None) -> list[str]:
    """Recall metrics in display order: the primary one first, then by direction and k."""

    def key(name: str) -> tuple[int, str, int]:
        match = _RECALL.match(name)
        assert match
        direction = match["direction"]
        return (_DIRECTION_ORDER.get(direction, 9), direction, int(match["k"]))

    recalls = sorted({m for m in metrics if _RECALL.match(m)}, key=key)
    if primary is not None and primary in recalls:
        recalls.remove(primary)
        recalls.insert(0, primary)
    return recalls


def _metric_text(metric: str) -> str:
    match = _RECALL.match(metric)
    if not match:
        return metric
    direction = _DIRECTION_TEXT.get(match["direction"], match["direction"])
    return f"Recall@{match['k']}, {direction}"


def _picture_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def collect_pictures(results: Mapping[str, Any], root: str | Path) -> dict[str, bytes]:
    """Read every search cell's ``search.picture`` (a path relative to ``root``) that exists.

    Paths that leave ``root`` (absolute, or with ``..``) are skipped, so a tampered results
    file cannot make the report embed arbitrary files.
    """
    base = Path(root).resolve()
    pictures: dict[str, bytes] = {}
    for cell in results.get("cells") or []:
        search = cell.get("search") if isinstance(cell, Mapping) else None
        name = search.get("picture") if isinstance(search, Mapping) else None
        if not isinstance(name, str) or not name or name in pictures:
            continue
        path = (base / name).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            continue
        pictures[name] = path.read_bytes()
    return pictures


# --------------------------------------------------------------------------------------------
# The data, normalised


class _Report:
    """Lookups over the results dictionary, tolerant of missing or partial entries."""

    def __init__(self, results: Mapping[str, Any]):
        self.results = results
        self.config: Mapping[str, Any] = as_mapping(results.get("config"))
        self.cells = [c for c in (results.get("cells") or []) if isinstance(c, Mapping)]
        self.grid = [c for c in self.cells if c.get("kind", "grid") != "search"]
        self.search = [c for c in self.cells if c.get("kind") == "search"]

        models: Mapping[str, Any] = as_mapping(results.get("models"))
        self.model_cards = models
        self.models = unique([*models.keys(), *(c.get("model") for c in self.cells)])
        self.model_index = {m: i for i, m in enumerate(self.models)}

        config_patches = self.config.get("patches")
        if not isinstance(config_patches, list):
            config_patches = []
        self.patches = unique([*config_patches, *(c.get("patch") for c in self.cells)])

        levels = self.config.get("levels")
        if not isinstance(levels, list):
            levels = []
        keys = {level_key(v) for v in [*levels, *(c.get("level") for c in self.grid)]}
        self.levels = sorted(k for k in keys if k is not None)

        # Keyed by (model, patch, level key) as found in the JSON; a cell without a numeric level
        # is stored under None and never looked up.
        self.lookup: dict[tuple[object, object, float | None], Mapping[str, Any]] = {}
        for cell in self.grid:
            key = (cell.get("model"), cell.get("patch"), level_key(cell.get("level")))
            self.lookup.setdefault(key, cell)

        metrics = set()
        for cell in self.cells:
            for name, value in as_mapping(cell.get("metrics")).items():
                if as_number(value) is not None:
                    metrics.add(name)
        primary = self.config.get("primary_metric")
        self.primary = primary if isinstance(primary, str) and primary else None
        recall_primary = {self.primary} if self.primary and _RECALL.match(self.primary) else set()
        self.metrics = metric_order(metrics | recall_primary, self.primary)
        if self.primary is None and self.metrics:
            self.primary = self.metrics[0]
        # Charts and heatmaps show recalls (0..1); a rank primary metric falls back to the first recall.
        self.chart_primary = self.primary if self.primary in self.metrics else (self.metrics[0] if self.metrics else None)

        bootstrap = as_mapping(self.config.get("bootstrap"))
        confidence = as_number(bootstrap.get("confidence"))
        self.confidence_text = f"{confidence * 100:g}% CI" if confidence else "CI"

        summary = as_mapping(results.get("summary"))
        outcomes = [c.get("outcome") for c in self.cells]
        self.passed = _count(summary.get("passed"), outcomes.count("passed"))
        self.failed = _count(summary.get("failed"), outcomes.count("failed"))
        self.errors = _count(summary.get("errors"), outcomes.count("error"))
        verdict = summary.get("verdict")
        if not isinstance(verdict, str) or not verdict:
            verdict = "fail" if (self.failed or self.errors) else ("pass" if self.cells else "no cells")
        self.verdict = verdict

    def colour(self, model: object) -> str:
        return PALETTE[self.model_index.get(model, 0) % len(PALETTE)]

    def dash(self, model: object) -> str:
        return DASHES[(self.model_index.get(model, 0) // len(PALETTE)) % len(DASHES)]


def _count(value: object, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _failing_metrics(cell: Mapping, primary: str | None) -> set[str]:
    """Metrics a failed cell failed on.

    Read from the thresholds recorded with the cell (the value, or its lower bound under the
    "lower" gate, against ``min``; the value against ``max``; ``ratio`` against ``retention``),
    and from the failure messages (the first metric name each one mentions). A failed cell that
    names no metric either way is counted as failing its primary metric.
    """
    if cell.get("outcome") != "failed":
        return set()
    metrics = as_mapping(cell.get("metrics"))
    thresholds = as_mapping(cell.get("thresholds"))
    failing = set()
    for metric, row in thresholds.items():
        row = as_mapping(row)
        value = as_number(metrics.get(metric))
        gated = as_number(row.get("lower_bound"))
        gated = value if gated is None else gated
        minimum, maximum = as_number(row.get("min")), as_number(row.get("max"))
        ratio, retention = as_number(row.get("ratio")), as_number(row.get("retention"))
        if (
            (minimum is not None and gated is not None and gated < minimum)
            or (maximum is not None and value is not None and value > maximum)
            or (ratio is not None and retention is not None and ratio < retention)
        ):
            failing.add(metric)
    known = set(metrics) | set(thresholds)
    search = as_mapping(cell.get("search"))
    if isinstance(search.get("metric"), str):
        known.add(search["metric"])
    for message in cell.get("failures") or []:
        for token in re.findall(r"[A-Za-z0-9_@]+", str(message)):
            if token in known:
                failing.add(token)
                break
    if not failing and primary:
        failing.add(primary)
    return failing


def _interval(cell: Mapping, metric: str) -> tuple[float, float] | None:
    pair = as_mapping(cell.get("intervals")).get(metric)
    if isinstance(pair, (list, tuple)) and len(pair) == 2:
        low, high = as_number(pair[0]), as_number(pair[1])
        if low is not None and high is not None:
            return low, high
    return None


def _required(threshold: Mapping, metric: str = "") -> tuple[float | None, float | None]:
    """(absolute minimum, value the retention threshold requires) of one metric's thresholds.

    The minimum is the larger of ``min`` and the floor ``above_chance`` sets on a recall,
    ``chance + a x (1 - chance)``. Retention needs ``clean x r`` for recalls and at most
    ``clean / r`` for ranks.
    """
    minimum = as_number(threshold.get("min"))
    above, chance = as_number(threshold.get("above_chance")), as_number(threshold.get("chance"))
    if above is not None and chance is not None and not lower_is_better(metric):
        floor = chance + above * (1.0 - chance)
        minimum = floor if minimum is None else max(minimum, floor)
    retention, clean = as_number(threshold.get("retention")), as_number(threshold.get("clean"))
    if retention is None or clean is None:
        return minimum, None
    if lower_is_better(metric):
        return minimum, (clean / retention if retention > 0 else None)
    return minimum, clean * retention


# --------------------------------------------------------------------------------------------
# SVG charts


class _Axes:
    def __init__(self, width: int, height: int, levels: list[float], compact: bool):
        self.width, self.height = width, height
        self.left = 46 if compact else 58
        self.right = 14 if compact else 24
        self.top = 12 if compact else 18
        self.bottom = 40 if compact else 52
        top_level = max(levels) if levels else 0.0
        self.xmax = top_level if top_level > 0 else 1.0
        self.single = len(levels) <= 1

    def x(self, level: float) -> float:
        span = self.width - self.left - self.right
        if self.single:
            return self.left + span / 2
        return self.left + span * (level / self.xmax)

    def y(self, value: float) -> float:
        span = self.height - self.top - self.bottom
        return self.top + span * (1.0 - min(1.0, max(0.0, value)))


def _pts(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _chart(report: _Report, patch: str, metric: str, *, compact: bool) -> str:
    width, height = (380, 250) if compact else (1000, 400)
    levels = report.levels
    ax = _Axes(width, height, levels, compact)
    font = 11 if compact else 12
    parts: list[str] = []
    title = f"{metric} against occlusion level, patch {patch}"
    parts.append(
        f'<svg class="chart{" compact" if compact else ""}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_e(title)}" '
        f'font-size="{font}" data-patch="{_e(patch)}" data-metric="{_e(metric)}">'
    )
    parts.append(f"<title>{_e(title)}</title>")
    # Grid and axes.
    x0, x1 = ax.left, width - ax.right
    y0, y1 = ax.y(0.0), ax.y(1.0)
    parts.append(f'<rect class="plot" x="{x0}" y="{y1:.1f}" width="{x1 - x0}" height="{y0 - y1:.1f}"/>')
    for i in range(6):
        tick = i / 5
        y = ax.y(tick)
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    for level in levels:
        x = ax.x(level)
        parts.append(f'<line class="grid v" x1="{x:.1f}" x2="{x:.1f}" y1="{y1:.1f}" y2="{y0:.1f}"/>')
        parts.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{y0:.1f}" y2="{y0 + 5:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{y0 + 18:.1f}" text-anchor="middle">{_e(level_text(level))}</text>'
        )
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y0:.1f}" y2="{y0:.1f}"/>')
    parts.append(f'<line class="axis" x1="{x0}" x2="{x0}" y1="{y1:.1f}" y2="{y0:.1f}"/>')
    parts.append(
        f'<text class="label" x="{(x0 + x1) / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        "Occlusion level (share of image area)</text>"
    )
    cy = (y0 + y1) / 2
    parts.append(
        f'<text class="label" x="14" y="{cy:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {cy:.1f})">{_e(metric)}</text>'
    )

    # Per-model series.
    bands, lines, marks, thresholds = [], [], [], []
    minimums: dict[tuple[str, float], float] = {}
    for model in report.models:
        colour, dash = report.colour(model), report.dash(model)
        series, band_hi, band_lo, retention = [], [], [], []
        for level in levels:
            cell = report.lookup.get((model, patch, level))
            if cell is None:
                continue
            x = ax.x(level)
            threshold = as_mapping(as_mapping(cell.get("thresholds")).get(metric))
            minimum, required = _required(threshold, metric)
            if minimum is not None:
                minimums[(model, level)] = minimum
            if required is not None:
                retention.append((x, ax.y(required), required))
            value = as_number(as_mapping(cell.get("metrics")).get(metric))
            if value is None:
                if cell.get("outcome") == "error":
                    message = str(cell.get("error") or "error")
                    marks.append(
                        f'<path class="err-mark" d="M{x:.1f},{y0 - 12:.1f} l6,10 h-12 z">'
                        f"<title>{_e(model)} · {_e(level_text(level))}: error: {_e(message)}</title></path>"
                    )
                continue
            y = ax.y(value)
            series.append((x, y))
            interval = _interval(cell, metric)
            if interval is not None:
                band_hi.append((x, ax.y(interval[1])))
                band_lo.append((x, ax.y(interval[0])))
            tip = f"{model} · {patch} · {level_text(level)}: {metric} = {_fmt(value)}"
            if interval is not None:
                tip += f" ({report.confidence_text} {_fmt(interval[0])}–{_fmt(interval[1])})"
            failing = metric in _failing_metrics(cell, report.primary)
            if failing:
                tip += " · FAILED"
            exact = _e(_exact(value))
            marks.append(
                f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="{3 if compact else 4}" fill="{colour}" '
                f'data-model="{_e(model)}" data-level="{_e(_exact(level))}" data-value="{exact}">'
                f"<title>{_e(tip)}</title></circle>"
            )
            if failing:
                r = 6 if compact else 8
                marks.append(f'<circle class="fail-mark" cx="{x:.1f}" cy="{y:.1f}" r="{r}"/>')
        if len(band_hi) >= 2:
            polygon = band_hi + band_lo[::-1]
            bands.append(f'<polygon class="band" points="{_pts(polygon)}" fill="{colour}"/>')
        elif len(band_hi) == 1:
            (x, yh), (_, yl) = band_hi[0], band_lo[0]
            bands.append(f'<rect class="band" x="{x - 5:.1f}" y="{yh:.1f}" width="10" height="{yl - yh:.1f}" fill="{colour}"/>')
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if len(series) >= 2:
            lines.append(
                f'<polyline class="series" points="{_pts(series)}" stroke="{colour}"{dash_attr} '
                f'data-model="{_e(model)}"><title>{_e(model)}</title></polyline>'
            )
        if retention:
            tip = f"{model}: retention threshold (clean × r) for {metric}"
            points = [(x, y) for x, y, _ in retention]
            if len(points) == 1:
                (x, y) = points[0]
                points = [(x - 12, y), (x + 12, y)]
            thresholds.append(
                f'<polyline class="retention" points="{_pts(points)}" stroke="{colour}" '
                f'data-model="{_e(model)}" data-value="{_e(_exact(retention[-1][2]))}"><title>{_e(tip)} = '
                f"{_e(', '.join(_fmt(v) for _, _, v in retention))}</title></polyline>"
            )

    # Minimum thresholds: one shared line when all equal, else one per model.
    distinct = set(minimums.values())
    if len(distinct) == 1:
        value = distinct.pop()
        y = ax.y(value)
        thresholds.append(
            f'<line class="minimum" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" data-value="{_e(_exact(value))}">'
            f"<title>minimum {_e(metric)} = {_e(_fmt(value))}</title></line>"
        )
        if not compact:
            thresholds.append(
                f'<text class="min-label" x="{x0 + 8}" y="{y - 6:.1f}">minimum {_e(_fmt(value, 2))}</text>'
            )
    elif distinct:
        for model in report.models:
            points = [(ax.x(level), ax.y(v)) for (m, level), v in sorted(minimums.items()) if m == model]
            if not points:
                continue
            if len(points) == 1:
                (x, y) = points[0]
                points = [(x - 12, y), (x + 12, y)]
            thresholds.append(
                f'<polyline class="minimum per-model" points="{_pts(points)}" stroke="{report.colour(model)}" '
                f'data-model="{_e(model)}"><title>{_e(model)}: minimum {_e(metric)}</title></polyline>'
            )

    # Worst-case placements found by the search, as hollow diamonds.
    for cell in report.search:
        search = as_mapping(cell.get("search"))
        if cell.get("patch") != patch or search.get("metric") != metric:
            continue
        value, at = as_number(search.get("value")), level_key(cell.get("level"))
        if value is None or at is None or not (0 <= at <= ax.xmax) or (ax.single and at not in levels):
            continue
        x, y, r = ax.x(at), ax.y(value), (5 if compact else 6)
        tip = f"{cell.get('model')} · worst-case placement at {level_text(at)}: {metric} = {_fmt(value)}"
        if search.get("description"):
            tip += f" · {search.get('description')}"
        if metric in _failing_metrics(cell, report.primary):
            marks.append(f'<circle class="fail-mark" cx="{x:.1f}" cy="{y:.1f}" r="{r + 3}"/>')
        marks.append(
            f'<path class="search-mark" d="M{x:.1f},{y - r:.1f} l{r},{r} l-{r},{r} l-{r},-{r} z" '
            f'stroke="{report.colour(cell.get("model"))}" data-value="{_e(_exact(value))}">'
            f"<title>{_e(tip)}</title></path>"
        )

    parts.extend(bands + thresholds + lines + marks)
    parts.append("</svg>")
    return "".join(parts)


def _legend(report: _Report, patch: str) -> str:
    items = []
    for model in report.models:
        if not any(report.lookup.get((model, patch, lv)) for lv in report.levels) and not any(
            c.get("model") == model and c.get("patch") == patch for c in report.search
        ):
            continue
        colour, dash = report.colour(model), report.dash(model)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        items.append(
            '<li><svg width="34" height="14" aria-hidden="true">'
            f'<rect x="0" y="2" width="34" height="10" fill="{colour}" opacity="0.16"/>'
            f'<line x1="0" x2="34" y1="7" y2="7" stroke="{colour}" stroke-width="2.5"{dash_attr}/>'
            f'<circle cx="17" cy="7" r="3.5" fill="{colour}"/></svg>{_e(model)}</li>'
        )
    items.append(
        '<li><svg width="34" height="14" aria-hidden="true"><rect x="0" y="2" width="34" height="10" '
        f'fill="#56636f" opacity="0.16"/></svg>{_e(report.confidence_text)} (bootstrap)</li>'
    )
    items.append(
        '<li><svg width="34" height="14" aria-hidden="true"><line class="minimum" x1="0" x2="34" y1="7" y2="7"/>'
        "</svg>minimum threshold</li>"
    )
    items.append(
        '<li><svg width="34" height="14" aria-hidden="true"><line class="retention" x1="0" x2="34" y1="7" '
        'y2="7" stroke="#56636f"/></svg>retention threshold (clean × r)</li>'
    )
    if any(c.get("outcome") == "failed" and c.get("patch") == patch for c in report.cells):
        items.append(
            '<li><svg width="34" height="16" aria-hidden="true"><circle class="fail-mark" cx="17" cy="8" r="6"/>'
            "</svg>failed cell</li>"
        )
    if any(c.get("patch") == patch for c in report.search):
        items.append(
            '<li><svg width="34" height="16" aria-hidden="true"><path class="search-mark" '
            'd="M17,2 l6,6 l-6,6 l-6,-6 z" stroke="#56636f"/></svg>worst-case placement (search)</li>'
        )
    if any(c.get("outcome") == "error" for c in report.grid if c.get("patch") == patch):
        items.append(
            '<li><svg width="34" height="14" aria-hidden="true"><path class="err-mark" d="M17,2 l6,10 h-12 z"/>'
            "</svg>error (no value)</li>"
        )
    return f'<ul class="legend">{"".join(items)}</ul>'


# --------------------------------------------------------------------------------------------
# Tables


def _heatmap(report: _Report, patch: str, metric: str) -> str:
    head = "".join(
        f'<th scope="col" data-level="{_e(_exact(lv))}">{_e(level_text(lv))}'
        f'{"<br><small>clean</small>" if lv == 0 else ""}</th>'
        for lv in report.levels
    )
    rows = []
    for model in report.models:
        if not any(report.lookup.get((model, patch, lv)) for lv in report.levels):
            continue
        cells = []
        for level in report.levels:
            cell = report.lookup.get((model, patch, level))
            if cell is None:
                cells.append('<td class="missing">—</td>')
                continue
            value = as_number(as_mapping(cell.get("metrics")).get(metric))
            if value is None:
                if cell.get("outcome") == "error":
                    cells.append(
                        f'<td class="error" title="{_e(cell.get("error") or "error")}" '
                        f'data-cell="{_e(cell.get("id", ""))}" data-metric="{_e(metric)}">error</td>'
                    )
                else:
                    cells.append('<td class="missing">—</td>')
                continue
            background, ink = _heat(value)
            failing = metric in _failing_metrics(cell, report.primary)
            notes = [f"{model} · {level_text(level)}"]
            interval = _interval(cell, metric)
            if interval is not None:
                notes.append(f"{report.confidence_text} {_fmt(interval[0])}–{_fmt(interval[1])}")
            minimum, required = _required(as_mapping(as_mapping(cell.get("thresholds")).get(metric)), metric)
            if minimum is not None:
                notes.append(f"min {_fmt(minimum)}")
            if required is not None:
                notes.append(f"retention needs {_fmt(required)}")
            if failing:
                notes.append("FAILED")
            mark = '<span class="x" aria-label="failed">✕</span>' if failing else ""
            cells.append(
                f'<td class="{"fail" if failing else "ok"}" style="background:{background};color:{ink}" '
                f'data-cell="{_e(cell.get("id", ""))}" data-metric="{_e(metric)}">'
                f"{_num(value, extra_title=' · '.join(notes))}{mark}</td>"
            )
        rows.append(f'<tr><th scope="row">{_e(model)}</th>{"".join(cells)}</tr>')
    if not rows:
        return '<p class="muted">No grid cells for this patch type.</p>'
    caption = f"{_e(metric)} · {_e(_metric_text(metric))}"
    return (
        f'<table class="heatmap" data-patch="{_e(patch)}" data-metric="{_e(metric)}">'
        f"<caption>{caption}</caption><thead><tr><th scope=\"col\">Model</th>{head}</tr></thead>"
        f'<tbody>{"".join(rows)}</tbody></table>'
    )


def _value(value: object) -> str:
    """Any JSON value, escaped, for cards."""
    if value is None:
        return '<span class="na">—</span>'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _num(value, None)
    if isinstance(value, str):
        return _e(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
        return ", ".join(_value(v) for v in value) if value else '<span class="na">(none)</span>'
    if isinstance(value, Mapping):
        return _dl(value, nested=True)
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return _records(value)
    return f"<code>{_e(json.dumps(value, ensure_ascii=False, default=str))}</code>"


def _records(rows: list) -> str:
    """A list of objects (e.g. threshold rules) as a small table, one column per key."""
    keys: list = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    head = "".join(f'<th scope="col">{_e(k)}</th>' for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_value(row[k]) if k in row else ''}</td>" for k in keys) + "</tr>" for row in rows
    )
    return f'<div class="scroll"><table class="records"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _dl(mapping: Mapping, *, nested: bool = False, mono: Iterable[str] = ()) -> str:
    mono = set(mono)
    if not mapping:
        return '<p class="muted">(none recorded)</p>'
    rows = []
    for key, value in mapping.items():
        shown = _value(value)
        if key in mono and isinstance(value, str):
            shown = f'<code class="hash">{shown}</code>'
        rows.append(f"<dt>{_e(key)}</dt><dd>{shown}</dd>")
    return f'<dl class="{"kv nested" if nested else "kv"}">{"".join(rows)}</dl>'


def _model_cards(report: _Report) -> str:
    cards = report.model_cards
    if not cards:
        return '<p class="muted">No model cards recorded.</p>'
    keys: list[str] = []
    for card in cards.values():
        for key in as_mapping(card):
            if key != "name" and key not in keys:
                keys.append(key)
    head = "".join(f'<th scope="col">{_e(k)}</th>' for k in keys)
    rows = []
    for name, card in cards.items():
        card = as_mapping(card)
        colour = report.colour(name)
        cols = []
        for key in keys:
            value = card.get(key)
            if key == "sha256" and isinstance(value, str):
                short = f"{value[:12]}…" if len(value) > 12 else value
                cols.append(f'<td><code class="hash" title="{_e(value)}">{_e(short)}</code></td>')
            elif key == "input_size" and isinstance(value, list):
                cols.append(f"<td>{' × '.join(_value(v) for v in value)}</td>")
            else:
                cols.append(f"<td>{_value(value)}</td>")
        rows.append(
            f'<tr><th scope="row"><span class="swatch" style="background:{colour}"></span>{_e(name)}</th>{"".join(cols)}</tr>'
        )
    return (
        '<div class="scroll"><table class="cards"><thead><tr><th scope="col">Model</th>'
        f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _threshold_rows(report: _Report, cell: Mapping) -> str:
    metrics = as_mapping(cell.get("metrics"))
    thresholds = as_mapping(cell.get("thresholds"))
    failing = _failing_metrics(cell, report.primary)
    search = as_mapping(cell.get("search"))
    names = [*thresholds.keys(), *(m for m in sorted(failing) if m not in thresholds)]
    if not names:
        return ""
    dash = '<span class="na">—</span>'
    columns = ["Metric", "Measured", report.confidence_text, "Lower bound", "Min", "Max",
               "Retention needs", "Retained", "Status"]
    table: list[list[str | None]] = []
    for metric in names:
        threshold = as_mapping(thresholds.get(metric))
        value = metrics.get(metric)
        if value is None and search.get("metric") == metric:
            value = search.get("value")
        _, required = _required(threshold, metric)
        interval = _interval(cell, metric)
        retention = None
        if required is not None:
            op = "÷" if lower_is_better(metric) else "×"
            bound = "≤" if lower_is_better(metric) else "≥"
            retention = (
                f"{bound} {_num(required)} <small class=\"muted\">(clean {_num(threshold.get('clean'))} {op} "
                f"{_num(threshold.get('retention'), 2)})</small>"
            )
        elif threshold.get("retention") is not None:
            retention = f"r = {_num(threshold.get('retention'), 2)}"
        ratio = threshold.get("ratio")
        table.append(
            [
                f"<th scope=\"row\">{_e(metric)}</th>",
                _num(value),
                f"{_num(interval[0])} – {_num(interval[1])}" if interval else None,
                _num(threshold["lower_bound"]) if threshold.get("lower_bound") is not None else None,
                _num(threshold["min"]) if threshold.get("min") is not None else None,
                _num(threshold["max"]) if threshold.get("max") is not None else None,
                retention,
                _num(ratio) if ratio is not None else None,
                '<span class="pill fail">failed</span>' if metric in failing else '<span class="pill pass">ok</span>',
            ]
        )
    # Leave out the columns no row fills (e.g. no "max" limit, no interval on a search cell).
    keep = [j for j in range(len(columns)) if j in (0, 1, 8) or any(row[j] is not None for row in table)]
    head = "".join(f'<th scope="col">{_e(columns[j])}</th>' for j in keep)
    body = "".join(
        "<tr>"
        + "".join((row[j] or "") if j == 0 else f"<td>{row[j] if row[j] is not None else dash}</td>" for j in keep)
        + "</tr>"
        for row in table
    )
    return f'<table class="detail"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _inline_picture(search: Mapping) -> bytes | None:
    """A picture carried in the results themselves (``search.picture_png_base64``)."""
    text = search.get("picture_png_base64")
    if not isinstance(text, str) or not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return None


def _search_block(cell: Mapping, pictures: Mapping[str, bytes]) -> str:
    search = cell.get("search")
    if not isinstance(search, Mapping):
        return ""
    items = []
    if search.get("description"):
        items.append(f"<dt>Placement</dt><dd>{_e(search['description'])}</dd>")
    if search.get("metric") is not None:
        items.append(
            f"<dt>Worst value</dt><dd>{_e(search['metric'])} = {_num(search.get('value'))}</dd>"
        )
    if search.get("replay"):
        items.append(f'<dt>Replay</dt><dd><pre class="replay"><code>{_e(search["replay"])}</code></pre></dd>')
    picture = search.get("picture")
    figure = ""
    inline = _inline_picture(search)
    if inline is not None or (isinstance(picture, str) and picture):
        name = picture if isinstance(picture, str) and picture else "(embedded in the results)"
        data = pictures.get(name) or inline
        picture = name
        if data:
            uri = f"data:{_picture_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
            figure = (
                f'<figure class="mask"><img src="{_e(uri)}" alt="{_e("minimal failing mask: " + picture)}">'
                f"<figcaption>Minimal failing mask · <code>{_e(picture)}</code></figcaption></figure>"
            )
        else:
            figure = f'<p class="muted">Mask picture not embedded: <code>{_e(picture)}</code></p>'
    placement = search.get("placement")
    if placement is not None:
        items.append(
            "<dt>Placement policy</dt><dd><details><summary>JSON</summary><pre><code>"
            f"{_e(json.dumps(placement, indent=2, ensure_ascii=False, default=str))}</code></pre></details></dd>"
        )
    shown = {"placement", "description", "metric", "value", "replay", "picture", "picture_png_base64"}
    for key, value in search.items():
        if key not in shown and value is not None:
            items.append(f"<dt>{_e(key)}</dt><dd>{_value(value)}</dd>")
    return f'<div class="search-detail">{figure}<dl class="kv">{"".join(items)}</dl></div>'


def _cell_title(cell: Mapping) -> str:
    level = as_number(cell.get("level"))
    bits = [
        f"model <b>{_e(cell.get('model', '?'))}</b>",
        f"patch <b>{_e(cell.get('patch', '?'))}</b>",
        f"level <b>{_e(level_text(level)) if level is not None else '?'}</b>",
        f"{_e(cell.get('kind', 'grid'))} cell",
    ]
    if cell.get("n_images") is not None:
        bits.append(f"{_num(cell.get('n_images'), 0)} images")
    if as_number(cell.get("duration_s")) is not None:
        bits.append(f"{_num(cell.get('duration_s'), 1)} s")
    return " · ".join(bits)


def _failure(report: _Report, cell: Mapping, pictures: Mapping[str, bytes], index: int) -> str:
    outcome = cell.get("outcome") if cell.get("outcome") in ("failed", "error") else "failed"
    parts = [
        f'<article class="failure {outcome}" id="failure-{index}">',
        f'<header><span class="pill {"fail" if outcome == "failed" else "error"}">{outcome}</span>'
        f'<h3><code>{_e(cell.get("id", "(no id)"))}</code></h3><p class="meta">{_cell_title(cell)}</p></header>',
    ]
    parts.append(_threshold_rows(report, cell))
    messages = cell.get("failures") or []
    if messages:
        parts.append('<ul class="messages">' + "".join(f"<li>{_e(m)}</li>" for m in messages) + "</ul>")
    if cell.get("error"):
        parts.append(f'<pre class="error-text">{_e(cell["error"])}</pre>')
    parts.append(_search_block(cell, pictures))
    parts.append("</article>")
    return "".join(parts)


def _search_table(report: _Report) -> str:
    rows = []
    for cell in report.search:
        search = as_mapping(cell.get("search"))
        outcome = str(cell.get("outcome", "?"))
        pill = {"passed": "pass", "failed": "fail"}.get(outcome, "error")
        level = as_number(cell.get("level"))
        description = _e(search.get("description") or "") or '<span class="na">—</span>'
        rows.append(
            f"<tr><th scope=\"row\">{_e(cell.get('model', '?'))}</th><td>{_e(cell.get('patch', '?'))}</td>"
            f"<td>{_e(level_text(level)) if level is not None else '?'}</td>"
            f"<td>{_e(search.get('metric', '—'))}</td><td>{_num(search.get('value'))}</td>"
            f'<td><span class="pill {pill}">{_e(outcome)}</span></td>'
            f"<td>{description}</td></tr>"
        )
    return (
        '<table class="detail"><thead><tr><th scope="col">Model</th><th scope="col">Patch</th>'
        '<th scope="col">Level</th><th scope="col">Metric</th><th scope="col">Worst value</th>'
        '<th scope="col">Outcome</th><th scope="col">Worst placement found</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table>'
    )


# --------------------------------------------------------------------------------------------
# The page

_CSS = """
:root{--ink:#1b1f24;--muted:#5b6470;--line:#dde2e8;--soft:#f5f7fa;--pass:#2e7d32;--fail:#c62828;
--error:#8d6e00;--accent:#2f6db5}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:#fff}
main{max-width:1180px;margin:0 auto;padding:28px 32px 64px}
h1{font-size:26px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:19px;margin:40px 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:22px 0 8px}
h4{font-size:14px;margin:14px 0 6px}
code,pre{font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 12px;
overflow:auto;white-space:pre-wrap;word-break:break-word;margin:6px 0}
.muted,.na{color:var(--muted)}
header.top{display:flex;gap:24px;align-items:flex-start;justify-content:space-between;flex-wrap:wrap}
.subtitle{color:var(--muted);margin:0}
.verdict{border-radius:10px;padding:12px 22px;font-weight:700;font-size:22px;letter-spacing:.06em;
color:#fff;text-align:center;min-width:150px}
.verdict small{display:block;font-size:11px;letter-spacing:.04em;font-weight:500;opacity:.9}
.verdict.pass{background:var(--pass)}.verdict.fail{background:var(--fail)}.verdict.other{background:#56636f}
.verdict-cell{font-weight:700}.verdict-cell.pass{color:var(--pass)}.verdict-cell.fail,.verdict-cell.error{color:var(--fail)}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:20px 0 4px}
.tile{border:1px solid var(--line);border-radius:8px;padding:10px 14px;background:var(--soft)}
.tile .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.tile .v{font-size:22px;font-weight:650}
.tile.pass .v{color:var(--pass)}.tile.fail .v{color:var(--fail)}.tile.error .v{color:var(--error)}
.tile .v.small{font-size:15px;font-weight:600;word-break:break-all}
nav.toc{margin:16px 0 0;font-size:13px}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:16px}
nav.toc a:hover{text-decoration:underline}
.note{color:var(--muted);max-width:900px}
figure{margin:0}
.chart-block{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}
svg.chart{max-width:100%;height:auto;background:#fff}
svg.chart .plot{fill:#fff;stroke:none}
svg.chart .grid{stroke:#e7ebf0;stroke-width:1}
svg.chart .axis{stroke:#59626d;stroke-width:1}
svg.chart .tick{fill:#4a525c}
svg.chart .label{fill:#2b3139;font-weight:600}
svg.chart .band{opacity:.14;stroke:none}
svg.chart .series{fill:none;stroke-width:2.5;stroke-linejoin:round;stroke-linecap:round}
svg.chart .pt{stroke:#fff;stroke-width:1.2}
.minimum{stroke:#b3261e;stroke-width:1.6;stroke-dasharray:7 4;fill:none}
.minimum.per-model{stroke-width:1.4}
.min-label{fill:#b3261e;font-weight:600}
.retention{stroke-width:1.6;stroke-dasharray:1.5 3.5;stroke-linecap:round;fill:none}
.fail-mark{fill:none;stroke:var(--fail);stroke-width:2.2}
.search-mark{fill:#fff;stroke-width:2}
.err-mark{fill:var(--error)}
ul.legend{list-style:none;padding:0;margin:6px 0 0;display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px;max-width:760px}
ul.legend li{display:flex;align-items:center;gap:6px}
.small-multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px 18px;margin-top:10px}
.small-multiples figcaption{font-weight:600;font-size:13px}
details{margin:12px 0}
summary{cursor:pointer;color:var(--accent);font-weight:600}
table{border-collapse:collapse;margin:8px 0}
th,td{padding:6px 10px;text-align:left;vertical-align:top}
thead th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);border-bottom:2px solid var(--line)}
table.detail td,table.detail th[scope=row],table.cards td,table.cards th[scope=row]{border-bottom:1px solid var(--line)}
table.records{font-size:12px;margin:0}table.records th,table.records td{padding:2px 8px;border-bottom:1px solid var(--line)}
table.records thead th{font-size:11px}
caption{text-align:left;font-weight:600;padding:4px 0 6px;color:var(--ink)}
table.heatmap td,table.heatmap thead th{text-align:center;min-width:74px}
table.heatmap td{border:2px solid #fff;font-variant-numeric:tabular-nums;font-weight:600;position:relative}
table.heatmap td.fail{outline:2.5px solid var(--fail);outline-offset:-3px}
table.heatmap td .x{margin-left:4px;color:var(--fail);background:#fff;border-radius:8px;padding:0 4px;font-size:11px}
table.heatmap td.error{background:#fff4d6;color:var(--error)}
table.heatmap td.missing{color:var(--muted);background:var(--soft)}
table.heatmap th[scope=row]{white-space:nowrap}
.heat-scale{display:flex;align-items:center;gap:8px;font-size:12px;color:var(--muted);margin:2px 0 8px}
.heat-scale span.bar{display:inline-block;width:160px;height:10px;border-radius:3px}
.pill{display:inline-block;border-radius:999px;padding:1px 10px;font-size:12px;font-weight:600;color:#fff}
.pill.pass{background:var(--pass)}.pill.fail{background:var(--fail)}.pill.error{background:var(--error)}
article.failure{border:1px solid var(--line);border-left:5px solid var(--fail);border-radius:8px;
padding:10px 16px 12px;margin:14px 0;background:#fff}
article.failure.error{border-left-color:var(--error)}
article.failure header{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
article.failure h3{margin:4px 0;font-size:15px}
article.failure .meta{margin:0;color:var(--muted);width:100%}
ul.messages{margin:8px 0;padding-left:20px}
ul.messages li{color:#7f1d1d}
.search-detail{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap;margin-top:8px}
figure.mask img{display:block;width:192px;height:auto;image-rendering:pixelated;border:1px solid var(--line);
border-radius:4px;background:#000}
figure.mask figcaption{font-size:12px;color:var(--muted);max-width:220px;word-break:break-all}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:6px 0}
dl.kv dt{color:var(--muted)}
dl.kv dd{margin:0;word-break:break-word}
dl.kv.nested{margin:0}
code.hash{word-break:break-all}
.cards-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:16px}
.card{border:1px solid var(--line);border-radius:8px;padding:6px 16px 12px;background:#fff}
.card h3{margin-top:10px}
.scroll{overflow-x:auto}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:8px}
footer{margin-top:48px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:10px}
@media print{main{padding:0}details{display:block}h2{break-after:avoid}article.failure,figure{break-inside:avoid}}
"""


def _gate(config: Mapping) -> object:
    """The gate mode: ``config.gate``, or ``config.thresholds.gate`` as the plugin records it."""
    if config.get("gate") is not None:
        return config.get("gate")
    return as_mapping(config.get("thresholds")).get("gate")


def _gate_text(gate: object) -> str:
    if gate == "point":
        return "point estimate ≥ threshold"
    if isinstance(gate, str) and gate.replace("-", "_") in ("lower_bound", "lower", "ci", "interval"):
        return "lower confidence bound ≥ threshold"
    return str(gate) if gate is not None else "—"


def _header(report: _Report) -> str:
    results = report.results
    dataset = as_mapping(results.get("dataset"))
    tool = as_mapping(results.get("tool"))
    verdict = report.verdict
    verdict_class = {"pass": "pass", "fail": "fail", "error": "fail"}.get(verdict, "other")
    sub = []
    if dataset.get("name") is not None:
        sub.append(f"dataset <b>{_e(dataset['name'])}</b>")
    if dataset.get("n_images") is not None:
        sub.append(f"{_num(dataset['n_images'], 0)} images")
    sub.append(f"{len(report.models)} model{'s' if len(report.models) != 1 else ''}")
    if results.get("created"):
        sub.append(f"created {_e(results['created'])}")
    if tool:
        sub.append(f"{_e(tool.get('name', 'pytest-medrobust'))} {_e(tool.get('version', ''))}")
    total = len(report.cells)
    tiles = [
        ("Cells", _num(total, 0), ""),
        ("Passed", _num(report.passed, 0), "pass"),
        ("Failed", _num(report.failed, 0), "fail" if report.failed else ""),
        ("Errors", _num(report.errors, 0), "error" if report.errors else ""),
    ]
    tile_html = "".join(
        f'<div class="tile {cls}" data-tile="{_e(k.lower())}"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>'
        for k, v, cls in tiles
    )
    tile_html += (
        f'<div class="tile"><div class="k">Primary metric</div><div class="v small">{_e(report.primary or "—")}</div></div>'
        f'<div class="tile"><div class="k">Gate</div><div class="v small">{_e(_gate_text(_gate(report.config)))}</div></div>'
    )
    return (
        '<header class="top"><div><h1>Occlusion robustness report</h1>'
        f'<p class="subtitle">{" · ".join(sub)}</p></div>'
        f'<div class="verdict {verdict_class}" data-verdict="{_e(verdict)}"><small>VERDICT</small>{_e(verdict.upper())}</div>'
        f'</header><div class="tiles">{tile_html}</div>'
    )


def _curves(report: _Report) -> str:
    primary = report.chart_primary  # None exactly when there are no metrics
    if not report.patches or not report.metrics or primary is None:
        return '<p class="muted">No metrics to plot.</p>'
    out = [
        '<p class="note">Each line is one model: the measured metric at each occlusion level, with its '
        f"bootstrap {_e(report.confidence_text)} as a shaded band. The red dashed line is the minimum "
        "threshold (the larger of min and the above-chance floor); a dotted line in a model's colour is its "
        "retention threshold (clean value × r). "
        "Ringed points failed the gate. Hover a point for its exact value.</p>"
    ]
    for p_index, patch in enumerate(report.patches):
        out.append(f'<section class="patch" id="curves-{p_index}"><h3>Patch type: <code>{_e(patch)}</code></h3>')
        out.append(
            f'<div class="chart-block"><figure><figcaption class="muted">{_e(primary)} · {_e(_metric_text(primary))}'
            f" (primary metric)</figcaption>{_chart(report, patch, primary, compact=False)}"
            f"{_legend(report, patch)}</figure></div>"
        )
        others = [m for m in report.metrics if m != primary]
        if others:
            out.append(
                f"<details><summary>All Recall@k metrics for {_e(patch)} ({len(others)} more)</summary>"
                '<div class="small-multiples">'
            )
            for metric in others:
                out.append(
                    f'<figure><figcaption>{_e(metric)} <span class="muted">· {_e(_metric_text(metric))}</span>'
                    f"</figcaption>{_chart(report, patch, metric, compact=True)}</figure>"
                )
            out.append("</div></details>")
        out.append("</section>")
    return "".join(out)


def _heatmaps(report: _Report) -> str:
    primary = report.chart_primary  # None exactly when there are no metrics
    if not report.patches or not report.metrics or not report.grid or primary is None:
        return '<p class="muted">No grid cells.</p>'
    stops = ", ".join(f"{_heat(v)[0]} {v * 100:.0f}%" for v in (0.0, 0.25, 0.5, 0.75, 1.0))
    out = [
        '<div class="heat-scale">0.0<span class="bar" style="background:linear-gradient(90deg, '
        f'{stops})"></span>1.0 · outlined ✕ = failed cell</div>'
    ]
    for patch in report.patches:
        out.append(f'<h3>Patch type: <code>{_e(patch)}</code></h3><div class="scroll">{_heatmap(report, patch, primary)}</div>')
        others = [m for m in report.metrics if m != primary]
        if others:
            out.append(f"<details><summary>Other metrics for {_e(patch)}</summary>")
            out.extend(f'<div class="scroll">{_heatmap(report, patch, m)}</div>' for m in others)
            out.append("</details>")
    return "".join(out)


def _model_verdicts(results: Mapping) -> str:
    """One row per model: verdict, robustness score, cells passed; then the paired comparisons."""
    rows = []
    for summary in results.get("model_summaries") or []:
        if not isinstance(summary, Mapping):
            continue
        verdict = str(summary.get("verdict", "?"))
        occluded = as_mapping(summary.get("occluded_cells"))
        worst = as_mapping(summary.get("worst_cell"))
        failures = "".join(f"<div class=\"muted\">{_e(f)}</div>" for f in summary.get("failures") or [])
        rows.append(
            f'<tr data-model="{_e(summary.get("model"))}" data-verdict="{_e(verdict)}">'
            f"<td>{_e(summary.get('model'))}</td>"
            f'<td class="verdict-cell {_e(verdict)}">{_e(verdict.upper())}{failures}</td>'
            f"<td>{_num(summary.get('score'))}</td><td>{_num(summary.get('auc'))}</td>"
            f"<td>{_num(summary.get('mean_retention'))}</td>"
            f"<td>{_num(occluded.get('passed'), 0)} / {_num(occluded.get('total'), 0)}</td>"
            f"<td>{_e(worst.get('id', '—'))} {_num(worst.get('value'))}</td></tr>"
        )
    if not rows:
        return '<p class="muted">No model was measured.</p>'
    table = (
        "<table><thead><tr><th>Model</th><th>Verdict</th><th>Robustness score</th><th>AUC</th>"
        "<th>Mean retention</th><th>Occluded cells passed</th><th>Worst cell</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    statements = "".join(
        f'<li data-comparison="{_e(c.get("a"))}|{_e(c.get("b"))}">{_e(c.get("statement"))}</li>'
        for c in results.get("comparisons") or []
        if isinstance(c, Mapping)
    )
    if statements:
        table += (
            f"<p>Paired bootstrap over the same queries ({_e(as_mapping(results.get('config')).get('primary_metric', ''))}, "
            f"robustness score difference with its interval):</p><ul>{statements}</ul>"
        )
    return table + (
        '<p class="muted">Robustness score: area under retention (occluded / clean) against the occluded share, '
        "divided by the largest level (1 = no loss). AUC: the same area under the metric itself.</p>"
    )


def render_html(
    results: Mapping[str, Any],
    *,
    pictures: Mapping[str, bytes] | None = None,
    extra_sections: Iterable[tuple[str, str]] = (),
) -> str:
    """The whole report as one self-contained HTML page.

    ``results`` is the results dictionary (``reports/medrobust.json``); ``pictures`` maps a
    search cell's ``search.picture`` path to the image's bytes (see :func:`collect_pictures`),
    which are embedded as ``data:`` URIs. Missing or partial entries (error cells without
    metrics, no search cells, a single level or model) render as such instead of failing.
    """
    report = _Report(results)
    pictures = pictures or {}
    failing = [c for c in report.cells if c.get("outcome") in ("failed", "error")]
    dataset = as_mapping(results.get("dataset"))
    environment = dict(as_mapping(results.get("environment")))
    if "seed" in results:
        environment = {"seed": results.get("seed"), **environment}

    sections = [
        ("models", "Verdict per model", _model_verdicts(results)),
        ("curves", "Robustness curves", _curves(report)),
        ("heatmaps", "Heatmaps", _heatmaps(report)),
    ]
    if failing:
        body = "".join(_failure(report, c, pictures, i) for i, c in enumerate(failing))
        sections.append(("failures", f"Failing cells ({len(failing)})", body))
    else:
        sections.append(("failures", "Failing cells", '<p class="muted">No cell failed.</p>'))
    if report.search:
        sections.append(("search", "Worst-case placement search", _search_table(report)))
    cards = (
        '<div class="cards-grid">'
        f'<div class="card"><h3>Dataset</h3>{_dl(dataset, mono=("sha256",))}</div>'
        f'<div class="card"><h3>Environment</h3>{_dl(environment)}</div>'
        f'<div class="card"><h3>Configuration</h3>{_dl(report.config)}</div>'
        f"</div><h3>Models</h3>{_model_cards(report)}"
    )
    sections.append(("cards", "Dataset, models and environment", cards))
    # From pytest_medrobust_html_sections implementations: trusted HTML, escaped titles.
    sections += [(f"extra-{i}", title, html) for i, (title, html) in enumerate(extra_sections)]

    toc = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    page_title = "Occlusion robustness report"
    if dataset.get("name") is not None:
        page_title += f" · {dataset['name']}"
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>' for sid, title, content in sections)
    tool = as_mapping(results.get("tool"))
    footer = (
        f"<footer>Generated by {_e(tool.get('name', 'pytest-medrobust'))} {_e(tool.get('version', ''))}"
        f" · results schema {_e(results.get('schema', '?'))}. Self-contained page: no scripts, no network.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(page_title)}</title><style>{_CSS}</style></head><body><main>"
        f'{_header(report)}<nav class="toc">{toc}</nav>{body}{footer}</main></body></html>\n'
    )
