"""The view model of the HTML report: the results dictionary turned into what the page shows.

:func:`build_view` reads the results (tolerant of missing or hand-edited entries, see
:mod:`.values`) and returns plain data for the templates: numbers as :class:`Num` (rounded text
plus the exact JSON value), the compact per-patch tables, the failures grouped per model and
ordered worst first, the charts (:mod:`.charts`), the picture gallery and the optional sections.
Nothing here produces HTML: the templates do, with autoescape on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..gate import lower_is_better
from . import charts
from .values import as_mapping, as_number, level_key, level_text, unique

__all__ = ["Num", "Report", "build_view", "metric_order", "required", "failing_metrics", "read_picture"]

# Categorical palette for models (chosen for contrast on white and between neighbours).
PALETTE = ("#2f6db5", "#e07b28", "#2f9a62", "#c43d5a", "#7b58a8", "#8a6a3c", "#cf6fb8", "#56636f", "#aa9a12", "#1f9fb4")
# Dash patterns that tell models apart once the palette repeats.
DASHES = ("", "7 3", "2 3", "9 3 2 3")
# Sequential scale for the compact tables, from the lowest shown value to the highest.
HEAT_STOPS = ((0.0, (250, 246, 240)), (0.5, (142, 182, 214)), (1.0, (26, 72, 122)))

_RECALL = re.compile(r"^(?P<direction>.+)_R@(?P<k>\d+)$")
_DIRECTION_ORDER = {"i2t_unique": 0, "i2t": 1, "t2i": 2}
_DIRECTION_TEXT = {
    "i2t_unique": "image → unique report",
    "i2t": "image → report (paired)",
    "t2i": "report → image (paired)",
}
_OUTCOMES = ("passed", "failed", "error")


@dataclass(frozen=True)
class Num:
    """A shown number: ``text`` rounded, ``exact`` the JSON value (``repr`` of the float)."""

    text: str
    exact: str
    note: str = ""

    @property
    def title(self) -> str:
        return self.exact + (f" · {self.note}" if self.note else "")


def fmt(value: object, digits: int | None = 3) -> str:
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


def num(value: object, digits: int | None = 3, note: str = "") -> Num | str | None:
    """A :class:`Num` for a finite number; the value as text otherwise (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if as_number(value) is None:
        return "n/a"
    return Num(fmt(value, digits), charts.exact(value), note)


def metric_order(metrics: Iterable[str], primary: str | None = None) -> list[str]:
    """Recall metrics in display order: the primary one first, then by direction and k."""

    def key(name: str) -> tuple[int, str, int]:
        match = _RECALL.match(name)
        assert match
        return (_DIRECTION_ORDER.get(match["direction"], 9), match["direction"], int(match["k"]))

    recalls = sorted({m for m in metrics if _RECALL.match(m)}, key=key)
    if primary is not None and primary in recalls:
        recalls.remove(primary)
        recalls.insert(0, primary)
    return recalls


def metric_text(metric: str) -> str:
    match = _RECALL.match(metric)
    if not match:
        return metric
    return f"Recall@{match['k']}, {_DIRECTION_TEXT.get(match['direction'], match['direction'])}"


def required(threshold: Mapping, metric: str = "") -> tuple[float | None, float | None]:
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


def failing_metrics(cell: Mapping, primary: str | None) -> set[str]:
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


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    red, green, blue = (int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))
    return red, green, blue


def heat(t: float) -> tuple[str, str]:
    """Background and text colour at ``t`` in [0, 1] of the sequential scale."""
    t = min(1.0, max(0.0, t))
    rgb = HEAT_STOPS[-1][1]
    for (p0, c0), (p1, c1) in zip(HEAT_STOPS, HEAT_STOPS[1:], strict=False):  # consecutive pairs
        if t <= p1:
            rgb = _mix(c0, c1, (t - p0) / (p1 - p0))
            break
    luminance = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255.0
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if luminance < 0.55 else "#1b1f24")


def picture_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def read_picture(root: str | Path, name: object) -> bytes | None:
    """The bytes of the picture ``name`` (a path relative to ``root``), or None when it is not a
    file there. A path leaving ``root`` (absolute, ``..``, a symlink out) is never read, so a
    tampered results file cannot make the report embed arbitrary files."""
    if not isinstance(name, str) or not name:
        return None
    base = Path(root).resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path.read_bytes()


