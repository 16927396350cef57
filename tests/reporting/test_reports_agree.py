"""Every report says the same thing about every cell (issue 14): a small grid with failing cells,
run once, and the HTML, Markdown, junit XML and terminal verdicts checked cell by cell against
the results JSON; the Markdown's replay block pasted into a shell gives the same value; the
medrobust section comes after pytest's short test summary; -q is short; per-query ranks."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# pytester's in-process runs drop modules first imported during a run; C extensions cannot be
# imported twice, so load them before any run (as tests/plugin/conftest.py does).
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import torch  # noqa: F401
from junitparser import Error, Failure, JUnitXml, Properties

import pytest_medrobust.runner  # noqa: F401
from pytest_medrobust.reporting.markdown import FAILED_MARK
from tests.plugin.fakes import MODELS, write_dataset

PYPROJECT = """
[tool.pytest.ini_options]
pythonpath = ["."]

[tool.medrobust]
models = [
  {name = "oracle", factory = "fakemodels:oracle"},
  {name = "fragile", factory = "fakemodels:fragile"},
]
dataset = "manifest.csv"
levels = [0.0, 0.1, 0.5]
patches = ["white_box", "black_box"]
device = "cpu"
primary_metric = "i2t_unique_R@1"
search = {enabled = true, max_examples = 5, levels = [0.1]}
bootstrap = {resamples = 200}

[tool.medrobust.thresholds]
min = {"i2t_unique_R@1" = 0.5}
retention = {"i2t_unique_R@1" = 0.8, "t2i_R@1" = 0.8}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One in-process run of the grid (subprocess: pytester is function-scoped), with junit."""
    root = tmp_path_factory.mktemp("agree")
    (root / "fakemodels.py").write_text(MODELS)
    (root / "pyproject.toml").write_text(PYPROJECT)
    write_dataset(root, n=24)
    args = [sys.executable, "-m", "pytest", "--medrobust-only", "--medrobust-no-cache", "--junitxml=junit.xml",
            "-p", "no:cacheprovider", "--medrobust-per-query"]
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((root / "reports" / "medrobust.json").read_text())
    return {"root": root, "stdout": done.stdout, "results": results}


def _expected(results: dict) -> dict[tuple[str, str], str]:
    return {(c["kind"], c["id"]): c["outcome"] for c in results["cells"]}


def test_the_grid_has_failing_and_passing_cells_of_both_kinds(run):
    outcomes = _expected(run["results"])
    assert {"passed", "failed"} <= set(outcomes.values())
    assert {k for (k, _), o in outcomes.items() if o == "failed"} == {"grid", "search"}


def test_junit_agrees_and_carries_interval_threshold_clean_and_system_out(run):
    xml = JUnitXml.fromfile(str(run["root"] / "junit.xml"))
    cells = {(c["kind"], c["id"]): c for c in run["results"]["cells"]}
    seen = set()
    cleans = 0
    for suite in xml:
        for case in suite:
            match = re.fullmatch(r"(test_recall|test_worst_placement)\[(.+)\]", case.name)
            assert match, case.name
            key = ("grid" if match[1] == "test_recall" else "search", match[2])
            cell = cells[key]
            seen.add(key)
            results = list(case.result)
            outcome = "failed" if any(isinstance(r, Failure) for r in results) else (
                "error" if any(isinstance(r, Error) for r in results) else "passed")
            assert outcome == cell["outcome"], key
            props = {p.name: p.value for p in case.child(Properties)}
            assert props["medrobust.model"] == cell["model"] and props["medrobust.patch"] == cell["patch"]
            assert float(props["medrobust.level"]) == pytest.approx(cell["level"])
            for metric, row in cell["thresholds"].items():
                lo, hi = cell["intervals"][metric]
                assert float(props[f"medrobust.{metric}.lo"]) == pytest.approx(lo, abs=1e-6)
                assert float(props[f"medrobust.{metric}.hi"]) == pytest.approx(hi, abs=1e-6)
                for kind in ("min", "retention"):
                    if kind in row:
                        assert float(props[f"medrobust.{metric}.threshold.{kind}"]) == pytest.approx(row[kind])
                if "clean" in row:  # a retention limit at an occluded level
                    assert float(props[f"medrobust.{metric}.clean"]) == pytest.approx(row["clean"], abs=1e-6)
                    cleans += 1
            out = case.system_out
            assert out and out.splitlines()[0].startswith(f"{cell['model']} {cell['patch']} ")
            assert f": {cell['outcome'].upper()}" in out.splitlines()[0]
            assert (FAILED_MARK in out) == (cell["outcome"] == "failed")
            picture = (cell.get("search") or {}).get("picture")
            if picture:
                assert f"[[ATTACHMENT|reports/{picture}]]" in out
                assert (run["root"] / "reports" / picture).is_file()
    assert seen == set(cells)
    assert cleans > 0


def _markdown_outcomes(text: str, results: dict) -> dict[tuple[str, str], str]:
    """(kind, cell id) -> outcome, read from the Markdown's compact tables."""
    found = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith("| `") and lines[i + 1].startswith("|---")):
            continue
        header = [h.strip() for h in line.strip("|").split("|")]
        patch = header[0].strip("`")
        levels = [float(h.split("%")[0]) / 100 for h in header[1:]]
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            parts = [p.strip() for p in row.strip("|").split("|")]
            model = parts[0].replace("\\", "")
            for level, shown in zip(levels, parts[1:], strict=True):
                for piece in shown.split("<br>"):
                    kind = "search" if piece.startswith("worst ") else "grid"
                    outcome = "error" if "⚠️" in piece else ("failed" if FAILED_MARK in piece else "passed")
                    found[(kind, f"{model}-{patch}-{level:.2f}")] = outcome
    return found


