"""Exports from a saved results JSON, without rerunning the grid (``medrobust export``/``compare``).

* :func:`cells_csv`: one row per cell x metric (value, interval, limits, clean value,
  retention, whether the metric failed and the cell's outcome);
* :func:`write_curves`: a PNG or SVG per patch type x gated metric (matplotlib, Agg backend):
  each model's metric against the occluded share, its bootstrap band, the search's worst
  placements and the limits. Byte-stable: fixed SVG hash salt, no dates or versions in the files;
* :func:`compare_table`: per cell and metric, A, B and B - A, marked where B's outcome differs;
* :func:`write_queries`: the per-study ranks side file of ``--medrobust-per-query``;
* :func:`broken_studies`: from that file, the studies a cell lost (hit clean, missed occluded).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import MedrobustError
from ..files import atomic_write
from .results import SCHEMA, failing_metrics, gated_metrics
from .values import as_mapping, as_number, level_key

QUERIES_FILE = "medrobust-queries.jsonl"
CSV_COLUMNS = (
    "model", "patch", "level", "kind", "cell", "outcome", "metric", "gated", "value", "lo", "hi",
    "min", "max", "retention_limit", "above_chance_limit", "clean", "retention", "metric_failed",
)
FORMATS = ("png", "svg")


def load_results(path: Path) -> dict[str, Any]:
    """A results JSON (schema 1), or :class:`MedrobustError` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedrobustError(f"{path}: cannot read a results JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("cells"), list):
        raise MedrobustError(f"{path}: not a pytest-medrobust results file (schema {SCHEMA})")
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or not all(isinstance(cell.get(k), str) for k in ("id", "model", "patch")):
            raise MedrobustError(f"{path}: cells[{i}] is not a cell record (id, model, patch)")
        if as_number(cell.get("level")) is None:
            raise MedrobustError(f"{path}: cells[{i}] ({cell['id']}): level {cell.get('level')!r} is not a number")
    return data


def _fmt(value: object) -> str:
    number = as_number(value)
    return "" if number is None else repr(number)


def cells_csv(results: Mapping[str, Any]) -> str:
    """The flat CSV: one row per cell x measured metric (gated metrics first)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cell in results["cells"]:
        metrics, intervals = as_mapping(cell.get("metrics")), as_mapping(cell.get("intervals"))
        thresholds = as_mapping(cell.get("thresholds"))
        gated, failing = gated_metrics(cell), set(failing_metrics(cell))
        names = list(dict.fromkeys([*gated, *metrics])) or [""]  # an errored cell: one row, no metric
        for metric in names:
            row, bounds = as_mapping(thresholds.get(metric)), intervals.get(metric)
            lo, hi = (bounds if isinstance(bounds, Sequence) and len(bounds) == 2 else (None, None))
            writer.writerow([
                cell["model"], cell["patch"], _fmt(cell["level"]), cell.get("kind", "grid"), cell["id"],
                cell.get("outcome", ""), metric, str(metric in gated).lower(), _fmt(metrics.get(metric)), _fmt(lo),
                _fmt(hi), _fmt(row.get("min")), _fmt(row.get("max")), _fmt(row.get("retention")),
                _fmt(row.get("above_chance")), _fmt(row.get("clean")), _fmt(row.get("ratio")),
                str(metric in failing).lower() if metric else "",
            ])
    return out.getvalue()


def _curve_data(results: Mapping[str, Any], patch: str, metric: str) -> dict[str, dict[str, list]]:
    """Per model: the grid's (level, value, lo, hi), the clean cell shared by every patch type."""
    per_model: dict[str, dict[str, list]] = {}
    for cell in results["cells"]:
        level = level_key(cell["level"])
        if cell.get("outcome") == "error" or level is None or (cell["patch"] != patch and level != 0):
            continue
        value = as_number(as_mapping(cell.get("metrics")).get(metric))
        if value is None:
            continue
        bounds = as_mapping(cell.get("intervals")).get(metric)
        lo, hi = (bounds if isinstance(bounds, Sequence) and len(bounds) == 2 else (value, value))
        entry = per_model.setdefault(cell["model"], {"grid": [], "search": []})
        key = "search" if cell.get("kind") == "search" else "grid"
        if key == "grid" and level == 0 and any(p[0] == 0 for p in entry["grid"]):
            continue  # the clean cell, once
        entry[key].append((level, value, float(lo), float(hi), metric in failing_metrics(cell)))
    return per_model


def write_curves(results: Mapping[str, Any], directory: Path, fmt: str = "png") -> list[Path]:
    """One file per patch type x gated metric: ``<patch>-<metric>.<fmt>`` (``@`` kept)."""
    if fmt not in FORMATS:
        raise MedrobustError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .outputs import is_safe_name

    config = as_mapping(results.get("config"))
    patches = list(dict.fromkeys([*(p for p in config.get("patches") or [] if isinstance(p, str)),
                                  *(c["patch"] for c in results["cells"])]))
    metrics = list(dict.fromkeys(m for c in results["cells"] for m in gated_metrics(c)))
    written = []
    rc: Any = {"svg.hashsalt": "pytest-medrobust", "svg.fonttype": "path", "path.simplify": False}
    # No creation date or software version inside the files: the same JSON gives the same bytes.
    metadata = {"Date": None, "Creator": None} if fmt == "svg" else {"Software": None}
    for patch in patches:
        for metric in metrics:
            data = _curve_data(results, patch, metric)
            if not any(len(d["grid"]) > 1 or d["search"] for d in data.values()):
                continue  # a patch type without occluded cells for this metric
            name = f"{patch}-{metric}"
            if not is_safe_name(name):
                # A patch spec with quotes or slashes ("region(name='a+b')"): a plain name and a
                # hash of the spec, as the mask pictures do (two specs cannot collide).
                plain = re.sub(r"[^A-Za-z0-9_(),=+@-]+", "_", name).strip("_")[:80]
                name = f"{plain}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
            with matplotlib.rc_context(rc):
                fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
                values = []
                for i, (model, d) in enumerate(data.items()):
                    colour = f"C{i}"
                    grid = sorted(d["grid"])
                    xs = [p[0] * 100 for p in grid]
                    ax.plot(xs, [p[1] for p in grid], "o-", color=colour, label=model)
                    ax.fill_between(xs, [p[2] for p in grid], [p[3] for p in grid], color=colour, alpha=0.15, linewidth=0)
                    for p in grid + d["search"]:
                        if p[4]:  # this metric failed in that cell
                            ax.plot([p[0] * 100], [p[1]], "x", color="black", markersize=9)
                    if d["search"]:
                        search = sorted(d["search"])
                        ax.plot([p[0] * 100 for p in search], [p[1] for p in search], "v", color=colour,
                                fillstyle="none", label=f"{model}, worst placement")
                    values += [v for p in grid + d["search"] for v in p[1:4]]
                low, high = min(values), max(values)
                pad = max(0.05 * (high - low), 0.01)
                ax.set_ylim(max(0.0, low - pad), high + pad)  # fitted to the data, not 0-1
                ax.set_xlabel(f"occluded share of the image (%), {patch}")
                ax.set_ylabel(metric)
                ax.set_title(f"{metric} under {patch} (band: bootstrap interval, x: {metric} failed)")
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize="small")
                fig.tight_layout()
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, metadata=metadata)
                plt.close(fig)
            path = Path(directory) / f"{name}.{fmt}"
            atomic_write(path, buffer.getvalue())
            written.append(path)
    return written


