"""A compact Markdown summary of the results, for a CI job summary.

GitHub Actions renders the file named by ``$GITHUB_STEP_SUMMARY`` as Markdown on the run's page;
GitLab and others can attach it as an artefact. The summary holds the verdict, one table per
patch type (models x occlusion levels, primary metric, ✅/❌) and the list of failing cells. The
full picture (curves, intervals, cards) is in the HTML report.

Every string from the results is escaped so that it renders as plain text: HTML special
characters become entities (GitHub strips raw HTML, but other renderers may not) and Markdown
punctuation that could start emphasis, links, code or break a table is backslash-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .values import as_mapping, as_number, level_key, level_text, unique

__all__ = ["render_markdown", "escape_markdown"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")
# Keyed by the cell's JSON ``outcome``, which may be any value (an unknown one gets no icon).
_ICON: dict[object, str] = {"passed": "✅", "failed": "❌", "error": "⚠️"}


def escape_markdown(value: object) -> str:
    """Plain text for a Markdown line or table cell (one line, nothing interpreted)."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.split())  # newlines would end a table row
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _model_table(results: Mapping[str, Any]) -> list[str]:
    """Verdict and robustness score per model, and the paired comparisons."""
    rows = [m for m in results.get("model_summaries") or [] if isinstance(m, Mapping)]
    if not rows:
        return []
    lines = ["| Model | Verdict | Robustness score | Occluded cells passed | Worst cell |", "|---|---|---:|---:|---|"]
    for m in rows:
        occluded, worst = as_mapping(m.get("occluded_cells")), as_mapping(m.get("worst_cell"))
        score = as_number(m.get("score"))
        value = as_number(worst.get("value"))
        lines.append(
            f"| {escape_markdown(m.get('model'))} | **{escape_markdown(str(m.get('verdict', '?')).upper())}** | "
            f"{'-' if score is None else f'{score:.3f}'} | {occluded.get('passed', '?')}/{occluded.get('total', '?')} | "
            f"{escape_markdown(worst.get('id', '-'))}{'' if value is None else f' ({value:.3f})'} |"
        )
    lines.append("")
    for comparison in results.get("comparisons") or []:
        if isinstance(comparison, Mapping):
            lines.append(f"- {escape_markdown(comparison.get('statement', ''))} (paired bootstrap)")
    return [*lines, ""] if results.get("comparisons") else lines


