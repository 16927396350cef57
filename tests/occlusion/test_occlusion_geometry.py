"""Exact areas, bounds, the rounding rule and the mask data types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_medrobust import occlusion
from pytest_medrobust.errors import OcclusionError
from pytest_medrobust.occlusion import Bitmap, Box, MaskSpec, block_shape, target_area
from pytest_medrobust.occlusion.geometry import fill_free

from .occlusion_testing import BUILTIN

levels = st.floats(0.0, 0.999, allow_nan=False)
sides = st.integers(1, 80)


def test_every_builtin_is_registered():
    assert set(BUILTIN) <= set(occlusion.available_patches())
    assert {
        "black_box",
        "white_box",
        "gray_box",
        "noise_box",
        "blur_box",
        "shuffle_box",
        "grid_cutout",
        "random_erase",
        "annotation",
    } <= set(BUILTIN)


@settings(max_examples=300, deadline=None)
@given(patch=st.sampled_from(BUILTIN), level=levels, height=sides, width=sides, seed=st.integers(0, 2**31))
def test_exact_area_inside_the_image(patch, level, height, width, seed):
    (spec,) = occlusion.plan_masks(patch, level, ["x"], height, width, seed)
    assert (spec.height, spec.width) == (height, width)
    assert spec.in_bounds()
    pixels = spec.to_numpy()
    assert pixels.shape == (height, width)
    assert int(pixels.sum()) == target_area(level, height, width) == round(level * height * width)
    assert spec.area == int(pixels.sum())


@settings(max_examples=40, deadline=None)
@given(patch=st.sampled_from(BUILTIN), level=st.floats(0.01, 0.95), height=st.integers(150, 320), width=st.integers(150, 320))
def test_exact_area_at_model_sizes(patch, level, height, width):
    (spec,) = occlusion.plan_masks(patch, level, ["img"], height, width, 3)
    assert int(spec.to_numpy().sum()) == round(level * height * width)


def test_rounding_rule_examples():
    assert target_area(0.3, 224, 224) == 15053  # 15052.8
    assert target_area(0.5, 1, 5) == 2  # 2.5 rounds half to even
    assert target_area(0.5, 1, 7) == 4  # 3.5 rounds half to even
    assert target_area(0.0, 224, 224) == 0


@pytest.mark.parametrize("level", [-0.01, 1.0, 1.5, float("nan"), float("inf"), "high", None])
def test_bad_levels_raise(level):
    with pytest.raises(OcclusionError, match="level"):
        occlusion.check_level(level)
    with pytest.raises(OcclusionError, match="level"):
        occlusion.occlude(torch.zeros(1, 3, 8, 8), ["a"], "black_box", level, 0)


@pytest.mark.parametrize("patch", BUILTIN)
def test_level_zero_is_identity(patch):
    images = torch.rand(2, 3, 16, 12)
    out, specs = occlusion.occlude(images, ["a", "b"], patch, 0.0, 0)
    assert out is images
    assert all(s.area == 0 for s in specs)


@settings(max_examples=300, deadline=None)
@given(
    area_frac=st.floats(0.0, 1.0),
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    aspect=st.floats(0.01, 100.0),
)
def test_block_shape_is_exact_and_fits(area_frac, height, width, aspect):
    area = int(area_frac * height * width)
    rows, w, rest = block_shape(area, height, width, aspect)
    assert rows * w + rest == area
    if area:
        assert 1 <= w <= width and 0 <= rest < w
        assert rows + (rest > 0) <= height


def test_box_is_square_when_it_can_be():
    (spec,) = occlusion.plan_masks("black_box", 0.25, ["a"], 100, 100, 0)
    assert [(b.height, b.width) for b in spec.boxes] == [(50, 50)]
    tall = occlusion.make_patch("black_box", aspect=4.0)
    (spec,) = occlusion.plan_masks(tall, 0.25, ["a"], 100, 100, 0)
    box = spec.bbox()
    assert box.height == 100 and box.width == 25


def test_non_square_high_level_spans_the_short_side():
    (spec,) = occlusion.plan_masks("black_box", 0.9, ["a"], 20, 200, 0)
    assert spec.area == 3600 and spec.in_bounds()
    assert spec.bbox().height == 20


def test_maskspec_v1_form_and_json():
    spec = MaskSpec(10, 12, (Box(1, 2, 3, 4),))
    assert spec.to_json() == {"height": 10, "width": 12, "boxes": [[1, 2, 3, 4]]}
    assert spec.area == 12
    assert MaskSpec.from_json(spec.to_json()) == spec
    assert spec.render().dtype == torch.bool and int(spec.render().sum()) == 12


def test_maskspec_bitmaps_round_trip_and_union():
    pattern = np.zeros((10, 12), dtype=bool)
    pattern[2, 3] = pattern[5, 7] = pattern[9, 11] = True
    spec = MaskSpec.from_array(pattern)
    assert spec.boxes == () and len(spec.bitmaps) == 1
    assert spec.area == 3
    assert np.array_equal(spec.to_numpy(), pattern)
    again = MaskSpec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    both = MaskSpec(10, 12, (Box(2, 3, 1, 2),), spec.bitmaps)  # overlapping at (2, 3)
    assert both.area == 4
    assert MaskSpec.from_array(torch.from_numpy(pattern)) == spec
    assert MaskSpec.from_array(np.zeros((4, 4), bool)).area == 0


def test_bbox_and_shift():
    spec = MaskSpec(20, 20, (Box(2, 3, 4, 5), Box(10, 1, 1, 1)))
    assert spec.bbox() == Box(2, 1, 9, 7)
    moved = spec.shifted(1, 2)
    assert moved.bbox() == Box(3, 3, 9, 7) and moved.area == spec.area
    assert MaskSpec(5, 5).bbox() is None


def test_from_json_rejects_garbage():
    with pytest.raises(OcclusionError):
        MaskSpec.from_json({"boxes": []})
    with pytest.raises(OcclusionError):
        MaskSpec.from_json({"height": 2, "width": 2, "boxes": [["a"]]})


def test_bitmap_from_array_needs_2d():
    with pytest.raises(OcclusionError):
        Bitmap.from_array(np.zeros((2, 2, 2), bool))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.data())
def test_fill_free_adds_exactly_the_free_pixels(height, width, data):
    occupied = data.draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
    occ = np.array(occupied, dtype=bool).reshape(height, width)
    before = occ.copy()
    free = int((~occ).sum())
    need = data.draw(st.integers(0, free))
    boxes = fill_free(occ, need, data.draw(st.integers(0, 10_000)))
    added = MaskSpec(height, width, boxes).to_numpy()
    assert int(added.sum()) == need
    assert not (added & before).any()
    assert all(b.height == 1 for b in boxes)


def test_fill_free_refuses_too_much():
    with pytest.raises(OcclusionError):
        fill_free(np.ones((2, 2), bool), 1, 0)


def test_render_masks_batch():
    specs = occlusion.plan_masks("grid_cutout", 0.3, ["a", "b", "c"], 30, 40, 0)
    masks = occlusion.render_masks(specs)
    assert masks.shape == (3, 1, 30, 40) and masks.dtype == torch.bool
    for m, s in zip(masks, specs, strict=True):
        assert np.array_equal(m[0].numpy(), s.to_numpy())
    assert int(masks.sum()) == 3 * 360