def compare_table(a: Mapping[str, Any], b: Mapping[str, Any], a_name: str, b_name: str) -> tuple[list[str], int]:
    """The delta table of two results (gated metrics of each cell present in both), and how many
    cells' outcomes differ. Raises :class:`MedrobustError` when they share no cell."""
    cells_a = {(c.get("kind", "grid"), c["id"]): c for c in a["cells"]}
    cells_b = {(c.get("kind", "grid"), c["id"]): c for c in b["cells"]}
    shared = [k for k in cells_a if k in cells_b]
    if not shared:
        raise MedrobustError(f"{b_name}: no cell in common with {a_name} (other models, patches or levels)")
    header = f"{'cell':<36} {'kind':<6} {'metric':<16} {'A':>7} {'B':>7} {'B-A':>8}  outcome"
    lines = [f"A = {a_name}", f"B = {b_name}", "", header, "-" * len(header)]
    changed = 0
    for key in shared:
        ca, cb = cells_a[key], cells_b[key]
        differs = ca.get("outcome") != cb.get("outcome")
        changed += differs
        metrics: list[str | None] = [*dict.fromkeys([*gated_metrics(ca), *gated_metrics(cb)])] or [None]
        for i, metric in enumerate(metrics):
            va = as_number(as_mapping(ca.get("metrics")).get(metric)) if metric else None
            vb = as_number(as_mapping(cb.get("metrics")).get(metric)) if metric else None
            delta = f"{vb - va:+8.3f}" if va is not None and vb is not None else f"{'-':>8}"
            outcome = ""
            if i == 0:
                outcome = f"{ca.get('outcome')} -> {cb.get('outcome')}  <<" if differs else str(cb.get("outcome"))
            lines.append(
                f"{key[1]:<36} {key[0]:<6} {metric or '-':<16} {'-' if va is None else f'{va:.3f}':>7} "
                f"{'-' if vb is None else f'{vb:.3f}':>7} {delta}  {outcome}".rstrip()
            )
    only_a, only_b = len(cells_a) - len(shared), len(cells_b) - len(shared)
    lines += ["", f"{len(shared)} cells compared, {changed} with another outcome in B"
              + (f"; {only_a} only in A" if only_a else "") + (f"; {only_b} only in B" if only_b else "")]
    if a.get("dataset", {}).get("sha256") != b.get("dataset", {}).get("sha256"):
        lines.append("warning: the two runs used different datasets (sha256): the deltas compare different queries")
    return lines, changed


