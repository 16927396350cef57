"""Occlusion sensitivity maps (pytest_medrobust/sensitivity.py): against Captum's Occlusion, an
independent rank computation, a model that looks at one known region, and the region shares."""

import io
import math

import numpy as np
import pytest
import torch

from pytest_medrobust.errors import MedrobustError
from pytest_medrobust.metrics import compute_ranks
from pytest_medrobust.models.demo import DemoConfig, DemoDualEncoder
from pytest_medrobust.sensitivity import (
    ImageSensitivity,
    as_mask,
    default_geometry,
    guide_from,
    image_sensitivity,
    npz_bytes,
    pixel_map,
    region_shares,
    subset_ids,
    window_starts,
)


def tiny_model(seed: int = 0) -> DemoDualEncoder:
    torch.manual_seed(seed)
    config = DemoConfig(input_size=24, channels=(6, 8), grid=2, hash_buckets=256, text_width=16, embed_dim=12)
    return DemoDualEncoder(config, name="tiny").eval()


def texts_for(model: DemoDualEncoder) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_texts(["left effusion", "no finding", "cardiomegaly", "right pneumothorax", "edema"])


@pytest.mark.parametrize(("window", "stride"), [(4, 2), (5, 3), (6, 6)])
def test_pixel_map_equals_captums_occlusion(window, stride):
    captum = pytest.importorskip("captum.attr")
    model = tiny_model()
    texts = texts_for(model)
    torch.manual_seed(1)
    image = torch.rand(3, 24, 24)
    own = 2
    found = image_sensitivity(model.encode_images, image, "a", own, texts, window, stride, batch_size=7)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.encode_images(x) @ texts[own]

    with torch.no_grad():
        expected = captum.Occlusion(forward).attribute(
            image.unsqueeze(0), sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.0,
            perturbations_per_eval=16,
        )[0, 0].numpy()
    got = found.pixel_map()
    assert got.shape == (24, 24)
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=1e-5)
    assert np.abs(expected).max() > 1e-3  # the model does react: the comparison is not of zeros


def test_window_ranks_match_compute_ranks_on_the_occluded_images():
    model = tiny_model(3)
    texts = texts_for(model)
    image = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(4))
    own = 4
    found = image_sensitivity(model.encode_images, image, "b", own, texts, 8, 8, batch_size=4)
    with torch.no_grad():
        clean = model.encode_images(image.unsqueeze(0))
        index = torch.tensor([own])
        assert found.rank == int(compute_ranks(clean, texts, index).i2t_unique[0])
        for iy, top in enumerate(window_starts(24, 8, 8)):
            for ix, left in enumerate(window_starts(24, 8, 8)):
                occluded = image.clone()
                occluded[:, top : top + 8, left : left + 8] = 0.0
                emb = model.encode_images(occluded.unsqueeze(0))
                assert found.ranks[iy, ix] == int(compute_ranks(emb, texts, index).i2t_unique[0])
                drop = float(clean[0] @ texts[own]) - float(emb[0] @ texts[own])
                assert found.drops[iy, ix] == pytest.approx(drop, abs=1e-6)


