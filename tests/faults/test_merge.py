"""``medrobust merge`` against incomplete, edited and malformed shards (issue 11, items 1, 10
and 14): each is refused with one line naming the file and the field or cell, never merged into
a verdict, never a traceback; exit 2 for bad input, 4 for a shard whose verdict is ``error``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from pytest_medrobust.cli import main
from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import MODELS, write_dataset

# Every cell passes. The cost split puts levels 0.00 (which carries the model's clean pass and texts)
# and 0.05 in shard 1/2, levels 0.10 to 0.25 in 2/2 (sharding.assign; tests/test_sharding.py).
GATE = "models = ['oracle']\nlevels = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25]\nbootstrap = {resamples = 0}\n"

# Interrupts the run (as Ctrl-C or SIGTERM does) when the second cell starts.
INTERRUPT_SECOND_CELL = """
started = []

def pytest_runtest_setup(item):
    started.append(item.nodeid)
    if len(started) == 2:
        raise KeyboardInterrupt
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(fakemodels=MODELS)
    pytester.makefile(".toml", pyproject=PYPROJECT, gate=GATE)
    write_dataset(pytester.path)
    return pytester


def run_shard(project: pytest.Pytester, index: int) -> Path:
    out = project.path / f"shard{index}"
    project.runpytest(
        "--medrobust-only", "-p", "no:cacheprovider", "--medrobust-config", "gate.toml",
        "--medrobust-shard", f"{index}/2", "--medrobust-report-dir", str(out),
        no_reraise_ctrlc=True,  # the interrupted shard's Ctrl-C stays in its own run
    )
    return out / "medrobust.json"


@pytest.fixture
def shards(project: pytest.Pytester) -> list[Path]:
    return [run_shard(project, 1), run_shard(project, 2)]


def merge(paths: list[Path], output: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["merge", *map(str, paths), "-o", str(output)])
    return code, capsys.readouterr().err


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_whole_shards_merge_to_pass(shards, tmp_path, capsys):
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert (code, err) == (0, "")
    merged = json.loads((tmp_path / "merged" / "medrobust.json").read_text())
    assert merged["summary"]["verdict"] == "pass" and len(merged["summary"]["expected"]) == 6


def test_an_interrupted_shard_is_refused(project, tmp_path, capsys):
    first = run_shard(project, 1)
    project.makeconftest(INTERRUPT_SECOND_CELL)
    second = run_shard(project, 2)
    assert json.loads(second.read_text())["summary"]["verdict"] == "incomplete"
    code, err = merge([first, second], tmp_path / "merged", capsys)
    assert code == 2
    assert f"{second}: the shard is incomplete" in err and "oracle-black_box-0.15" in err
    assert not (tmp_path / "merged").exists()


def test_a_shard_run_with_cells_deselected_is_refused(project, tmp_path, capsys):
    first = run_shard(project, 1)
    project.makeconftest("def pytest_collection_modifyitems(items):\n    del items[1:]\n")
    second = run_shard(project, 2)
    assert json.loads(second.read_text())["summary"]["verdict"] == "pass"  # of its one cell
    code, err = merge([first, second], tmp_path / "merged", capsys)
    assert code == 2
    assert f"{second}: cell medrobust::oracle::test_recall[oracle-black_box-0.15] of shard 2/2 was not selected" in err


def remove_cell(data):
    del data["cells"][1]


def remove_cell_and_recount(data):
    remove_cell(data)
    data["summary"]["cells"] -= 1
    data["summary"]["passed"] -= 1


def remove_cell_everywhere(data):
    remove_cell_and_recount(data)
    data["summary"]["expected"].remove("medrobust::oracle::test_recall[oracle-black_box-0.15]")


@pytest.mark.parametrize("change", [remove_cell, remove_cell_and_recount, remove_cell_everywhere])
def test_a_shard_with_a_cell_removed_is_refused(shards, tmp_path, capsys, change):
    edit(shards[1], change)
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 2
    assert f"{shards[1]}: cell medrobust::oracle::test_recall[oracle-black_box-0.15]" in err


def test_an_edited_outcome_is_refused(project, tmp_path, capsys):
    # A stricter gate: the oracle's 0.15 cell (R@5 0.958) fails, so the merged gate fails.
    project.makefile(".toml", gate=GATE + "[thresholds]\nmin = {'i2t_unique_R@5' = 0.99}\n")
    shards = [run_shard(project, 1), run_shard(project, 2)]
    code, _ = merge(shards, tmp_path / "honest", capsys)
    assert code == 1

    def outcome_only(data):
        (cell,) = [c for c in data["cells"] if c["id"] == "oracle-black_box-0.15"]
        cell["outcome"] = "passed"

    def consistently(data):
        (cell,) = [c for c in data["cells"] if c["id"] == "oracle-black_box-0.15"]
        cell.update(outcome="passed", passed=True, failures=[])
        outcomes = [c["outcome"] for c in data["cells"]]
        failed = outcomes.count("failed")
        data["summary"].update(passed=outcomes.count("passed"), failed=failed, verdict="fail" if failed else "pass")
        for summary in data["model_summaries"]:
            summary["failures"] = []

    original = shards[1].read_text()
    for change in (outcome_only, consistently):
        shards[1].write_text(original)
        edit(shards[1], change)
        code, err = merge(shards, tmp_path / "merged", capsys)
        assert code == 2, change.__name__
        assert f"{shards[1]}: cell oracle-black_box-0.15: outcome 'passed'" in err, change.__name__
    assert not (tmp_path / "merged").exists()


