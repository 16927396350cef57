"""The public Hypothesis strategies and settings profiles."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from pytest_medrobust import occlusion
from pytest_medrobust.occlusion import MaskSpec, PlacementPolicy
from pytest_medrobust.strategies import (
    CI_PROFILE,
    EXPLORE_PROFILE,
    cell_settings,
    centre_out,
    mask_specs,
    placement_policies,
    register_profiles,
)

from .occlusion_testing import BUILTIN, gray_batch, ids


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mask_specs_have_the_exact_area(data):
    patch = data.draw(st.sampled_from(BUILTIN))
    level = data.draw(st.floats(0.0, 0.9))
    spec = data.draw(mask_specs(level, st.integers(4, 64), st.integers(4, 64), patch))
    assert isinstance(spec, MaskSpec) and spec.in_bounds()
    assert int(spec.to_numpy().sum()) == round(level * spec.height * spec.width)


@settings(max_examples=20, deadline=None)
@given(mask_specs(0.3, 40, 50, "random_erase", max_aspect=2.0))
def test_mask_specs_take_options(spec):
    assert spec.area == 600


def test_mask_specs_shrink_to_a_centred_square():
    spec = find(mask_specs(0.25, 40, 40, "black_box"), lambda s: True)
    assert spec.bbox() == occlusion.Box(10, 10, 20, 20)


def test_centre_out():
    assert centre_out(8) == [0.5, 0.375, 0.625, 0.25, 0.75, 0.125, 0.875, 0.0, 1.0]
    assert centre_out(1) == [0.5, 0.0, 1.0]
    with pytest.raises(ValueError):
        centre_out(0)


def test_policies_shrink_to_the_simplest():
    simplest = find(placement_policies("black_box", 0.3), lambda p: True)
    assert simplest == PlacementPolicy(0.5, 0.5, 0.0, None, "black_box", 0.3)
    assert simplest.describe() == "black_box at 30% centred on every image"
    # a failure that needs the left third shrinks to the nearest such grid position, centred vertically
    left = find(placement_policies("black_box", 0.3), lambda p: p.fx < 0.3)
    assert (left.fy, left.fx, left.jitter) == (0.5, 0.25, 0.0)
    multi = find(placement_policies("random_erase", 0.2), lambda p: True)
    assert multi.count is None


@settings(max_examples=30, deadline=None)
@given(placement_policies("grid_cutout(cells=4)", 0.3, steps=4))
def test_policies_are_valid_for_their_patch(policy):
    assert policy.patch == "grid_cutout(cells=4)" and policy.level == 0.3
    assert policy.fy in centre_out(4) and policy.fx in centre_out(4)
    specs = policy.plan(None, None, ["a", "b"], 32, 32, 0)
    assert all(s.area == round(0.3 * 32 * 32) for s in specs)
    assert PlacementPolicy.from_json(policy.to_json()) == policy


@settings(max_examples=15, deadline=None)
@given(placement_policies("white_box", 0.2))
def test_single_piece_policies_have_no_count(policy):
    assert policy.count is None


def test_strategy_arguments_are_checked():
    with pytest.raises(ValueError):
        placement_policies("black_box", 0.3, jitters=())
    with pytest.raises(occlusion.OcclusionError):
        placement_policies("black_box", 1.2)


def test_profiles():
    register_profiles(ci_examples=7, explore_examples=50)
    ci = settings.get_profile(CI_PROFILE)
    assert ci.derandomize and ci.database is None and ci.deadline is None and ci.max_examples == 7
    assert Phase.explain not in ci.phases and Phase.shrink in ci.phases
    assert HealthCheck.too_slow in ci.suppress_health_check
    explore = settings.get_profile(EXPLORE_PROFILE)
    assert not explore.derandomize and explore.max_examples == 50 and explore.deadline is None
    assert cell_settings(CI_PROFILE, max_examples=3).max_examples == 3
    assert cell_settings(CI_PROFILE).derandomize
    with pytest.raises(ValueError):
        cell_settings("nope")
    with pytest.raises(ValueError):
        cell_settings(CI_PROFILE, max_examples=0)
    with pytest.raises(ValueError):
        register_profiles(ci_examples=0)
    register_profiles()
    assert settings.get_profile(CI_PROFILE).max_examples == 10


def test_a_search_cell_shape_end_to_end():
    """How the grid uses it: a property over policies, derandomized, shrinking to the simplest."""
    images, names = gray_batch(4, 16, 16), ids(4)
    seen = []

    @cell_settings(CI_PROFILE, max_examples=20)
    @given(placement_policies("black_box", 0.25, steps=2, jitters=(0.0,)))
    def cell(policy):
        out, _ = occlusion.occlude_with_policy(images, names, policy, seed=0)
        seen.append(policy)
        # "fails" whenever the top-left pixel is occluded
        assert not bool((out[:, :, 0, 0] == 0).any()), policy.describe()

    with pytest.raises(AssertionError, match="in the top-left corner"):
        cell()
    assert seen and all(isinstance(p, PlacementPolicy) for p in seen)
