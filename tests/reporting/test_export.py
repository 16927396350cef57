"""``medrobust export`` and ``medrobust compare`` (issue 14): CSV, curve files, re-rendered
reports and the delta table from saved results JSONs, with the file named on bad input."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json

import pytest

from pytest_medrobust.cli import main
from pytest_medrobust.reporting.export import broken_studies, cells_csv, compare_table, read_queries, write_curves
from pytest_medrobust.reporting.results import failing_metrics, small_data_warnings


@pytest.fixture
def saved(tmp_path, sample_results):
    path = tmp_path / "medrobust.json"
    path.write_text(json.dumps(sample_results))
    return path


def test_csv_has_a_row_per_cell_and_metric_with_interval_limits_and_verdict(sample_results):
    rows = list(csv.DictReader(io.StringIO(cells_csv(sample_results))))
    expected = sum(max(len(c["metrics"]), 1) for c in sample_results["cells"])
    assert len(rows) == expected
    by_key = {(r["kind"], r["cell"], r["metric"]): r for r in rows}
    checked = 0
    for cell in sample_results["cells"]:
        for metric, value in cell["metrics"].items():
            row = by_key[(cell["kind"], cell["id"], metric)]
            assert float(row["value"]) == value
            assert row["outcome"] == cell["outcome"]
            if metric in cell["intervals"]:
                assert [float(row["lo"]), float(row["hi"])] == cell["intervals"][metric]
            limits = cell["thresholds"].get(metric, {})
            assert row["gated"] == str(metric in cell["thresholds"]).lower()
            if "retention" in limits and "ratio" in limits:
                assert float(row["retention_limit"]) == limits["retention"]
                assert float(row["clean"]) == limits["clean"] and float(row["retention"]) == limits["ratio"]
                checked += 1
            # The metric failed exactly when a failure message names it.
            named = any(f.split(": ", 1)[1].startswith(f"{metric} ") for f in cell["failures"])
            assert row["metric_failed"] == str(named).lower()
    assert checked > 0
    assert any(r["outcome"] == "error" and r["metric"] == "" for r in rows)


def test_failing_metrics_match_whole_names_only():
    cell = {"thresholds": {"i2t_R@1": {}, "i2t_R@10": {}}, "metrics": {},
            "failures": ["m-p-0.30: i2t_R@10 = 0.100 < min 0.200"]}
    assert failing_metrics(cell) == ["i2t_R@10"]


def test_curves_one_file_per_patch_and_gated_metric_byte_stable(tmp_path, sample_results):
    first = write_curves(sample_results, tmp_path / "a", "svg")
    again = write_curves(sample_results, tmp_path / "b", "svg")
    patches, metrics = sample_results["config"]["patches"], ["i2t_unique_R@5", "t2i_R@5"]
    assert sorted(p.name for p in first) == sorted(f"{p}-{m}.svg" for p in patches for m in metrics)
    for a, b in zip(first, again, strict=True):
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    pngs = write_curves(sample_results, tmp_path / "png", "png")
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert pngs[0].read_bytes() == write_curves(sample_results, tmp_path / "png2", "png")[0].read_bytes()


def test_export_command_writes_every_file(tmp_path, saved, capsys):
    out = tmp_path / "out"
    code = main(["export", str(saved), "--csv", str(out / "c.csv"), "--plots", str(out / "plots"),
                 "--format", "svg", "--html", str(out / "r.html"), "--markdown", str(out / "r.md")])
    assert code == 0
    assert (out / "c.csv").read_text().startswith("model,patch,level,kind,cell,outcome,metric")
    assert len(list((out / "plots").glob("*.svg"))) == 4
    assert "<html" in (out / "r.html").read_text().lower()
    assert (out / "r.md").read_text().startswith("## ❌ Occlusion robustness: FAIL")
    assert "--plots: 4 file(s) in" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read a results JSON"),
    (json.dumps({"schema": 1, "cells": [{"id": "x"}]}), "cells[0] is not a cell record"),
    (json.dumps({"schema": 2, "cells": []}), "not a pytest-medrobust results file"),
])
def test_bad_results_file_is_named(tmp_path, capsys, content, message):
    bad = tmp_path / "broken.json"
    bad.write_text(content)
    assert main(["export", str(bad), "--csv", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and message in err
    assert main(["compare", str(bad), str(bad)]) == 2


def test_compare_prints_deltas_and_marks_changed_outcomes(tmp_path, sample_results, capsys):
    b = copy.deepcopy(sample_results)
    changed = next(c for c in b["cells"] if c["outcome"] == "failed" and c["kind"] == "grid")
    changed["outcome"], changed["failures"] = "passed", []
    changed["metrics"]["i2t_unique_R@5"] += 0.25
    (tmp_path / "a.json").write_text(json.dumps(sample_results))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(changed["id"]) and "i2t_unique_R@5" in line)
    before = next(c for c in sample_results["cells"] if c["id"] == changed["id"] and c["kind"] == "grid")
    assert f"{before['metrics']['i2t_unique_R@5']:.3f}" in row and "+0.250" in row
    assert "failed -> passed  <<" in row
    lines, differ = compare_table(sample_results, sample_results, "a", "a")
    assert differ == 0 and all("<<" not in line for line in lines)
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0


def test_compare_with_no_shared_cell_names_the_second_file(tmp_path, sample_results, capsys):
    other = copy.deepcopy(sample_results)
    for cell in other["cells"]:
        cell["id"] = "other-" + cell["id"]
    (tmp_path / "a.json").write_text(json.dumps(sample_results))
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert f"{tmp_path / 'b.json'}: no cell in common" in capsys.readouterr().err


def test_broken_studies_from_the_per_query_file(tmp_path):
    results = {"cells": [
        {"id": "m-p-0.00", "kind": "grid", "model": "m", "patch": "p", "level": 0.0},
        {"id": "m-p-0.30", "kind": "grid", "model": "m", "patch": "p", "level": 0.3},
    ]}
    lines = [{"ids": ["s1", "s2", "s3"]},
             {"cell": "m-p-0.00", "kind": "grid", "i2t": [1, 1, 9], "t2i": [1, 1, 1], "i2t_unique": [1, 5, 9]},
             {"cell": "m-p-0.30", "kind": "grid", "i2t": [1, 1, 9], "t2i": [1, 1, 1], "i2t_unique": [7, 5, 2]}]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ids, cells = read_queries(path)
    # s1 left the top 5 (1 -> 7); s2 stayed (5); s3 was never in it.
    assert broken_studies(ids, cells, results, "i2t_unique", 5) == [
        "m-p-0.30 (grid): 1 studies fell out of the top 5 (i2t_unique): s1"]
    path.write_text(json.dumps(lines[0]) + "\n" + json.dumps({**lines[1], "i2t": [1]}) + "\n")
    with pytest.raises(Exception, match=r"q.jsonl:2: not one rank per study"):
        read_queries(path)


def test_small_data_warning_names_the_metric_and_the_bound():
    cells = [{"id": "m-p-0.30", "n_images": 20, "thresholds": {"t2i_R@5": {}, "i2t_R@1": {}},
              "intervals": {"t2i_R@5": [0.10, 0.50], "i2t_R@1": [0.40, 0.55]}},
             {"id": "m-p-0.00", "n_images": 20, "thresholds": {"t2i_R@5": {}}, "intervals": {"t2i_R@5": [0.3, 0.45]}}]
    (warning,) = small_data_warnings(cells, {"bootstrap": {"confidence": 0.95}})
    assert "t2i_R@5 is wider than 0.20 in 1 of 2 cells (widest 0.40, m-p-0.30, 20 queries)" in warning


def test_curve_file_of_a_patch_spec_with_quotes_stays_in_the_folder(tmp_path, sample_results):
    spec = "region(name='a+b/c')"
    for cell in sample_results["cells"]:
        if cell["patch"] == sample_results["config"]["patches"][0]:
            cell["patch"] = spec
    sample_results["config"]["patches"][0] = spec
    written = write_curves(sample_results, tmp_path, "png")
    assert all(p.parent == tmp_path for p in written)
    odd = [p.name for p in written if p.name.startswith("region")]
    assert len(odd) == 2 and all("'" not in n and "/" not in n for n in odd)
