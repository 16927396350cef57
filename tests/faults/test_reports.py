"""Faults around the reports: a killed run never leaves an earlier verdict standing (issue 11,
item 2), and no report file is written outside the report folder (item 10).

The kill tests run pytest in a subprocess on a small project, wait until a fake model is inside
``encode_images`` (it writes a marker file, then sleeps), and send SIGTERM or SIGKILL.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from pytest_medrobust.config import parse_models
from pytest_medrobust.errors import ConfigError
from pytest_medrobust.reporting.outputs import write_reports
from tests.plugin.conftest import read_results
from tests.plugin.fakes import MODELS, make_project

SLEEPY = '''

def _stall():
    import time

    open("stalled.marker", "w").close()
    time.sleep(300)


class Sleepy(Oracle):
    """Stalls inside a grid cell (not in the set-up checks), as a model on a stuck GPU would."""

    def encode_images(self, x):
        import os

        if os.environ.get("PYTEST_CURRENT_TEST", "").endswith("(call)"):
            _stall()
        return super().encode_images(x)


def sleepy(device, **options):
    return Sleepy(device)


def slow_to_load(device, **options):
    """Stalls while the set-up is checked (the preflight builds every model), before any cell."""
    _stall()
'''

PYPROJECT = """
[tool.pytest.ini_options]
pythonpath = ["."]

[tool.medrobust]
models = [
  {name = "oracle", factory = "fakemodels:oracle"},
  {name = "sleepy", factory = "fakemodels:sleepy"},
  {name = "slow", factory = "fakemodels:slow_to_load"},
]
dataset = "manifest.csv"
levels = [0.0]
patches = ["black_box"]
device = "cpu"
search = {enabled = false}
bootstrap = {resamples = 0}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester, PYPROJECT, models=MODELS + SLEEPY)


def passing_run(project: pytest.Pytester) -> dict:
    """A complete run that passes: the verdict a later killed run must not leave standing."""
    result = project.runpytest("--medrobust-only", "-p", "no:cacheprovider", "--medrobust-models=oracle")
    assert result.ret == 0, result.stdout.str()
    results = read_results(project)
    assert results["summary"]["verdict"] == "pass"
    return results


def start_and_kill(project: pytest.Pytester, sig: signal.Signals, models: str = "oracle,sleepy") -> tuple[int, str]:
    """Run the grid in a subprocess and send ``sig`` once a model stalls."""
    marker = project.path / "stalled.marker"
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--medrobust-only", "-p", "no:cacheprovider", f"--medrobust-models={models}"],
        cwd=project.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, f"the run ended before the model stalled:\n{process.communicate()[0]}"
            assert time.monotonic() < deadline, "the model never started encoding"
            time.sleep(0.1)
        process.send_signal(sig)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, output


@pytest.mark.parametrize("stalls", ["oracle,sleepy", "slow"], ids=["in-a-cell", "in-the-set-up"])
def test_sigkill_leaves_running_not_the_previous_pass(project, stalls):
    previous = passing_run(project)
    code, _ = start_and_kill(project, signal.SIGKILL, stalls)
    assert code == -signal.SIGKILL
    results = read_results(project)
    assert results["summary"]["verdict"] == "running"
    assert results["created"] >= previous["created"]
    assert "pass" not in (project.path / "reports" / "medrobust.md").read_text().lower()
    assert "no verdict" in (project.path / "reports" / "medrobust.html").read_text()


def test_sigterm_mid_run_is_an_interrupted_run_with_its_reports(project):
    passing_run(project)
    code, output = start_and_kill(project, signal.SIGTERM)
    assert code == pytest.ExitCode.INTERRUPTED, output
    results = read_results(project)
    summary = results["summary"]
    assert summary["verdict"] == "incomplete"
    # The oracle's cell ran, the stalled model's never reported.
    assert [c["model"] for c in results["cells"]] == ["oracle"]
    assert summary["missing"] == ["medrobust::sleepy::test_recall[sleepy-black_box-0.00]"]
    assert "no verdict" not in (project.path / "reports" / "medrobust.html").read_text()
    assert "gate INCOMPLETE: 1 passed" in output and "KeyboardInterrupt: SIGTERM received" in output


def test_sigterm_during_the_set_up_checks_says_incomplete(project):
    passing_run(project)
    code, output = start_and_kill(project, signal.SIGTERM, "slow")
    assert code == pytest.ExitCode.INTERRUPTED, output
    results = read_results(project)
    assert results["summary"]["verdict"] == "incomplete" and results["cells"] == []


def test_a_set_up_error_still_leaves_the_previous_reports_as_they_were(project):
    # The "running" marker is put back when the preflight refuses the set-up.
    passing_run(project)
    before = {name: (project.path / "reports" / name).read_bytes() for name in ("medrobust.json", "medrobust.md")}
    result = project.runpytest("--medrobust-only", "-p", "no:cacheprovider", "--medrobust-models=nonesuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert {name: (project.path / "reports" / name).read_bytes() for name in before} == before


def test_the_results_list_the_cells_they_were_expected_to_measure(project):
    results = passing_run(project)
    assert results["summary"]["expected"] == ["medrobust::oracle::test_recall[oracle-black_box-0.00]"]


# --- item 10: paths built from ids and names ----------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "x\\y"])
def test_a_model_name_that_is_a_path_is_a_config_error(name):
    with pytest.raises(ConfigError, match=r"models\[0\]\.name: model name .* must not contain"):
        parse_models([{"name": name, "factory": "m:f"}], "models")
    with pytest.raises(ConfigError, match=r"--medrobust-models\[0\]: model name"):
        parse_models(name, "--medrobust-models")


def test_a_model_name_with_dot_dot_is_refused_before_any_cell(project):
    project.makefile(".toml", gate='models = [{name = "../../outside", factory = "fakemodels:oracle"}]\n')
    result = project.runpytest("--medrobust-only", "-p", "no:cacheprovider", "--medrobust-config", "gate.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "model name '../../outside' must not contain" in result.stderr.str()


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


@pytest.mark.parametrize("cell_id", ["../../escaped", "/abs/escaped", "sub/../../escaped", "m-grid(fill='a/b')-0.30"])
def test_a_search_picture_is_written_inside_the_report_folder_whatever_the_cell_id(tmp_path, cell_id):
    reports = tmp_path / "deep" / "reports"
    record = {
        "id": cell_id, "kind": "search", "model": "m", "patch": "black_box", "level": 0.3, "outcome": "failed",
        "passed": False, "failures": ["x"], "metrics": {}, "nodeid": f"medrobust::m::test_worst_placement[{cell_id}]",
        "search": {"picture_png_base64": PNG},
    }
    settings = SimpleNamespace(
        seed=0, report_dir=reports, baseline=SimpleNamespace(save_path=None),
        to_json=lambda: {"models": ["m"], "bootstrap": {"resamples": 0}},
    )
    results, _ = write_reports(settings, [record])
    pictures = [p for p in tmp_path.rglob("*.png")]
    assert len(pictures) == 1
    (picture,) = pictures
    assert picture.parent == reports / "masks"
    assert results["cells"][0]["search"]["picture"] == picture.relative_to(reports).as_posix()
