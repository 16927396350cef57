"""The medrobust section printed at the end of a run (after pytest's short test summary).

Per patch type (in the configuration's order), a table of models x levels of one metric, each
value marked ``+`` passed, ``x`` failed, ``E`` error; under a model's row, a ``worst`` row with
the Hypothesis search cells. Then one verdict line per model, the warnings and the run's verdict.
With ``-q`` only the verdict lines are printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cells import level_key

MARKS = {"passed": "+", "failed": "x"}  # anything else (error): "E"


def summary_lines(results: Mapping[str, Any], metric: str, *, quiet: bool = False) -> list[str]:
    """The section's lines; ``quiet`` (``-q``): only the per-model verdicts and the run's."""
    summary = results["summary"]
    verdict_line = (
        f"gate {summary['verdict'].upper()}: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['errors']} errors of {summary['cells']} cells"
    )
    warnings = [f"warning: {w}" for w in results.get("warnings") or []]
    if quiet:
        return [*model_lines(results)[2:], *warnings, verdict_line]  # without the blank and the legend
    lines: list[str] = []
    dataset = results.get("dataset") or {}
    if dataset:
        lines.append(
            f"dataset {dataset.get('name')}: {dataset.get('n_images')} images, "
            f"{dataset.get('n_unique_reports')} unique reports, sha256 {str(dataset.get('sha256', ''))[:12]}"
        )
    dropped = dataset.get("dropped") or []
    if dropped:
        lines.append(f"dropped {len(dropped)} bad row(s) (on_bad_rows=drop):")
        lines += [f"  - {d.get('where')}: {d.get('reason')}" for d in dropped[:20]]
        if len(dropped) > 20:
            lines.append(f"  ... and {len(dropped) - 20} more (all in the results JSON)")
    lines += _tables(results, metric)
    lines += model_lines(results)
    if summary.get("cache_corrupt"):
        lines += ["", f"{summary['cache_corrupt']} corrupt cache entr(ies) were found, recomputed and overwritten"]
    missing = summary.get("missing") or []
    if missing:
        lines.append("")
        lines.append(f"{len(missing)} selected cell(s) never reported (a crashed worker or an interrupted run):")
        lines += [f"  - {nodeid}" for nodeid in missing[:20]]
    lines += ["", *warnings, verdict_line] if warnings else ["", verdict_line]
    return lines


def _tables(results: Mapping[str, Any], metric: str) -> list[str]:
    cells = results["cells"]
    if not cells:
        return []
    configured = [p for p in (results.get("config") or {}).get("patches") or [] if isinstance(p, str)]
    patches = list(dict.fromkeys([*(p for p in configured if any(c["patch"] == p for c in cells)), *(c["patch"] for c in cells)]))
    lines = [f"{metric} per cell (+ passed, x failed, E error; worst: the search's worst placement):"]
    for patch in patches:
        rows = [c for c in cells if c["patch"] == patch]
        levels = sorted({level_key(c["level"]) for c in rows})
        models = list(dict.fromkeys(c["model"] for c in rows))
        width = max(len(m) for m in [*models, patch, "  worst"])
        lines.append("")
        lines.append(f"{patch:<{width}}  " + "  ".join(f"{lv:>7.2f}" for lv in levels))
        for model in models:
            for kind, label in (("grid", model), ("search", "  worst")):
                by_level = {level_key(c["level"]): c for c in rows if c["model"] == model and c.get("kind", "grid") == kind}
                if not by_level:
                    continue
                parts = [
                    f"{_value(by_level[lv], metric):>6}{_mark(by_level[lv])}" if lv in by_level else " " * 7 for lv in levels
                ]
                lines.append(f"{label:<{width}}  " + "  ".join(parts).rstrip())
    return lines


def model_lines(results: Mapping[str, Any]) -> list[str]:
    """The verdict and robustness score of each model, then the paired comparisons."""
    summaries = results.get("model_summaries") or []
    if not summaries:
        return []
    lines = ["", "verdict per model (score: area under retention vs occluded share, 1 = no loss):"]
    width = max(len(str(m["model"])) for m in summaries)
    for m in summaries:
        occluded, clean, search = m["occluded_cells"], m["clean_cells"], m["search_cells"]
        score = "-" if m.get("score") is None else f"{m['score']:.3f}"
        worst = m.get("worst_cell") or {}
        parts = [
            f"  {m['model']:<{width}}  {m['verdict'].upper():<10} score {score}",
            f"occluded {occluded['passed']}/{occluded['total']} passed",
            f"clean {clean['passed']}/{clean['total']}",
        ]
        if search["total"]:
            parts.append(f"search {search['passed']}/{search['total']}")
        if worst:
            parts.append(f"worst {worst['id']} = {worst['value']:.3f}")
        lines.append(", ".join(parts))
        lines += [f"    {failure}" for failure in m.get("failures") or []]
    for comparison in results.get("comparisons") or []:
        lines.append(f"  {comparison['statement']} ({comparison['confidence']:.0%} paired bootstrap)")
    return lines


def _value(cell: Mapping[str, Any], metric: str) -> str:
    value = (cell.get("metrics") or {}).get(metric)  # a search cell's: its worst placement's
    return "-" if not isinstance(value, (int, float)) else f"{value:.3f}"


def _mark(cell: Mapping[str, Any]) -> str:
    return MARKS.get(cell.get("outcome", ""), "E")


def cell_line(cell: Mapping[str, Any]) -> str:
    """One line about a cell (its junit ``system-out``): outcome, then each gated metric with
    its interval, clean value and limits, ``✕`` on a failing one."""
    from .results import failing_metrics

    level = cell.get("level")
    what = f"{cell.get('model')} {cell.get('patch')} {level * 100:g}%" if isinstance(level, (int, float)) else str(cell.get("id"))
    head = f"{what}{' (worst-placement search)' if cell.get('kind') == 'search' else ''}: {str(cell.get('outcome')).upper()}"
    if cell.get("outcome") == "error":
        return f"{head}: {str(cell.get('error') or '').splitlines()[0][:200] if cell.get('error') else 'error'}"
    metrics, intervals = cell.get("metrics") or {}, cell.get("intervals") or {}
    failing = set(failing_metrics(cell))
    parts = [head]
    for metric, row in (cell.get("thresholds") or {}).items():
        text = f"{metric} {metrics.get(metric, float('nan')):.3f}"
        if metric in intervals:
            text += f" [{intervals[metric][0]:.3f}, {intervals[metric][1]:.3f}]"
        if "clean" in row:
            text += f" clean {row['clean']:.3f}"
        limits = [f"{kind} {row[kind]:g}" for kind in ("min", "max", "retention", "above_chance") if kind in row]
        if limits:
            text += f" (limits: {', '.join(limits)})"
        parts.append(text + (" ✕" if metric in failing else ""))
    return " · ".join(parts)
