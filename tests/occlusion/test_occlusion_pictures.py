"""PNG pictures of masks (README, docs, HTML report)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_medrobust import occlusion
from pytest_medrobust.reporting.pictures import contact_sheet, mask_overlay, png_data_uri, render_mask_png

from .occlusion_testing import gray_batch


def _open(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(png))


def test_overlay_tints_and_outlines_only_the_mask():
    image = np.full((20, 30), 0.5)
    (spec,) = occlusion.plan_masks("black_box", 0.2, ["a"], 20, 30, 0, policy=occlusion.PlacementPolicy())
    over = mask_overlay(image, spec)
    m = spec.to_numpy()
    assert over.shape == (20, 30, 3) and over.dtype == np.uint8
    assert (over[~m] == 128).all()
    assert (over[m][:, 0] > over[m][:, 1]).all()  # red


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).random((24, 32)),
        torch.rand(1, 24, 32),
        torch.rand(3, 24, 32),
        (np.random.default_rng(1).random((24, 32)) * 255).astype(np.uint8),
    ],
)
def test_render_mask_png_accepts_arrays_and_tensors(image, tmp_path):
    (spec,) = occlusion.plan_masks("grid_cutout", 0.3, ["a"], 24, 32, 0)
    png = render_mask_png(image, spec, tmp_path / "pic.png")
    assert (tmp_path / "pic.png").read_bytes() == png
    assert _open(png).size == (32, 24)
    bool_mask = torch.from_numpy(spec.to_numpy())
    assert render_mask_png(image, bool_mask) == png


def test_side_by_side_scale_and_label():
    batch = gray_batch(1, 24, 32)
    out, (spec,) = occlusion.occlude(batch, ["a"], "noise_box", 0.3, 0)
    png = render_mask_png(batch[0], spec, occluded=out[0], scale=2)
    assert _open(png).size == (2 * 32 * 2 + 4, 48)
    labelled = render_mask_png(batch[0], spec, label="noise_box 30%")
    assert _open(labelled).size[1] > 24


def test_shape_mismatches_are_refused():
    with pytest.raises(ValueError, match="mask is 10x10"):
        render_mask_png(np.zeros((8, 8)), np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="scale"):
        render_mask_png(np.zeros((8, 8)), np.zeros((8, 8), bool), scale=0)
    with pytest.raises(ValueError, match="H x W"):
        render_mask_png(np.zeros((2, 8, 8, 1)), np.zeros((8, 8), bool))


def test_contact_sheet():
    batch = gray_batch(5, 16, 20)
    out, specs = occlusion.occlude(batch, [str(i) for i in range(5)], "random_erase", 0.3, 0)
    png = contact_sheet(list(batch), specs, [f"#{i}" for i in range(5)], columns=3)
    w, h = _open(png).size
    assert w == 3 * 20 + 2 * 4 and h > 2 * 16
    both = contact_sheet(list(batch), specs, occluded=list(out), columns=5)
    assert _open(both).size == (5 * (2 * 20 + 4) + 4 * 4, 16)
    assert png_data_uri(png).startswith("data:image/png;base64,iVBOR")
    with pytest.raises(ValueError):
        contact_sheet([], [])
    with pytest.raises(ValueError):
        contact_sheet(list(batch), specs[:2])


def test_render_policy_png_shows_the_cells_mask(tmp_path):
    from pytest_medrobust.reporting.pictures import render_policy_png

    policy = occlusion.PlacementPolicy(0.0, 1.0, patch="black_box", level=0.3)
    image = np.random.default_rng(0).random((24, 32))
    png = render_policy_png(image, "img-1", policy, seed=3, path=tmp_path / "p.png")
    w, h = _open(png).size
    assert w == 2 * 32 + 4 and h > 24
    (spec,) = policy.plan(None, None, ["img-1"], 24, 32, 3)
    expected = render_mask_png(
        torch.from_numpy(image).float()[None],
        spec,
        occluded=occlusion.occlude_with_policy(torch.from_numpy(image).float()[None, None], ["img-1"], policy, seed=3)[0][0],
        label=policy.describe(),
    )
    assert png == expected
    uint8 = render_policy_png((image * 255).astype(np.uint8), "img-1", policy, seed=3, label="x")
    assert _open(uint8).size[0] == w
