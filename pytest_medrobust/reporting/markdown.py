"""A one-screen Markdown summary of the results, for a CI job summary.

GitHub Actions renders the file named by ``$GITHUB_STEP_SUMMARY`` as Markdown on the run's page;
GitLab and others can attach it as an artefact. The summary is kept short (about 60 lines for the
demo): the verdict, one line per model, one compact table per patch type (models x levels, the
primary metric, every failing metric marked ✕, the worst-case search under it), the few worst
failures with a replay command, and everything else folded inside ``<details>``. Replay commands
are in fenced ``bash`` blocks, so they paste and run. The curves and intervals are in the HTML.

Every string from the results is escaped so that it renders as plain text: HTML special
characters become entities (GitHub strips raw HTML, but other renderers may not) and Markdown
punctuation that could start emphasis, links, code or break a table is backslash-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .results import failing_metrics
from .values import as_mapping, as_number, level_key, level_text, unique

__all__ = ["render_markdown", "escape_markdown", "HTML_LINK_PLACEHOLDER", "FAILED_MARK", "ERROR_MARK"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")
FAILED_MARK, ERROR_MARK = "✕", "⚠️"
# The line a CI job replaces with its artefact's URL (sed on the link target), e.g.
#   sed -i "s|(medrobust.html)|($ARTIFACT_URL)|" reports/medrobust.md
HTML_LINK_PLACEHOLDER = "**Full report:** [medrobust.html](medrobust.html)"
# Failing cells shown in full above the fold.
WORST_SHOWN = 3


def escape_markdown(value: object) -> str:
    """Plain text for a Markdown line or table cell (one line, nothing interpreted)."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.split())  # newlines would end a table row
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _code(value: object) -> str:
    """Inline code (backticks cannot be escaped inside a code span: they are dropped)."""
    return "`" + " ".join(str(value).replace("`", "").split()) + "`"


def _model_lines(results: Mapping[str, Any]) -> list[str]:
    """One line per model (verdict, score, cells passed, worst cell), then the comparisons."""
    lines = []
    for m in (m for m in results.get("model_summaries") or [] if isinstance(m, Mapping)):
        verdict = str(m.get("verdict", "?"))
        occluded, search = as_mapping(m.get("occluded_cells")), as_mapping(m.get("search_cells"))
        score = as_number(m.get("score"))
        icon = "✅" if verdict == "pass" else "❌"
        parts = [f"{icon} **{escape_markdown(m.get('model'))}** {escape_markdown(verdict.upper())}"]
        text = "score " + ("-" if score is None else f"{score:.3f}")
        interval = m.get("score_interval")
        if isinstance(interval, Sequence) and len(interval) == 2 and all(as_number(v) is not None for v in interval):
            text += f" [{float(interval[0]):.3f}, {float(interval[1]):.3f}]"
        parts.append(text)
        parts.append(f"occluded {occluded.get('passed', '?')}/{occluded.get('total', '?')} passed")
        if search.get("total"):
            parts.append(f"search {search.get('passed', '?')}/{search['total']}")
        worst = as_mapping(m.get("worst_cell"))
        value = as_number(worst.get("value"))
        if worst.get("id") is not None:
            parts.append(f"worst {escape_markdown(worst['id'])}" + ("" if value is None else f" = {value:.3f}"))
        lines.append("- " + " · ".join(parts))
        lines += [f"  - {escape_markdown(f)}" for f in m.get("failures") or []]
    for comparison in results.get("comparisons") or []:
        if isinstance(comparison, Mapping) and comparison.get("statement"):
            lines.append(f"- {escape_markdown(comparison['statement'])} (paired bootstrap)")
    return [*lines, ""] if lines else []


def cell_mark(cell: Mapping[str, Any]) -> str:
    """What a table cell shows after the value: nothing (passed), ✕ and the failing metrics,
    or ⚠️ (error)."""
    outcome = cell.get("outcome")
    if outcome == "error":
        return ERROR_MARK + " error"
    if outcome == "failed":
        names = failing_metrics(cell)
        return FAILED_MARK + (" " + ", ".join(escape_markdown(n) for n in names) if names else " failed")
    return "" if outcome == "passed" else escape_markdown(outcome or "?")


def _value(cell: Mapping[str, Any], metric: str) -> str:
    value = as_number(as_mapping(cell.get("metrics")).get(metric))
    return "—" if value is None else f"{value:.3f}"


def _messages(cell: Mapping[str, Any]) -> str:
    """A cell's failure messages on one line, without the repeated cell id."""
    if cell.get("outcome") == "error":
        return "error: " + escape_markdown(str(cell.get("error") or "unknown error").splitlines()[0][:200])
    prefix = f"{cell.get('id')}: "
    found = [str(f)[len(prefix):] if str(f).startswith(prefix) else str(f) for f in cell.get("failures") or []]
    return "; ".join(escape_markdown(f) for f in found) or "failed"


def _replay_command(cell: Mapping[str, Any]) -> str | None:
    """The shell command of a search cell's replay (its first line; the rest is Python)."""
    replay = as_mapping(cell.get("search")).get("replay")
    if not isinstance(replay, str) or not replay.startswith("pytest "):
        return None
    return replay.splitlines()[0]