def test_an_outcome_edited_past_a_retention_limit_is_refused(project, tmp_path, capsys):
    """No min limit to re-check in the cell itself: merge judges the metrics again with the run's
    thresholds and the model's clean cell (which may sit in another shard)."""
    project.makefile(".toml", gate=GATE + "[thresholds]\nretention = {'i2t_unique_R@5' = 0.99}\n")
    shards = [run_shard(project, 1), run_shard(project, 2)]
    failing = [c["id"] for s in shards for c in json.loads(s.read_text())["cells"] if c["outcome"] == "failed"]
    assert "oracle-black_box-0.15" in failing

    def consistently(data):
        for cell in data["cells"]:
            if cell["outcome"] == "failed":
                cell.update(outcome="passed", passed=True, failures=[])
        data["summary"].update(passed=data["summary"]["cells"], failed=0, verdict="pass")
        for summary in data["model_summaries"]:
            summary["failures"] = []

    for shard in shards:
        edit(shard, consistently)
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 2
    assert "outcome 'passed' but its metrics fail the run's thresholds (oracle-black_box-0.15: i2t_unique_R@5 retention" in err
    assert not (tmp_path / "merged").exists()


def test_an_edited_summary_is_refused(shards, tmp_path, capsys):
    edit(shards[1], lambda data: data["summary"].update(failed=1, passed=3))
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 2
    assert f"{shards[1]}: its summary says passed 3, failed 1 but its cells give passed 4, failed 0" in err


def test_a_shard_whose_verdict_is_error_exits_4(shards, tmp_path, capsys):
    def errored(data):
        cell = data["cells"][0]
        cell.update(outcome="error", passed=False, failures=[], metrics={}, error="CUDA out of memory")
        data["summary"].update(passed=3, errors=1, verdict="error")

    edit(shards[1], errored)
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 4
    assert f"{shards[1]}: the shard's verdict is 'error'" in err and "oracle-black_box-0.10" in err


def _set_config(value):
    return lambda data: data.update(config=value)


def _set_shard(value):
    return lambda data: data["config"].update(shard=value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda data: data["cells"][0].pop("id"), "field 'cells[0].id'"),
        (lambda data: data["cells"].__setitem__(0, None), "field 'cells[0]'"),
        (_set_config(None), "field 'config'"),
        (_set_shard("two/3"), "field 'config.shard'"),
        (_set_shard("3/2"), "field 'config.shard'"),
        (lambda data: data["cells"][0].update(level="high"), "field 'cells[0].level'"),
        (lambda data: data.update(summary=[]), "field 'summary'"),
        (lambda data: data["summary"].pop("expected"), "field 'summary.expected'"),
        (lambda data: data["cells"][0].update(model="../../evil"), "field 'cells[0].model'"),
    ],
    ids=["cell-without-id", "null-cell", "null-config", "shard-two", "shard-3-of-2", "level", "summary", "no-expected",
         "model-path"],
)
def test_a_malformed_shard_is_one_line_naming_file_and_field(shards, tmp_path, capsys, change, field):
    edit(shards[1], change)
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"medrobust: error: {shards[1]}: {field}")


def test_an_output_that_is_a_file_is_one_line_naming_the_option(shards, tmp_path, capsys):
    target = tmp_path / "merged.txt"
    target.write_text("not a folder")
    code, err = merge(shards, target, capsys)
    assert code == 2
    assert err == f"medrobust: error: -o/--output: {target} is a file, not a folder for the merged reports\n"
    assert target.read_text() == "not a folder"


def test_a_path_traversal_cell_id_writes_nothing_outside_the_output(shards, tmp_path, capsys):
    escaped = "../../../escaped"

    def traversal(data):
        cell = data["cells"][0]
        cell.update(id=escaped, nodeid=f"medrobust::oracle::test_recall[{escaped}]", search={"picture": "masks/x.png"})

    (shards[1].parent / "masks").mkdir()
    (shards[1].parent / "masks" / "x.png").write_bytes(base64.b64decode(base64.b64encode(b"\x89PNG fake")))
    edit(shards[1], traversal)
    output = tmp_path / "a" / "b" / "merged"
    code, err = merge(shards, output, capsys)
    assert code == 2 and f"{shards[1]}: cell {escaped}" in err
    assert [p for p in tmp_path.rglob("*.png") if not p.is_relative_to(shards[1].parent)] == []


# --- medrobust merge DIR: a folder of downloaded artifacts (issue 15, item 4) -------------------


def artifacts(shards: list[Path], folder: Path) -> Path:
    """The layout actions/download-artifact gives: one folder per artifact, each a report folder."""
    import shutil

    for i, shard in enumerate(shards, start=1):
        shutil.copytree(shard.parent, folder / f"medrobust-shard-{i}")
    return folder


