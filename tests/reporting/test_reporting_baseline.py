"""Baseline files: atomic save, strict load, regression comparison, dataset compatibility."""

from __future__ import annotations

import copy
import json
import os

import pytest

from pytest_medrobust.errors import ConfigError
from pytest_medrobust.gate import baseline as baseline_module
from pytest_medrobust.gate.baseline import (
    Baseline,
    cell_key,
    check_compatible,
    compare_to_baseline,
    load_baseline,
    save_baseline,
)

PRIMARY = "i2t_unique_R@5"


@pytest.fixture
def saved(tmp_path, sample_results):
    path = save_baseline(sample_results, tmp_path / "baselines" / "medrobust-baseline.json")
    return path, load_baseline(path)


def cell_by_id(results, cell_id, kind="grid"):
    return next(c for c in results["cells"] if c["id"] == cell_id and c["kind"] == kind)


def test_round_trip(saved, sample_results):
    path, baseline = saved
    assert isinstance(baseline, Baseline)
    assert baseline.path == path
    assert baseline.dataset_sha256 == sample_results["dataset"]["sha256"]
    assert baseline.dataset_name == "phantom"
    assert baseline.seed == 0
    assert baseline.config == sample_results["config"]
    with_metrics = [c for c in sample_results["cells"] if c["metrics"]]
    assert set(baseline.cells) == {cell_key(c) for c in with_metrics}  # the error cell has none
    for cell in with_metrics:
        assert baseline.cells[cell_key(cell)] == cell["metrics"]
    data = json.loads(path.read_text())
    assert data["schema"] == 1 and data["kind"] == "medrobust-baseline"
    assert data["cells"]["demo-plain-black_box-0.30"]["level"] == 0.3


def test_search_cells_do_not_overwrite_grid_cells_of_the_same_id(saved, sample_results):
    _, baseline = saved
    grid = cell_by_id(sample_results, "demo-plain-black_box-0.30")
    search = cell_by_id(sample_results, "demo-plain-black_box-0.30", kind="search")
    assert baseline.cells["demo-plain-black_box-0.30"][PRIMARY] == grid["metrics"][PRIMARY]
    assert baseline.cells["search:demo-plain-black_box-0.30"][PRIMARY] == search["metrics"][PRIMARY]
    assert compare_to_baseline(search, baseline, metrics=[PRIMARY]) == []
    worse = copy.deepcopy(search)
    worse["metrics"][PRIMARY] -= 0.1
    assert len(compare_to_baseline(worse, baseline, metrics=[PRIMARY])) == 1


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, sample_results, monkeypatch):
    path = tmp_path / "b.json"
    save_baseline(sample_results, path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    changed = copy.deepcopy(sample_results)
    changed["seed"] = 99
    monkeypatch.setattr(baseline_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_baseline(changed, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["b.json"]
    monkeypatch.undo()
    save_baseline(changed, path)
    assert load_baseline(path).seed == 99
    assert os.listdir(tmp_path) == ["b.json"]


def test_save_needs_a_dataset_fingerprint(tmp_path, sample_results):
    del sample_results["dataset"]["sha256"]
    with pytest.raises(ConfigError, match="fingerprint"):
        save_baseline(sample_results, tmp_path / "b.json")


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"schema": 2, "dataset": {"sha256": "ab"}, "cells": {}}', "schema 2"),
        ('{"schema": 1, "cells": {}}', "missing key.*dataset"),
        ('{"dataset": {"sha256": "ab"}, "cells": {}}', "missing key.*schema"),
        ('{"schema": 1, "dataset": {"name": "x"}, "cells": {}}', "sha256"),
        ('{"schema": 1, "dataset": {"sha256": "ab"}, "cells": []}', "'cells' must be"),
        ('{"schema": 1, "dataset": {"sha256": "ab"}, "cells": {"c": {}}}', "cell 'c' has no 'metrics'"),
        ('{"schema": 1, "dataset": {"sha256": "ab"}, "cells": {"c": {"metrics": {"m": "x"}}}}', "not a finite"),
        ('{"schema": 1, "kind": "other", "dataset": {"sha256": "ab"}, "cells": {}}', "not a medrobust baseline"),
    ],
)
def test_load_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "bad-baseline.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_baseline(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_baseline(path)
    assert str(path) in str(info.value)


def test_unchanged_cell_passes(saved, sample_results):
    _, baseline = saved
    for cell in sample_results["cells"]:
        assert compare_to_baseline(cell, baseline, metrics=[PRIMARY, "t2i_R@1", "i2t_mean_rank"]) == []


def degraded(results, model, factor):
    """The same grid, with one model's recalls scaled down and ranks scaled up."""
    results = copy.deepcopy(results)
    for cell in results["cells"]:
        if cell["model"] == model and cell["metrics"]:
            cell["metrics"] = {
                k: (v * factor if "_R@" in k else v / factor) for k, v in cell["metrics"].items()
            }
    return results


def test_degraded_model_fails_and_other_model_passes(saved, sample_results):
    _, baseline = saved
    worse = degraded(sample_results, "demo-plain", 0.8)
    cell = cell_by_id(worse, "demo-plain-black_box-0.10")
    before = baseline.cells[cell["id"]][PRIMARY]
    after = cell["metrics"][PRIMARY]
    failures = compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_abs=0.05)
    assert failures == [
        f"{PRIMARY} fell from {before:.3f} (baseline) to {after:.3f}: -{before - after:.3f} > tolerance 0.050"
    ]
    same = cell_by_id(worse, "demo-robust-black_box-0.10")
    assert compare_to_baseline(same, baseline, metrics=[PRIMARY], tolerance_abs=0.05) == []


