"""Config values of the wrong type or meaning (issue 11, item 13): one usage error (exit 4) naming
the key and where it was set, before any cell runs; never an INTERNALERROR or a per-cell error."""

from __future__ import annotations

import numpy  # noqa: F401 - pytester's in-process runs cannot import C extensions a second time
import PIL.Image  # noqa: F401
import pytest
import torch  # noqa: F401

import pytest_medrobust.runner  # noqa: F401
from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import make_project

USAGE = pytest.ExitCode.USAGE_ERROR


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester, PYPROJECT)


def _set_pyproject(project: pytest.Pytester, old: str, new: str) -> None:
    path = project.path / "pyproject.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _usage_error(project: pytest.Pytester, *args: str) -> str:
    """Run the gate; it must stop with exit 4 before any cell, with one message. Returns stderr."""
    result = project.runpytest("--medrobust-only", "-p", "no:cacheprovider", *args)
    out, err = result.stdout.str(), result.stderr.str()
    assert result.ret == USAGE, out + err
    assert "INTERNALERROR" not in out + err and "Traceback" not in out + err
    assert "passed" not in out and "failed" not in out and "error" not in out.lower(), out  # no cell ran
    assert err.count("ERROR:") == 1, err
    assert not (project.path / "reports" / "medrobust.json").exists()
    return err


def test_unknown_dataset_option_names_the_key_and_the_loader(project):
    _set_pyproject(project, 'dataset = "manifest.csv"', 'dataset = "manifest.csv"\ndataset_options = {limt = 10}')
    err = _usage_error(project)
    assert "pyproject.toml: dataset_options.limt: unknown option 'limt' for the 'manifest' dataset loader" in err
    assert "did you mean 'limit'?" in err


def test_dataset_option_unknown_to_this_loader_but_known_to_another(project):
    """``section`` is an option of the MIMIC-CXR and OpenI loaders, not of a manifest."""
    _set_pyproject(project, 'dataset = "manifest.csv"', 'dataset = "manifest.csv"\ndataset_options = {section = "findings"}')
    assert "dataset_options.section: unknown option 'section' for the 'manifest' dataset loader" in _usage_error(project)


@pytest.mark.parametrize(
    "options, message",
    [
        ('{workers = "many"}', "dataset_options.workers: 'many' is not an integer"),
        ("{workers = 0}", "dataset_options.workers: must be >= 1, got 0"),
        ('{seed = "x"}', "dataset_options.seed: 'x' is not an integer"),
        ('{validate = "all"}', "dataset_options.validate: must be decode or exists, got 'all'"),
        ("{cache_dir = 5}", "dataset_options.cache_dir: expected a path, got 5 (int)"),
        ("{split = 3}", "dataset_options.split: expected a string, got 3 (int)"),
    ],
)
def test_dataset_option_of_the_wrong_type(project, options, message):
    _set_pyproject(project, 'dataset = "manifest.csv"', f'dataset = "manifest.csv"\ndataset_options = {options}')
    assert message in _usage_error(project)


def test_loader_boolean_option_must_be_a_boolean(project):
    _set_pyproject(
        project, 'dataset = "manifest.csv"', 'dataset = "openi:data"\ndataset_options = {one_image_per_study = "no"}'
    )
    assert "dataset_options.one_image_per_study: expected true or false, got 'no'" in _usage_error(project)


def test_unknown_search_profile(project):
    _set_pyproject(project, "search = {enabled = false}", 'search = {profile = "fast"}')
    err = _usage_error(project)
    assert "search.profile: must be one of medrobust-ci, medrobust-explore, got 'fast'" in err


@pytest.mark.parametrize("value, shown", [("5", "5 (int)"), ('"demo"', "'demo' (str)"), ("[1, 2]", "[1, 2] (list)")])
def test_medrobust_that_is_not_a_table_in_pyproject(project, value, shown):
    (project.path / "pyproject.toml").write_text(
        f'[tool.pytest.ini_options]\npythonpath = ["."]\n\n[tool]\nmedrobust = {value}\n'
    )
    assert f"pyproject.toml: [tool.medrobust] must be a table, got medrobust = {shown}" in _usage_error(project)


def test_medrobust_that_is_not_a_table_in_a_config_file(project):
    project.makefile(".toml", gate="[tool]\nmedrobust = 5\n")
    assert "gate.toml: [tool.medrobust] must be a table, got medrobust = 5 (int)" in _usage_error(
        project, "--medrobust-config", "gate.toml"
    )


def test_tool_that_is_not_a_table_in_a_config_file(project):
    project.makefile(".toml", gate="tool = 5\n")
    assert "gate.toml: 'tool' must be a table ([tool.medrobust]), got 5 (int)" in _usage_error(
        project, "--medrobust-config", "gate.toml"
    )


@pytest.mark.parametrize("key", ["cache_dir", "report_dir"])
def test_path_of_the_wrong_type(project, key):
    _set_pyproject(project, 'device = "cpu"', f'device = "cpu"\n{key} = 5')
    assert f"pyproject.toml: {key}: expected a path, got 5 (int)" in _usage_error(project)
    assert not (project.path / "5").exists()


def test_cache_dir_that_is_a_file(project):
    (project.path / "cachefile").write_text("not a folder")
    err = _usage_error(project, "--medrobust-cache-dir", "cachefile")
    assert f"cache_dir (--medrobust-cache-dir): {project.path / 'cachefile'} is a file, not a folder" in err


def test_cache_dir_under_a_file(project):
    (project.path / "cachefile").write_text("not a folder")
    err = _usage_error(project, "--medrobust-cache-dir", "cachefile/sub")
    assert f"{project.path / 'cachefile'}, on the path {project.path / 'cachefile' / 'sub'}, is a file" in err


def test_save_baseline_at_a_folder_fails_before_the_grid(project):
    (project.path / "baselines").mkdir()
    err = _usage_error(project, "--medrobust-save-baseline", "baselines")
    assert f"--medrobust-save-baseline): {project.path / 'baselines'} is a folder; give a file path" in err


def test_save_baseline_under_a_file_fails_before_the_grid(project):
    (project.path / "afile").write_text("")
    err = _usage_error(project, "--medrobust-save-baseline", "afile/base.json")
    assert f"{project.path / 'afile'} is a file, not a folder" in err


def test_good_options_still_run(project):
    """Control: the checks above refuse only what is wrong."""
    options = 'dataset_options = {workers = 2, seed = 3, validate = "exists"}'
    _set_pyproject(project, 'dataset = "manifest.csv"', f'dataset = "manifest.csv"\n{options}')
    result = project.runpytest(
        "--medrobust-only", "-p", "no:cacheprovider", "--medrobust-limit", "12", "--medrobust-save-baseline", "b/base.json"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the "constant" model fails its cells
    assert (project.path / "b" / "base.json").is_file()