def test_markdown_agrees_and_is_short(run):
    text = (run["root"] / "reports" / "medrobust.md").read_text()
    assert _markdown_outcomes(text, run["results"]) == _expected(run["results"])
    assert len(text.splitlines()) <= 80


def test_small_data_warning_is_in_the_json_markdown_and_terminal(run):
    # 24 queries: the bootstrap intervals are far wider than the documented 0.2.
    warnings = run["results"]["warnings"]
    assert warnings and all(w.startswith("small data: ") for w in warnings)
    markdown = (run["root"] / "reports" / "medrobust.md").read_text().replace("\\", "")
    for warning in warnings:
        assert warning in markdown
        assert f"warning: {warning}" in run["stdout"]


def _terminal_outcomes(stdout: str) -> dict[tuple[str, str], str]:
    """(kind, cell id) -> outcome, read from the medrobust section's tables: after the label
    column, one 7-character column per level (value and mark), two spaces apart."""
    section = stdout.split("= medrobust =")[1].split("verdict per model")[0]
    found = {}
    for block in section.split("\n\n")[1:]:
        if not block.strip():
            continue
        header, *rows = block.strip("\n").splitlines()
        patch = header.split()[0]
        start = len(header) - len(header[len(patch):].lstrip())
        levels = [float(x) for x in header.split()[1:]]
        model = ""
        for row in rows:
            kind = "search" if row.startswith("  worst") else "grid"
            model = row.split()[0] if kind == "grid" else model
            for i, level in enumerate(levels):
                shown = row[start + 9 * i : start + 9 * i + 7].strip()
                if shown:
                    found[(kind, f"{model}-{patch}-{level:.2f}")] = {"+": "passed", "x": "failed"}.get(shown[-1], "error")
    return found


def test_terminal_agrees_and_comes_after_pytests_short_summary(run):
    stdout = run["stdout"]
    assert _terminal_outcomes(stdout) == _expected(run["results"])
    assert stdout.index("short test summary info") < stdout.index("= medrobust =")
    assert "policy=" not in stdout


def test_html_agrees(run):
    text = (run["root"] / "reports" / "medrobust.html").read_text()
    shown: dict[str, set[str]] = {}
    for tag in re.findall(r"<[^>]*\bdata-cell=[^>]*>", text):
        cell = re.search(r'data-cell="([^"]*)"', tag)
        outcome = re.search(r'data-outcome="([^"]*)"', tag)
        if cell and outcome:
            shown.setdefault(html_lib.unescape(cell[1]), set()).add(outcome[1])
    assert shown, "the HTML marks no cell with data-cell / data-outcome"
    for (kind, cell_id), outcome in _expected(run["results"]).items():
        if kind == "grid":
            # A grid cell's outcome; the same id may also carry its search cell's outcome.
            assert outcome in shown.get(cell_id, set()), cell_id


@pytest.mark.slow  # a second grid run in a shell (about 10 s of CPU)
def test_markdown_replay_block_pastes_and_runs(run, tmp_path):
    text = (run["root"] / "reports" / "medrobust.md").read_text()
    block = re.search(r"Replay the worst search cell, `([^`]+)`:\n\n```bash\n(.*?)\n```", text, re.S)
    assert block, text
    cell_id, command = block[1], block[2]
    before = next(c for c in run["results"]["cells"] if c["kind"] == "search" and c["id"] == cell_id)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # As pasted: a shell runs it in the project, with the --medrobust-report-dir of our choice.
    done = subprocess.run(["bash", "-c", command + f" --medrobust-report-dir={tmp_path} -p no:cacheprovider"],
                          cwd=run["root"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:]
    after = json.loads((tmp_path / "medrobust.json").read_text())
    (replayed,) = [c for c in after["cells"] if c["kind"] == "search"]
    assert replayed["id"] == cell_id
    assert replayed["search"]["value"] == before["search"]["value"]
    assert replayed["metrics"] == before["metrics"]


def test_per_query_side_file_lists_each_studys_ranks(run):
    path = run["root"] / "reports" / "medrobust-queries.jsonl"
    header, *rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert header["dataset_sha256"] == run["results"]["dataset"]["sha256"]
    assert len(header["ids"]) == 24
    assert {(r["kind"], r["cell"]) for r in rows} == set(_expected(run["results"]))
    cells = {(c["kind"], c["id"]): c for c in run["results"]["cells"]}
    for row in rows:
        metrics = cells[(row["kind"], row["cell"])]["metrics"]
        # R@k recomputed from the side file's ranks is the cell's.
        for direction in ("i2t", "t2i", "i2t_unique"):
            assert sum(r <= 1 for r in row[direction]) / 24 == pytest.approx(metrics[f"{direction}_R@1"])
    assert "queries" not in json.dumps(run["results"]["cells"][0])


@pytest.mark.slow  # a second grid run (about 8 s of CPU)
def test_quiet_prints_one_verdict_line_per_model_and_the_runs(run):
    args = [sys.executable, "-m", "pytest", "--medrobust-only", "-q", "--tb=no", "-p", "no:cacheprovider",
            "--medrobust-report-dir=quiet", "--medrobust-search-examples=0", "--medrobust-patches=black_box"]
    done = subprocess.run(args, cwd=run["root"], capture_output=True, text=True, timeout=300)
    section = done.stdout.split("= medrobust =")[1].splitlines()[1:-1]  # without the rules' ends
    assert any(line.lstrip().startswith("oracle ") for line in section)
    assert any(line.lstrip().startswith("fragile ") for line in section)
    assert any(line.startswith("gate FAIL") for line in section)
    assert not any("per cell" in line or line.startswith("wrote ") for line in section)
    assert len(section) <= 8
