"""A search cell's replay (issue 11, item 15): the printed command and the Python snippet give
back exactly what the cell measured, whatever options and config file the run had."""

import json
import shlex

# pytester's in-process runs drop modules first imported during a run; C extensions cannot be
# imported twice, so load them before any run (as tests/plugin/conftest.py does).
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import torch

import pytest_medrobust.occlusion
import pytest_medrobust.runner  # noqa: F401
from pytest_medrobust.occlusion import PlacementPolicy
from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import make_project


@pytest.fixture
def replay_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester, PYPROJECT, n=40)


def _results(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "reports" / "medrobust.json").read_text())


def _search_cell(results: dict) -> dict:
    (cell,) = [c for c in results["cells"] if c["kind"] == "search"]
    return cell


def _printed_command(output: str) -> list[str]:
    lines = output.splitlines()
    start = lines.index("replay:") + 1
    command = shlex.split(lines[start])
    assert command[0] == "pytest"
    return command[1:]


def test_printed_replay_command_reproduces_the_cells_value(replay_project):
    # Settings from the config file that have no flag (primary metric, thresholds) and flags that
    # change the numbers (limit: another subset; search examples: another search).
    replay_project.makefile(
        ".toml",
        gate="""
        primary_metric = "i2t_unique_R@1"
        batch_size = 7
        [thresholds]
        retention = {"i2t_unique_R@1" = 0.9}
        """,
    )
    result = replay_project.runpytest(
        "--medrobust-only", "--medrobust-models", "oracle", "--medrobust-config", "gate.toml", "--medrobust-limit", "15",
        "--medrobust-levels", "0.1,0.3", "--medrobust-search-examples", "5", "--medrobust-no-cache",
        "-k", "worst_placement and 0.30",
    )
    result.assert_outcomes(failed=1)
    before = _results(replay_project)
    first = _search_cell(before)
    assert first["n_images"] == 15 and first["search"]["metric"] == "i2t_unique_R@1"

    again = replay_project.runpytest(*_printed_command(result.stdout.str()))
    again.assert_outcomes(failed=1)
    after = _results(replay_project)
    replayed = _search_cell(after)
    assert replayed["id"] == first["id"]
    assert replayed["n_images"] == first["n_images"]
    assert after["dataset"]["sha256"] == before["dataset"]["sha256"]
    for key in ("metric", "value", "placement", "failed"):
        assert replayed["search"][key] == first["search"][key], key
    assert replayed["metrics"] == first["metrics"]


def test_replay_snippet_gives_the_searchs_masks_and_pixels_for_a_dataset_mean_fill(replay_project, monkeypatch):
    seen: list[tuple[torch.Tensor, list[str], PlacementPolicy, torch.Tensor, list]] = []
    occlude_with_policy = pytest_medrobust.occlusion.occlude_with_policy

    def spy(images, ids, policy, *args, **kwargs):
        occluded, masks = occlude_with_policy(images, ids, policy, *args, **kwargs)
        seen.append((images.clone(), list(ids), policy, occluded.clone(), masks))
        return occluded, masks

    monkeypatch.setattr(pytest_medrobust.occlusion, "occlude_with_policy", spy)
    replay_project.runpytest(
        "--medrobust-only", "--medrobust-models", "oracle", "--medrobust-patches", "gray_box",
        "--medrobust-levels", "0.3", "--medrobust-search-examples", "3", "--medrobust-no-cache",
        "-k", "worst_placement",
    )
    search = _search_cell(_results(replay_project))["search"]
    command, snippet = search["replay"].split("\n", 1)
    assert command.startswith("pytest ")
    policy = PlacementPolicy.from_json(search["placement"])
    batches = [s for s in seen if s[2] == policy and len(s[1]) > 1]
    assert batches
    for images, ids, _, occluded, masks in batches:
        # The dataset mean of these images is far from gray_box's 0.5 default.
        assert abs(images.mean().item() - 0.5) > 0.1
        scope = {"images": images.clone(), "ids": ids}
        exec(snippet, scope)  # noqa: S102 - the snippet is the product
        assert scope["masks"] == masks
        assert torch.equal(scope["occluded"], occluded)