def _severity(cell: Mapping[str, Any], primary: str) -> tuple:
    """Worst first: errors, then the lowest primary-metric retention (value when no clean)."""
    if cell.get("outcome") == "error":
        return (0, 0.0)
    row = as_mapping(as_mapping(cell.get("thresholds")).get(primary))
    ratio = as_number(row.get("ratio"))
    value = as_number(as_mapping(cell.get("metrics")).get(primary))
    return (1, ratio if ratio is not None else (value if value is not None else 1.0))


def _tables(results: Mapping[str, Any], cells: list[Mapping[str, Any]], primary: str) -> list[str]:
    """One table per patch type: a row per model, a column per level; the search cell of a
    (model, patch, level) under the grid cell's value."""
    config = as_mapping(results.get("config"))
    grid = [c for c in cells if c.get("kind", "grid") != "search"]
    models = unique([*as_mapping(results.get("models")).keys(), *(config.get("models") or []), *(c.get("model") for c in cells)])
    patches = unique([*(config.get("patches") or []), *(c.get("patch") for c in cells)])
    levels = sorted(
        {k for k in (level_key(v) for v in [*(config.get("levels") or []), *(c.get("level") for c in grid)]) if k is not None}
    )
    lookup: dict[tuple[object, object, object, float | None], Mapping[str, Any]] = {}
    for cell in cells:
        lookup.setdefault((cell.get("kind", "grid"), cell.get("model"), cell.get("patch"), level_key(cell.get("level"))), cell)
    lines = []
    for patch in patches:
        rows = [m for m in models if any(("grid", m, patch, lv) in lookup or ("search", m, patch, lv) in lookup for lv in levels)]
        if not rows:
            continue
        header = [_code(patch), *(level_text(lv) + (" (clean)" if lv == 0 else "") for lv in levels)]
        lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(levels)]
        for model in rows:
            row = [escape_markdown(model)]
            for level in levels:
                parts = []
                found = lookup.get(("grid", model, patch, level))
                if found is not None:
                    parts.append(f"{_value(found, primary)} {cell_mark(found)}".strip())
                searched = lookup.get(("search", model, patch, level))
                if searched is not None:
                    # A search cell's metrics are those of its worst placement.
                    parts.append(f"worst {_value(searched, primary)} {cell_mark(searched)}".strip())
                row.append("<br>".join(parts) or "—")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


def render_markdown(results: Mapping[str, Any]) -> str:
    """The Markdown summary (GitHub-flavoured: tables, emoji, <details>), ending with a newline."""
    config = as_mapping(results.get("config"))
    cells = [c for c in (results.get("cells") or []) if isinstance(c, Mapping)]
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
        names = [m for c in cells for m in as_mapping(c.get("metrics")) if "_R@" in m]
        primary = names[0] if names else "?"

    icon = "✅" if verdict == "pass" else ("❌" if verdict == "fail" else "⚠️")
    lines = [f"## {icon} Occlusion robustness: {escape_markdown(verdict.upper())}", ""]
    plural = "" if errors == 1 else "s"
    facts = [f"**{passed}** passed", f"**{failed}** failed", f"**{errors}** error{plural} of {len(cells)} cells"]
    if dataset.get("name") is not None:
        text = f"dataset {escape_markdown(dataset['name'])}"
        if isinstance(dataset.get("n_images"), int):
            sha = dataset.get("sha256")
            text += f" ({dataset['n_images']} images" + (f", sha256 {escape_markdown(str(sha)[:12])})" if sha else ")")
        facts.append(text)
    if results.get("seed") is not None:
        facts.append(f"seed {escape_markdown(results['seed'])}")
    gate = as_mapping(config.get("thresholds")).get("gate", config.get("gate"))
    facts.append(f"table: {_code(primary)}" + (f", gate on the {escape_markdown(gate)} estimate" if gate else ""))
    lines += [" · ".join([*facts, HTML_LINK_PLACEHOLDER]), ""]
    warnings = [w for w in results.get("warnings") or [] if isinstance(w, str)]
    if warnings:
        lines += [f"> {ERROR_MARK} {escape_markdown(w)}" for w in warnings] + [""]
    lines += _model_lines(results)
    lines += _tables(results, cells, primary)

    failing = sorted((c for c in cells if c.get("outcome") in ("failed", "error")), key=lambda c: _severity(c, primary))
    if not failing:
        return "\n".join([*lines, "No cell failed."]) + "\n"
    shown, rest = failing[:WORST_SHOWN], failing[WORST_SHOWN:]
    lines += [f"### Worst of {len(failing)} failing cells", ""]
    lines += [f"- {_code(c.get('id', '?'))} ({escape_markdown(c.get('kind', 'grid'))}): {_messages(c)}" for c in shown]
    lines.append("")
    replays = [(c, cmd) for c in failing if (cmd := _replay_command(c)) is not None]
    if replays:
        cell, command = replays[0]
        lines += [f"Replay the worst search cell, {_code(cell.get('id', '?'))}:", "", "```bash", command, "```", ""]
    if rest or len(replays) > 1:
        lines += ["<details><summary>The other failing cells and their replay commands</summary>", ""]
        # One line per model: the cell ids and failing metrics (the messages are in the HTML and JSON).
        for model in unique(c.get("model") for c in rest):
            own = [c for c in rest if c.get("model") == model]
            listed = [f"{_code(c.get('id', '?'))} ({escape_markdown(c.get('kind', 'grid'))}) {cell_mark(c)}" for c in own]
            lines.append(f"- {escape_markdown(model)}, {len(own)}: " + " · ".join(listed))
        if len(replays) > 1:
            lines += ["", "```bash", *(command for _, command in replays[1:]), "```"]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
