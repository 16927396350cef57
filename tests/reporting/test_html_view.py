"""The HTML report as a reader uses it: verdicts first, compact tables, folded failures worst
first, fitted charts, pictures once, optional sections, package data."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
from test_reporting_html import PRIMARY, ancestors, failure_entries, grid_cells, parse, png_bytes

from pytest_medrobust.reporting import charts
from pytest_medrobust.reporting.html import render_html
from pytest_medrobust.reporting.view import Report


def summaries(results):
    """Model summaries shaped as gate.scores writes them (values made up, but distinct)."""
    return [
        {"model": m, "verdict": v, "metric": PRIMARY, "occluded_cells": {"passed": p, "total": 8},
         "clean_cells": {"passed": 2, "total": 2}, "search_cells": {"passed": 1, "total": 2},
         "score": s, "auc": s * 0.7, "mean_retention": s * 0.9,
         "score_per_patch": {"black_box": s, "white_box": s - 0.01}, "worst_cell": {"id": f"{m}-white_box-0.50", "value": 0.2},
         "failures": [] if v == "pass" else [f"{m}: robustness score below the reference"]}
        for m, v, p, s in (("demo-plain", "fail", 3, 0.6123456), ("demo-robust", "pass", 7, 0.8765432))
    ]


def test_model_verdicts_come_first_with_their_scores(sample_results):
    sample_results["model_summaries"] = summaries(sample_results)
    sample_results["comparisons"] = [{"a": "demo-plain", "b": "demo-robust", "statement": "demo-robust is more robust"}]
    page = render_html(sample_results)
    root = parse(page)
    sections = [n.attrs["id"] for n in root.find_all("section") if n.parent.tag == "main"]
    assert sections[:3] == ["models", "heatmaps", "failures"]
    for summary in sample_results["model_summaries"]:
        (card,) = root.find_all("div", data_model=summary["model"])
        assert card.attrs["data-verdict"] == summary["verdict"]
        assert summary["verdict"].upper() in card.text
        values = {float(s.attrs["data-value"]) for s in card.find_all("span") if "data-value" in s.attrs}
        assert {summary["score"], summary["auc"], summary["mean_retention"]} <= values
        assert f"{summary['score']:.3f}" in card.text
        assert "search 1 / 2 passed" in card.text
        for message in summary["failures"]:
            assert message in card.text
    assert 'data-model="demo-plain" data-verdict="fail"' in page
    (item,) = root.find_all("li", data_comparison="demo-plain|demo-robust")
    assert item.text == "demo-robust is more robust"


def test_compact_table_marks_every_failing_metric(sample_results):
    # A cell that fails only on t2i_R@5 retention: the primary value passes, the cell is marked.
    cell = next(c for c in grid_cells(sample_results) if c["outcome"] == "passed" and c["level"] > 0)
    row = cell["thresholds"]["t2i_R@5"]
    row["retention"] = row["ratio"] + 0.01
    cell["failures"] = [f"{cell['id']}: t2i_R@5 retention = {row['ratio']:.3f} < {row['retention']:.2f}"]
    cell["outcome"], cell["passed"] = "failed", False
    root = parse(render_html(sample_results))
    (td,) = root.find_all("td", data_cell=cell["id"])
    assert td.attrs["data-outcome"] == "failed" and "fail" in td.classes()
    (why,) = [n for n in td.find_all("small") if "why" in n.classes()]
    assert "✕" in why.text
    assert [s.attrs["title"] for s in why.find_all("span") if "title" in s.attrs] == ["t2i_R@5"]
    # Every grid cell appears once in the compact tables, with its outcome.
    cells = root.find_all("td", data_metric=PRIMARY)
    assert sorted(n.attrs["data-cell"] for n in cells) == sorted(c["id"] for c in grid_cells(sample_results))
    outcomes = {c["id"]: c["outcome"] for c in grid_cells(sample_results)}
    assert all(n.attrs["data-outcome"] == outcomes[n.attrs["data-cell"]] for n in cells)


def test_colour_scale_is_fitted_to_the_values(sample_results):
    root = parse(render_html(sample_results))
    values = {c["id"]: c["metrics"][PRIMARY] for c in grid_cells(sample_results) if c["metrics"]}
    lowest, highest = min(values, key=values.get), max(values, key=values.get)

    def background(cell_id):
        (td,) = root.find_all("td", data_cell=cell_id)
        return re.search(r"background:(#[0-9a-f]{6})", td.attrs["style"])[1]

    assert background(lowest) == "#faf6f0"  # the scale's two ends
    assert background(highest) == "#1a487a"
    scale = [n for n in root.iter() if "heat-scale" in n.classes()][0].text
    assert f"{values[lowest]:.3f}" in scale and f"{values[highest]:.3f}" in scale


def test_failures_are_grouped_per_model_folded_worst_first(sample_results):
    root = parse(render_html(sample_results))
    groups = [n for n in root.find_all("details") if "model-failures" in n.classes()]
    assert [g.find_all("summary")[0].text.split(" · ")[0] for g in groups] == ["demo-plain", "demo-robust"]
    assert all("open" not in g.attrs for g in groups)
    report = Report(sample_results)
    for group, model in zip(groups, ("demo-plain", "demo-robust"), strict=True):
        failing = [c for c in sample_results["cells"] if c["model"] == model and c["outcome"] in ("failed", "error")]
        shown = [n for n in group.find_all("details") if "failure" in n.classes()]
        assert len(shown) == len(failing)
        gaps = [report.shortfall(c) for c in failing]
        expected = sorted(gaps, reverse=True)
        order = [(e.find_all("code")[0].text, e.attrs["data-kind"]) for e in shown]
        by_key = {(c["id"], c["kind"]): report.shortfall(c) for c in failing}
        assert [by_key[k] for k in order] == expected


def test_shortfall_is_the_largest_gap_to_what_the_gate_needs(sample_results):
    report = Report(sample_results)
    cell = next(c for c in grid_cells(sample_results) if c["outcome"] == "failed")
    gaps = []
    for metric in report.failing(cell):
        row = cell["thresholds"][metric]
        needs = [row.get("min"), row["clean"] * row["retention"] if "clean" in row else None]
        gaps += [n - cell["metrics"][metric] for n in needs if n is not None]
    assert report.shortfall(cell) == pytest.approx(max(gaps))
    error = next(c for c in sample_results["cells"] if c["outcome"] == "error")
    assert report.shortfall(error) == float("inf")


def test_chart_y_range_is_fitted_and_tooltips_are_rounded(make_results):
    results = make_results(models=("demo-robust",), levels=(0.0, 0.1, 0.2), search=False, error=False)
    root = parse(render_html(results))
    (chart,) = root.find_all("svg", data_patch="black_box", data_metric=PRIMARY)
    ticks = [float(t.text) for t in chart.find_all("text") if "tick" in t.classes() and "%" not in t.text]
    values = [c["metrics"][PRIMARY] for c in results["cells"] if c["patch"] == "black_box"]
    lows = [c["intervals"][PRIMARY][0] for c in results["cells"] if c["patch"] == "black_box"]
    assert min(ticks) <= min(lows) and max(ticks) >= max(values)
    assert min(ticks) > 0.0 or max(ticks) < 1.0  # not the fixed 0..1 axis
    assert max(ticks) - min(ticks) < 0.9
    for title in chart.find_all("title"):
        assert not re.search(r"\d\.\d{4,}", title.text), title.text


def test_nice_range():
    low, high, ticks = charts.nice_range([0.41, 0.53], bounded=True)
    assert low <= 0.41 - 0.02 and high >= 0.53 and ticks[0] == low and ticks[-1] == high
    assert 3 <= len(ticks) <= charts.MAX_TICKS + 1
    assert charts.nice_range([0.0, 1.0], bounded=True)[:2] == (0.0, 1.0)
    assert charts.nice_range([], bounded=True)[:2] == (0.0, 1.0)


def test_markers_of_two_models_at_one_level_do_not_overlap(sample_results):
    root = parse(render_html(sample_results))
    (chart,) = root.find_all("svg", data_patch="black_box", data_metric=PRIMARY)
    for level in ("0.1", "0.3"):
        xs = {float(p.attrs["cx"]) for p in chart.find_all("circle", data_level=level)}
        assert len(xs) == 2


def test_caveat_on_intervals_and_paired_comparison(sample_results):
    root = parse(render_html(sample_results))
    (caveat,) = [n for n in root.iter() if "caveat" in n.classes()]
    assert "not the randomness of the patch placement" in caveat.text
    assert "paired" in caveat.text


def test_each_picture_is_embedded_once_and_enlarges_on_click(sample_results):
    data = png_bytes()
    for cell in sample_results["cells"]:
        if cell.get("search"):
            cell["search"]["picture"] = "masks/same.png"  # two cells, one picture
    page = render_html(sample_results, pictures={"masks/same.png": data})
    root = parse(page)
    assert page.count("data:image/png;base64,") == 1
    (figure,) = [f for f in root.find_all("figure") if "zoom" in f.classes()]
    opener = [a for a in figure.find_all("a") if a.attrs["href"] == "#" + figure.attrs["id"]]
    assert opener and opener[0].find_all("img")
    assert ":target" in page  # the enlarged view is pure CSS
    (gallery,) = root.find_all("section", id="gallery")
    assert figure in list(gallery.iter())


def test_sensitivity_section_reads_pictures_inside_the_report_folder(tmp_path, sample_results):
    (tmp_path / "sens").mkdir()
    mean = png_bytes()
    (tmp_path / "sens" / "mean.png").write_bytes(mean)
    (tmp_path.parent / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    sample_results["sensitivity"] = {
        "demo-plain": {
            "window": 16, "stride": 8, "n_images": 40, "mean_map": "sens/mean.png",
            "worst": [{"id": "img-007", "png": "../outside.png", "drop": 0.4567}],
            "regions": {"lungs": {"share_inside": 0.73}, "<b>heart</b>": {"share_inside": 0.12}},
        }
    }
    page = render_html(sample_results, root=tmp_path)
    root = parse(page)
    (section,) = root.find_all("section", id="sensitivity")
    (img,) = section.find_all("img")
    assert img.attrs["src"].endswith(__import__("base64").b64encode(mean).decode())
    assert "c2VjcmV0" not in page  # the file outside the folder was not read
    assert "../outside.png" in section.text and "img-007" in section.text
    rows = {tr.find_all("th")[0].text: tr for tr in section.find_all("tr") if tr.find_all("th", scope="row")}
    assert set(rows) == {"lungs", "<b>heart</b>"}
    assert float(rows["lungs"].find_all("span")[0].attrs["data-value"]) == 0.73
    # Without the section, nothing is shown.
    del sample_results["sensitivity"]
    assert parse(render_html(sample_results)).find_all("section", id="sensitivity") == []


def test_region_probe_table(sample_results):
    clean = next(c for c in grid_cells(sample_results) if c["model"] == "demo-plain" and c["level"] == 0)
    probe = dict(clean, id="demo-plain-black_box-lungs-inside", level=0.25, outcome="failed", thresholds={},
                 metrics={PRIMARY: 0.25}, region={"name": "lungs", "mode": "inside", "occluded_share": 0.25})
    sample_results["cells"].append(probe)
    root = parse(render_html(sample_results))
    (section,) = root.find_all("section", id="regions")
    (row,) = section.find_all("tr", data_region_cell=probe["id"])
    values = [float(s.attrs["data-value"]) for s in row.find_all("span") if "data-value" in s.attrs]
    assert values == [0.25, clean["metrics"][PRIMARY], 0.25, pytest.approx(clean["metrics"][PRIMARY] - 0.25)]
    assert "lungs" in row.text and "inside" in row.text and "failed" in row.text
    del sample_results["cells"][-1]
    assert parse(render_html(sample_results)).find_all("section", id="regions") == []


def test_nested_model_card_values_are_folded_not_squeezed(sample_results):
    sample_results["models"]["demo-plain"]["training"] = {"epochs": 30, "augment": {"occlusion": True, "p": 0.5},
                                                          "loss": "clip", "lr": 0.001, "batch": 64}
    root = parse(render_html(sample_results))
    (table,) = [t for t in root.find_all("table") if "cards" in t.classes()]
    # One column per model, one row per field.
    assert [th.text for th in table.find_all("thead")[0].find_all("th")] == ["Field", "demo-plain", "demo-robust"]
    (row,) = [tr for tr in table.find_all("tr") if tr.find_all("th") and tr.find_all("th")[0].text == "training"]
    plain, robust = row.find_all("td")
    (fold,) = [d for d in plain.find_all("details") if d.parent is plain]
    assert "open" not in fold.attrs and "5 entries" in fold.find_all("summary")[0].text
    assert [dt.text for dt in fold.find_all("dt")][:2] == ["epochs", "augment"]
    assert robust.text == ""  # demo-robust has no training card


def test_threshold_rules_are_their_own_table(sample_results):
    root = parse(render_html(sample_results))
    (table,) = [t for t in root.find_all("table") if "records" in t.classes()]
    assert not any(a.tag in ("dd", "details") for a in ancestors(table))


def test_extra_sections_from_the_hook_appear_as_given(sample_results):
    page = render_html(sample_results, extra_sections=[("Sign-off <QA>", "<p id='signoff'>Reviewed</p>")])
    assert "<h2>Sign-off &lt;QA&gt;</h2><p id='signoff'>Reviewed</p>" in page


def test_templates_and_css_are_package_data():
    base = files("pytest_medrobust.reporting")
    for name in ("templates/report.html.j2", "templates/macros.html.j2", "templates/chart.svg.j2", "static/report.css"):
        assert base.joinpath(name).is_file(), name
    pyproject = (files("pytest_medrobust").joinpath("..", "pyproject.toml"))
    if pyproject.is_file():  # a source checkout: the wheel must carry them
        assert '"pytest_medrobust.reporting" = ["templates/*", "static/*"]' in pyproject.read_text()


def test_no_failure_entry_is_open_and_the_failures_link_to_their_section(sample_results):
    root = parse(render_html(sample_results))
    entries = failure_entries(root)
    assert entries and all("open" not in e.attrs for e in entries.values())
    assert any(a.attrs.get("href") == "#failures" for a in root.find_all("a"))


def test_every_cell_of_the_json_is_in_the_compact_tables_with_its_outcome(sample_results):
    root = parse(render_html(sample_results))
    marked = [n for n in root.iter() if "data-cell" in n.attrs and "data-outcome" in n.attrs]
    found = sorted((n.attrs["data-cell"], n.attrs["data-kind"], n.attrs["data-outcome"]) for n in marked)
    assert found == sorted((c["id"], c["kind"], c["outcome"]) for c in sample_results["cells"])
    # A failed search cell is marked inside its grid cell, which itself passed or failed on its own.
    search = next(c for c in sample_results["cells"] if c["kind"] == "search" and c["outcome"] == "failed")
    (mark,) = root.find_all("span", data_cell=search["id"], data_kind="search")
    (value,) = mark.find_all("span", **{"class": "num"})
    assert "✕" in mark.text and float(value.attrs["data-value"]) == search["search"]["value"]
    assert mark.parent.parent.tag == "td" and mark.parent.parent.attrs["data-cell"] == search["id"]


def test_search_cells_at_a_level_off_the_grid_are_listed_under_the_table(sample_results):
    search = next(c for c in sample_results["cells"] if c["kind"] == "search")
    search["level"] = 0.25
    root = parse(render_html(sample_results))
    (mark,) = root.find_all("span", data_cell=search["id"], data_kind="search")
    assert mark.parent.tag == "p" and "25%" in mark.text


def test_hostile_strings_in_the_optional_sections_are_inert(sample_results):
    xss = "<script>alert(1)</script>"
    attr = '"><img src=x onerror=alert(1)>'
    sample_results["sensitivity"] = {xss: {"window": 8, "stride": 4, "n_images": 2, "mean_map": attr,
                                           "worst": [{"id": xss, "png": attr, "drop": 0.1}],
                                           "regions": {xss: {"share_inside": 0.5}}}}
    probe = dict(grid_cells(sample_results)[1], id=xss, region={"name": xss, "mode": attr, "occluded_share": 0.2})
    sample_results["cells"].append(probe)
    page = render_html(sample_results, root="/nonexistent")
    root = parse(page)
    assert "<script" not in page.lower() and root.find_all("img") == []
    assert not any(name.startswith("on") for node in root.iter() for name in node.attrs)
    (regions,) = root.find_all("section", id="regions")
    assert xss in regions.text and attr in regions.text
    (sensitivity,) = root.find_all("section", id="sensitivity")
    assert xss in sensitivity.text and attr in sensitivity.text


def test_small_data_warnings_are_shown_escaped(sample_results):
    sample_results["warnings"] = ["t2i_R@5 interval is 0.31 wide <b>(bound 0.2)</b>"]
    page = render_html(sample_results)
    (item,) = parse(page).find_all("li", data_warning="1")
    assert item.text == sample_results["warnings"][0]
    assert "<b>(bound" not in page
