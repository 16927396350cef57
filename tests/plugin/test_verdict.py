"""The verdict per model in every report, the comparison, the hooks, and the exit status."""

import xml.etree.ElementTree as ET

import pytest

from .conftest import read_results

CONFTEST_HOOKS = """
import json

def pytest_medrobust_cell_record(record, config):
    if record["outcome"] != "error":
        record["metrics"]["i2t_unique_gap"] = record["metrics"]["i2t_unique_R@5"] - record["metrics"]["i2t_unique_R@1"]
    with open("records.log", "a") as f:
        f.write(record["id"] + "\\n")

def pytest_medrobust_results(results, config):
    with open("posted.json", "w") as f:
        json.dump({"verdict": results["summary"]["verdict"], "models": [m["model"] for m in results["model_summaries"]]}, f)

def pytest_medrobust_html_sections(results, config):
    return [("Sign-off <QA>", "<p id='signoff'>Reviewed: " + results["summary"]["verdict"] + "</p>")]
"""


def test_each_model_gets_a_verdict_score_and_worst_cell(project):
    result = project.runpytest("--medrobust", "-p", "no:cacheprovider", "--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    results = read_results(project)
    oracle, constant = results["model_summaries"]
    assert (oracle["model"], constant["model"]) == ("oracle", "constant")
    assert oracle["verdict"] == constant["verdict"] == "fail"
    # The oracle loses exactly the covered squares: R@1 falls 1 -> 1 -> 0.75 (levels 0, 0.1, 0.5).
    assert oracle["metric"] == "i2t_unique_R@5"
    assert oracle["occluded_cells"] == {"passed": 1, "total": 2} and oracle["clean_cells"] == {"passed": 1, "total": 1}
    assert constant["occluded_cells"] == {"passed": 0, "total": 2}
    out = result.stdout.str()
    assert "verdict per model" in out
    assert "  oracle    FAIL       score" in out
    # The same verdicts in the Markdown, the HTML and the junit file.
    markdown = (project.path / "reports" / "medrobust.md").read_text()
    assert "- ❌ **oracle** FAIL · score " in markdown and "- ❌ **constant** FAIL · score -" in markdown
    page = (project.path / "reports" / "medrobust.html").read_text()
    assert 'data-model="oracle" data-verdict="fail"' in page
    suite = ET.parse(project.path / "junit.xml").getroot().find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["medrobust.verdict"] == "fail"
    assert properties["medrobust.oracle.verdict"] == "fail"
    assert properties["medrobust.oracle.occluded_passed"] == "1/2"
    assert float(properties["medrobust.oracle.score"]) == pytest.approx(oracle["score"], abs=1e-6)


def test_a_model_with_no_clean_recall_is_not_compared(project):
    project.runpytest("--medrobust", "-p", "no:cacheprovider", "--medrobust-levels", "0,0.5")
    (comparison,) = read_results(project)["comparisons"]
    # The constant model ties everywhere, ties rank against it: clean recall 0, no retention.
    assert (comparison["a"], comparison["b"]) == ("constant", "oracle")
    assert comparison["difference"] is None and comparison["interval"] is None
    assert "not comparable, a robustness score is undefined" in comparison["statement"]
    # Cell by cell, the paired difference is still reported with its interval.
    cell = comparison["cells"]["black_box-0.50"]
    assert cell["difference"] == pytest.approx(-0.875)
    assert cell["interval"][0] <= -0.875 <= cell["interval"][1] <= -0.5


GATE_WITH_REFERENCE = """
models = [{name = "oracle", factory = "fakemodels:oracle"}, {name = "fragile", factory = "fakemodels:fragile"}]
levels = [0.0, 0.5]
[thresholds]
above_chance = {}
retention = {}
reference = {model = "oracle", margin = 0.1}
"""


def test_reference_model_gate_fails_a_less_robust_model_whose_cells_pass(project):
    project.makefile(".toml", gate=GATE_WITH_REFERENCE)
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "-p", "no:cacheprovider")
    results = read_results(project)
    assert results["summary"]["failed"] == 0 and results["summary"]["passed"] == 4
    oracle, fragile = results["model_summaries"]
    assert oracle["verdict"] == "pass" and oracle["score"] == pytest.approx((1 + 0.875) / 2)
    # Every occluded image points one slot off: R@5 keeps 14 of 24 (7/12), score (1 + 7/12) / 2.
    assert fragile["score"] == pytest.approx((1 + 7 / 12) / 2)
    assert fragile["verdict"] == "fail" and fragile["reference"]["difference"] == pytest.approx(-0.1458, abs=1e-4)
    assert fragile["reference"]["interval"][0] < -0.1
    assert "robustness score minus the reference 'oracle' = -0.146" in fragile["failures"][0]
    assert results["summary"]["verdict"] == "fail" and result.ret == pytest.ExitCode.TESTS_FAILED
    assert "fragile is more robust" not in result.stdout.str()
    assert "oracle is more robust than fragile: fragile - oracle = -0.146" in result.stdout.str()


