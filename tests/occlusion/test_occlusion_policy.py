"""Dataset-wide placement policies: semantics, determinism, description, JSON and replay."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_medrobust import occlusion
from pytest_medrobust.errors import OcclusionError
from pytest_medrobust.occlusion import PlacementPolicy

from .occlusion_testing import BUILTIN, gray_batch, ids


def test_position_semantics_for_a_box():
    H, W = 40, 60
    (tl,) = occlusion.plan_masks("black_box", 0.25, ["a"], H, W, 0, policy=PlacementPolicy(0.0, 0.0))
    (br,) = occlusion.plan_masks("black_box", 0.25, ["a"], H, W, 0, policy=PlacementPolicy(1.0, 1.0))
    (c,) = occlusion.plan_masks("black_box", 0.25, ["a"], H, W, 0, policy=PlacementPolicy())
    assert (tl.bbox().top, tl.bbox().left) == (0, 0)
    assert br.bbox().top + br.bbox().height == H and br.bbox().left + br.bbox().width == W
    box = c.bbox()
    assert abs((box.top + box.height / 2) - H / 2) <= 1 and abs((box.left + box.width / 2) - W / 2) <= 1


@pytest.mark.parametrize("patch", BUILTIN)
def test_no_jitter_means_the_same_place_on_every_image(patch):
    policy = PlacementPolicy(0.25, 0.75)
    specs = occlusion.plan_masks(patch, 0.3, ids(5), 48, 48, 0, policy=policy)
    assert all(s.area == round(0.3 * 48 * 48) and s.in_bounds() for s in specs)
    if patch.endswith("_box") or patch == "grid_cutout":
        assert len(set(specs)) == 1
    again = policy.plan(patch, 0.3, ids(5)[::-1], 48, 48, 0)
    assert again[::-1] == specs


def test_jitter_moves_each_image_within_its_bound():
    policy = PlacementPolicy(0.5, 0.5, jitter=0.2)
    specs = policy.plan("black_box", 0.1, ids(20), 100, 100, 0)
    tops = {s.bbox().top for s in specs}
    assert len(tops) > 5
    span = 100 - specs[0].bbox().height
    assert all(abs(t - 0.5 * span) <= 0.2 * span + 1 for t in tops)
    assert policy.plan("black_box", 0.1, ids(20), 100, 100, 0) == specs
    assert policy.plan("black_box", 0.1, ids(20), 100, 100, 1) != specs


def test_count_sets_pieces_of_multi_piece_patches_only():
    (one,) = PlacementPolicy(count=1).plan("random_erase", 0.2, ["a"], 50, 50, 0)
    assert len(one.boxes) <= 2  # one block: a rectangle and at most one short row
    (grid,) = PlacementPolicy(count=2).plan("grid_cutout", 0.2, ["a"], 50, 50, 0)
    assert grid.area == 500
    with pytest.raises(OcclusionError, match="multi-piece"):
        PlacementPolicy(count=3).plan("black_box", 0.2, ["a"], 50, 50, 0)


@pytest.mark.parametrize(
    "fields",
    [{"fy": -0.1}, {"fx": 1.5}, {"jitter": 2}, {"count": 0}, {"count": 1.5}, {"fy": float("nan")}, {"level": 1.0}, {"patch": 3}],
)
def test_invalid_policies(fields):
    with pytest.raises(OcclusionError):
        PlacementPolicy(**fields)


def test_patch_and_level_labels_are_checked_and_used():
    policy = PlacementPolicy(0.0, 1.0, patch="grid_cutout(cells=4)", level=0.3)
    specs = policy.plan(None, None, ["a"], 40, 40, 0)
    assert specs == policy.plan("grid_cutout(cells=4)", 0.3, ["a"], 40, 40, 0)
    assert specs == policy.plan(occlusion.make_patch("grid_cutout", cells=4), 0.3, ["a"], 40, 40, 0)
    with pytest.raises(OcclusionError, match="drawn for patch"):
        policy.plan("black_box", 0.3, ["a"], 40, 40, 0)
    with pytest.raises(OcclusionError, match="drawn for level"):
        policy.plan(None, 0.5, ["a"], 40, 40, 0)
    with pytest.raises(OcclusionError, match="names no patch"):
        PlacementPolicy().plan(None, 0.3, ["a"], 40, 40, 0)


def test_describe():
    assert PlacementPolicy(patch="black_box", level=0.3).describe() == "black_box at 30% centred on every image"
    assert PlacementPolicy(0, 1).describe("white_box", 0.1) == "white_box at 10% in the top-right corner on every image"
    assert PlacementPolicy(1, 0.5).describe("black_box", 0.5) == "black_box at 50% at the bottom centre on every image"
    text = PlacementPolicy(0.25, 0.7, jitter=0.1, count=3, patch="random_erase", level=0.2).describe()
    assert text == (
        "random_erase at 20% in 3 pieces at (y=0.25, x=0.70) [0 = top/left, 1 = bottom/right] on every image, "
        "each moved by up to \u00b10.10"
    )
    assert str(PlacementPolicy()) == "the occluder centred on every image"


def test_json_round_trip_and_errors():
    policy = PlacementPolicy(0.125, 0.875, 0.05, 4, "grid_cutout", 0.3)
    data = policy.to_json()
    assert json.loads(json.dumps(data)) == data
    assert PlacementPolicy.from_json(data) == policy
    assert PlacementPolicy.from_json(json.dumps(data)) == policy
    with pytest.raises(OcclusionError, match="unknown field"):
        PlacementPolicy.from_json({"fy": 0.5, "where": "left"})
    with pytest.raises(OcclusionError, match="not JSON"):
        PlacementPolicy.from_json("{fy")
    with pytest.raises(OcclusionError, match="JSON object"):
        PlacementPolicy.from_json("[1, 2]")


def test_replay_snippet_reproduces_the_batch():
    policy = PlacementPolicy(0.375, 0.625, 0.1, None, "noise_box", 0.3)
    images, names = gray_batch(3, 24, 24), ids(3)
    expected, specs = occlusion.occlude_with_policy(images, names, policy, seed=7)
    scope = {"images": images, "ids": names}
    exec(policy.replay(seed=7), scope)  # noqa: S102 - the snippet is the product
    assert torch.equal(scope["occluded"], expected)
    assert scope["masks"] == specs
    same, _ = occlusion.occlude(images, names, "noise_box", 0.3, 7, policy=policy)
    assert torch.equal(same, expected)


def test_occlude_with_policy_needs_a_patch_and_level():
    with pytest.raises(OcclusionError, match="names no patch or level"):
        occlusion.occlude_with_policy(gray_batch(1, 8, 8), ["a"], PlacementPolicy())