class Report:
    """Lookups over the results dictionary, tolerant of missing or partial entries."""

    def __init__(self, results: Mapping[str, Any]):
        self.results = results
        self.config: Mapping[str, Any] = as_mapping(results.get("config"))
        self.cells = [c for c in (results.get("cells") or []) if isinstance(c, Mapping)]
        self.grid = [c for c in self.cells if c.get("kind", "grid") != "search"]
        self.search = [c for c in self.cells if c.get("kind") == "search"]

        self.model_cards: Mapping[str, Any] = as_mapping(results.get("models"))
        self.models = unique([*self.model_cards.keys(), *(c.get("model") for c in self.cells)])
        self.model_index = {m: i for i, m in enumerate(self.models)}

        config_patches = self.config.get("patches")
        self.patches = unique([*(config_patches if isinstance(config_patches, list) else []),
                               *(c.get("patch") for c in self.cells)])
        levels = self.config.get("levels")
        keys = {level_key(v) for v in [*(levels if isinstance(levels, list) else []), *(c.get("level") for c in self.grid)]}
        self.levels = sorted(k for k in keys if k is not None)

        # Keyed by (model, patch, level key) as found in the JSON; a cell without a numeric level
        # is stored under None and never looked up.
        self.lookup: dict[tuple[object, object, float | None], Mapping[str, Any]] = {}
        for cell in self.grid:
            self.lookup.setdefault((cell.get("model"), cell.get("patch"), level_key(cell.get("level"))), cell)
        self.search_lookup: dict[tuple[object, object, float | None], list[Mapping[str, Any]]] = {}
        for cell in self.search:
            self.search_lookup.setdefault((cell.get("model"), cell.get("patch"), level_key(cell.get("level"))), []).append(cell)

        metrics = {name for c in self.cells for name, v in as_mapping(c.get("metrics")).items() if as_number(v) is not None}
        primary = self.config.get("primary_metric")
        self.primary = primary if isinstance(primary, str) and primary else None
        recall_primary = {self.primary} if self.primary and _RECALL.match(self.primary) else set()
        self.metrics = metric_order(metrics | recall_primary, self.primary)
        if self.primary is None and self.metrics:
            self.primary = self.metrics[0]
        # Charts and tables show recalls (0..1); a rank primary metric falls back to the first recall.
        self.chart_primary = self.primary if self.primary in self.metrics else (self.metrics[0] if self.metrics else None)
        # Gated metrics: those with a threshold in some cell, shown unfolded.
        gated = {m for c in self.grid for m in as_mapping(c.get("thresholds"))}
        self.gated = [m for m in self.metrics if m in gated or m == self.chart_primary]

        confidence = as_number(as_mapping(self.config.get("bootstrap")).get("confidence"))
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
        self._failing: dict[int, set[str]] = {}

    # The chart source protocol (see charts.ChartSource).
    def colour(self, model: object) -> str:
        return PALETTE[self.model_index.get(model, 0) % len(PALETTE)]

    def dash(self, model: object) -> str:
        return DASHES[(self.model_index.get(model, 0) // len(PALETTE)) % len(DASHES)]

    def cell(self, model: object, patch: object, level: float) -> Mapping[str, Any] | None:
        return self.lookup.get((model, patch, level))

    def failing(self, cell: Mapping[str, Any]) -> set[str]:
        key = id(cell)
        if key not in self._failing:
            self._failing[key] = failing_metrics(cell, self.primary)
        return self._failing[key]

    def interval(self, cell: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
        return _interval(cell, metric)

    def required(self, cell: Mapping[str, Any], metric: str) -> tuple[float | None, float | None]:
        return required(as_mapping(as_mapping(cell.get("thresholds")).get(metric)), metric)

    def shortfall(self, cell: Mapping[str, Any]) -> float:
        """How far a failed cell is below what its gate needs: the largest gap, over its failing
        metrics, between the required value and the gated one (its lower bound under the
        "lower" gate). Error cells come first (infinite); a failure with no numbers last (0)."""
        if cell.get("outcome") == "error":
            return float("inf")
        metrics = as_mapping(cell.get("metrics"))
        search = as_mapping(cell.get("search"))
        worst = 0.0
        for metric in self.failing(cell):
            row = as_mapping(as_mapping(cell.get("thresholds")).get(metric))
            value = as_number(metrics.get(metric))
            if value is None and search.get("metric") == metric:
                value = as_number(search.get("value"))
            gated = as_number(row.get("lower_bound"))
            gated = value if gated is None else gated
            if gated is None:
                continue
            minimum, needed = required(row, metric)
            if lower_is_better(metric):
                maximum = as_number(row.get("max"))
                gaps = [gated - v for v in (maximum, needed) if v is not None]
            else:
                gaps = [v - gated for v in (minimum, needed) if v is not None]
            worst = max([worst, *gaps])
        return worst


def _count(value: object, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def outcome_of(cell: Mapping[str, Any]) -> str:
    outcome = cell.get("outcome")
    return outcome if outcome in _OUTCOMES else "skipped"


# --------------------------------------------------------------------------------------------
# Sections


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


def _header(report: Report) -> dict[str, Any]:
    results = report.results
    dataset = as_mapping(results.get("dataset"))
    tool = as_mapping(results.get("tool"))
    return {
        "dataset": dataset.get("name"),
        "n_images": num(dataset.get("n_images"), 0),
        "n_models": len(report.models),
        "created": results.get("created"),
        "tool": f"{tool.get('name', 'pytest-medrobust')} {tool.get('version', '')}".strip() if tool else None,
        "verdict": report.verdict,
        "verdict_class": {"pass": "pass", "fail": "fail", "error": "fail"}.get(report.verdict, "other"),
        "tiles": [
            ("cells", "Cells", num(len(report.cells), 0), ""),
            ("passed", "Passed", num(report.passed, 0), "pass"),
            ("failed", "Failed", num(report.failed, 0), "fail" if report.failed else ""),
            ("errors", "Errors", num(report.errors, 0), "error" if report.errors else ""),
        ],
        "primary": report.primary or "—",
        "gate": _gate_text(_gate(report.config)),
    }


def _model_verdicts(report: Report) -> dict[str, Any]:
    """One card per model (verdict, robustness score, cells passed), then the paired comparisons."""
    cards = []
    for summary in report.results.get("model_summaries") or []:
        if not isinstance(summary, Mapping):
            continue
        occluded = as_mapping(summary.get("occluded_cells"))
        worst = as_mapping(summary.get("worst_cell"))
        per_patch = as_mapping(summary.get("score_per_patch"))
        cards.append({
            "model": str(summary.get("model")),
            "colour": report.colour(summary.get("model")),
            "verdict": str(summary.get("verdict", "?")),
            "score": num(summary.get("score")),
            "auc": num(summary.get("auc")),
            "mean_retention": num(summary.get("mean_retention")),
            "occluded_passed": num(occluded.get("passed"), 0),
            "occluded_total": num(occluded.get("total"), 0),
            "search_passed": num(as_mapping(summary.get("search_cells")).get("passed"), 0),
            "search_total": num(as_mapping(summary.get("search_cells")).get("total"), 0),
            "worst_id": worst.get("id"),
            "worst_value": num(worst.get("value")),
            "per_patch": [(str(p), num(v)) for p, v in per_patch.items()],
            "failures": [str(f) for f in summary.get("failures") or []],
        })
    comparisons = [
        {"a": c.get("a"), "b": c.get("b"), "statement": c.get("statement")}
        for c in report.results.get("comparisons") or []
        if isinstance(c, Mapping)
    ]
    return {"cards": cards, "comparisons": comparisons, "metric": report.config.get("primary_metric", "")}


def short_metric(metric: str) -> str:
    """A recall's name short enough for a table cell: ``uR@5`` (i2t_unique), ``i2t@5``, ``t2i@5``."""
    match = _RECALL.match(metric)
    if not match:
        return metric
    direction = "u" if match["direction"] == "i2t_unique" else match["direction"]
    return f"{direction}R@{match['k']}" if direction == "u" else f"{direction}@{match['k']}"


def _fitted_range(report: Report, metric: str) -> tuple[float, float] | None:
    """The lowest and highest value of ``metric`` over the grid cells (None: no cell has it)."""
    values = [v for c in report.grid if (v := as_number(as_mapping(c.get("metrics")).get(metric))) is not None]
    return (min(values), max(values)) if values else None


def _fitted_heat(value: float, low: float, high: float) -> tuple[str, str]:
    """Background and ink of ``value`` on the heat scale stretched over [low, high]."""
    return heat((value - low) / (high - low) if high > low else 0.5)


def _model_rows(report: Report, patch: str) -> Iterator[tuple[str, list[Mapping[str, Any] | None]]]:
    """``(model, its cell at every grid level)`` for each model with a cell of ``patch``."""
    for model in report.models:
        cells = [report.cell(model, patch, lv) for lv in report.levels]
        if any(cells):
            yield model, cells


def _compact_tables(report: Report) -> dict[str, Any]:
    """One table per patch type: a row per model, a column per level, the primary metric shown,
    every failing metric of the cell listed; colours fitted to the range of the shown values."""
    metric = report.chart_primary
    if metric is None or not report.grid:
        return {"tables": [], "metric": metric}
    low, high = _fitted_range(report, metric) or (0.0, 1.0)

    def searched(model: object, patch: object, level: float | None) -> list[dict[str, Any]]:
        """The search cells of one table cell: the worst value found, the outcome."""
        out = []
        for cell in report.search_lookup.get((model, patch, level), []):
            search = as_mapping(cell.get("search"))
            note = f"worst-case placement search: {search.get('metric', metric)} = {fmt(search.get('value'))}"
            out.append({"id": str(cell.get("id", "")), "outcome": outcome_of(cell), "level": _level(cell),
                        "value": num(search.get("value"), 3, note) if as_number(search.get("value")) is not None else None})
        return out

    tables = []
    for patch in report.patches:
        rows = []
        for model, cells in _model_rows(report, patch):
            row: list[dict[str, Any]] = []
            for level, cell in zip(report.levels, cells, strict=True):
                if cell is None:
                    row.append({"missing": True, "search": searched(model, patch, level)})
                    continue
                value = as_number(as_mapping(cell.get("metrics")).get(metric))
                failing = metric_order(report.failing(cell), metric) + sorted(
                    m for m in report.failing(cell) if not _RECALL.match(m))
                notes = [f"{model} · {level_text(level)}"]
                interval = report.interval(cell, metric)
                if interval is not None:
                    notes.append(f"{report.confidence_text} {fmt(interval[0])}–{fmt(interval[1])}")
                minimum, needed = report.required(cell, metric)
                if minimum is not None:
                    notes.append(f"min {fmt(minimum)}")
                if needed is not None:
                    notes.append(f"retention needs {fmt(needed)}")
                notes.extend(str(m) for m in cell.get("failures") or [])
                background, ink = _fitted_heat(value, low, high) if value is not None else ("", "")
                row.append({
                    "id": str(cell.get("id", "")),
                    "outcome": outcome_of(cell),
                    "value": num(value, 3, " · ".join(notes)) if value is not None else None,
                    "error": str(cell.get("error") or "error") if cell.get("outcome") == "error" else None,
                    "failing": [{"name": m, "short": short_metric(m)} for m in failing],
                    "background": background, "ink": ink,
                    "search": searched(model, patch, level),
                })
            rows.append({"model": model, "colour": report.colour(model), "cells": row})
        # Search cells at a level the grid does not have are listed under the table.
        extra = [s for key, found in report.search_lookup.items() if key[1] == patch and key[2] not in report.levels
                 for s in searched(*key)]
        if rows or extra:
            tables.append({"patch": patch, "rows": rows, "extra_search": extra})
    stops = ", ".join(f"{heat(t)[0]} {t * 100:.0f}%" for t in (0.0, 0.25, 0.5, 0.75, 1.0))
    return {"tables": tables, "metric": metric, "metric_text": metric_text(metric), "low": fmt(low), "high": fmt(high),
            "gradient": f"linear-gradient(90deg, {stops})",
            "levels": [{"text": level_text(lv), "exact": charts.exact(lv), "clean": lv == 0} for lv in report.levels]}


def _other_tables(report: Report) -> list[dict[str, Any]]:
    """Every other recall, per patch type (folded in the page), with the same fitted colours."""
    out = []
    for metric in report.metrics:
        if metric == report.chart_primary:
            continue
        fitted = _fitted_range(report, metric)
        if fitted is None:
            continue
        low, high = fitted
        for patch in report.patches:
            rows = []
            for model, cells in _model_rows(report, patch):
                row: list[dict[str, Any] | None] = []
                for cell in cells:
                    value = as_number(as_mapping(cell.get("metrics")).get(metric)) if cell else None
                    if value is None:
                        row.append(None)
                        continue
                    background, ink = _fitted_heat(value, low, high)
                    row.append({"value": num(value), "failing": cell is not None and metric in report.failing(cell),
                                "background": background, "ink": ink})
                rows.append({"model": model, "cells": row})
            if rows:
                out.append({"metric": metric, "patch": patch, "rows": rows})
    return out


def _threshold_table(report: Report, cell: Mapping[str, Any]) -> dict[str, Any] | None:
    metrics = as_mapping(cell.get("metrics"))
    thresholds = as_mapping(cell.get("thresholds"))
    failing = report.failing(cell)
    search = as_mapping(cell.get("search"))
    names = [*thresholds.keys(), *(m for m in sorted(failing) if m not in thresholds)]
    if not names:
        return None
    columns = ["Metric", "Measured", report.confidence_text, "Lower bound", "Min", "Max", "Retention needs",
               "Retained", "Status"]
    rows: list[list[Any]] = []
    for metric in names:
        threshold = as_mapping(thresholds.get(metric))
        value = metrics.get(metric)
        if value is None and search.get("metric") == metric:
            value = search.get("value")
        minimum, needed = required(threshold, metric)
        interval = report.interval(cell, metric)
        retention = None
        if needed is not None:
            retention = {"bound": "≤" if lower_is_better(metric) else "≥", "needed": num(needed),
                         "clean": num(threshold.get("clean")), "op": "÷" if lower_is_better(metric) else "×",
                         "r": num(threshold.get("retention"), 2)}
        elif threshold.get("retention") is not None:
            retention = {"r": num(threshold.get("retention"), 2)}
        rows.append([
            metric,
            num(value),
            (num(interval[0]), num(interval[1])) if interval else None,
            num(threshold.get("lower_bound")),
            num(minimum) if minimum is not None else None,
            num(threshold.get("max")),
            retention,
            num(threshold.get("ratio")),
            metric in failing,
        ])
    # Leave out the columns no row fills (e.g. no "max" limit, no interval on a search cell).
    keep = [j for j in range(len(columns)) if j in (0, 1, 8) or any(row[j] is not None for row in rows)]
    return {"columns": [(j, columns[j]) for j in keep], "rows": [[(j, row[j]) for j in keep] for row in rows]}


class Pictures:
    """Every picture shown in the page, once: an id per distinct image and its ``data:`` URI."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._by_digest: dict[str, dict[str, Any]] = {}

    def add(self, data: bytes, caption: str, alt: str, home: str, order: tuple = ()) -> dict[str, Any]:
        """The picture's entry; ``home`` is the section that shows it (the first to add it)."""
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._by_digest:
            uri = f"data:{picture_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
            item = {"id": f"pic-{len(self.items)}", "uri": uri, "caption": caption, "alt": alt, "home": home,
                    "order": order}
            self.items.append(item)
            self._by_digest[digest] = item
        return self._by_digest[digest]


def _inline_picture(search: Mapping) -> bytes | None:
    """A picture carried in the results themselves (``search.picture_png_base64``)."""
    text = search.get("picture_png_base64")
    if not isinstance(text, str) or not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return None


def _search_detail(
    cell: Mapping[str, Any], pictures: Mapping[str, bytes], shown: Pictures, order: tuple = ()
) -> dict[str, Any] | None:
    search = cell.get("search")
    if not isinstance(search, Mapping):
        return None
    name = search.get("picture")
    inline = _inline_picture(search)
    picture, missing = None, None
    if inline is not None or (isinstance(name, str) and name):
        label = name if isinstance(name, str) and name else "(embedded in the results)"
        data = pictures.get(label) or inline
        if data:
            picture = shown.add(data, f"{cell.get('model')} · {cell.get('patch')} · {_level(cell)}: "
                                      "minimal failing mask", f"minimal failing mask: {label}", "gallery", order)
        else:
            missing = label
    skip = {"placement", "description", "metric", "value", "replay", "picture", "picture_png_base64"}
    extra = [(str(k), _value(v)) for k, v in search.items() if k not in skip and v is not None]
    placement = search.get("placement")
    return {
        "description": search.get("description"),
        "metric": search.get("metric"),
        "value": num(search.get("value")),
        "replay": search.get("replay"),
        "placement": json.dumps(placement, indent=2, ensure_ascii=False, default=str) if placement is not None else None,
        "picture": picture,
        "missing": missing,
        "extra": extra,
    }


def _level(cell: Mapping[str, Any]) -> str:
    level = as_number(cell.get("level"))
    return level_text(level) if level is not None else "?"


def _failures(report: Report, pictures: Mapping[str, bytes], shown: Pictures) -> list[dict[str, Any]]:
    """Failed and errored cells grouped per model (models in report order), worst first."""
    groups = []
    for model in [*report.models, None]:
        cells = [c for c in report.cells if c.get("outcome") in ("failed", "error")
                 and (c.get("model") == model if model is not None else c.get("model") not in report.models)]
        if not cells:
            continue
        # Worst first; ties keep the results' order (sorted is stable).
        ranked = sorted(cells, key=lambda c: -report.shortfall(c))
        entries = []
        for cell in ranked:
            gap = report.shortfall(cell)
            entries.append({
                "id": str(cell.get("id", "(no id)")),
                "outcome": "error" if cell.get("outcome") == "error" else "failed",
                "kind": str(cell.get("kind", "grid")),
                "patch": str(cell.get("patch", "?")),
                "level": _level(cell),
                "failing": sorted(report.failing(cell)),
                "shortfall": num(gap) if gap != float("inf") else None,
                "n_images": num(cell.get("n_images"), 0),
                "duration": num(cell.get("duration_s"), 1),
                "table": _threshold_table(report, cell),
                "messages": [_without_id(str(m), cell.get("id")) for m in cell.get("failures") or []],
                "error": str(cell["error"]) if cell.get("error") else None,
                "search": _search_detail(cell, pictures, shown, _order(report, cell)),
            })
        groups.append({"model": "(no model)" if model is None else model,
                       "colour": report.colour(model), "entries": entries,
                       "errors": sum(e["outcome"] == "error" for e in entries)})
    return groups


def _without_id(message: str, cell_id: object) -> str:
    """A failure message without the ``<cell id>: `` it starts with (the entry names the cell)."""
    prefix = f"{cell_id}: "
    return message[len(prefix):] if isinstance(cell_id, str) and message.startswith(prefix) else message


def _search_table(report: Report) -> list[dict[str, Any]]:
    rows = []
    for cell in report.search:
        search = as_mapping(cell.get("search"))
        outcome = str(cell.get("outcome", "?"))
        rows.append({"model": cell.get("model", "?"), "patch": cell.get("patch", "?"), "level": _level(cell),
                     "metric": search.get("metric", "—"), "value": num(search.get("value")), "outcome": outcome,
                     "pill": {"passed": "pass", "failed": "fail"}.get(outcome, "error"),
                     "description": search.get("description")})
    return rows


def _gallery(report: Report, pictures: Mapping[str, bytes], shown: Pictures, root: Path | None = None) -> dict[str, Any]:
    """The gallery: one example picture per patch type (rows) and level (columns), then the
    pictures of the search cells (their minimal failing masks) by patch type, level and model.
    Empty when there is nothing to show or say."""
    for cell in report.search:  # a search cell that did not fail is not in the failures
        _search_detail(cell, pictures, shown, _order(report, cell))
    masks = sorted((p for p in shown.items if p["home"] == "gallery"), key=lambda p: p["order"])
    examples = _examples(report, pictures, shown, root)
    if not masks and not examples["rows"] and not examples["notes"]:
        return {}
    return {"masks": masks, **examples}


def _examples(report: Report, pictures: Mapping[str, bytes], shown: Pictures, root: Path | None) -> dict[str, Any]:
    """``results["examples"]`` ({patch: {level text: picture path}}, see :mod:`.examples`) as
    rows of pictures under one header of levels; the notes say what has no picture and why."""
    from .examples import REGION_NOTE

    index = as_mapping(report.results.get("examples"))
    notes = [str(n) for n in report.results.get("examples_notes") or [] if n]
    if "examples" not in report.results and report.grid:
        notes.append("no example pictures: these results carry none (written by an earlier version)")
    levels = unique(str(lv) for row in index.values() for lv in as_mapping(row))
    rows = []
    for patch, row in index.items():
        row = as_mapping(row)
        cells: list[dict[str, Any]] = []
        for lv in levels:
            name = row.get(lv)
            if not isinstance(name, str):
                cells.append({"picture": None, "missing": None})
                continue
            data = pictures.get(name) or (read_picture(root, name) if root is not None else None)
            caption = f"{patch} · {lv}"
            cells.append({"picture": shown.add(data, caption, f"example: {caption}", "examples") if data else None,
                          "missing": None if data else name})
        rows.append({"patch": str(patch), "cells": cells})
    regions = REGION_NOTE in notes
    return {"levels": levels, "rows": rows, "notes": [n for n in notes if n != REGION_NOTE], "regions_note": regions}


def _order(report: Report, cell: Mapping[str, Any]) -> tuple:
    patch = cell.get("patch")
    return (report.patches.index(patch) if patch in report.patches else len(report.patches),
            level_key(cell.get("level")) or 0.0, report.model_index.get(str(cell.get("model")), 1 << 30))


def _sensitivity(report: Report, root: Path | None, shown: Pictures) -> list[dict[str, Any]]:
    """The optional ``results["sensitivity"]`` section (where each model looks)."""
    out = []
    for model, entry in as_mapping(report.results.get("sensitivity")).items():
        entry = as_mapping(entry)
        mean = _file_picture(root, entry.get("mean_map"), shown, f"{model}: mean sensitivity map")
        worst = []
        for item in entry.get("worst") or []:
            item = as_mapping(item)
            worst.append({"id": str(item.get("id", "?")), "drop": num(item.get("drop")),
                          "picture": _file_picture(root, item.get("png"), shown, f"{model}: {item.get('id', '?')}"),
                          "path": item.get("png")})
        regions = [(str(name), num(as_mapping(row).get("share_inside")))
                   for name, row in as_mapping(entry.get("regions")).items()]
        out.append({"model": str(model), "colour": report.colour(model), "window": num(entry.get("window"), 0),
                    "stride": num(entry.get("stride"), 0), "n_images": num(entry.get("n_images"), 0),
                    "mean": mean, "mean_path": entry.get("mean_map"), "worst": worst, "regions": regions})
    return out


def _file_picture(root: Path | None, name: object, shown: Pictures, caption: str) -> dict[str, Any] | None:
    data = read_picture(root, name) if root is not None else None
    return shown.add(data, caption, caption, "sensitivity") if data else None


def _regions(report: Report) -> list[dict[str, Any]]:
    """Region probe cells (``record["region"]``): clean and occluded primary metric, the drop."""
    metric = report.primary
    rows = []
    for cell in report.cells:
        region = cell.get("region")
        if not isinstance(region, Mapping):
            continue
        value = as_number(as_mapping(cell.get("metrics")).get(metric)) if metric else None
        clean_cell = report.cell(cell.get("model"), cell.get("patch"), 0.0)
        threshold = as_mapping(as_mapping(cell.get("thresholds")).get(metric))
        clean = as_number(threshold.get("clean"))
        if clean is None and clean_cell is not None and metric:
            clean = as_number(as_mapping(clean_cell.get("metrics")).get(metric))
        drop = clean - value if clean is not None and value is not None else None
        rows.append({"model": cell.get("model", "?"), "region": region.get("name", "?"), "mode": region.get("mode", "?"),
                     "share": num(region.get("occluded_share")), "clean": num(clean), "value": num(value),
                     "drop": num(drop), "outcome": outcome_of(cell), "id": cell.get("id", "")})
    return rows


def _value(value: object) -> dict[str, Any]:
    """Any JSON value as a small tree for the ``value`` template macro."""
    if value is None:
        return {"kind": "none"}
    if isinstance(value, bool):
        return {"kind": "text", "text": "true" if value else "false"}
    if isinstance(value, (int, float)):
        return {"kind": "num", "num": num(value, None)}
    if isinstance(value, str):
        return {"kind": "text", "text": value}
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
        return {"kind": "list", "items": [_value(v) for v in value]}
    if isinstance(value, Mapping):
        return {"kind": "map", "items": [(str(k), _value(v)) for k, v in value.items()],
                "fold": len(value) > 4 or any(isinstance(v, (Mapping, list)) for v in value.values())}
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        keys: list = []
        for row in value:
            keys.extend(k for k in row if k not in keys)
        return {"kind": "records", "keys": [str(k) for k in keys],
                "rows": [[_value(row[k]) if k in row else {"kind": "blank"} for k in keys] for row in value]}
    return {"kind": "code", "text": json.dumps(value, ensure_ascii=False, default=str)}


def _cards(report: Report) -> dict[str, Any]:
    results = report.results
    environment = dict(as_mapping(results.get("environment")))
    if "seed" in results:
        environment = {"seed": results.get("seed"), **environment}
    dataset = as_mapping(results.get("dataset"))
    # One row per card field, one column per model: a long card (paths, a training recipe)
    # grows downwards, never sideways; nested values fold (see _value).
    names = [str(n) for n in report.model_cards]
    keys: list[str] = []
    for card in report.model_cards.values():
        keys.extend(k for k in as_mapping(card) if k != "name" and k not in keys)
    model_rows = []
    for key in keys:
        row = []
        for card in report.model_cards.values():
            card = as_mapping(card)
            value = card.get(key)
            if key not in card:
                row.append({"kind": "blank"})
            elif key == "sha256" and isinstance(value, str):
                row.append({"kind": "hash", "text": f"{value[:12]}…" if len(value) > 12 else value, "full": value})
            elif key == "input_size" and isinstance(value, list):
                row.append({"kind": "text", "text": " × ".join(fmt(v, None) if isinstance(v, (int, float)) else str(v)
                                                               for v in value)})
            else:
                row.append(_value(value))
        model_rows.append((str(key), row))
    models = [{"name": n, "colour": report.colour(n)} for n in names]
    config = dict(report.config)
    thresholds = as_mapping(config.get("thresholds"))
    rules = thresholds.get("rules")
    if isinstance(rules, list) and rules:  # shown as their own table under the configuration
        config["thresholds"] = {k: v for k, v in thresholds.items() if k != "rules"}
    else:
        rules = None
    return {
        "dataset": [(str(k), _value(v), k == "sha256") for k, v in dataset.items()],
        "environment": [(str(k), _value(v), False) for k, v in environment.items()],
        "config": [(str(k), _value(v), False) for k, v in config.items()],
        "rules": _value(rules) if rules else None,
        "models": models,
        "model_rows": model_rows,
    }


def build_view(
    results: Mapping[str, Any],
    pictures: Mapping[str, bytes],
    extra_sections: Iterable[tuple[str, str]],
    root: Path | None,
) -> dict[str, Any]:
    """Everything the page template shows (see the module docstring)."""
    report = Report(results)
    shown = Pictures()
    failures = _failures(report, pictures, shown)
    dataset = as_mapping(results.get("dataset"))
    title = "Occlusion robustness report"
    if dataset.get("name") is not None:
        title += f" · {dataset['name']}"
    chart_metric = report.chart_primary
    curves = []
    if chart_metric is not None:
        for patch in report.patches:
            curves.append({
                "patch": patch,
                "gated": [{"metric": m, "text": metric_text(m), "primary": m == chart_metric,
                           "chart": charts.chart(report, patch, m, compact=False)} for m in report.gated],
                "others": [{"metric": m, "text": metric_text(m), "chart": charts.chart(report, patch, m, compact=True)}
                           for m in report.metrics if m not in report.gated],
                "legend": _legend(report, patch),
            })
    view = {
        "title": title,
        "header": _header(report),
        "verdicts": _model_verdicts(report),
        "compact": _compact_tables(report),
        "others": _other_tables(report),
        "curves": curves,
        "confidence_text": report.confidence_text,
        "failures": failures,
        "n_failures": sum(len(g["entries"]) for g in failures),
        "search": _search_table(report),
        "sensitivity": _sensitivity(report, root, shown),
        "regions": _regions(report),
        "cards": _cards(report),
        "extra": [(f"extra-{i}", str(t), h) for i, (t, h) in enumerate(extra_sections)],
        "warnings": [str(w) for w in results.get("warnings") or [] if w],
        "schema": results.get("schema", "?"),
        "tool": as_mapping(results.get("tool")),
    }
    view["gallery"] = _gallery(report, pictures, shown, root)
    return view


def _legend(report: Report, patch: str) -> dict[str, Any]:
    models = [
        {"model": m, "colour": report.colour(m), "dash": report.dash(m)}
        for m in report.models
        if any(report.cell(m, patch, lv) for lv in report.levels)
        or any(c.get("model") == m and c.get("patch") == patch for c in report.search)
    ]
    return {
        "models": models,
        "failed": any(c.get("outcome") == "failed" and c.get("patch") == patch for c in report.cells),
        "search": any(c.get("patch") == patch for c in report.search),
        "error": any(c.get("outcome") == "error" for c in report.grid if c.get("patch") == patch),
    }
