"""The table printed at the end of a run: per patch type, models x levels, one metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def summary_lines(results: Mapping[str, Any], metric: str) -> list[str]:
    cells = [c for c in results["cells"] if c.get("kind", "grid") == "grid"]
    searches = [c for c in results["cells"] if c.get("kind") == "search"]
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
    if cells:
        lines.append(f"{metric} per cell (+ passed, x failed, E error):")
    for patch in dict.fromkeys(c["patch"] for c in cells):
        rows = [c for c in cells if c["patch"] == patch]
        levels = sorted({c["level"] for c in rows})
        models = list(dict.fromkeys(c["model"] for c in rows))
        width = max(len(m) for m in models + [patch])
        lines.append("")
        lines.append(f"{patch:<{width}}  " + "  ".join(f"{lv:>7.2f}" for lv in levels))
        for model in models:
            by_level = {c["level"]: c for c in rows if c["model"] == model}
            parts = []
            for lv in levels:
                c = by_level.get(lv)
                parts.append(f"{'':>7}" if c is None else f"{_value(c, metric):>6}{_mark(c)}")
            lines.append(f"{model:<{width}}  " + "  ".join(parts))
    if searches:
        lines.append("")
        lines.append("worst-case placement search (Hypothesis):")
        for c in searches:
            search = c.get("search") or {}
            found = search.get("description") or "no failing placement found"
            value = search.get("value")
            shown = f" {metric} = {value:.3f}" if isinstance(value, float) else ""
            lines.append(f"  {c['id']} {_mark(c)}{shown}: {found}")
    lines += model_lines(results)
    summary = results["summary"]
    if summary.get("cache_corrupt"):
        lines += ["", f"{summary['cache_corrupt']} corrupt cache entr(ies) were found, recomputed and overwritten"]
    missing = summary.get("missing") or []
    if missing:
        lines.append("")
        lines.append(f"{len(missing)} selected cell(s) never reported (a crashed worker or an interrupted run):")
        lines += [f"  - {nodeid}" for nodeid in missing[:20]]
    lines.append("")
    lines.append(
        f"gate {summary['verdict'].upper()}: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['errors']} errors of {summary['cells']} cells"
    )
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
    value = (cell.get("metrics") or {}).get(metric)
    return "-" if value is None else f"{value:.3f}"


def _mark(cell: Mapping[str, Any]) -> str:
    return {"passed": "+", "failed": "x"}.get(cell.get("outcome", ""), "E")
