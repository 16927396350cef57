"""The sensitivity step in a run: its item, files, results section, cache and xdist."""

import json

# pytester's in-process runs drop modules first imported during a run; C extensions cannot be
# imported twice, so load them before any run (as tests/plugin/conftest.py does).
import numpy as np
import PIL.Image  # noqa: F401
import pytest
import torch  # noqa: F401

import pytest_medrobust.runner  # noqa: F401
import pytest_medrobust.sensitivity
from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import make_project

ARGS = ("--medrobust-only", "--medrobust-levels", "0", "--medrobust-sensitivity-images", "4", "-p", "no:cacheprovider")


@pytest.fixture
def sens_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester, PYPROJECT, n=16)


def _results(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "reports" / "medrobust.json").read_text())


def test_sensitivity_item_writes_maps_and_the_results_section(sens_project):
    result = sens_project.runpytest(*ARGS, "--medrobust-models", "oracle")
    result.assert_outcomes(passed=2)  # the clean cell and test_sensitivity[oracle]
    results = _results(sens_project)
    assert results["summary"]["cells"] == 1 and results["summary"]["verdict"] == "pass"
    assert results["summary"]["expected"] == ["medrobust::oracle::test_recall[oracle-black_box-0.00]"]
    entry = results["sensitivity"]["oracle"]
    assert (entry["window"], entry["stride"], entry["n_images"], entry["fill"]) == (4, 2, 4, "black_box")
    reports = sens_project.path / "reports"
    assert (reports / entry["mean_map"]).read_bytes().startswith(b"\x89PNG")
    arrays = np.load(reports / entry["npz"])
    assert arrays["maps"].shape == (4, 32, 32) and arrays["mean_map"].shape == (32, 32)
    np.testing.assert_allclose(arrays["mean_map"], arrays["maps"].mean(axis=0), rtol=1e-6)
    assert len(entry["worst"]) == 3
    drops = [w["drop"] for w in entry["worst"]]
    assert drops == sorted(drops, reverse=True) and drops[0] > 0
    for worst in entry["worst"]:
        assert (reports / worst["png"]).is_file()
        assert worst["rank_after"] >= worst["rank_before"] >= 1
        i = list(arrays["ids"]).index(worst["id"])
        assert worst["drop"] == pytest.approx(float(arrays["drops"][i].max()), abs=1e-6)
    # The oracle reads its slot's brightness: hiding the bright square costs, hiding the rest does not.
    assert entry["peak"]["value"] > 0


def test_a_warm_rerun_reads_every_map_from_the_cache(sens_project, monkeypatch):
    sens_project.runpytest(*ARGS, "--medrobust-models", "oracle")
    first = _results(sens_project)["sensitivity"]["oracle"]
    calls = []
    original = pytest_medrobust.sensitivity.image_sensitivity
    monkeypatch.setattr(pytest_medrobust.sensitivity, "image_sensitivity", lambda *a, **k: calls.append(1) or original(*a, **k))
    sens_project.runpytest(*ARGS, "--medrobust-models", "oracle").assert_outcomes(passed=2)
    assert calls == []
    assert _results(sens_project)["sensitivity"]["oracle"] == first
    sens_project.runpytest(*ARGS, "--medrobust-models", "oracle", "--medrobust-no-cache").assert_outcomes(passed=2)
    assert len(calls) == 4  # without the cache: each image once


def test_maps_are_bit_for_bit_the_same_with_and_without_xdist(sens_project):
    args = (*ARGS, "--medrobust-models", "oracle,constant", "--medrobust-no-cache")
    sens_project.runpytest(*args).assert_outcomes(passed=3, failed=1)  # constant fails its clean cell
    serial = _results(sens_project)["sensitivity"]
    files = {p: (sens_project.path / "reports" / p).read_bytes() for e in serial.values() for p in (e["npz"], e["mean_map"])}
    sens_project.runpytest(*args, "-n", "2").assert_outcomes(passed=3, failed=1)
    parallel = _results(sens_project)["sensitivity"]
    assert parallel == serial
    for path, data in files.items():
        assert (sens_project.path / "reports" / path).read_bytes() == data, path


def test_bad_sensitivity_options_are_usage_errors(sens_project):
    result = sens_project.runpytest(*ARGS, "--medrobust-sensitivity-window", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--medrobust-sensitivity-window*"])
    sens_project.makefile(".toml", bad="[sensitivity]\nimages = 4\npatch = 'no_such_patch'\n")
    result = sens_project.runpytest("--medrobust-only", "--medrobust-config", "bad.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sensitivity.patch*no_such_patch*"])


def test_region_shares_come_from_the_datasets_regions(sens_project):
    # Each fake image's bright square, which the oracle reads, as a region "square" (plain boxes format).
    rows = ["image,region,x,y,w,h"]
    for i in range(16):
        r, c = divmod(i % 8, 4)
        rows.append(f"case{i:03d},square,{c * 8 + 1},{r * 16 + 2},6,12")
    (sens_project.path / "regions.csv").write_text("\n".join(rows) + "\n")
    sens_project.makefile(".toml", regions="[dataset_options]\nregions = 'regions.csv'\n")
    sens_project.runpytest(*ARGS, "--medrobust-models", "oracle", "--medrobust-config", "regions.toml").assert_outcomes(passed=2)
    share = _results(sens_project)["sensitivity"]["oracle"]["regions"]["square"]
    assert share["images"] == 4 and share["area"] == pytest.approx(72 / 1024)
    # The oracle hangs on the square: most of the harm is there, far beyond its share of the image.
    assert share["share_inside"] > 0.5 > share["area"]


def test_under_shards_each_model_maps_once_and_merge_carries_them(sens_project, capsys):
    from pytest_medrobust.cli import main as medrobust

    args = (*ARGS[:2], "0,0.5", *ARGS[3:], "--medrobust-models", "oracle,constant", "--medrobust-no-cache")
    sens_project.runpytest(*args)
    whole = _results(sens_project)["sensitivity"]
    files = {p: (sens_project.path / "reports" / p).read_bytes()
             for e in whole.values() for p in (e["npz"], e["mean_map"], *(w["png"] for w in e["worst"]))}
    made = {}
    for index in (1, 2):
        folder = f"shard{index}"
        sens_project.runpytest(*args, "--medrobust-shard", f"{index}/2", f"--medrobust-report-dir={folder}")
        shard = json.loads((sens_project.path / folder / "medrobust.json").read_text())
        made[index] = sorted(shard.get("sensitivity", {}))
    # Each model's maps come from exactly one shard: the first holding any of its cells.
    assert sorted(made[1] + made[2]) == ["constant", "oracle"]
    capsys.readouterr()
    medrobust(["merge", str(sens_project.path / "shard1"), str(sens_project.path / "shard2"),
               "-o", str(sens_project.path / "merged")])
    merged = json.loads((sens_project.path / "merged" / "medrobust.json").read_text())
    assert merged["sensitivity"] == whole
    for path, data in files.items():
        assert (sens_project.path / "merged" / path).read_bytes() == data, path
    assert "warning" not in capsys.readouterr().err

    # An artifact that lost a picture: the numbers merge, the picture is named as missing.
    lost = sens_project.path / f"shard{1 if made[1] else 2}" / whole[(made[1] or made[2])[0]]["mean_map"]
    lost.unlink()
    medrobust(["merge", str(sens_project.path / "shard1"), str(sens_project.path / "shard2"),
               "-o", str(sens_project.path / "merged2")])
    assert f"warning: {lost} is missing" in capsys.readouterr().err
    assert json.loads((sens_project.path / "merged2" / "medrobust.json").read_text())["sensitivity"] == whole
