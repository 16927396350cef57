"""Shards from the engines' variables and the cost-balanced split (issue 15, item 3)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

from pytest_medrobust.cells import Cell
from pytest_medrobust.config import Settings, build_settings
from pytest_medrobust.errors import ConfigError
from pytest_medrobust.models import ModelSpec
from pytest_medrobust.sharding import (
    ENCODER_GFLOPS,
    OVERHEAD_PASSES,
    AutoShard,
    Share,
    assign,
    cell_passes,
    grid_cells,
    model_gflops,
    parse_shard,
    plan,
    shard_costs,
    share_cells,
)
from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import make_project

WHERE = "--medrobust-shard"

# Three tasks as each engine starts them: the variables it sets in task k (1..3).
ENGINES = {
    "gitlab": lambda k: {"CI_NODE_INDEX": str(k), "CI_NODE_TOTAL": "3", "GITLAB_CI": "true"},
    # sbatch --array=0-2
    "slurm": lambda k: {"SLURM_ARRAY_TASK_ID": str(k - 1), "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2",
                        "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_STEP": "1"},
    "kubernetes": lambda k: {"JOB_COMPLETION_INDEX": str(k - 1), "MEDROBUST_SHARD_TOTAL": "3"},
}


def resolve(value: str, env: dict[str, str]) -> Share:
    request = parse_shard(value, WHERE)
    assert isinstance(request, AutoShard)
    return request.resolve(env)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2/4", Share(2, 4)), (" 1 / 1 ", Share(1, 1)), ("auto", AutoShard(None, WHERE)), ("auto/3", AutoShard(3, WHERE)),
     ("", None), (None, None)],
)
def test_parse(value, expected):
    assert parse_shard(value, WHERE) == expected


@pytest.mark.parametrize("value", ["3/2", "0/2", "1/0", "two/3", "auto/0", "auto/x", "1/2/3", "automatic"])
def test_parse_refuses(value):
    with pytest.raises(ConfigError, match=f"^{WHERE}: "):
        parse_shard(value, WHERE)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_engine_gives_every_share_once(engine):
    shares = [resolve("auto", ENGINES[engine](k)) for k in (1, 2, 3)]
    assert [(s.index, s.count, s.engine) for s in shares] == [(k, 3, engine) for k in (1, 2, 3)]
    assert resolve("auto/3", ENGINES[engine](2)).index == 2  # a declared total that agrees


def slurm(task: int, low: int, high: int, count: int, step: int | None = None) -> dict[str, str]:
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(low), "SLURM_ARRAY_TASK_MAX": str(high),
           "SLURM_ARRAY_TASK_COUNT": str(count)}
    if step is not None:
        env["SLURM_ARRAY_TASK_STEP"] = str(step)
    return env


@pytest.mark.parametrize(
    ("env", "share"),
    [
        (slurm(0, 0, 2, 3, 1), (1, 3)),  # --array=0-2
        (slurm(3, 1, 3, 3, 1), (3, 3)),  # --array=1-3
        (slurm(10, 0, 10, 3, 5), (3, 3)),  # --array=0-10:5
        (slurm(5, 1, 7, 4), (3, 4)),  # --array=1,3,5,7 (evenly spaced list, no step variable)
        (slurm(4, 4, 4, 1, 1), (1, 1)),  # --array=4
        ({k: v for k, v in slurm(8, 2, 8, 3, 3).items() if k != "SLURM_ARRAY_TASK_COUNT"}, (3, 3)),  # --array=2-8:3
    ],
    ids=["0-2", "1-3", "0-10:5", "1,3,5,7", "single", "no-count"],
)
def test_slurm_arrays(env, share):
    found = resolve("auto", env)
    assert (found.index, found.count, found.engine) == (*share, "slurm")


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("auto", {}, "no shard variables found (GitLab parallel: CI_NODE_INDEX and CI_NODE_TOTAL; SLURM"),
        ("auto", {"GITHUB_ACTIONS": "true"}, "GitHub Actions sets none: pass --medrobust-shard ${{ matrix.shard }}/N"),
        ("auto", {"CI_NODE_TOTAL": "1"}, "no shard variables found"),  # a GitLab job without parallel:
        ("auto", {"CI_NODE_TOTAL": "3"}, "CI_NODE_TOTAL=3 but CI_NODE_INDEX is not set"),
        ("auto", {"CI_NODE_INDEX": "4", "CI_NODE_TOTAL": "3"}, "CI_NODE_INDEX=4 is not in 1..CI_NODE_TOTAL=3"),
        ("auto", {"CI_NODE_INDEX": "x", "CI_NODE_TOTAL": "3"}, "CI_NODE_INDEX='x' is not an integer"),
        ("auto/4", ENGINES["gitlab"](1), "auto/N says 4 shards but GitLab parallel runs 3 (CI_NODE_INDEX=1, CI_NODE_TOTAL=3)"),
        ("auto", {**ENGINES["gitlab"](1), "MEDROBUST_SHARD_TOTAL": "2"}, "MEDROBUST_SHARD_TOTAL says 2 shards but GitLab"),
        ("auto", {**ENGINES["gitlab"](1), **ENGINES["slurm"](1)},
         "the variables of more than one engine are set (GitLab parallel: CI_NODE_INDEX=1, CI_NODE_TOTAL=3; SLURM job array"),
        ("auto", slurm(2, 1, 9, 3), "the SLURM array (SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_MIN=1, SLURM_ARRAY_TASK_MAX=9, "
         "SLURM_ARRAY_TASK_COUNT=3) is not an evenly spaced range"),  # --array=1,2,9
        ("auto", slurm(3, 1, 7, 4, 1), "is not an evenly spaced range"),  # the step disagrees with min, max, count
        ("auto", {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_MAX not"),
        ("auto", {"JOB_COMPLETION_INDEX": "0"}, "pass --medrobust-shard auto/N or set MEDROBUST_SHARD_TOTAL=N"),
        ("auto/3", {"JOB_COMPLETION_INDEX": "3"}, "JOB_COMPLETION_INDEX=3 is not in 0..2"),
        ("auto/2", ENGINES["kubernetes"](1), "auto/2 disagrees with MEDROBUST_SHARD_TOTAL=3"),
    ],
)
def test_missing_ambiguous_or_inconsistent_variables_are_named(value, env, message):
    with pytest.raises(ConfigError) as info:
        resolve(value, env)
    assert str(info.value).startswith(f"{WHERE}: ")
    assert message in str(info.value)


def test_auto_is_resolved_once_every_source_is_read(tmp_path, monkeypatch):
    """``shard = "auto"`` in pyproject.toml and an explicit share on the command line: the command
    line wins, and no engine variables are needed."""
    for name in ("CI_NODE_INDEX", "CI_NODE_TOTAL", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "MEDROBUST_SHARD_TOTAL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.medrobust]\nshard = "auto"\n')
    assert build_settings(tmp_path / "pyproject.toml", None, {"shard": "2/3"}, tmp_path).shard == Share(2, 3)
    with pytest.raises(ConfigError, match="shard: auto: no shard variables found"):
        build_settings(tmp_path / "pyproject.toml", None, {}, tmp_path)
    monkeypatch.setenv("CI_NODE_INDEX", "2")
    monkeypatch.setenv("CI_NODE_TOTAL", "2")
    settings = build_settings(tmp_path / "pyproject.toml", None, {}, tmp_path)
    assert settings.shard == Share(2, 2, "gitlab", (("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "2")))
    assert settings.to_json()["shard_from"]["engine"] == "gitlab"


# --- the split --------------------------------------------------------------------------------


def demo_settings(**changes) -> Settings:
    """The demo job's grid (make demo: fixtures/demo.toml): 2 models x 5 patches x 3 levels, search on."""
    return replace(Settings(levels=(0.0, 0.1, 0.2)), **changes)


