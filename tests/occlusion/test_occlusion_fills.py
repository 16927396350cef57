"""What each fill paints, and that it paints nothing outside the mask."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_medrobust import occlusion
from pytest_medrobust.errors import OcclusionError

from .occlusion_testing import BUILTIN, gray_batch, ids


def _occlude(patch, level=0.3, n=4, h=32, w=40, stats=None, seed=0):
    images = gray_batch(n, h, w, seed=seed).clamp(0.05, 0.95)  # no pixel is exactly 0 or 1
    out, specs = occlusion.occlude(images, ids(n), patch, level, seed, stats=stats)
    masks = occlusion.render_masks(specs).expand(-1, 3, -1, -1)
    return images, out, masks


@settings(max_examples=40, deadline=None)
@given(
    patch=st.sampled_from(BUILTIN),
    level=st.floats(0.0, 0.95),
    h=st.integers(3, 40),
    w=st.integers(3, 40),
    seed=st.integers(0, 999),
)
def test_only_masked_pixels_change_and_values_stay_in_range(patch, level, h, w, seed):
    images, out, masks = _occlude(patch, level, 3, h, w, seed=seed)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out[~masks], images[~masks])
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])  # still grayscale


def test_black_is_zero_and_white_is_one():
    images, out, masks = _occlude("black_box")
    assert bool((out[masks] == 0).all()) and torch.equal(out[~masks], images[~masks])
    images, out, masks = _occlude("white_box")
    assert bool((out[masks] == 1).all())


def test_gray_uses_the_dataset_mean_not_the_batch_mean():
    _, out, masks = _occlude("gray_box")
    assert torch.allclose(out[masks], torch.tensor(0.5))  # no statistics: 0.5
    _, out, masks = _occlude("gray_box", stats={"mean": 0.37})
    assert torch.allclose(out[masks], torch.tensor(0.37))
    _, out, masks = _occlude(occlusion.make_patch("gray_box", value=0.2), stats={"mean": 0.37})
    assert torch.allclose(out[masks], torch.tensor(0.2))
    stats = occlusion.ImageStats().update(torch.full((2, 8, 8), 51, dtype=torch.uint8)).update(torch.full((1, 3, 8, 8), 0.6))
    assert stats.mean == pytest.approx((2 * 64 * 0.2 + 192 * 0.6) / 320)
    assert occlusion.dataset_stats([torch.zeros(2, 2), torch.ones(2, 2)]) == pytest.approx({"mean": 0.5, "std": 0.5})


def test_empty_statistics_are_an_error():
    with pytest.raises(OcclusionError, match="no images"):
        _ = occlusion.ImageStats().mean


def test_noise_is_seeded_per_image_and_centred():
    _, out, masks = _occlude("noise_box", level=0.5, n=2, h=64, w=64, stats={"mean": 0.3})
    values = out[masks]
    assert abs(float(values.mean()) - 0.3) < 0.03
    assert 0.15 < float(values.std()) < 0.25
    _, again, _ = _occlude("noise_box", level=0.5, n=2, h=64, w=64, stats={"mean": 0.3})
    assert torch.equal(out, again)
    _, wide, _ = _occlude(occlusion.make_patch("noise_box", std=0.05, mean=0.8), level=0.5, n=2, h=64, w=64)
    assert abs(float(wide[masks].mean()) - 0.8) < 0.01


def test_blur_smooths_inside_only():
    images, out, masks = _occlude("blur_box", level=0.5, n=2, h=64, w=64)
    inside_before = images[masks].reshape(2, 3, -1)
    inside_after = out[masks].reshape(2, 3, -1)
    assert float(inside_after.std()) < 0.3 * float(inside_before.std())
    images, out_sharp, _ = _occlude(occlusion.make_patch("blur_box", sigma=0.005), level=0.5, n=2, h=64, w=64)
    assert float(out_sharp[masks].std()) > float(inside_after.std())


def test_gaussian_blur_keeps_constants_and_matches_crops():
    flat = torch.full((2, 3, 30, 50), 0.25)
    assert torch.allclose(occlusion.gaussian_blur(flat, 6.0), flat, atol=1e-6)
    x = torch.rand(2, 1, 30, 50)
    full = occlusion.gaussian_blur(x, 6.0)
    (crop,) = occlusion.gaussian_blur(x, 6.0, [(1, 3, 20, 5, 44)])
    assert torch.allclose(crop, full[1, :, 3:20, 5:44], atol=1e-6)


def test_shuffle_preserves_the_multiset_of_masked_pixels():
    images, out, masks = _occlude("shuffle_box", level=0.4)
    for i in range(images.shape[0]):
        for c in range(3):
            before = Counter(images[i, c][masks[i, c]].tolist())
            after = Counter(out[i, c][masks[i, c]].tolist())
            assert before == after
    assert not torch.equal(out, images)


def test_annotation_is_white_by_default_and_fill_can_be_chosen():
    _, out, masks = _occlude("annotation")
    assert bool((out[masks] == 1).all())
    _, out, masks = _occlude(occlusion.make_patch("annotation", fill="constant", value=0.0))
    assert bool((out[masks] == 0).all())


@pytest.mark.parametrize("fill", ["constant", "noise", "blur", "shuffle"])
@pytest.mark.parametrize("patch", ["grid_cutout", "random_erase", "annotation"])
def test_multi_piece_patches_take_any_fill(patch, fill):
    p = occlusion.make_patch(patch, fill=fill)
    images, out, masks = _occlude(p, level=0.35)
    assert torch.equal(out[~masks], images[~masks])
    assert int(masks[:, 0].sum()) == 4 * round(0.35 * 32 * 40)


def test_half_precision_batches():
    images = gray_batch(2, 16, 16).half()
    for patch in BUILTIN:
        out, _ = occlusion.occlude(images, ids(2), patch, 0.3, 0)
        assert out.dtype == torch.float16


def test_integer_batches_are_refused():
    with pytest.raises(ValueError, match="floating"):
        occlusion.occlude(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), ["a"], "black_box", 0.3, 0)
    with pytest.raises(ValueError, match="B x C x H x W"):
        occlusion.occlude(torch.zeros(3, 4, 4), ["a"], "black_box", 0.3, 0)
