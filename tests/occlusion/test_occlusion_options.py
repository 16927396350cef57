"""Patch options, specification strings, and user patch types (good and bad)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_medrobust import occlusion
from pytest_medrobust.errors import OcclusionError
from pytest_medrobust.occlusion import Box, MaskSpec, target_area

from .occlusion_testing import gray_batch, ids


def test_configured_patches_and_labels():
    p = occlusion.make_patch("grid_cutout", cells=4, fill="noise", std=0.1)
    assert p.name == "grid_cutout"
    assert p.options["cells"] == 4 and p.options["fill"] == "noise" and p.options["std"] == 0.1
    assert p.label == "grid_cutout(cells=4, fill='noise', std=0.1)"
    again = occlusion.make_patch(p.label)
    assert again.options == p.options
    assert occlusion.get_patch("grid_cutout(cells=4)", fill="blur").options["fill"] == "blur"
    assert occlusion.make_patch("black_box") is occlusion.black_box  # no options: the registered object
    assert occlusion.patch_label(occlusion.black_box) == "black_box"
    # the built-in stays unconfigured
    assert occlusion.grid_cutout.options["cells"] == 8


def test_options_change_the_masks_but_not_the_area():
    a = occlusion.plan_masks("grid_cutout(cells=3)", 0.3, ["x"], 60, 60, 0)[0]
    b = occlusion.plan_masks("grid_cutout(cells=10)", 0.3, ["x"], 60, 60, 0)[0]
    assert a != b and a.area == b.area == 1080
    r = occlusion.plan_masks(occlusion.make_patch("random_erase", count=1, max_aspect=1.0), 0.25, ["x"], 40, 40, 0)[0]
    assert r.boxes == (Box(r.boxes[0].top, r.boxes[0].left, 20, 20),)


@pytest.mark.parametrize(
    ("spec", "options", "names"),
    [
        ("grid_cutout", {"cells": 0}, "cells"),
        ("grid_cutout", {"cells": -3}, "cells"),
        ("grid_cutout", {"cells": 2.5}, "cells"),
        ("grid_cutout", {"cells": True}, "cells"),
        ("random_erase", {"count": 0}, "count"),
        ("random_erase", {"max_aspect": 0.5}, "max_aspect"),
        ("noise_box", {"std": -0.1}, "std"),
        ("noise_box", {"std": 0}, "std"),
        ("noise_box", {"mean": 1.5}, "mean"),
        ("blur_box", {"sigma": 0}, "sigma"),
        ("blur_box", {"sigma": float("inf")}, "sigma"),
        ("black_box", {"aspect": -1}, "aspect"),
        ("gray_box", {"value": "bright"}, "value"),
        ("grid_cutout", {"fill": "paint"}, "fill"),
        ("annotation", {"texts": [], "markers": False}, "texts"),
        ("annotation", {"texts": ["L", ""]}, "texts"),
        ("annotation", {"markers": "yes"}, "markers"),
        ("black_box", {"colour": 0.2}, "colour"),
        ("white_box", {"value": 0.3}, "value"),
        ("grid_cutout", {"sigma": 0.1}, "sigma"),
        ("black_box", {"fill": "noise"}, "fill"),
    ],
)
def test_invalid_options_name_the_patch_and_option(spec, options, names):
    with pytest.raises(OcclusionError) as info:
        occlusion.make_patch(spec, **options)
    message = str(info.value)
    assert repr(names) in message
    assert spec in message


def test_annotation_options():
    markers_only = occlusion.make_patch("annotation", texts=[])
    (spec,) = occlusion.plan_masks(markers_only, 0.2, ["x"], 50, 50, 0)
    assert spec.area == 500
    p = occlusion.make_patch("annotation", texts=["PORTABLE"], markers=False)
    (spec,) = occlusion.plan_masks(p, 0.3, ["x"], 8, 8, 0)  # the word does not fit: topped up
    assert spec.area == round(0.3 * 64)


def test_unknown_patches_and_bad_specs():
    with pytest.raises(OcclusionError, match="unknown patch type 'purple_box'.*black_box"):
        occlusion.make_patch("purple_box")
    for bad in ("grid_cutout(cells=)", "grid_cutout(4)", "grid_cutout(cells=os.system)", "9box", "a b"):
        with pytest.raises(OcclusionError):
            occlusion.make_patch(bad)
    assert occlusion.parse_patch_spec(" random_erase( count = 3 ) ") == ("random_erase", {"count": 3})
    assert occlusion.parse_patch_spec("annotation(texts=('L', 'AP'))") == ("annotation", {"texts": ("L", "AP")})
    with pytest.raises(OcclusionError):
        occlusion.make_patch(42)


class Stripe:
    """A user patch type: horizontal stripe across the image."""

    name = "stripe"

    def place(self, level, height, width, rng):
        area = target_area(level, height, width)
        rows, rest = divmod(area, width)
        top = int(rng.integers(0, height - rows - (rest > 0) + 1))
        boxes = [Box(top, 0, rows, width)] + ([Box(top + rows, 0, 1, rest)] if rest else [])
        return MaskSpec(height, width, tuple(boxes))

    def fill(self, images, masks, seeds):
        return images.masked_fill(masks, 0.25)


def test_a_user_patch_registers_and_runs(clean_registry):
    occlusion.register_patch(Stripe())
    assert "stripe" in occlusion.available_patches()
    images = gray_batch(3, 20, 30)
    out, specs = occlusion.occlude(images, ids(3), "stripe", 0.3, 0)
    assert all(s.area == 180 for s in specs)
    masks = occlusion.render_masks(specs).expand(-1, 3, -1, -1)
    assert bool((out[masks] == 0.25).all()) and torch.equal(out[~masks], images[~masks])
    with pytest.raises(OcclusionError, match="takes no options"):
        occlusion.make_patch("stripe", width=3)
    with pytest.raises(OcclusionError, match="not a patch type"):
        occlusion.register_patch(Stripe)
    # policy placement of a patch without place_at: its mask is moved to (fy, fx)
    policy = occlusion.PlacementPolicy(fy=0.0, fx=0.0)
    (spec,) = occlusion.plan_masks("stripe", 0.3, ["a"], 20, 30, 0, policy=policy)
    assert spec.bbox().top == 0


class PixelMask:
    """A user patch that returns an arbitrary boolean pixel mask."""

    name = "pixels"

    def __init__(self, area_offset=0, shape_offset=0, dtype=bool):
        self.area_offset, self.shape_offset, self.dtype = area_offset, shape_offset, dtype

    def place(self, level, height, width, rng):
        n = target_area(level, height, width) + self.area_offset
        flat = np.zeros(height * width, dtype=bool)
        flat[rng.permutation(height * width)[:n]] = True
        mask = flat.reshape(height, width)
        if self.shape_offset:
            mask = np.zeros((height + self.shape_offset, width), dtype=bool)
        return mask.astype(self.dtype)

    def fill(self, images, masks, seeds):
        return images.masked_fill(masks, 0.0)


def test_a_user_pixel_mask_is_accepted_and_checked():
    images = gray_batch(2, 16, 16)
    out, specs = occlusion.occlude(images, ["a", "b"], PixelMask(), 0.5, 0)
    assert [s.area for s in specs] == [128, 128]
    assert int((out[:, 0] == 0).sum()) == 256
    with pytest.raises(OcclusionError, match="'pixels' occluded 178 pixels at level 0.5; expected 128"):
        occlusion.occlude(images, ["a", "b"], PixelMask(area_offset=50), 0.5, 0)
    with pytest.raises(OcclusionError, match="'pixels' returned a 17x16 mask for a 16x16 image"):
        occlusion.occlude(images, ["a", "b"], PixelMask(shape_offset=1), 0.5, 0)
    with pytest.raises(OcclusionError, match="'pixels' returned a uint8 array"):
        occlusion.occlude(images, ["a", "b"], PixelMask(dtype=np.uint8), 0.5, 0)


class Broken:
    name = "broken"

    def __init__(self, kind):
        self.kind = kind

    def place(self, level, height, width, rng):
        if self.kind == "outside":
            return MaskSpec(height, width, (Box(height - 2, 0, 5, width),))
        if self.kind == "size":
            return MaskSpec(height + 1, width, ())
        if self.kind == "type":
            return [(0, 0, 3, 3)]
        if self.kind == "raises":
            raise RuntimeError("boom")
        return MaskSpec(height, width, (Box(0, 0, 4, 4),))

    def fill(self, images, masks, seeds):
        if self.kind == "fill-shape":
            return images[:, :1]
        if self.kind == "fill-raises":
            raise ValueError("bad fill")
        return images


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("outside", "'broken' placed Box.* outside the 8x8 image"),
        ("size", "'broken' returned a 9x8 mask for a 8x8 image"),
        ("type", "'broken' returned list, not a MaskSpec"),
        ("raises", "'broken' failed to place a mask: RuntimeError\\('boom'\\)"),
        ("fill-shape", "'broken' filled a \\(2, 3, 8, 8\\) batch and returned \\(2, 1, 8, 8\\)"),
        ("fill-raises", "'broken' failed to fill a batch"),
    ],
)
def test_a_bad_user_patch_is_named(kind, message):
    with pytest.raises(OcclusionError, match=message):
        occlusion.occlude(gray_batch(2, 8, 8), ["a", "b"], Broken(kind), 0.25, 0)


def test_entry_points_load_objects_and_classes(monkeypatch, clean_registry):
    class EP:
        def __init__(self, name, obj):
            self.name, self.value, self._obj = name, f"pkg:{name}", obj

        def load(self):
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    registry = occlusion.registry
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [EP("stripe", Stripe), EP("pixels", PixelMask())])
    assert {"stripe", "pixels"} <= set(occlusion.available_patches())
    assert isinstance(occlusion.make_patch("stripe"), Stripe)

    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [EP("bad", ImportError("no module"))])
    with pytest.raises(OcclusionError, match="entry point 'bad' \\(pkg:bad\\) failed to load"):
        occlusion.available_patches()
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [EP("odd", 42)])
    with pytest.raises(OcclusionError, match="did not give a patch type"):
        occlusion.available_patches()


def test_split_patch_specs():
    text = "black_box, grid_cutout(cells=4, fill='noise'), annotation(texts=('L', 'a,b')) ,"
    assert occlusion.split_patch_specs(text) == [
        "black_box",
        "grid_cutout(cells=4, fill='noise')",
        "annotation(texts=('L', 'a,b'))",
    ]
    assert [occlusion.make_patch(s).name for s in occlusion.split_patch_specs(text)] == ["black_box", "grid_cutout", "annotation"]
    with pytest.raises(OcclusionError, match="unbalanced"):
        occlusion.split_patch_specs("grid_cutout(cells=4")
