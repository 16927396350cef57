"""Threshold rules: kinds, matching, overrides, the lower-bound gate and the failure messages."""

import json
import re

import pytest

from pytest_medrobust.errors import ConfigError
from pytest_medrobust.gate.thresholds import Thresholds, chance_recall


def evaluate(thresholds, metrics, *, level=0.3, clean=None, intervals=None, chance=None, model="m", patch="black_box"):
    return thresholds.evaluate("cell", model, patch, level, metrics, clean, intervals, chance)


def test_defaults_gate_retention_and_distance_from_chance():
    t = Thresholds.defaults()
    chance = {"i2t_unique_R@5": 0.05, "t2i_R@5": 0.02}
    clean = {"i2t_unique_R@5": 0.5, "t2i_R@5": 0.4}
    ok = evaluate(t, {"i2t_unique_R@5": 0.31, "t2i_R@5": 0.25}, clean=clean, chance=chance)
    assert ok.passed, ok.failures
    bad = evaluate(t, {"i2t_unique_R@5": 0.29, "t2i_R@5": 0.25}, clean=clean, chance=chance)
    assert bad.failures == ["cell: i2t_unique_R@5 retention = 0.580 (0.290 occluded vs 0.500 clean) < 0.60"]


def test_a_model_at_chance_never_passes_whatever_the_number_of_candidates():
    t = Thresholds.defaults()
    for unique in (8, 215, 10_000):
        chance = {"i2t_unique_R@5": chance_recall("i2t_unique_R@5", 10_000, unique), "t2i_R@5": 0.0005}
        at_chance = {"i2t_unique_R@5": chance["i2t_unique_R@5"], "t2i_R@5": 0.0005}
        verdict = evaluate(t, at_chance, level=0.0, chance=chance)
        assert not verdict.passed
        assert "closes 0.000 of the gap from chance" in verdict.failures[0]
    perfect = evaluate(t, {"i2t_unique_R@5": 1.0, "t2i_R@5": 1.0}, level=0.0, chance={"i2t_unique_R@5": 0.625, "t2i_R@5": 0.2})
    assert perfect.passed


def test_chance_levels():
    assert chance_recall("i2t_unique_R@5", 300, 215) == pytest.approx(5 / 215)
    assert chance_recall("t2i_R@10", 300, 215) == pytest.approx(10 / 300)
    assert chance_recall("i2t_unique_R@10", 300, 4) == 1.0
    assert chance_recall("i2t_mean_rank", 300, 4) is None


def test_rules_override_in_order_kind_by_kind():
    t = Thresholds.from_table(
        {
            "min": {"i2t_R@1": 0.5},
            "retention": {},
            "above_chance": {},
            "rules": [
                {"model": "demo-*", "metric": "i2t_R@1", "levels": [0.5], "min": 0.2},
                {"model": "demo-plain", "metric": "i2t_R@1", "max_level": 0.3, "retention": 0.9},
            ],
        },
        "cfg",
    )
    assert evaluate(t, {"i2t_R@1": 0.3}, level=0.5, model="demo-x").passed  # the rule's min 0.2
    assert not evaluate(t, {"i2t_R@1": 0.3}, level=0.3, model="demo-x").passed  # the table's min 0.5
    v = evaluate(t, {"i2t_R@1": 0.6}, level=0.2, model="demo-plain", clean={"i2t_R@1": 0.7})
    assert v.failures == ["cell: i2t_R@1 retention = 0.857 (0.600 occluded vs 0.700 clean) < 0.90"]
    assert v.thresholds["i2t_R@1"] == {"min": 0.5, "retention": 0.9, "clean": 0.7, "ratio": pytest.approx(0.6 / 0.7)}


