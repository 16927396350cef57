"""Thresholds: when a cell's metrics pass the gate.

Three kinds of limit, each settable per model, patch, metric and level:

* ``min``: the metric must be at least this (recalls);
* ``max``: the metric must be at most this (ranks, where lower is better);
* ``retention``: at occluded levels, the metric must keep this share of the same model's clean
  value: ``occluded / clean >= r`` for recalls, ``clean / occluded >= r`` for ranks;
* ``above_chance``: a recall must close this share of the gap between chance and perfect,
  ``(R - chance) / (1 - chance) >= a``, where chance is what a model that ranks at random gets
  (k / candidates). Unlike ``min`` it means the same on 8 or 8,000 candidates: a model at
  chance never passes it, whatever the dataset.

Configuration (``[tool.medrobust.thresholds]``)::

    gate = "point"                            # or "lower": compare the bootstrap lower bound
    min = { "i2t_unique_R@5" = 0.25 }         # defaults for every model, patch and level
    retention = { "i2t_unique_R@5" = 0.5 }
    [[tool.medrobust.thresholds.rules]]       # later rules override earlier ones
    model = "demo-plain"                      # fnmatch patterns; default "*"
    patch = "*"
    metric = "i2t_unique_R@5"
    levels = [0.5]                            # or max_level = 0.3; default: every level
    cells = "search"                          # "grid", "search" or "*" (default): which tests
    retention = 0.4

``cells`` lets the worst placement the search finds be held to its own (usually lower) limit
than the grid's seeded random placement: a worst case is a different question from an average.

Top-level ``min``/``max``/``retention`` tables replace the built-in defaults of the same kind;
``rules`` add to them. A rule sets only the kinds it names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from ..cells import LEVEL_DECIMALS, same_level
from ..errors import ConfigError

GATES = ("point", "lower")
CELL_KINDS = ("grid", "search")
KINDS = ("min", "max", "retention", "above_chance")

# Documented defaults (README, "Thresholds"); chosen so that a model that keeps at least half of
# its clean unique-text image->report Recall@5 under occlusion passes.
DEFAULT_MIN: dict[str, float] = {}
DEFAULT_RETENTION: dict[str, float] = {"i2t_unique_R@5": 0.60, "t2i_R@5": 0.60}
DEFAULT_ABOVE_CHANCE: dict[str, float] = {"i2t_unique_R@5": 0.10, "t2i_R@5": 0.10}


_DEFAULT_KINDS = {"min": DEFAULT_MIN, "retention": DEFAULT_RETENTION, "above_chance": DEFAULT_ABOVE_CHANCE}


def chance_recall(metric: str, n_images: int, n_unique_reports: int) -> float | None:
    """Expected Recall@k of a model that ranks candidates at random (None for ranks)."""
    direction, sep, k = metric.rpartition("_R@")
    if not sep or not k.isdigit():
        return None
    candidates = n_unique_reports if direction == "i2t_unique" else n_images
    return min(1.0, int(k) / max(candidates, 1))


def chance_levels(metrics: Iterable[str], n_images: int, n_unique_reports: int) -> dict[str, float]:
    """:func:`chance_recall` of each recall among ``metrics`` (ranks have none)."""
    levels = {m: chance_recall(m, n_images, n_unique_reports) for m in metrics}
    return {m: c for m, c in levels.items() if c is not None}


def lower_is_better(metric: str) -> bool:
    return metric.endswith("_rank")


@dataclass(frozen=True)
class Rule:
    metric: str
    model: str = "*"
    patch: str = "*"
    levels: tuple[float, ...] | None = None
    max_level: float | None = None
    min: float | None = None
    max: float | None = None
    retention: float | None = None
    above_chance: float | None = None
    cells: str = "*"  # "grid", "search" or "*"

    def matches(self, model: str, patch: str, level: float, metric: str, kind: str = "grid") -> bool:
        if not (fnmatchcase(model, self.model) and fnmatchcase(patch, self.patch) and fnmatchcase(metric, self.metric)):
            return False
        if self.cells != "*" and kind != self.cells:
            return False
        if self.levels is not None and not any(same_level(level, x) for x in self.levels):
            return False
        return self.max_level is None or level <= self.max_level + 10.0**-LEVEL_DECIMALS / 2

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and not (k == "cells" and v == "*")}


@dataclass(frozen=True)
class Verdict:
    thresholds: dict[str, dict[str, Any]]  # per metric: limits, clean value, ratio, bound used
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Thresholds:
    rules: tuple[Rule, ...]
    gate: str = "point"
    # Non-inferiority to a reference model: {"model": name, "margin": m} (gate/scores.py).
    reference: Mapping[str, Any] | None = None

    @classmethod
    def defaults(cls) -> Thresholds:
        return cls(_rules_from_kind_tables(_DEFAULT_KINDS))

    @classmethod
    def from_table(cls, table: Any, where: str) -> Thresholds:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        unknown = set(table) - {"gate", "rules", "reference", *KINDS}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        gate = str(table.get("gate", "point"))
        if gate not in GATES:
            raise ConfigError(f"{where}.gate must be one of {', '.join(GATES)}, got {gate!r}")
        kinds = dict(_DEFAULT_KINDS)
        for kind in KINDS:
            if kind in table:
                value = table[kind]
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{where}.{kind} must be a table of metric = value")
                kinds[kind] = {str(m): _number(v, f"{where}.{kind}.{m}") for m, v in value.items()}
        rules = list(_rules_from_kind_tables(kinds))
        for i, raw in enumerate(table.get("rules", [])):
            rules.append(_parse_rule(raw, f"{where}.rules[{i}]"))
        return cls(tuple(rules), gate, _parse_reference(table.get("reference"), f"{where}.reference"))

    @classmethod
    def from_json(cls, data: Any, where: str) -> Thresholds:
        """The inverse of :meth:`to_json` (a results file's ``config.thresholds``)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list):
            raise ConfigError(f"{where} must be an object with a 'rules' list")
        gate = data.get("gate", "point")
        if gate not in GATES:
            raise ConfigError(f"{where}.gate must be one of {', '.join(GATES)}, got {gate!r}")
        rules = tuple(_parse_rule(r, f"{where}.rules[{i}]") for i, r in enumerate(data["rules"]))
        return cls(rules, gate, _parse_reference(data.get("reference"), f"{where}.reference"))

    def evaluate(
        self,
        cell_id: str,
        model: str,
        patch: str,
        level: float,
        metrics: Mapping[str, float],
        clean: Mapping[str, float] | None,
        intervals: Mapping[str, Sequence[float]] | None = None,
        chance: Mapping[str, float] | None = None,
        kind: str = "grid",
    ) -> Verdict:
        """Check every applicable limit; the failure messages name cell, metric, value and limit.
        ``kind`` is the cell's test ("grid" or "search"), for rules that name ``cells``."""
        per_metric: dict[str, dict[str, float]] = {}
        for rule in self.rules:
            for metric in metrics:
                if rule.matches(model, patch, level, metric, kind):
                    entry = per_metric.setdefault(metric, {})
                    for limit_kind in KINDS:
                        value = getattr(rule, limit_kind)
                        if value is not None:
                            entry[limit_kind] = value
        unknown = sorted({r.metric for r in self.rules if "*" not in r.metric} - set(metrics))
        failures = [f"{cell_id}: threshold set for unknown metric {m!r}; measured: {', '.join(metrics)}" for m in unknown]
        table: dict[str, dict[str, Any]] = {}
        for metric, limit in sorted(per_metric.items()):
            value = float(metrics[metric])
            row: dict[str, Any] = dict(limit)
            shown = f"{metric} = {value:.3f}"
            gated = value
            if self.gate == "lower" and intervals and metric in intervals and not lower_is_better(metric):
                gated = float(intervals[metric][0])
                row["lower_bound"] = gated
                shown = f"{metric} = {value:.3f} (lower bound {gated:.3f})"
            if "min" in limit and gated < limit["min"]:
                failures.append(f"{cell_id}: {shown} < min {limit['min']:.3f}")
            if "above_chance" in limit:
                level_of_chance = (chance or {}).get(metric)
                if level_of_chance is None:
                    failures.append(f"{cell_id}: above_chance is set for {metric}, which has no chance level")
                elif level_of_chance >= 1.0:
                    failures.append(f"{cell_id}: {metric} cannot beat chance: k is at least the number of candidates")
                else:
                    lift = (gated - level_of_chance) / (1.0 - level_of_chance)
                    row.update(chance=level_of_chance, above_chance_measured=lift)
                    if lift < limit["above_chance"]:
                        failures.append(
                            f"{cell_id}: {shown} closes {lift:.3f} of the gap from chance ({level_of_chance:.3f}) "
                            f"to 1 < above_chance {limit['above_chance']:.2f}"
                        )
            if "max" in limit and value > limit["max"]:
                failures.append(f"{cell_id}: {metric} = {value:.3f} > max {limit['max']:.3f}")
            if "retention" in limit and level > 0:
                if clean is None or metric not in clean:
                    failures.append(f"{cell_id}: no clean measurement of {metric} to compute retention")
                else:
                    base = float(clean[metric])
                    row["clean"] = base
                    if lower_is_better(metric):
                        ratio = base / value if value > 0 else None
                    else:
                        # A clean value of 0 leaves nothing to retain; the min limit governs.
                        ratio = gated / base if base > 0 else None
                    row["ratio"] = ratio
                    if ratio is not None and ratio < limit["retention"]:
                        failures.append(
                            f"{cell_id}: {metric} retention = {ratio:.3f} ({gated:.3f} occluded vs "
                            f"{base:.3f} clean) < {limit['retention']:.2f}"
                        )
            table[metric] = row
        return Verdict(table, failures)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gate": self.gate, "rules": [r.to_json() for r in self.rules]}
        if self.reference is not None:
            out["reference"] = dict(self.reference)
        return out


def _parse_reference(raw: Any, where: str) -> dict[str, Any] | None:
    """``reference = "name"`` or ``{model = "name", margin = 0.05}``."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"model": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a model name or a table {{model = ..., margin = ...}}")
    unknown = set(raw) - {"model", "margin"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: margin, model")
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        raise ConfigError(f"{where}.model must be the name of a model of the run")
    return {"model": raw["model"], "margin": _number(raw.get("margin", 0.0), f"{where}.margin")}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value}")
    return float(value)


def _rules_from_kind_tables(kinds: Mapping[str, Mapping[str, float]]) -> tuple[Rule, ...]:
    rules = []
    for kind, table in kinds.items():
        for metric, value in table.items():
            limits: dict[str, Any] = {kind: value}
            rules.append(Rule(metric=metric, **limits))
    return tuple(rules)


def _parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    allowed = {"metric", "model", "patch", "levels", "max_level", "cells", *KINDS}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if "metric" not in raw:
        raise ConfigError(f"{where}: a rule needs a 'metric'")
    if not any(k in raw for k in KINDS):
        raise ConfigError(f"{where}: a rule needs at least one of min, max, retention")
    levels = raw.get("levels")
    if levels is not None:
        if not isinstance(levels, Sequence) or isinstance(levels, str):
            raise ConfigError(f"{where}.levels must be a list of numbers")
        levels = tuple(_number(x, f"{where}.levels") for x in levels)
    cells = raw.get("cells", "*")
    if cells not in ("*", *CELL_KINDS):
        raise ConfigError(f"{where}.cells must be one of \"grid\", \"search\" or \"*\", got {cells!r}")
    return Rule(
        metric=str(raw["metric"]),
        model=str(raw.get("model", "*")),
        patch=str(raw.get("patch", "*")),
        levels=levels,
        max_level=_number(raw["max_level"], f"{where}.max_level") if "max_level" in raw else None,
        cells=cells,
        **{k: _number(raw[k], f"{where}.{k}") for k in KINDS if k in raw},
    )
