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
    assert len(found) == len(patches) + 1  # + the search table
    for patch, table in zip(patches, found[: len(patches)], strict=True):
        assert f"### Patch `{patch}`" in text
        header = cells_of(table[0])
        assert header == ["Model", "0% (clean)", "10%", "20%", "30%", "50%"]
        rows = {cells_of(r)[0]: cells_of(r)[1:] for r in table[2:]}
        assert set(rows) == {"demo\\-plain", "demo\\-robust"} or set(rows) == {"demo-plain", "demo-robust"}
        for cell in sample_results["cells"]:
            if cell["kind"] != "grid" or cell["patch"] != patch:
                continue
            shown = rows[escape_markdown(cell["model"])][header.index(
                next(h for h in header if h.startswith(f"{round(cell['level'] * 100)}%"))) - 1]
            if cell["outcome"] == "error":
                assert shown == "error ⚠️"
            else:
                icon = "✅" if cell["outcome"] == "passed" else "❌"
                assert shown == f"{cell['metrics'][PRIMARY]:.3f} {icon}"


def test_failing_cells_listed(sample_results):
    text = render_markdown(sample_results)
    assert "### Failing cells (6)" in text
    for cell in sample_results["cells"]:
        listed = f"`{cell['id']}`" in text
        assert listed == (cell["outcome"] in ("failed", "error"))
    assert "worst placement: black\\_box at 30% centred at \\(0.25, 0.70\\) on every image" in text
    assert "replay: `@reproduce_failure('6.170.17', b'AXicY2BgAAAAAwAB')`" in text
    assert "RuntimeError: model forward pass failed" in text


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