def test_ranks_are_lower_is_better():
    t = Thresholds.from_table({"max": {"i2t_mean_rank": 10}, "retention": {"i2t_mean_rank": 0.5}, "above_chance": {}}, "cfg")
    v = evaluate(t, {"i2t_mean_rank": 12.0}, clean={"i2t_mean_rank": 5.0})
    assert v.failures == [
        "cell: i2t_mean_rank = 12.000 > max 10.000",
        "cell: i2t_mean_rank retention = 0.417 (12.000 occluded vs 5.000 clean) < 0.50",
    ]


def test_lower_bound_gate_uses_the_interval():
    t = Thresholds.from_table({"gate": "lower", "min": {"i2t_R@5": 0.4}, "retention": {}, "above_chance": {}}, "cfg")
    v = evaluate(t, {"i2t_R@5": 0.45}, intervals={"i2t_R@5": [0.38, 0.52]})
    assert v.failures == ["cell: i2t_R@5 = 0.450 (lower bound 0.380) < min 0.400"]
    assert evaluate(t, {"i2t_R@5": 0.45}, intervals={"i2t_R@5": [0.41, 0.5]}).passed


def test_a_clean_value_of_zero_leaves_nothing_to_retain_and_stays_json_safe():
    t = Thresholds.from_table({"retention": {"i2t_R@5": 0.5}, "above_chance": {}}, "cfg")
    v = evaluate(t, {"i2t_R@5": 0.0}, clean={"i2t_R@5": 0.0})
    assert v.passed
    json.dumps(v.thresholds, allow_nan=False)


def test_threshold_for_an_unmeasured_metric_fails_loudly():
    t = Thresholds.from_table({"min": {"i2t_R@50": 0.1}, "retention": {}, "above_chance": {}}, "cfg")
    v = evaluate(t, {"i2t_R@5": 0.9})
    assert "threshold set for unknown metric 'i2t_R@50'" in v.failures[0]


@pytest.mark.parametrize(
    "table, message",
    [
        ({"gate": "mean"}, "cfg.gate must be one of point, lower"),
        ({"min": {"i2t_R@5": "high"}}, "cfg.min.i2t_R@5: expected a finite number"),
        ({"rules": [{"metric": "i2t_R@5"}]}, "cfg.rules[0]: a rule needs at least one of"),
        ({"rules": [{"min": 0.1}]}, "cfg.rules[0]: a rule needs a 'metric'"),
        ({"minimum": {}}, "cfg: unknown key(s) minimum"),
    ],
)
def test_bad_threshold_tables_name_the_key(table, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Thresholds.from_table(table, "cfg")


def test_a_rule_can_hold_the_worst_case_search_to_its_own_limit():
    t = Thresholds.from_table(
        {"retention": {"i2t_unique_R@5": 0.5},
         "rules": [{"metric": "i2t_unique_R@5", "cells": "search", "retention": 0.2}]},
        "thresholds",
    )
    clean, chance = {"i2t_unique_R@5": 0.5, "t2i_R@5": 0.5}, {"i2t_unique_R@5": 0.01, "t2i_R@5": 0.01}
    metrics = {"i2t_unique_R@5": 0.15, "t2i_R@5": 0.5}  # i2t retention 0.30
    grid = t.evaluate("cell", "m", "black_box", 0.2, metrics, clean, chance=chance, kind="grid")
    search = t.evaluate("cell", "m", "black_box", 0.2, metrics, clean, chance=chance, kind="search")
    assert grid.thresholds["i2t_unique_R@5"]["retention"] == 0.5 and not grid.passed
    assert search.thresholds["i2t_unique_R@5"]["retention"] == 0.2 and search.passed
    # The selector survives the results JSON (medrobust merge re-judges from it).
    again = Thresholds.from_json(json.loads(json.dumps(t.to_json())), "config.thresholds")
    assert again == t


@pytest.mark.parametrize("cells", ["worst", "", 1, "Search"])
def test_an_unknown_cells_selector_is_an_error(cells):
    with pytest.raises(ConfigError, match=r"thresholds.rules\[0\].cells must be one of"):
        Thresholds.from_table({"rules": [{"metric": "t2i_R@5", "cells": cells, "min": 0.1}]}, "thresholds")
