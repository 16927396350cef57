"""Embedding cache, shards and merging, in pytester folders."""

import json

import pytest

from pytest_medrobust.cache import EmbeddingCache

from .conftest import read_results
from .fakes import write_dataset

TINY = """
models = [{name = "tiny", factory = "fakemodels:tiny", options = {seed = %d, size = %d}}]
levels = [0.0, 0.3]
"""


def run_tiny(project, *args, seed=0, size=32):
    project.makefile(".toml", gate=TINY % (seed, size))
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "-p", "no:cacheprovider", *args)
    return result, read_results(project)


def cached_flags(results):
    return [c["cached"] for c in results["cells"]]


def metrics(results):
    return [c["metrics"] for c in results["cells"]]


def test_warm_rerun_reads_the_cache_and_gives_the_same_numbers(project):
    _, cold = run_tiny(project)
    _, warm = run_tiny(project)
    assert cached_flags(cold) == [False, False]
    assert cached_flags(warm) == [True, True]
    assert metrics(cold) == metrics(warm)
    assert list((project.path / ".medrobust_cache" / "v1" / "embeddings").rglob("*.safetensors"))


@pytest.mark.parametrize(
    "change",
    ["weights", "preprocessing", "dataset", "level", "seed"],
)
def test_cache_is_not_read_when_what_it_depends_on_changed(project, change):
    run_tiny(project)
    kwargs, args = {}, []
    if change == "weights":
        kwargs["seed"] = 1
    elif change == "preprocessing":
        kwargs["size"] = 24
    elif change == "dataset":
        write_dataset(project.path, n=23)
    elif change == "level":
        args = ["--medrobust-levels", "0.31"]
    elif change == "seed":
        args = ["--medrobust-seed", "5"]
    _, results = run_tiny(project, *args, **kwargs)
    by_level = {c["level"]: c["cached"] for c in results["cells"]}
    if change in ("level", "seed"):
        assert by_level[0.0] is True  # the clean embeddings do not depend on the occlusion
        assert [v for lv, v in by_level.items() if lv > 0] == [False]
    else:
        assert set(by_level.values()) == {False}


def test_no_cache_and_cache_clear(project):
    run_tiny(project, "--medrobust-no-cache")
    assert not (project.path / ".medrobust_cache" / "v1").exists()
    run_tiny(project)
    _, results = run_tiny(project, "--medrobust-cache-clear")
    assert cached_flags(results) == [False, False]


def test_an_unreadable_entry_is_recomputed_and_a_failed_compute_writes_nothing(tmp_path):
    import torch

    cache = EmbeddingCache(tmp_path)
    fields = {"model": "m", "what": 1}
    value = cache.get_or_compute(fields, lambda: torch.arange(6.0).reshape(2, 3))
    (entry,) = list(tmp_path.rglob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:20])  # truncated, as by a crash outside our writer
    again = cache.get_or_compute(fields, lambda: torch.arange(6.0).reshape(2, 3))
    assert torch.equal(value, again) and not cache.last_hit

    def dies():
        raise KeyboardInterrupt  # a run killed while computing

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute({"model": "other"}, dies)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_shards_split_the_grid_and_merge_back(project):
    project.makefile(".toml", gate="models = ['oracle']\nlevels = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]\n")
    full = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    full_results = read_results(project)
    seen = []
    for i in (1, 2, 3):
        out = f"shard{i}"
        project.runpytest(
            "--medrobust", "--medrobust-config", "gate.toml", "--medrobust-shard", f"{i}/3", "--medrobust-report-dir", out
        )
        seen += [c["id"] for c in json.loads((project.path / out / "medrobust.json").read_text())["cells"]]
    assert sorted(seen) == sorted(c["id"] for c in full_results["cells"])
    from pytest_medrobust.cli import main

    shards = [str(project.path / f"shard{i}" / "medrobust.json") for i in (1, 2, 3)]
    code = main(["merge", *shards, "-o", str(project.path / "merged")])
    merged = json.loads((project.path / "merged" / "medrobust.json").read_text())
    assert [c["metrics"] for c in merged["cells"]] == [c["metrics"] for c in full_results["cells"]]
    assert merged["summary"] == full_results["summary"]
    assert code == (0 if full.ret == 0 else 1)
    assert (project.path / "merged" / "medrobust.html").is_file()


def test_merge_refuses_shards_of_different_datasets(project, tmp_path, capsys):
    from pytest_medrobust.cli import main

    a = {"schema": 1, "seed": 0, "dataset": {"sha256": "aa"}, "config": {}, "cells": [], "summary": {"expected": []}}
    b = {"schema": 1, "seed": 0, "dataset": {"sha256": "bb"}, "config": {}, "cells": [], "summary": {"expected": []}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "m")]) == 2
    assert "dataset fingerprint bb differs" in capsys.readouterr().err


def test_bad_shard_option_is_a_usage_error(project):
    result = project.runpytest("--medrobust", "--medrobust-shard", "3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--medrobust-shard: expected i/n with 1 <= i <= n" in result.stderr.str()


def test_merge_refuses_shards_with_different_model_weights(tmp_path, capsys):
    from pytest_medrobust.cli import main

    def shard(i, sha):
        return {"schema": 1, "seed": 0, "dataset": {"sha256": "aa"}, "config": {"shard": f"{i}/2"},
                "models": {"m": {"sha256": sha}}, "cells": [], "summary": {"expected": []}}

    (tmp_path / "a.json").write_text(json.dumps(shard(1, "111")))
    (tmp_path / "b.json").write_text(json.dumps(shard(2, "222")))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "m")]) == 2
    assert "model 'm' has other weights" in capsys.readouterr().err


def test_merge_refuses_a_missing_shard(tmp_path, capsys):
    from pytest_medrobust.cli import main

    one = {"schema": 1, "seed": 0, "dataset": {"sha256": "aa"}, "config": {"shard": "1/2"}, "cells": [],
           "summary": {"expected": []}}
    (tmp_path / "a.json").write_text(json.dumps(one))
    assert main(["merge", str(tmp_path / "a.json"), "-o", str(tmp_path / "m")]) == 2
    assert "shard(s) 2 missing" in capsys.readouterr().err