def render_markdown(results: Mapping[str, Any]) -> str:
    """The Markdown summary (GitHub-flavoured: tables, emoji), ending with a newline."""
    config = as_mapping(results.get("config"))
    cells = [c for c in (results.get("cells") or []) if isinstance(c, Mapping)]
    grid = [c for c in cells if c.get("kind", "grid") != "search"]
    search = [c for c in cells if c.get("kind") == "search"]
    summary = as_mapping(results.get("summary"))
    dataset = as_mapping(results.get("dataset"))

    def count(key: str, outcome: str) -> int:
        value = summary.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return sum(c.get("outcome") == outcome for c in cells)

    passed, failed, errors = count("passed", "passed"), count("failed", "failed"), count("errors", "error")
    verdict = summary.get("verdict")
    if not isinstance(verdict, str) or not verdict:
        verdict = "fail" if failed or errors else ("pass" if cells else "no cells")
    primary = config.get("primary_metric") if isinstance(config.get("primary_metric"), str) else None
    if primary is None:
        for cell in grid:
            names = [m for m in as_mapping(cell.get("metrics")) if "_R@" in m]
            if names:
                primary = names[0]
                break
    primary = primary or "?"

    icon = "✅" if verdict == "pass" else ("❌" if verdict == "fail" else "⚠️")
    lines = [f"## {icon} Occlusion robustness: {escape_markdown(verdict.upper())}", ""]
    facts = [f"**{passed}** passed", f"**{failed}** failed", f"**{errors}** error{'' if errors == 1 else 's'}"]
    lines.append(" · ".join(facts) + f" of {len(cells)} cells")
    context = [f"primary metric `{primary.replace('`', '')}`"]
    gate = config.get("gate")
    if gate is not None:
        context.append(f"gate: {escape_markdown(gate)}")
    if dataset.get("name") is not None:
        text = f"dataset {escape_markdown(dataset['name'])}"
        if isinstance(dataset.get("n_images"), int):
            text += f" ({dataset['n_images']} images"
            sha = dataset.get("sha256")
            text += f", sha256 {escape_markdown(str(sha)[:12])}…)" if isinstance(sha, str) and sha else ")"
        context.append(text)
    if results.get("seed") is not None:
        context.append(f"seed {escape_markdown(results['seed'])}")
    lines += ["", " · ".join(context), ""]
    lines += _model_table(results)

    models = unique([*as_mapping(results.get("models")).keys(), *(c.get("model") for c in cells)])
    patches = unique([*(config.get("patches") or []), *(c.get("patch") for c in cells)])
    levels = sorted(
        {k for k in (level_key(v) for v in [*(config.get("levels") or []), *(c.get("level") for c in grid)]) if k is not None}
    )
    # Keyed by (model, patch, level key) as found in the JSON; a cell without a numeric level is
    # stored under None and never looked up.
    lookup: dict[tuple[object, object, float | None], Mapping[str, Any]] = {}
    for cell in grid:
        lookup.setdefault((cell.get("model"), cell.get("patch"), level_key(cell.get("level"))), cell)

    for patch in patches:
        rows = [m for m in models if any((m, patch, lv) in lookup for lv in levels)]
        if not rows:
            continue
        lines.append(f"### Patch `{patch.replace('`', '')}` · {escape_markdown(primary)}")
        lines.append("")
        header = ["Model", *(level_text(lv, negative_zero=True) + (" (clean)" if lv == 0 else "") for lv in levels)]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" + "---:|" * len(levels))
        for model in rows:
            row = [escape_markdown(model)]
            for level in levels:
                found = lookup.get((model, patch, level))
                if found is None:
                    row.append("—")
                    continue
                outcome = found.get("outcome")
                value = as_number(as_mapping(found.get("metrics")).get(primary))
                shown = f"{value:.3f}" if value is not None else ("error" if outcome == "error" else "—")
                row.append(f"{shown} {_ICON.get(outcome, '')}".strip())
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    if search:
        lines += ["### Worst-case placement search", ""]
        lines.append("| Model | Patch | Level | Worst value | |")
        lines.append("|---|---|---:|---:|---|")
        for cell in search:
            info = as_mapping(cell.get("search"))
            value = as_number(info.get("value"))
            at = as_number(cell.get("level"))
            lines.append(
                f"| {escape_markdown(cell.get('model', '?'))} | {escape_markdown(cell.get('patch', '?'))} | "
                f"{level_text(at, negative_zero=True) if at is not None else '?'} | "
                f"{f'{value:.3f}' if value is not None else '—'} | {_ICON.get(cell.get('outcome'), '')} |"
            )
        lines.append("")

    failing = [c for c in cells if c.get("outcome") in ("failed", "error")]
    if failing:
        lines += [f"### Failing cells ({len(failing)})", ""]
        for cell in failing:
            cell_id = str(cell.get("id", "?")).replace("`", "")
            if cell.get("outcome") == "error":
                lines.append(f"- ⚠️ `{cell_id}`: error: {escape_markdown(cell.get('error') or 'unknown error')}")
                continue
            messages = [escape_markdown(m) for m in cell.get("failures") or []] or ["failed"]
            lines.append(f"- ❌ `{cell_id}`: " + "; ".join(messages))
            info = as_mapping(cell.get("search"))
            if info.get("description"):
                lines.append(f"  - worst placement: {escape_markdown(info['description'])}")
            if info.get("replay"):
                lines.append(f"  - replay: `{str(info['replay']).replace('`', '')}`")
        lines.append("")
    else:
        lines += ["No cell failed.", ""]
    lines.append("The HTML report has the curves, confidence intervals, thresholds and model cards.")
    return "\n".join(lines) + "\n"
