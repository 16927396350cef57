"""junit under xdist (issue 14): the per-case properties (interval, threshold, clean value) and
the one-line system-out are written by the controller from what the workers report; so is the
per-query side file."""

import re

import pytest
from junitparser import JUnitXml, Properties

from tests.plugin.conftest import PYPROJECT, read_results
from tests.plugin.fakes import make_project


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """The plugin tests' small project: fake models, 24 images, black_box at 0, 10 and 50 %."""
    return make_project(pytester, PYPROJECT)


@pytest.mark.slow  # two xdist workers start torch (about 20 s of CPU)
def test_junit_properties_and_system_out_arrive_from_xdist_workers(project: pytest.Pytester):
    result = project.runpytest_subprocess(
        "--medrobust-only", "-n", "2", "--junitxml=junit.xml", "--medrobust-no-cache", "-p", "no:cacheprovider",
        "--medrobust-per-query",
    )
    assert result.ret == 1
    cells = {c["id"]: c for c in read_results(project)["cells"]}
    cases = [case for suite in JUnitXml.fromfile(str(project.path / "junit.xml")) for case in suite]
    assert len(cases) == len(cells) == 6
    for case in cases:
        cell = cells[re.fullmatch(r"test_recall\[(.+)\]", case.name)[1]]
        props = {p.name: p.value for p in case.child(Properties)}
        assert props["medrobust.model"] == cell["model"]
        lo, hi = cell["intervals"]["i2t_unique_R@1"]
        assert float(props["medrobust.i2t_unique_R@1.lo"]) == pytest.approx(lo, abs=1e-6)
        assert float(props["medrobust.i2t_unique_R@1.hi"]) == pytest.approx(hi, abs=1e-6)
        assert float(props["medrobust.i2t_unique_R@1.threshold.min"]) == 0.5
        if cell["level"] > 0:
            clean = cell["thresholds"]["i2t_unique_R@1"]["clean"]
            assert float(props["medrobust.i2t_unique_R@1.clean"]) == pytest.approx(clean, abs=1e-6)
        assert case.system_out.startswith(f"{cell['model']} black_box ")
        assert f"i2t_unique_R@1 {cell['metrics']['i2t_unique_R@1']:.3f} [{lo:.3f}, {hi:.3f}]" in case.system_out
        assert case.system_out.count("\n") == 0  # one line (no picture without a search cell)
    # The per-study ranks travel from the workers with the cell records, into the side file only.
    rows = (project.path / "reports" / "medrobust-queries.jsonl").read_text().splitlines()
    assert len(rows) == 1 + len(cells) and '"queries":' not in (project.path / "reports" / "medrobust.json").read_text()
