"""Progress lines name the running cell in words and never cut pytest's line of dots (issue 14)."""

import re

import pytest

from pytest_medrobust.runner import Progress
from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import make_project


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    """The plugin tests' small project: fake models, 24 images, black_box at 0, 10 and 50 %."""
    # The inner run is in-process: under the suite's own -n it would read this worker's name.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    return make_project(pytester, PYPROJECT)

DOTS = re.compile(r"medrobust [.FEsx]+ *(\[ *\d+%\])?")
PROGRESS = re.compile(
    r"\[medrobust\] (oracle|constant): (clean images|black_box over \d+% of each image): \d+/24 images, \d+ img/s"
)


@pytest.fixture
def chatty(monkeypatch):
    # A line on every batch (the real limits are 4 s, then 5 s).
    monkeypatch.setattr(Progress, "FIRST", 0.0)
    monkeypatch.setattr(Progress, "EVERY", 0.0)


def test_progress_lines_stand_between_whole_dot_lines(project, chatty):
    result = project.runpytest("--medrobust-only", "--medrobust-no-cache", "--medrobust-batch-size=8", "-p", "no:cacheprovider")
    lines = result.stdout.lines
    body = lines[lines.index(next(x for x in lines if x.startswith("collected"))) + 2 : lines.index(
        next(x for x in lines if x.startswith("=") and "FAILURES" in x))]
    body = [x for x in body if x.strip()]
    assert any(PROGRESS.fullmatch(x) for x in body), body
    if body[0].rstrip() == "medrobust":
        body = body[1:]  # a progress line in the first cell: pytest had written only the prefix
    for line in body:
        assert DOTS.fullmatch(line) or PROGRESS.fullmatch(line), line
    # Every dot line is closed with its percentage, as pytest does between files.
    dot_lines = [x for x in body if DOTS.fullmatch(x)]
    assert len(dot_lines) > 1 and all(x.rstrip().endswith("%]") for x in dot_lines)
    assert sum(len(x.split()[1]) for x in dot_lines) == 6  # every cell's result, once


def test_verbose_result_lines_stay_whole(project, chatty):
    result = project.runpytest("--medrobust-only", "--medrobust-no-cache", "--medrobust-batch-size=8", "-v", "-p",
                               "no:cacheprovider")
    lines = [x for x in result.stdout.lines if re.match(r"medrobust::\w+::test_recall\[", x)]
    complete = r"medrobust::\w+::test_recall\[[\w.-]+\] (PASSED|FAILED) +\[ *\d+%\]"
    assert sum(bool(re.fullmatch(complete, x)) for x in lines) == 6
    # Before a progress line, the node id pytest wrote as the test started stands alone
    # (on a terminal it is overwritten); the result line then repeats it, whole.
    for line in lines:
        assert re.fullmatch(complete, line) or re.fullmatch(r"medrobust::\w+::test_recall\[[\w.-]+\]", line.rstrip()), line