class LooksAtOneBox(torch.nn.Module):
    """A model whose embedding depends only on the pixels of rows 8..15, columns 16..23."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.proj = torch.nn.Linear(8 * 8, 6)

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.proj(x[:, 0, 8:16, 16:24].reshape(len(x), -1)) + 0.5, dim=-1)


def test_a_model_that_looks_at_one_region_peaks_there_and_nothing_outside_costs():
    model = LooksAtOneBox()
    others = torch.nn.functional.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(6)), dim=-1)
    maps, found = {}, []
    for k in range(3):
        image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(10 + k))
        with torch.no_grad():
            # Its own report's embedding is its clean image's: any change of what it sees costs.
            texts = torch.cat([model.encode_images(image.unsqueeze(0)), others])
            s = image_sensitivity(model.encode_images, image, f"i{k}", 0, texts, 4, 4)
        found.append(s)
        maps[s.id] = s.pixel_map()
    inside = np.zeros((32, 32), dtype=bool)
    inside[8:16, 16:24] = True
    for s in found:
        tops = window_starts(32, 4, 4)
        for iy, top in enumerate(tops):
            for ix, left in enumerate(tops):
                if not inside[top : top + 4, left : left + 4].any():
                    # An occluder outside the region costs nothing (up to float32 rounding of one batch row).
                    assert abs(s.drops[iy, ix]) < 1e-6
        assert s.max_drop > 1e-3
    mean = np.mean(np.stack(list(maps.values())), axis=0)
    peak = np.unravel_index(int(np.argmax(mean)), mean.shape)
    assert inside[peak]
    shares = region_shares(maps, {"box": {i: inside for i in maps}, "corner": {i: [(0, 0, 8, 8)] for i in maps}})
    assert shares["box"]["share_inside"] == pytest.approx(1.0)
    assert shares["corner"]["share_inside"] == 0.0
    guide = guide_from(found[0])
    assert 8 <= guide.cy < 16 and 16 <= guide.cx < 24
    top, left, bottom, right = guide.region
    assert 8 <= top and bottom <= 16 and 16 <= left and right <= 24


def test_region_share_is_the_positive_effect_inside_over_all_of_it():
    a = np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float32)
    b = np.array([[0.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    mask = np.array([[True, True], [False, False]])
    shares = region_shares({"a": a, "b": b, "c": a}, {"top": {"a": mask, "b": [(0, 0, 1, 2)], "z": mask}})
    # positive values inside: a 1.0, b 2.0; all positive: a 4.5, b 2.0 ("z" has no map; "c" no region)
    assert shares["top"]["share_inside"] == pytest.approx(3.0 / 6.5)
    assert shares["top"]["images"] == 2 and shares["top"]["area"] == pytest.approx(0.5)
    with pytest.raises(MedrobustError, match="region 'r' of image 'a'"):
        region_shares({"a": a}, {"r": {"a": np.ones((3, 3), dtype=bool)}})
    with pytest.raises(MedrobustError, match="neither a boolean mask nor boxes"):
        as_mask("heart", (2, 2), "region 'heart'")


def test_window_positions_follow_captum_and_bad_geometry_is_refused():
    assert window_starts(24, 5, 3) == [0, 3, 6, 9, 12, 15, 18, 21]  # ceil(19 / 3) + 1, the last cut at the edge
    assert len(window_starts(128, 16, 8)) == 15
    assert default_geometry(128, 128) == (16, 8)
    assert default_geometry(224, 224, 32) == (32, 16)
    with pytest.raises(MedrobustError, match="larger than the window"):
        default_geometry(64, 64, 8, 16)
    with pytest.raises(MedrobustError, match="larger than the model input"):
        default_geometry(64, 64, 100)
    with pytest.raises(MedrobustError, match="must be >= 1"):
        window_starts(10, 0, 1)


def test_pixel_map_is_the_mean_of_the_covering_windows():
    drops = np.array([[1.0, 3.0]], dtype=np.float32)  # 1 x 2 windows of 2 x 2, stride 1, on a 2 x 3 image
    got = pixel_map(drops, 2, 3, 2, 1)
    np.testing.assert_array_equal(got, np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=np.float32))


def test_cache_entry_round_trips():
    s = ImageSensitivity("x", 0.25, 3, np.arange(6, dtype=np.float32).reshape(2, 3) / 7, np.full((2, 3), 4, np.int32),
                         10, 14, 6, 4)
    back = ImageSensitivity.from_tensor("x", s.to_tensor(), 10, 14, 6, 4)
    assert back.similarity == s.similarity and back.rank == 3
    np.testing.assert_array_equal(back.drops, s.drops)
    np.testing.assert_array_equal(back.ranks, s.ranks)
    with pytest.raises(MedrobustError, match="sensitivity entry"):
        ImageSensitivity.from_tensor("x", s.to_tensor()[:-1], 10, 14, 6, 4)


def test_subset_is_seeded_stable_and_in_dataset_order():
    ids = [f"img{i:03d}" for i in range(50)]
    chosen = subset_ids(ids, 8, 0)
    assert len(chosen) == 8 and chosen == [i for i in ids if i in chosen]
    assert subset_ids(list(reversed(ids)), 8, 0) == list(reversed(chosen))  # the row order does not choose
    assert subset_ids(ids, 8, 1) != chosen
    assert subset_ids(ids, 100, 0) == ids


def test_npz_bytes_are_deterministic_and_load_with_numpy():
    arrays = {"mean_map": np.eye(3, dtype=np.float32), "ids": np.array(["a", "b"])}
    first = npz_bytes(arrays)
    assert first == npz_bytes(arrays)
    loaded = np.load(io.BytesIO(first))
    np.testing.assert_array_equal(loaded["mean_map"], arrays["mean_map"])
    assert list(loaded["ids"]) == ["a", "b"]
    assert not math.isnan(float(loaded["mean_map"].sum()))
