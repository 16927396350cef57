"""Geometry of the report's SVG charts: one metric against the occlusion level, per patch type.

:func:`chart` computes where every band, line, point and threshold mark goes and returns plain
data (numbers, colours chosen here, and texts taken from the results); the template
``chart.svg.j2`` draws it, so every text is escaped by Jinja's autoescape like the rest of the
page. The y range is fitted to what the chart shows (values, intervals, thresholds, search
results) with a little padding; the models' markers are dodged sideways so that points, rings,
retention marks and search diamonds at one level do not sit on each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .values import as_mapping, as_number, level_text

__all__ = ["chart", "nice_range"]

# Candidate tick steps; the first giving at most MAX_TICKS intervals is used.
_STEPS = (0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
MAX_TICKS = 6


class ChartSource(Protocol):
    """What the chart needs from the view model (see :class:`.view.Report`)."""

    models: list[str]
    levels: list[float]
    search: list[Mapping[str, Any]]
    confidence_text: str

    def colour(self, model: object) -> str: ...
    def dash(self, model: object) -> str: ...
    def cell(self, model: object, patch: object, level: float) -> Mapping[str, Any] | None: ...
    def failing(self, cell: Mapping[str, Any]) -> set[str]: ...
    def interval(self, cell: Mapping[str, Any], metric: str) -> tuple[float, float] | None: ...
    def required(self, cell: Mapping[str, Any], metric: str) -> tuple[float | None, float | None]: ...


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def exact(value: float) -> str:
    """The exact JSON number as text (``repr`` of the float, or the integer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(float(value))


def nice_range(values: Iterable[float], *, bounded: bool) -> tuple[float, float, list[float]]:
    """(low, high, ticks) covering ``values`` with a little padding, on round tick steps.

    ``bounded``: the metric is a share (a recall), so the range stays within [0, 1]."""
    found = [v for v in values if math.isfinite(v)]
    if not found:
        return (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]) if bounded else (0.0, 1.0, [0.0, 0.5, 1.0])
    low, high = min(found), max(found)
    pad = max((high - low) * 0.08, 0.02 if bounded else abs(high) * 0.05 or 0.5)
    low, high = low - pad, high + pad
    if bounded:
        low, high = max(0.0, low), min(1.0, high)
    step = next((s for s in _STEPS if (high - low) / s <= MAX_TICKS), _STEPS[-1])
    low, high = round(math.floor(low / step + 1e-9) * step, 10), round(math.ceil(high / step - 1e-9) * step, 10)
    if high <= low:
        high = low + step
    count = int(round((high - low) / step))
    return low, high, [round(low + i * step, 10) for i in range(count + 1)]