def test_a_folder_of_artifacts_merges_and_skips_what_is_not_ours(shards, tmp_path, capsys):
    folder = artifacts(shards, tmp_path / "downloaded")
    (folder / "notes.md").write_text("# not ours\n")
    (folder / "package.json").write_text('{"name": "something-else"}')
    (folder / "medrobust-shard-1" / "baseline.json").write_text('{"kind": "medrobust-baseline", "cells": {}}')
    code, err = merge([folder], folder / "merged", capsys)  # the output inside the folder, as in GitLab's reports/
    assert (code, err) == (0, "")
    by_files = tmp_path / "by-files"
    assert merge(shards, by_files, capsys) == (0, "")
    merged, expected = (json.loads((d / "medrobust.json").read_text()) for d in (folder / "merged", by_files))
    assert merged["cells"] == expected["cells"] and merged["summary"] == expected["summary"]
    assert merged["config"]["merged_from"] == [str(folder / f"medrobust-shard-{i}" / "medrobust.json") for i in (1, 2)]
    # A second merge into the same output reads the shards again, not the first merge's output.
    assert merge([folder], folder / "merged", capsys) == (0, "")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "medrobust-shard-2" / "medrobust.json").write_text('{"schema": 1, "cel'),
         "medrobust-shard-2/medrobust.json: cannot read a results JSON"),
        (lambda f: (f / "medrobust-shard-2" / "stray.json").write_text('{"schema": 1, "cel'),
         "medrobust-shard-2/stray.json: not valid JSON"),
        (lambda f: (f / "medrobust-shard-2" / "medrobust.json").unlink(), "shard(s) 2 missing"),
        (lambda f: [p.unlink() for p in f.rglob("medrobust.json")], "no shard results (medrobust.json) found"),
    ],
    ids=["cut-short", "stray-broken-json", "shard-missing", "empty"],
)
def test_a_folder_with_a_broken_or_missing_shard_is_refused_naming_it(shards, tmp_path, capsys, damage, message):
    folder = artifacts(shards, tmp_path / "downloaded")
    damage(folder)
    code, err = merge([folder], tmp_path / "merged", capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "merged").exists()


def test_a_folder_with_a_shard_stopped_by_a_set_up_error_exits_4(shards, tmp_path, capsys):
    folder = artifacts(shards, tmp_path / "downloaded")
    error = {"schema": 1, "tool": {"name": "pytest-medrobust"}, "cells": [],
             "summary": {"verdict": "error", "error": "dataset manifest.csv: row 3: image missing\nmore"}}
    (folder / "medrobust-shard-2" / "medrobust-error.json").write_text(json.dumps(error))
    code, err = merge([folder], tmp_path / "merged", capsys)
    assert code == 4
    assert "medrobust-shard-2/medrobust-error.json: a shard stopped by a set-up error" in err
    assert "row 3: image missing" in err


def test_the_recorded_split_is_checked(shards, tmp_path, capsys):
    """Each shard records what its share was computed from (config.shard_plan); merge rebuilds the
    share from it, so a plan removed or edited is refused."""
    original = [s.read_text() for s in shards]

    def restore():
        for shard, text in zip(shards, original, strict=True):
            shard.write_text(text)

    for shard in shards:  # as an older pytest-medrobust wrote them
        edit(shard, lambda data: data["config"].pop("shard_plan"))
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 2 and f"{shards[0]}: field 'config.shard_plan' is missing" in err

    restore()
    edit(shards[1], lambda data: data["config"]["shard_plan"]["model_gflops"].update(oracle=99.0))
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 2 and f"{shards[1]}: its configuration differs from {shards[0]}'s" in err

    restore()
    for shard in shards:  # edited alike in both: the rebuilt shares no longer match what ran
        edit(shard, lambda data: data["config"]["shard_plan"].update(method="count"))
    code, err = merge(shards, tmp_path / "merged", capsys)
    assert code == 2 and "field 'config.shard_plan.method': expected 'cost-cuts-1'" in err
    assert not (tmp_path / "merged").exists()


def test_shards_checked_out_in_other_folders_merge_but_not_other_datasets(shards, tmp_path, capsys):
    """Each CI job checks the project out in a folder of its own: absolute paths in the config
    differ and are compared by their last part (the data by its fingerprint)."""
    def moved(name):
        def change(data):
            data["config"]["dataset"] = f"/builds/runner-7/0/group/project/{name}"
        return change

    edit(shards[1], moved("manifest.csv"))
    assert merge(shards, tmp_path / "merged", capsys) == (0, "")
    edit(shards[1], moved("other.csv"))
    code, err = merge(shards, tmp_path / "merged-2", capsys)
    assert code == 2 and f"{shards[1]}: its configuration differs" in err


def test_the_output_of_a_merge_is_not_a_shard(shards, tmp_path, capsys):
    assert merge(shards, tmp_path / "merged", capsys) == (0, "")
    code, err = merge([*shards, tmp_path / "merged" / "medrobust.json"], tmp_path / "again", capsys)
    assert code == 2 and "the output of an earlier medrobust merge, not a shard's results" in err