def test_reference_model_gate_passes_within_the_margin(project):
    project.makefile(".toml", gate=GATE_WITH_REFERENCE.replace("margin = 0.1", "margin = 0.9"))
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "-p", "no:cacheprovider")
    assert read_results(project)["summary"]["verdict"] == "pass" and result.ret == pytest.ExitCode.OK


def test_reference_must_be_a_model_of_the_run(project):
    project.makefile(".toml", gate="[thresholds]\nreference = 'nobody'\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "thresholds.reference: model 'nobody' is not a model of this run (oracle, constant)" in result.stderr.str()


def test_hooks_add_a_metric_see_the_results_and_add_an_html_section(project):
    project.makeconftest(CONFTEST_HOOKS)
    project.runpytest("--medrobust", "--medrobust-models", "oracle", "-p", "no:cacheprovider")
    results = read_results(project)
    for c in results["cells"]:
        assert c["metrics"]["i2t_unique_gap"] == pytest.approx(c["metrics"]["i2t_unique_R@5"] - c["metrics"]["i2t_unique_R@1"])
    assert sorted((project.path / "records.log").read_text().split()) == sorted(c["id"] for c in results["cells"])
    assert (project.path / "posted.json").read_text() == '{"verdict": "fail", "models": ["oracle"]}'
    page = (project.path / "reports" / "medrobust.html").read_text()
    assert "<h2>Sign-off &lt;QA&gt;</h2><p id='signoff'>Reviewed: fail</p>" in page


def test_hooks_run_in_xdist_workers_and_on_the_controller(project):
    pytest.importorskip("xdist")
    project.makeconftest(CONFTEST_HOOKS)
    project.runpytest("--medrobust", "--medrobust-models", "oracle", "-n", "2", "-p", "no:cacheprovider")
    results = read_results(project)
    assert all("i2t_unique_gap" in c["metrics"] for c in results["cells"])
    assert (project.path / "posted.json").exists()


def test_verdicts_scores_and_comparisons_are_identical_with_and_without_xdist(project):
    pytest.importorskip("xdist")
    project.runpytest("--medrobust", "-p", "no:cacheprovider", "-n", "0")
    one = read_results(project)
    project.runpytest("--medrobust", "-p", "no:cacheprovider", "-n", "2")
    two = read_results(project)
    assert one["model_summaries"] == two["model_summaries"]
    assert one["comparisons"] == two["comparisons"]
    assert [c["hits"] for c in one["cells"]] == [c["hits"] for c in two["cells"]]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("bootstrap = 0\n", "thresholds.reference needs bootstrap resamples; --medrobust-bootstrap is 0"),
        ("primary_metric = 'i2t_mean_rank'\n", "primary_metric 'i2t_mean_rank' is a rank"),
    ],
)
def test_a_reference_that_cannot_be_tested_is_a_usage_error(project, extra, message):
    project.makefile(".toml", gate=extra + "[thresholds]\nreference = 'oracle'\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_shards_leave_the_comparison_and_the_reference_test_to_the_merge(project):
    project.makefile(".toml", gate=GATE_WITH_REFERENCE)
    project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "--medrobust-shard", "1/2", "-p", "no:cacheprovider")
    results = read_results(project)
    assert results["comparisons"] == []
    assert all("reference" not in m and not m["failures"] for m in results["model_summaries"])


def test_hook_columns_are_reported_not_gated_and_do_not_leak_into_other_cells(project):
    project.makeconftest(
        "def pytest_medrobust_cell_record(record, config):\n"
        "    if record['outcome'] != 'error':\n"
        "        record['metrics']['extra_R@5'] = 'not a number'\n"
    )
    project.makefile(".toml", gate="patches = ['black_box', 'white_box']\nlevels = [0.0]\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "--medrobust-models", "oracle",
                               "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)  # the second clean cell shares the first's measurement
    assert all(c["metrics"]["extra_R@5"] == "not a number" for c in read_results(project)["cells"])


def test_no_grid_cell_selected_leaves_pytests_exit_status(project):
    project.makepyfile(test_unit="def test_unit():\n    assert True\n")
    result = project.runpytest("--medrobust", "-k", "test_unit", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)


def test_a_skipped_cell_never_exits_0(project):
    project.makeconftest(
        "import pytest\n"
        "def pytest_collection_modifyitems(items):\n"
        "    for item in items:\n"
        "        if '0.50' in item.nodeid:\n"
        "            item.add_marker(pytest.mark.skip(reason='skipped by a conftest'))\n"
    )
    project.makefile(".toml", gate="thresholds = {above_chance = {}, retention = {}}\nmodels = ['oracle']\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "-p", "no:cacheprovider")
    assert read_results(project)["summary"]["verdict"] == "incomplete"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
