"""The worst-placement search (pytest_medrobust/search.py) and the per-image placement modes it
draws from (occlusion/policy.py): budget spent, never better than the grid or guided placement."""

import json

# pytester's in-process runs drop modules first imported during a run (see tests/plugin/conftest.py).
import numpy as np
import PIL.Image  # noqa: F401
import pytest
import torch

import pytest_medrobust.runner  # noqa: F401
from pytest_medrobust import occlusion
from pytest_medrobust.errors import OcclusionError
from pytest_medrobust.occlusion import PlacementPolicy
from pytest_medrobust.sensitivity import Guide
from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import make_project

IDS = ["a", "b", "c"]
GUIDES = {"a": Guide(10.0, 30.0, (4, 20, 16, 40)), "b": Guide(30.0, 8.0, (24, 0, 40, 16)), "c": Guide(20.0, 20.0, (0, 0, 40, 40))}


@pytest.mark.parametrize("patch", ["black_box", "noise_box", "grid_cutout", "random_erase", "annotation"])
def test_grid_mode_gives_the_grid_cells_own_masks_and_pixels(patch):
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    grid, grid_masks = occlusion.occlude(images, IDS, patch, 0.2, 7, stats={"mean": 0.3, "std": 0.1})
    policy = PlacementPolicy(patch=patch, level=0.2, mode="grid")
    searched, masks = occlusion.occlude_with_policy(images, IDS, policy, seed=7, stats={"mean": 0.3, "std": 0.1})
    assert masks == grid_masks
    assert torch.equal(searched, grid)


def test_guided_mode_centres_each_images_occluder_on_its_guide():
    policy = PlacementPolicy(mode="guided").with_guides(GUIDES)
    for spec, image_id in zip(policy.plan("black_box", 0.04, IDS, 40, 40, 0), IDS, strict=True):
        box = spec.bbox()
        guide = GUIDES[image_id]
        assert abs(box.top + box.height / 2 - guide.cy) <= 0.5 and abs(box.left + box.width / 2 - guide.cx) <= 0.5
    # Near the edge the box is moved inside the image, not cut.
    (edge,) = PlacementPolicy(mode="guided").with_guides({"a": Guide(0.0, 39.0, (0, 30, 4, 40))}).plan(
        "black_box", 0.1, ["a"], 40, 40, 0)
    assert edge.bbox().top == 0 and edge.bbox().left + edge.bbox().width == 40 and edge.in_bounds()


def test_region_mode_places_each_occluder_within_its_own_sensitive_region():
    for fy, fx in [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0), (0.25, 0.75)]:
        policy = PlacementPolicy(fy, fx, mode="region").with_guides(GUIDES)
        for spec, image_id in zip(policy.plan("black_box", 0.02, IDS, 40, 40, 0), IDS, strict=True):
            top, left, bottom, right = GUIDES[image_id].region
            box = spec.bbox()
            cy, cx = box.top + box.height / 2, box.left + box.width / 2
            assert abs(cy - (top + fy * (bottom - top))) <= 0.5 or box.top in (0, 40 - box.height)
            assert abs(cx - (left + fx * (right - left))) <= 0.5 or box.left in (0, 40 - box.width)
    different = PlacementPolicy(0.5, 0.5, mode="region").with_guides(GUIDES).plan("black_box", 0.02, IDS, 40, 40, 0)
    assert len({(s.bbox().top, s.bbox().left) for s in different}) == 3  # per image, not one place for all


def test_modes_describe_round_trip_and_refuse_missing_guides():
    policy = PlacementPolicy(0.25, 0.5, 0.1, None, "black_box", 0.2, mode="region")
    assert PlacementPolicy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    assert "within each image's sensitive region" in policy.describe()
    assert "most sensitive window" in PlacementPolicy(patch="black_box", level=0.2, mode="guided").describe()
    assert "mode" not in PlacementPolicy().to_json()  # fixed policies keep their old JSON
    with pytest.raises(OcclusionError, match="needs the sensitivity guide of image 'a'"):
        PlacementPolicy(mode="guided").plan("black_box", 0.1, ["a"], 20, 20, 0)
    with pytest.raises(OcclusionError, match="mode must be one of"):
        PlacementPolicy(mode="anywhere")


def test_guided_replay_snippet_carries_the_guides_and_reproduces_the_masks():
    policy = PlacementPolicy(0.75, 0.25, 0.1, None, "noise_box", 0.1, mode="region")
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    expected, specs = occlusion.occlude_with_policy(images, IDS, policy.with_guides(GUIDES), seed=3)
    scope = {"images": images, "ids": IDS}
    exec(policy.replay(seed=3, guides=GUIDES), scope)  # noqa: S102 - the snippet is the product
    assert scope["masks"] == specs
    assert torch.equal(scope["occluded"], expected)


@pytest.fixture
def search_project(pytester: pytest.Pytester) -> pytest.Pytester:
    return make_project(pytester, PYPROJECT, n=24)


def test_search_spends_its_budget_and_is_never_better_than_the_grid_or_guided_placement(search_project):
    result = search_project.runpytest(
        "--medrobust-only", "--medrobust-models", "oracle", "--medrobust-levels", "0.1,0.3",
        "--medrobust-patches", "black_box,white_box", "--medrobust-search-examples", "7", "-p", "no:cacheprovider",
    )
    cells = json.loads((search_project.path / "reports" / "medrobust.json").read_text())["cells"]
    grid = {c["id"]: c for c in cells if c["kind"] == "grid"}
    searched = [c for c in cells if c["kind"] == "search"]
    assert len(searched) == 4
    for cell in searched:
        search = cell["search"]
        metric = search["metric"]
        assert search["budget"] == 7 and search["evaluations"] == 7, cell["id"]
        # The grid placement is evaluated on the grid cell's very masks: the same value.
        assert search["grid_value"] == grid[cell["id"]]["metrics"][metric]
        assert search["value"] <= search["grid_value"] and search["value"] <= search["guided_value"]
        assert search["value"] == cell["metrics"][metric]
        if search["minimal_failure"] is not None:
            assert search["minimal_failure"]["failed"] is True and cell["outcome"] == "failed"
    assert "worst placement found" in result.stdout.str()


def test_search_with_a_budget_below_the_explicit_placements_still_evaluates_them(search_project):
    search_project.runpytest(
        "--medrobust-only", "--medrobust-models", "oracle", "--medrobust-levels", "0.3",
        "--medrobust-search-examples", "1", "-p", "no:cacheprovider", "-k", "worst_placement",
    )
    (cell,) = json.loads((search_project.path / "reports" / "medrobust.json").read_text())["cells"]
    assert cell["search"]["evaluations"] == 3  # grid, guided and one drawn placement
    assert not np.isnan(cell["search"]["guided_value"])
