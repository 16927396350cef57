"""A broken set-up is an error, once, with its own exit status; never a gate failure."""

import json
import os

import pytest

from .conftest import read_results
from .fakes import write_dataset

USAGE = pytest.ExitCode.USAGE_ERROR


def _good_run(project) -> str:
    """A complete run whose reports a later broken run must leave in place; returns its JSON."""
    project.runpytest("--medrobust", "--medrobust-models", "oracle", "-p", "no:cacheprovider")
    assert read_results(project)["summary"]["verdict"] == "fail"
    return (project.path / "reports" / "medrobust.json").read_text()


def _error_report(project) -> dict:
    return json.loads((project.path / "reports" / "medrobust-error.json").read_text())


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (
            lambda p: p.makefile(".toml", gate="models = [{name = 'broken', factory = 'fakemodels:broken'}]\n"),
            ["--medrobust-config", "gate.toml"],
            "model 'broken' failed to load: RuntimeError: weights file /nowhere/model.safetensors not found",
        ),
        (
            lambda p: p.makefile(".toml", gate="models = [{name = 'mine', factory = 'nosuchpkg.models:load'}]\n"),
            ["--medrobust-config", "gate.toml"],
            "cannot import factory 'nosuchpkg.models:load'",
        ),
        (lambda p: write_dataset(p.path, bad={3: "missing"}), [], "manifest.csv, line 5:"),
        (lambda p: (p.path / "manifest.csv").unlink(), [], "manifest.csv"),
        (lambda p: (p.path / "manifest.csv").write_text("id,image,report\n"), [], "manifest.csv: no rows"),
    ],
    ids=["model-fails-to-load", "factory-not-importable", "bad-row", "missing-dataset", "empty-manifest"],
)
def test_setup_error_stops_once_with_exit_4_and_keeps_the_good_report(project, setup, args, message):
    good = _good_run(project)
    setup(project)
    result = project.runpytest("--medrobust", *args, "-p", "no:cacheprovider")
    assert result.ret == USAGE
    err = result.stderr.str()
    assert err.count(message) == 1, err
    assert "set-up error, no cell was measured (verdict: error)" in err
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()
    # The earlier report stands; the error is written beside it and says "error", never "fail".
    assert (project.path / "reports" / "medrobust.json").read_text() == good
    error = _error_report(project)
    assert error["summary"]["verdict"] == "error" and message in error["summary"]["error"]
    assert error["cells"] == []


def test_setup_error_under_xdist_stops_before_any_worker(project):
    pytest.importorskip("xdist")
    project.makefile(".toml", gate="models = [{name = 'broken', factory = 'fakemodels:broken'}]\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "-n", "2", "-p", "no:cacheprovider")
    assert result.ret == USAGE
    assert result.stderr.str().count("weights file /nowhere/model.safetensors not found") == 1


def test_error_found_in_a_worker_is_shown_once_and_referenced_in_the_other_cells(project, monkeypatch):
    # Loads on the controller's preflight (CPU), fails where the cells run: as a CUDA OOM would.
    # The controller runs in this process (the self-tests may themselves run in an xdist worker).
    monkeypatch.setenv("MEDROBUST_TEST_CONTROLLER_PID", str(os.getpid()))
    project.makepyfile(
        flaky="""
        import os
        from fakemodels import Oracle

        def make(device, **options):
            if os.getpid() != int(os.environ["MEDROBUST_TEST_CONTROLLER_PID"]):
                raise RuntimeError("out of memory on the worker")
            return Oracle(device)
        """
    )
    pytest.importorskip("xdist")
    project.makefile(".toml", gate="models = [{name = 'oom', factory = 'flaky:make'}]\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "-n", "1", "-p", "no:cacheprovider")
    assert result.ret == USAGE
    result.assert_outcomes(errors=3)
    out = result.stdout.str()
    full = [line for line in result.stdout.lines if line.startswith("model 'oom' failed to load")]
    assert len(full) == 1, out
    # Counted as the cells' own lines: under CI=true pytest's short summary repeats them in full.
    references = [line for line in result.stdout.lines if line.startswith("set-up error, as in oom-black_box-0.00: ")]
    assert len(references) == 2, out
    assert _error_report(project)["summary"]["verdict"] == "error"


@pytest.mark.parametrize(
    "args, config",
    [(["--medrobust-dataset="], None), ([], 'dataset = ""\n'), ([], 'dataset = "   "\n')],
    ids=["empty-option", "empty-config", "blank-config"],
)
def test_empty_dataset_is_an_error_not_the_demo(project, args, config):
    if config is not None:
        project.makefile(".toml", gate=config)
        args = [*args, "--medrobust-config", "gate.toml"]
    result = project.runpytest("--medrobust", *args)
    assert result.ret == USAGE
    assert "the dataset is empty" in result.stderr.str()
    assert "leave the option out entirely to run the bundled demo dataset" in result.stderr.str()


def test_unknown_loader_kind_lists_the_known_ones(project):
    result = project.runpytest("--medrobust", "--medrobust-dataset=no-such-kind:/x")
    assert result.ret == USAGE
    err = result.stderr.str()
    assert "unknown dataset loader 'no-such-kind'" in err
    assert "chexpert5x200, manifest, mimic-cxr, openi, phantom" in err


def test_header_names_the_dataset(project, pytester):
    result = project.runpytest("--medrobust", "--medrobust-models", "oracle", "--co")
    assert "medrobust: dataset " in result.stdout.str() and "manifest.csv" in result.stdout.str()
    (project.path / "pyproject.toml").write_text("[tool.medrobust]\nmodels = ['demo-plain']\n")
    bundled = project.runpytest("--medrobust", "--co")
    assert "medrobust: dataset bundled demo dataset" in bundled.stdout.str()


def test_a_rule_that_matches_no_model_is_an_error(project):
    project.makefile(
        ".toml", gate="[[thresholds.rules]]\nmodel = 'oracel'\nmetric = 'i2t_unique_R@1'\nmin = 0.99\n"
    )
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    assert result.ret == USAGE
    assert "model = 'oracel', which matches no model of this run (oracle, constant)" in result.stderr.str()


def test_image_root_on_a_loader_without_one_is_an_error(project):
    (project.path / "openi").mkdir()
    result = project.runpytest("--medrobust", "--medrobust-dataset=openi:openi", "--medrobust-image-root=/share")
    assert result.ret == USAGE
    assert "--medrobust-image-root: unknown option 'image_root' for the 'openi' dataset loader" in result.stderr.str()


def test_image_root_resolves_relative_manifest_paths(project, tmp_path):
    # The manifest stays in the project; the images move to a share elsewhere.
    share = tmp_path / "share"
    share.mkdir()
    (project.path / "img").rename(share / "img")
    result = project.runpytest("--medrobust", "--medrobust-models", "oracle", f"--medrobust-image-root={share}")
    result.assert_outcomes(passed=2, failed=1)


@pytest.mark.parametrize(
    "rule, message",
    [
        ("metric = 'i2t_unqiue_R@*'\nmin = 0.9\n", "metric = 'i2t_unqiue_R@*', which matches no metric of this run"),
        ("metric = 'i2t_unique_R@1'\nlevels = [0.25]\nmin = 0.9\n", "limits levels (levels = [0.25], max_level = None)"),
    ],
)
def test_a_rule_whose_metric_or_levels_match_nothing_is_an_error(project, rule, message):
    project.makefile(".toml", gate=f"[[thresholds.rules]]\n{rule}")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    assert result.ret == USAGE
    assert message in result.stderr.str()