def test_the_merge_tests_gate_splits_as_documented():
    """tests/faults/test_merge.py relies on this split of its one-model gate."""
    cells = [Cell("oracle", "black_box", lv) for lv in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)]
    assert assign(cells, {"oracle": 5.89}, 2, 8) == [1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_three_shares_cover_every_cell_once(engine, count):
    settings = demo_settings()
    cells = grid_cells(settings)
    shares = [share_cells(replace(settings, shard=Share(k, count, engine))) for k in range(1, count + 1)]
    assert Counter(c for share in shares for c in share) == Counter(cells)  # every cell in exactly one share
    assert all(shares)  # no empty share
    if engine == "gitlab" and count == 3:
        resolved = [share_cells(replace(settings, shard=resolve("auto", ENGINES[e](2)))) for e in ENGINES]
        assert resolved[0] == resolved[1] == resolved[2] == shares[1]


def independent_costs(cells, shards, gflops, count, examples):
    """Each shard's cost computed apart from shard_costs: per model present, its overhead, plus
    one pass per occluded grid cell and ``examples`` per search cell."""
    costs = []
    for k in range(1, count + 1):
        mine = [c for c, s in zip(cells, shards, strict=True) if s == k]
        total = 0.0
        for model in {c.model for c in mine}:
            grid = sum(1 for c in mine if c.model == model and c.kind == "grid" and c.level > 0)
            search = sum(1 for c in mine if c.model == model and c.kind == "search")
            total += gflops[model] * (OVERHEAD_PASSES + grid + examples * search)
        costs.append(total)
    return costs


@pytest.mark.parametrize("count", [2, 3, 5])
def test_shares_are_balanced_by_cost(count):
    """Two models of very different cost: each share is within one cell and one overhead of the
    mean (the bound assign documents), and the costs agree with an independent count."""
    models = (ModelSpec("big", "pytest_medrobust.models.clip:load_clip", {"model_name": "ViT-L-14"}), ModelSpec("demo-plain"))
    settings = Settings(models=models, levels=(0.0, 0.1, 0.2, 0.3))
    cells, gflops = grid_cells(settings), plan(settings)["model_gflops"]
    assert gflops == {"big": ENCODER_GFLOPS["ViT-L-14"], "demo-plain": ENCODER_GFLOPS["demo"]}
    shards = assign(cells, gflops, count, 8)
    costs = shard_costs(cells, shards, gflops, count, 8)
    assert costs == pytest.approx(independent_costs(cells, shards, gflops, count, 8))
    mean = sum(gflops[c.model] * cell_passes(c, 8) for c in cells) / count + sum(gflops.values()) * OVERHEAD_PASSES / count
    worst_cell = max(gflops[c.model] * cell_passes(c, 8) for c in cells)
    worst_overhead = max(gflops.values()) * OVERHEAD_PASSES
    assert all(abs(c - mean) <= worst_cell + 2 * worst_overhead for c in costs), (costs, mean)
    # Consecutive runs of the grid: a model spans neighbouring shares only.
    assert shards == sorted(shards)


def test_the_split_depends_only_on_the_grid_and_plan():
    settings = demo_settings()
    cells = grid_cells(settings)
    first = assign(cells, plan(settings)["model_gflops"], 3, 8)
    assert assign(list(cells), dict(reversed(list(plan(settings)["model_gflops"].items()))), 3, 8) == first


def test_model_costs_are_estimated_from_the_adapter_and_options():
    assert model_gflops(ModelSpec("demo-occaug")) == ENCODER_GFLOPS["demo"]
    assert model_gflops(ModelSpec("clip")) == ENCODER_GFLOPS["ViT-B-32"]
    assert model_gflops(ModelSpec("clip", options={"model_name": "ViT-B/16"})) == ENCODER_GFLOPS["ViT-B-16"]
    assert model_gflops(ModelSpec("cxr-repair")) == ENCODER_GFLOPS["ViT-B-32"]
    assert model_gflops(ModelSpec("medclip", options={"variant": "resnet50"})) == ENCODER_GFLOPS["resnet50"]
    assert model_gflops(ModelSpec("cxr-clip")) == ENCODER_GFLOPS["swin-tiny"]
    assert model_gflops(ModelSpec("mine", "mypackage.models:build")) == ENCODER_GFLOPS["ViT-B-32"]


def test_the_demo_encoder_estimate_is_its_counted_flops():
    """The demo's entry in the table is what torch's FLOP counter gives for one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pytest_medrobust.models.demo import demo_plain

    model = demo_plain()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.encode_images(torch.rand(1, 3, *model.input_size))
    assert counter.get_total_flops() / 1e9 == pytest.approx(ENCODER_GFLOPS["demo"], rel=0.01)


# --- in a pytest run ----------------------------------------------------------------------------


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    import pytest_medrobust.runner  # noqa: F401  (C extensions load once, before pytester's runs)

    return make_project(pytester, PYPROJECT)


@pytest.fixture
def clean_environment(monkeypatch):
    for name in ("CI_NODE_INDEX", "CI_NODE_TOTAL", "GITHUB_ACTIONS", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX",
                 "MEDROBUST_SHARD_TOTAL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_auto_without_variables_is_a_set_up_error(project, clean_environment):
    result = project.runpytest("--medrobust", "--medrobust-shard", "auto")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--medrobust-shard: auto: no shard variables found" in result.stderr.str()


def test_the_header_and_json_name_the_engine_and_the_share(project, clean_environment):
    clean_environment.setenv("SLURM_ARRAY_TASK_ID", "2")
    for name, value in (("MIN", "1"), ("MAX", "3"), ("COUNT", "3"), ("STEP", "1")):
        clean_environment.setenv(f"SLURM_ARRAY_TASK_{name}", value)
    result = project.runpytest("--medrobust", "--medrobust-shard", "auto", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "medrobust: shard 2/3 (SLURM job array (SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_MIN=1, SLURM_ARRAY_TASK_MAX=3, "
        "SLURM_ARRAY_TASK_COUNT=3)): 2 of 6 cells, ~*% of the grid's estimated cost",
    ])
    config = json.loads((project.path / "reports" / "medrobust.json").read_text())["config"]
    assert config["shard"] == "2/3"
    assert config["shard_from"]["engine"] == "slurm" and config["shard_from"]["cells"] == 2
    assert config["shard_plan"]["model_gflops"] == {"oracle": ENCODER_GFLOPS["ViT-B-32"], "constant": ENCODER_GFLOPS["ViT-B-32"]}


def test_a_shard_loads_only_the_models_it_measures(pytester, clean_environment):
    """The preflight builds each model to check it; a shard that holds none of a model's cells
    must not pay for that model's load (nor stop on it)."""
    make_project(pytester, PYPROJECT.replace('factory = "fakemodels:constant"', 'factory = "fakemodels:broken"'))
    first = pytester.runpytest("--medrobust", "--medrobust-shard", "1/2", "-p", "no:cacheprovider")
    assert first.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), first.stdout.str()  # a verdict, not an error
    first.stdout.fnmatch_lines(["*3 of 6 cells*", "gate *: * of 3 cells"])
    assert "not found" not in first.stdout.str() + first.stderr.str()
    second = pytester.runpytest("--medrobust", "--medrobust-shard", "2/2", "-p", "no:cacheprovider")
    assert second.ret == pytest.ExitCode.USAGE_ERROR
    assert "weights file /nowhere/model.safetensors not found" in second.stderr.str()
