"""The plugin end to end, in pytester folders with fake models (fast: no training, 32 px images)."""

import xml.etree.ElementTree as ET

import pytest

from .conftest import read_results
from .fakes import write_dataset


def test_plain_pytest_collects_no_grid_and_does_not_import_torch(project):
    project.makepyfile(
        test_plain="""
        import sys
        def test_torch_not_loaded():
            assert "torch" not in sys.modules
        """
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "medrobust" not in result.stdout.str().split("short test summary")[0].split("collected")[-1]


def test_item_ids_follow_models_patches_levels(project):
    result = project.runpytest("--medrobust", "--collect-only", "-q")
    ids = [line for line in result.stdout.lines if line.startswith("medrobust::")]
    assert ids == [
        "medrobust::oracle::test_recall[oracle-black_box-0.00]",
        "medrobust::oracle::test_recall[oracle-black_box-0.10]",
        "medrobust::oracle::test_recall[oracle-black_box-0.50]",
        "medrobust::constant::test_recall[constant-black_box-0.00]",
        "medrobust::constant::test_recall[constant-black_box-0.10]",
        "medrobust::constant::test_recall[constant-black_box-0.50]",
    ]


def test_command_line_overrides_config_file_overrides_pyproject(project):
    project.makefile(".toml", gate="levels = [0.2]\nmodels = ['oracle']\n")
    result = project.runpytest("--medrobust", "--collect-only", "-q", "--medrobust-config", "gate.toml")
    ids = [line for line in result.stdout.lines if line.startswith("medrobust::")]
    assert ids == [
        "medrobust::oracle::test_recall[oracle-black_box-0.00]",
        "medrobust::oracle::test_recall[oracle-black_box-0.20]",
    ]
    result = project.runpytest(
        "--medrobust", "--collect-only", "-q", "--medrobust-config", "gate.toml", "--medrobust-levels", "0.3,0.4"
    )
    ids = [line for line in result.stdout.lines if line.startswith("medrobust::")]
    assert ids[-1] == "medrobust::oracle::test_recall[oracle-black_box-0.40]" and len(ids) == 3


def test_oracle_passes_clean_and_fails_heavy_occlusion_with_a_clear_message(project):
    result = project.runpytest("--medrobust", "--medrobust-models", "oracle", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    # Names the cell, the metric, the measured value and the threshold.
    assert "oracle-black_box-0.50: i2t_unique_R@1 retention = " in out
    assert "< 0.80" in out
    results = read_results(project)
    cells = {c["id"]: c for c in results["cells"]}
    assert cells["oracle-black_box-0.00"]["metrics"]["i2t_unique_R@1"] == 1.0
    assert cells["oracle-black_box-0.00"]["passed"] is True
    failed = cells["oracle-black_box-0.50"]
    assert failed["passed"] is False and failed["outcome"] == "failed"
    assert failed["thresholds"]["i2t_unique_R@1"]["retention"] == 0.8
    assert failed["metrics"]["i2t_unique_R@1"] < 0.8
    # The terminal summary shows the table and the verdict.
    assert "gate FAIL: 2 passed, 1 failed, 0 errors of 3 cells" in out


def test_constant_model_never_passes(project):
    """Ties are broken against the model: a constant model ranks every true match last."""
    result = project.runpytest("--medrobust", "--medrobust-models", "constant", "--medrobust-levels", "0")
    result.assert_outcomes(failed=1)
    cell = read_results(project)["cells"][0]
    assert cell["metrics"]["i2t_unique_R@1"] == 0.0
    assert cell["metrics"]["i2t_unique_mean_rank"] == 8.0  # 8 unique reports, all tied
    assert cell["metrics"]["t2i_R@1"] == 0.0 and cell["metrics"]["t2i_mean_rank"] == 24.0


def test_results_json_has_the_public_schema(project):
    project.runpytest("--medrobust", "--medrobust-models", "oracle")
    results = read_results(project)
    assert results["schema"] == 1 and results["seed"] == 0
    assert set(results["dataset"]) >= {"name", "n_images", "n_unique_reports", "sha256"}
    assert results["dataset"]["n_images"] == 24 and results["dataset"]["n_unique_reports"] == 8
    required = {
        "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_unique_R@1", "i2t_unique_R@5",
        "i2t_unique_R@10", "i2t_mean_rank", "i2t_median_rank", "t2i_mean_rank", "t2i_median_rank",
    }
    for cell in results["cells"]:
        assert set(cell) >= {"model", "patch", "level", "n_images", "metrics", "thresholds", "passed"}
        assert required <= set(cell["metrics"])
        assert all(0.0 <= cell["metrics"][k] <= 1.0 for k in required if "_R@" in k)
    assert results["models"]["oracle"]["geometry"] == "pad"


def test_junit_xml_carries_metrics_as_properties_without_warnings(project):
    # A subprocess: in-process runs see pytest_medrobust already imported, which warns by itself.
    result = project.runpytest_subprocess("--medrobust", "--medrobust-models", "oracle", "--junitxml=out.xml", "-W", "error")
    result.assert_outcomes(passed=2, failed=1)
    root = ET.parse(project.path / "out.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_recall[oracle-black_box-0.00]"].iter("property")}
    assert props["medrobust.i2t_unique_R@1"] == "1.000000"
    assert props["medrobust.passed"] == "true"
    assert "warnings summary" not in result.stdout.str()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--medrobust-levels", "0.2,1.0"], "--medrobust-levels: occlusion level 1.0 is outside [0, 1)"),
        (["--medrobust-levels", "-0.1"], "outside [0, 1)"),
        (["--medrobust-levels", "half"], "is not a number"),
        (
            ["--medrobust-models", "nosuchmodel"],
            "unknown model 'nosuchmodel'; registered: clip, cxr-clip, cxr-repair, demo-occaug, demo-plain, medclip",
        ),
        (["--medrobust-patches", "nosuchpatch"], "unknown patch type 'nosuchpatch'; registered: "),
        (["--medrobust-k", "0"], "--medrobust-k: must be >= 1, got 0"),
        (["--medrobust-k", "1,2.5"], "--medrobust-k: '2.5' is not an integer"),
        (["--medrobust-device", "tpu"], "device must be one of auto, cpu, cuda, cuda:N"),
        (["--medrobust-config", "missing.toml"], "missing.toml does not exist"),
    ],
)
def test_bad_options_are_usage_errors(project, args, message):
    result = project.runpytest("--medrobust", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_unknown_config_key_is_named(project):
    project.makefile(".toml", gate="[tool.medrobust]\nlevles = [0.1]\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "gate.toml: unknown key(s) levles" in result.stderr.str()


def test_unwritable_report_dir_fails_before_the_grid(project):
    (project.path / "blocked").write_text("a file, not a folder")
    result = project.runpytest("--medrobust", "--medrobust-report-dir", "blocked/sub")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is not writable" in result.stderr.str()


def test_xdist_gives_the_same_items_and_numbers(project):
    pytest.importorskip("xdist")
    serial = project.runpytest("--medrobust", "-p", "no:cacheprovider")
    serial.assert_outcomes(passed=2, failed=4)
    one = read_results(project)
    parallel = project.runpytest("--medrobust", "-n", "2", "-p", "no:cacheprovider")
    parallel.assert_outcomes(passed=2, failed=4)
    two = read_results(project)
    strip = lambda r: [{k: v for k, v in c.items() if k not in ("duration_s", "cached")} for c in r["cells"]]  # noqa: E731
    assert strip(one) == strip(two)
    assert one["dataset"] == two["dataset"]


def test_on_bad_rows_drop_runs_the_rest_and_records_the_dropped_rows(project):
    write_dataset(project.path, bad={3: "missing", 4: "empty"})
    result = project.runpytest("--medrobust", "--medrobust-models", "oracle", "--medrobust-on-bad-rows", "drop")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "dropped 2 bad row(s)" in out and "manifest.csv, line 5" in out
    dataset = read_results(project)["dataset"]
    assert dataset["n_images"] == 22
    assert len(dataset["dropped"]) == 2


def test_limit_picks_a_stable_subset(project):
    project.runpytest("--medrobust", "--medrobust-models", "oracle", "--medrobust-limit", "10")
    first = read_results(project)["dataset"]
    project.runpytest("--medrobust", "--medrobust-models", "oracle", "--medrobust-limit", "10")
    again = read_results(project)["dataset"]
    assert first["n_images"] == 10 and first["sha256"] == again["sha256"]


def test_search_cell_shrinks_to_a_minimal_failing_placement_with_picture_and_replay(project):
    result = project.runpytest(
        "--medrobust", "--medrobust-models", "oracle", "--medrobust-levels", "0.3",
        "--medrobust-search-examples", "10", "-k", "worst_placement",
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "oracle-black_box-0.30: i2t_unique_R@1" in out
    assert "minimal failing placement: black_box at 30%" in out
    assert "replay:" in out
    cell = next(c for c in read_results(project)["cells"] if c["kind"] == "search")
    search = cell["search"]
    assert search["failed"] is True
    assert search["value"] == cell["metrics"][search["metric"]]
    assert search["minimal_failure"]["placement"]["jitter"] == 0.0  # shrunk: no jitter needed to break it
    assert search["evaluations"] == search["budget"] == 10  # the whole budget, not the first failure
    assert (project.path / "reports" / search["picture"]).read_bytes().startswith(b"\x89PNG")
    assert "picture_png_base64" not in search


def test_search_cells_are_deterministic(project):
    args = (
        "--medrobust", "--medrobust-models", "oracle", "--medrobust-levels", "0.3",
        "--medrobust-search-examples", "6", "-k", "worst_placement",
    )
    project.runpytest(*args, "--medrobust-no-cache")
    first = read_results(project)["cells"]
    project.runpytest(*args, "--medrobust-no-cache")
    second = read_results(project)["cells"]
    assert [c["search"] for c in first] == [c["search"] for c in second]


def test_medrobust_only_collects_the_grid_and_nothing_else(project):
    project.makepyfile(test_other="def test_other():\n    assert True\n")
    both = project.runpytest("--medrobust", "--collect-only", "-q")
    assert "test_other.py::test_other" in both.stdout.str()
    only = project.runpytest("--medrobust-only", "--collect-only", "-q")
    assert "test_other" not in only.stdout.str()
    assert "medrobust::oracle::test_recall[oracle-black_box-0.00]" in only.stdout.str()


def test_last_failed_reruns_exactly_the_failed_cells(project):
    project.runpytest("--medrobust", "--medrobust-models", "oracle")
    rerun = project.runpytest("--medrobust", "--medrobust-models", "oracle", "--lf")
    rerun.assert_outcomes(failed=1)


def test_a_model_with_nan_embeddings_errors_instead_of_scoring_perfectly(project):
    project.makepyfile(
        nanmodel="""
        import torch
        from fakemodels import Oracle

        class NaNModel(Oracle):
            def encode_images(self, x):
                return torch.full((x.shape[0], 8), float("nan"))

        def make(device, **options):
            return NaNModel(device)
        """
    )
    project.makefile(".toml", gate="models = [{name = 'nan', factory = 'nanmodel:make'}]\nlevels = [0.0]\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    result.assert_outcomes(failed=1)
    assert "model 'nan' returned non-finite image embeddings for 24 of 24 inputs" in result.stdout.str()


def test_a_crashed_cell_makes_the_verdict_incomplete_never_pass(project):
    pytest.importorskip("xdist")
    project.makepyfile(
        crashmodel="""
        import os
        from fakemodels import Oracle

        class Crash(Oracle):
            def encode_images(self, x):
                if len(x) > 2:  # the controller's two-image preflight probe passes; a cell does not
                    os._exit(1)  # as an out-of-memory kill of the worker would
                return super().encode_images(x)

        def make(device, **options):
            return Crash(device)
        """
    )
    project.makefile(
        ".toml",
        gate="models = [{name = 'crash', factory = 'crashmodel:make'}]\nlevels = [0.0]\n"
        "thresholds = {above_chance = {}, retention = {}}\n",
    )
    project.runpytest("--medrobust", "--medrobust-config", "gate.toml", "-n", "1")
    results = read_results(project)
    assert results["summary"]["verdict"] == "incomplete"
    assert results["summary"]["missing"] == ["medrobust::crash::test_recall[crash-black_box-0.00]"]


def test_nan_threshold_is_a_usage_error(project):
    project.makefile(".toml", gate="[thresholds]\nmin = {'i2t_R@1' = nan}\n")
    result = project.runpytest("--medrobust", "--medrobust-config", "gate.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected a finite number" in result.stderr.str()


def test_cache_clear_removes_only_its_own_files(project):
    keep = project.path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("precious")
    project.runpytest(
        "--medrobust", "--medrobust-models", "oracle", "--medrobust-cache-dir=mine", "--medrobust-cache-clear", "--co"
    )
    assert keep.read_text() == "precious"


def test_baseline_gate_fails_a_degraded_model_and_passes_the_same_model(project):
    args = ("--medrobust", "--medrobust-models", "oracle", "--medrobust-levels", "0")
    project.runpytest(*args, "--medrobust-save-baseline", "baseline.json").assert_outcomes(passed=1)
    project.runpytest(*args, "--medrobust-baseline", "baseline.json").assert_outcomes(passed=1)
    project.makefile(".toml", gate="models = [{name = 'oracle', factory = 'fakemodels:degraded'}]\n")
    worse = project.runpytest(*args, "--medrobust-config", "gate.toml", "--medrobust-baseline", "baseline.json")
    worse.assert_outcomes(failed=1)
    assert "oracle-black_box-0.00: i2t_unique_R@1 fell from 1.000 (baseline) to " in worse.stdout.str()


def test_baseline_of_another_dataset_is_an_error_unless_allowed(project):
    args = ("--medrobust", "--medrobust-models", "oracle", "--medrobust-levels", "0")
    project.runpytest(*args, "--medrobust-save-baseline", "baseline.json")
    write_dataset(project.path, n=16)
    result = project.runpytest(*args, "--medrobust-baseline", "baseline.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "dataset" in result.stderr.str() and "fingerprint" in result.stderr.str()
    allowed = project.runpytest(*args, "--medrobust-baseline", "baseline.json", "--medrobust-allow-baseline-mismatch")
    assert allowed.parseoutcomes().get("errors", 0) == 0


def test_corrupt_baseline_is_a_usage_error(project):
    (project.path / "baseline.json").write_text("{not json")
    result = project.runpytest("--medrobust", "--medrobust-baseline", "baseline.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "baseline.json" in result.stderr.str()


def test_pytest_html_report_gets_each_cells_metrics_and_mask(project):
    pytest.importorskip("pytest_html")
    result = project.runpytest(
        # 10 placements: enough for the search to find one that breaks the oracle (and its mask).
        "--medrobust", "--medrobust-models", "oracle", "--medrobust-levels", "0.3", "--medrobust-search-examples", "10",
        "--html=items.html", "--self-contained-html",
    )
    assert result.ret == 1
    page = (project.path / "items.html").read_text()
    assert "medrobust cell" in page and "i2t_unique_R@1" in page
    assert "data:image/png;base64" in page or "image/png" in page