def _tick_text(value: float, ticks: list[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, min(3, -math.floor(math.log10(step) + 1e-9))) if step > 0 else 1
    if step > 0 and abs(round(step, digits) - step) > 1e-9:  # 0.025 needs three
        digits += 1
    return f"{value:.{max(digits, 1)}f}"


def _pts(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def chart(src: ChartSource, patch: str, metric: str, *, compact: bool, bounded: bool = True) -> dict[str, Any]:
    """Everything ``chart.svg.j2`` draws for ``metric`` under ``patch``."""
    width, height = (380, 230) if compact else (480, 270)
    left, right, top, bottom = (46, 12, 10, 38) if compact else (54, 16, 14, 46)
    levels = src.levels
    xmax = max(levels) if levels and max(levels) > 0 else 1.0
    single = len(levels) <= 1
    models = [m for m in src.models if any(src.cell(m, patch, lv) for lv in levels)]
    searched = [c for c in src.search if c.get("patch") == patch and as_mapping(c.get("search")).get("metric") == metric]
    models += [m for m in dict.fromkeys(str(c.get("model")) for c in searched) if m not in models and m in src.models]
    # Sideways offset per model, so that the models' marks at one level stay apart.
    spread = 4.0 if compact else 6.0
    dodge = {m: (i - (len(models) - 1) / 2) * spread for i, m in enumerate(models)}

    # Collect the values first: the y range is fitted to them.
    shown: list[float] = []
    rows: list[tuple[str, float, Mapping[str, Any]]] = []
    for model in models:
        for level in levels:
            cell = src.cell(model, patch, level)
            if cell is None:
                continue
            rows.append((model, level, cell))
            value = as_number(as_mapping(cell.get("metrics")).get(metric))
            if value is not None:
                shown.append(value)
            interval = src.interval(cell, metric)
            if interval is not None:
                shown.extend(interval)
            shown.extend(v for v in src.required(cell, metric) if v is not None)
    for cell in searched:
        value = as_number(as_mapping(cell.get("search")).get("value"))
        if value is not None:
            shown.append(value)
    low, high, ticks = nice_range(shown, bounded=bounded)
    x0, x1, y1, y0 = left, width - right, top, height - bottom

    # Inner margins: room for the dodged marks, and for the search diamonds right of the last level.
    pad_left, pad_right = (10, 22) if compact else (14, 32)

    def x(level: float, model: str | None = None) -> float:
        base = x0 + (x1 - x0) / 2 if single else x0 + pad_left + (x1 - x0 - pad_left - pad_right) * (level / xmax)
        return base + (dodge.get(model, 0.0) if model is not None else 0.0)

    def y(value: float) -> float:
        t = (min(high, max(low, value)) - low) / (high - low)
        return y0 - (y0 - y1) * t

    out: dict[str, Any] = {
        "width": width, "height": height, "compact": compact, "patch": patch, "metric": metric,
        "title": f"{metric} against occlusion level, patch {patch}",
        "plot": {"x": x0, "y": y1, "w": x1 - x0, "h": y0 - y1},
        "x0": x0, "x1": x1, "y0": y0, "y1": y1,
        "yticks": [{"y": round(y(t), 1), "text": _tick_text(t, ticks)} for t in ticks],
        "xticks": [{"x": round(x(lv), 1), "text": level_text(lv), "exact": exact(lv)} for lv in levels],
        "ylabel_y": round((y0 + y1) / 2, 1),
        "bands": [], "series": [], "points": [], "retention": [], "minimum": [], "search": [], "errors": [],
        "clipped": low > 0.0 or high < 1.0,
    }
    minimums: dict[tuple[str, float], float] = {}
    r = 3.0 if compact else 4.0
    for model in models:
        colour = src.colour(model)
        line, upper, lower = [], [], []
        for m, level, cell in rows:
            if m != model:
                continue
            px = x(level, model)
            minimum, required = src.required(cell, metric)
            if minimum is not None:
                minimums[(model, level)] = minimum
            if required is not None:
                half = 5.0 if compact else 7.0
                out["retention"].append({
                    "x1": round(px - half, 1), "x2": round(px + half, 1), "y": round(y(required), 1),
                    "colour": colour, "model": model, "value": exact(required),
                    "tip": f"{model} · {level_text(level)}: retention needs {metric} ≥ {fmt(required)}",
                })
            value = as_number(as_mapping(cell.get("metrics")).get(metric))
            if value is None:
                if cell.get("outcome") == "error":
                    out["errors"].append({
                        "d": f"M{px:.1f},{y0 - 10:.1f} l5,9 h-10 z",
                        "tip": f"{model} · {level_text(level)}: error: {cell.get('error') or 'error'}",
                    })
                continue
            py = y(value)
            line.append((px, py))
            interval = src.interval(cell, metric)
            tip = f"{model} · {patch} · {level_text(level)}: {metric} = {fmt(value)}"
            if interval is not None:
                upper.append((px, y(interval[1])))
                lower.append((px, y(interval[0])))
                tip += f" ({src.confidence_text} {fmt(interval[0])}–{fmt(interval[1])})"
            failing = metric in src.failing(cell)
            if failing:
                tip += " · FAILED"
            out["points"].append({
                "x": round(px, 1), "y": round(py, 1), "r": r, "colour": colour, "model": model,
                "level": exact(level), "value": exact(value), "tip": tip, "failing": failing,
                "ring": r + (3.0 if compact else 4.0),
            })
        if len(upper) >= 2:
            out["bands"].append({"points": _pts(upper + lower[::-1]), "colour": colour})
        elif len(upper) == 1:
            (bx, top_y), (_, bottom_y) = upper[0], lower[0]
            out["bands"].append({"points": _pts([(bx - 5, top_y), (bx + 5, top_y), (bx + 5, bottom_y), (bx - 5, bottom_y)]),
                                 "colour": colour})
        if len(line) >= 2:
            out["series"].append({"points": _pts(line), "colour": colour, "dash": src.dash(model), "model": model})

    distinct = set(minimums.values())
    if len(distinct) == 1:
        value = distinct.pop()
        out["minimum"].append({"points": _pts([(x0, y(value)), (x1, y(value))]), "colour": "", "model": "",
                               "value": exact(value), "tip": f"minimum {metric} = {fmt(value)}",
                               "label": f"minimum {fmt(value, 2)}", "label_y": round(y(value) - 5, 1)})
    else:
        for model in models:
            points = [(x(lv, model), y(v)) for (m, lv), v in sorted(minimums.items()) if m == model]
            if len(points) == 1:
                points = [(points[0][0] - 10, points[0][1]), (points[0][0] + 10, points[0][1])]
            if points:
                out["minimum"].append({"points": _pts(points), "colour": src.colour(model), "model": model,
                                       "value": "", "tip": f"{model}: minimum {metric}", "label": "", "label_y": 0})

    # Worst-case placements from the search: hollow diamonds right of the model's point.
    for cell in searched:
        search = as_mapping(cell.get("search"))
        value, at = as_number(search.get("value")), as_number(cell.get("level"))
        model = str(cell.get("model"))
        if value is None or at is None or not (0 <= at <= xmax) or (single and at not in levels):
            continue
        px, py, size = x(at, model) + (10 if compact else 15), y(value), (4 if compact else 5)
        tip = f"{model} · worst-case placement at {level_text(at)}: {metric} = {fmt(value)}"
        if search.get("description"):
            tip += f" · {search.get('description')}"
        out["search"].append({
            "d": f"M{px:.1f},{py - size:.1f} l{size},{size} l-{size},{size} l-{size},-{size} z",
            "x": round(px, 1), "y": round(py, 1), "ring": size + 3,
            "colour": src.colour(model), "value": exact(value), "tip": tip, "failing": metric in src.failing(cell),
        })
    return out
