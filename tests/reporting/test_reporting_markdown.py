"""The Markdown CI summary."""

from __future__ import annotations

import copy

from pytest_medrobust.reporting.markdown import escape_markdown, render_markdown

PRIMARY = "i2t_unique_R@5"


def tables(text: str) -> list[list[str]]:
    """Consecutive table lines, grouped."""
    out, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def cells_of(row: str) -> list[str]:
    # Split on unescaped pipes only.
    parts, buf, escaped = [], "", False
    for ch in row.strip()[1:-1]:
        if ch == "|" and not escaped:
            parts.append(buf.strip())
            buf = ""
        else:
            buf += ch
        escaped = ch == "\\" and not escaped
    parts.append(buf.strip())
    return parts


def test_verdict_and_counts(sample_results):
    text = render_markdown(sample_results)
    first = text.splitlines()[0]
    assert first == "## ❌ Occlusion robustness: FAIL"
    summary = sample_results["summary"]
    assert f"**{summary['passed']}** passed · **{summary['failed']}** failed · **{summary['errors']}** error" in text
    assert f"of {len(sample_results['cells'])} cells" in text
    assert "`i2t_unique_R@5`" in text
    assert text.endswith("\n")


def test_one_table_per_patch_with_every_grid_cell(sample_results):
    text = render_markdown(sample_results)
    found = tables(text)
    patches = sample_results["config"]["patches"]
    assert len(found) == len(patches)  # the search cells sit under the grid values
    for patch, table in zip(patches, found, strict=True):
        header = cells_of(table[0])
        assert header == [f"`{patch}`", "0% (clean)", "10%", "20%", "30%", "50%"]
        rows = {cells_of(r)[0]: cells_of(r)[1:] for r in table[2:]}
        assert set(rows) == {"demo\\-plain", "demo\\-robust"} or set(rows) == {"demo-plain", "demo-robust"}
        for cell in sample_results["cells"]:
            if cell["patch"] != patch:
                continue
            column = header.index(next(h for h in header if h.startswith(f"{round(cell['level'] * 100)}%"))) - 1
            parts = rows[escape_markdown(cell["model"])][column].split("<br>")
            shown = next(p for p in parts if p.startswith("worst ") == (cell["kind"] == "search"))
            if cell["kind"] == "search":
                shown = shown.removeprefix("worst ")
            if cell["outcome"] == "error":
                assert shown == "— ⚠️ error"
            elif cell["outcome"] == "failed":
                value, mark = shown.split(" ", 1)
                assert value == f"{cell['metrics'][PRIMARY]:.3f}" and mark.startswith("✕ ")
                assert PRIMARY.replace("_", "\\_") in mark or "t2i\\_R@5" in mark
            else:
                assert shown == f"{cell['metrics'][PRIMARY]:.3f}"


def test_failing_cells_listed_worst_first_the_rest_folded(sample_results):
    text = render_markdown(sample_results)
    failing = [c for c in sample_results["cells"] if c["outcome"] in ("failed", "error")]
    assert f"### Worst of {len(failing)} failing cells" in text
    head, folded = text.split("<details>", 1)
    for cell in failing:
        assert f"`{cell['id']}`" in text
    shown = [line for line in head.splitlines() if line.startswith("- `")]
    assert len(shown) == 3
    assert "error: RuntimeError: model forward pass failed" in shown[0]  # errors first
    assert folded.rstrip().endswith("</details>")
    assert "**Full report:** [medrobust.html](medrobust.html)" in head


def test_passing_run(make_results):
    results = make_results(models=("demo-robust",), minimum=0.0, retention=0.0, search=False, error=False)
    text = render_markdown(results)
    assert text.startswith("## ✅ Occlusion robustness: PASS")
    assert "No cell failed." in text
    assert "❌" not in text


def test_hostile_names_are_escaped(sample_results):
    results = copy.deepcopy(sample_results)
    hostile = "<script>alert(1)</script>|*x*|[link](http://x)"
    results["models"] = {hostile: {}}
    for cell in results["cells"]:
        cell["model"] = hostile
        cell["failures"] = [f + " <img src=x onerror=alert(1)>" for f in cell["failures"]]
    text = render_markdown(results)
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;" in text
    assert "](http" not in text
    for table in tables(text):
        widths = {len(cells_of(row)) for row in table}
        assert len(widths) == 1  # no stray pipe adds a column


def test_escape_markdown():
    assert escape_markdown("a|b") == "a\\|b"
    assert escape_markdown("x\ny") == "x y"
    assert escape_markdown("<b>&") == "&lt;b&gt;&amp;"
    assert escape_markdown("R@5_x*") == "R@5\\_x\\*"


def test_empty_results():
    text = render_markdown({})
    assert "NO CELLS" in text
    assert "of 0 cells" in text