def write_queries(results: Mapping[str, Any], queries: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """The per-query side file: a header line (dataset fingerprint, study ids), then one line
    per cell with each study's 1-based rank of its own report (``i2t``, ``i2t_unique``) and of
    its own image (``t2i``), in the header's study order."""
    ids: list[str] | None = None
    lines = []
    for cell in results["cells"]:
        found = queries.get(f"{cell.get('kind', 'grid')}:{cell['id']}")
        if found is None:
            continue
        if ids is None:
            ids = list(found["ids"])
        elif list(found["ids"]) != ids:
            raise MedrobustError(f"cell {cell['id']}: its per-query ranks are over other studies than the first cell's")
        lines.append(json.dumps({"cell": cell["id"], "kind": cell.get("kind", "grid"), "model": cell["model"],
                                 "patch": cell["patch"], "level": cell["level"],
                                 **{d: found[d] for d in ("i2t", "t2i", "i2t_unique")}}, separators=(",", ":")))
    header = {"schema": 1, "dataset_sha256": as_mapping(results.get("dataset")).get("sha256"), "ids": ids or []}
    atomic_write(path, "\n".join([json.dumps(header, separators=(",", ":")), *lines]) + "\n")
    return path


def read_queries(path: Path) -> tuple[list[str], dict[tuple[str, str], dict[str, Any]]]:
    """The study ids and the per-cell ranks of a :data:`QUERIES_FILE`; errors name the line."""
    try:
        text = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MedrobustError(f"{path}: cannot read a per-query file: {exc}") from exc
    rows = []
    for number, line in enumerate(text, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise MedrobustError(f"{path}:{number}: not JSON: {exc}") from exc
    if not rows or not isinstance(rows[0], dict) or not isinstance(rows[0].get("ids"), list):
        raise MedrobustError(f"{path}:1: not a per-query file (a header with 'ids' first)")
    ids = rows[0]["ids"]
    cells = {}
    for number, row in enumerate(rows[1:], 2):
        if not isinstance(row, dict) or any(len(row.get(d) or []) != len(ids) for d in ("i2t", "t2i", "i2t_unique")):
            raise MedrobustError(f"{path}:{number}: not one rank per study of the header")
        cells[(str(row.get("kind")), str(row.get("cell")))] = row
    return ids, cells


def broken_studies(
    ids: Sequence[str], cells: Mapping[tuple[str, str], Mapping[str, Any]], results: Mapping[str, Any],
    direction: str = "i2t_unique", k: int = 5,
) -> list[str]:
    """Per occluded cell, the studies whose own match was in the top k on clean images and is
    not under the cell's occlusion: which studies broke."""
    clean = {c["model"]: cells.get(("grid", c["id"])) for c in results["cells"]
             if c.get("kind", "grid") == "grid" and level_key(c["level"]) == 0}
    lines = []
    for cell in results["cells"]:
        own, base = cells.get((cell.get("kind", "grid"), cell["id"])), clean.get(cell["model"])
        if own is None or base is None or level_key(cell["level"]) == 0:
            continue
        broke = [ids[i] for i, (before, after) in enumerate(zip(base[direction], own[direction], strict=True))
                 if before <= k < after]
        if broke:
            shown = ", ".join(broke[:8]) + (f" and {len(broke) - 8} more" if len(broke) > 8 else "")
            lines.append(f"{cell['id']} ({cell.get('kind', 'grid')}): {len(broke)} studies fell out of the top {k} "
                         f"({direction}): {shown}")
    return lines


def rerender(results: dict[str, Any], html: Path | None, markdown: Path | None, pictures_from: Path) -> list[Path]:
    """The HTML and Markdown reports of a saved results JSON (pictures read beside it)."""
    from .html import collect_pictures, render_html
    from .markdown import render_markdown

    written = []
    if html is not None:
        pictures = collect_pictures(results, pictures_from)
        atomic_write(html, render_html(results, pictures=pictures, extra_sections=[], root=pictures_from))
        written.append(html)
    if markdown is not None:
        atomic_write(markdown, render_markdown(results))
        written.append(markdown)
    return written