def test_message_format_matches_documentation(tmp_path):
    results = {
        "dataset": {"sha256": "ab" * 32},
        "cells": [{"id": "m-black_box-0.30", "metrics": {PRIMARY: 0.812}}],
    }
    baseline = load_baseline(save_baseline(results, tmp_path / "b.json"))
    cell = {"id": "m-black_box-0.30", "metrics": {PRIMARY: 0.655}}
    assert compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_abs=0.05) == [
        "i2t_unique_R@5 fell from 0.812 (baseline) to 0.655: -0.157 > tolerance 0.050"
    ]


def test_tolerances(saved, sample_results):
    _, baseline = saved
    cell = copy.deepcopy(cell_by_id(sample_results, "demo-robust-black_box-0.20"))
    before = cell["metrics"][PRIMARY]
    cell["metrics"][PRIMARY] = before - 0.04
    # No tolerance: any fall fails.
    assert len(compare_to_baseline(cell, baseline, metrics=[PRIMARY])) == 1
    assert compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_abs=0.05) == []
    assert len(compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_abs=0.03)) == 1
    # Relative: 10% of ~0.74 allows ~0.074.
    assert compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_rel=0.10) == []
    (message,) = compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_rel=0.02)
    assert message.endswith(f"> tolerance {0.02 * before:.3f} (2% of baseline)")
    # Both: the larger allowance applies.
    assert compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_abs=0.01, tolerance_rel=0.10) == []
    assert compare_to_baseline(cell, baseline, metrics=[PRIMARY], tolerance_abs=0.05, tolerance_rel=0.01) == []
    # An improvement never fails.
    cell["metrics"][PRIMARY] = before + 0.2
    assert compare_to_baseline(cell, baseline, metrics=[PRIMARY]) == []


def test_fall_equal_to_the_tolerance_passes(tmp_path):
    results = {"dataset": {"sha256": "ab"}, "cells": [{"id": "c", "metrics": {PRIMARY: 0.8}}]}
    baseline = load_baseline(save_baseline(results, tmp_path / "b.json"))
    assert compare_to_baseline({"id": "c", "metrics": {PRIMARY: 0.75}}, baseline, metrics=[PRIMARY], tolerance_abs=0.05) == []


def test_rank_metrics_fail_when_they_rise(saved, sample_results):
    _, baseline = saved
    cell = copy.deepcopy(cell_by_id(sample_results, "demo-plain-black_box-0.20"))
    before = cell["metrics"]["i2t_mean_rank"]
    cell["metrics"]["i2t_mean_rank"] = before + 2.0
    (message,) = compare_to_baseline(cell, baseline, metrics=["i2t_mean_rank"], tolerance_abs=0.5)
    assert message == f"i2t_mean_rank rose from {before:.3f} (baseline) to {before + 2:.3f}: +2.000 > tolerance 0.500"
    cell["metrics"]["i2t_mean_rank"] = before - 2.0
    assert compare_to_baseline(cell, baseline, metrics=["i2t_mean_rank"]) == []


def test_missing_metric_unknown_cell_and_error_cell(saved, sample_results):
    _, baseline = saved
    cell = copy.deepcopy(cell_by_id(sample_results, "demo-plain-black_box-0.20"))
    del cell["metrics"][PRIMARY]
    (message,) = compare_to_baseline(cell, baseline, metrics=[PRIMARY])
    assert message.startswith(f"{PRIMARY} is missing from this run (baseline ")
    new = {"id": "new-model-black_box-0.20", "metrics": {PRIMARY: 0.0}}
    assert compare_to_baseline(new, baseline, metrics=[PRIMARY]) == []
    error = {"id": "demo-plain-black_box-0.20", "metrics": None, "outcome": "error"}
    assert compare_to_baseline(error, baseline, metrics=[PRIMARY]) == []
    # A metric the baseline never had is not compared.
    assert compare_to_baseline(cell_by_id(sample_results, "demo-plain-black_box-0.20"), baseline, metrics=["x_R@3"]) == []


@pytest.mark.parametrize("kwargs", [{"tolerance_abs": -0.1}, {"tolerance_rel": float("nan")}])
def test_bad_tolerance(saved, sample_results, kwargs):
    _, baseline = saved
    with pytest.raises(ConfigError, match="tolerance"):
        compare_to_baseline(sample_results["cells"][0], baseline, metrics=[PRIMARY], **kwargs)


def test_check_compatible(saved, sample_results):
    path, baseline = saved
    sha = sample_results["dataset"]["sha256"]
    assert check_compatible(baseline, sha) is None
    other = "0123456789ab" + "0" * 52
    with pytest.raises(ConfigError) as info:
        check_compatible(baseline, other)
    message = str(info.value)
    assert str(path) in message and sha[:12] in message and other[:12] in message
    warning = check_compatible(baseline, other, allow_mismatch=True)
    assert isinstance(warning, str) and sha[:12] in warning and "anyway" in warning
    with pytest.raises(ConfigError, match="unknown"):
        check_compatible(baseline, None)
