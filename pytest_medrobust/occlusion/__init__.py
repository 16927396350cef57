"""Occlusion engine: seeded, exact-area occluders applied to batches in model input space.

Public API::

    available_patches() -> list[str]
    make_patch(patch, **options) -> PatchType     # "grid_cutout", "grid_cutout(cells=4)", or an object
    split_patch_specs("black_box, grid_cutout(cells=4, fill='noise')") -> list[str]
    get_patch(name, **options) -> PatchType       # same as make_patch
    register_patch(patch) -> patch                # add a PatchType at run time
    placement_seed(seed, image_id, patch, level) -> int
    plan_masks(patch, level, ids, height, width, seed, *, policy=None) -> list[MaskSpec]
    occlude(images, ids, patch, level, seed, *, stats=None, policy=None, inplace=False)
        -> (images, masks)
    occlude_with_policy(images, ids, policy, patch=None, level=None, seed=0, *, stats=None,
                        inplace=False) -> (images, masks)
    PlacementPolicy(fy=0.5, fx=0.5, jitter=0.0, count=None, patch=None, level=None)
    ImageStats().update(batch).as_dict() / dataset_stats(batches) -> {"mean", "std"}

Built-in patch types: black_box, white_box, gray_box, noise_box, blur_box, shuffle_box,
grid_cutout, random_erase, annotation. Third-party ones register under the entry point group
``pytest_medrobust.patches`` (the object, or a class / factory called without arguments).

Placement depends only on (seed, image id, patch name, level) -- and the policy in a search
cell -- never on batch order, worker or device. Every model sees the same masks in the same
cell, so models compare fairly. Every built-in patch occludes exactly ``round(level * H * W)``
pixels (see :mod:`.geometry`). See ``docs/occlusion.md``.
"""

from __future__ import annotations

from ..errors import OcclusionError
from .burnin import annotation
from .engine import (
    ImageStats,
    _checked,  # noqa: F401 - v1 name, kept importable
    apply_masks,
    dataset_stats,
    fill_seeds,
    occlude,
    occlude_with_policy,
    place_one,
    placement_seed,
    plan_masks,
)
from .geometry import (
    Bitmap,
    Box,
    MaskSpec,
    block_shape,
    box_shape,
    check_level,
    place_box,
    render_masks,
    target_area,
)
from .patches import (
    FILLS,
    Fill,
    Geometry,
    Option,
    Patch,
    PatchType,
    SolidBox,
    black_box,
    blur_box,
    gaussian_blur,
    gray_box,
    grid_cutout,
    noise_box,
    random_erase,
    shuffle_box,
    white_box,
)
from .policy import PlacementPolicy
from .registry import (
    _BUILTIN,  # noqa: F401 - v1 names, kept importable
    ENTRY_POINT_GROUP,
    _load_entry_points,  # noqa: F401
    _registered,  # noqa: F401
    available_patches,
    get_patch,
    make_patch,
    parse_patch_spec,
    patch_label,
    register_patch,
    split_patch_specs,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FILLS",
    "Bitmap",
    "Box",
    "Fill",
    "Geometry",
    "ImageStats",
    "MaskSpec",
    "OcclusionError",
    "Option",
    "Patch",
    "PatchType",
    "PlacementPolicy",
    "SolidBox",
    "annotation",
    "apply_masks",
    "available_patches",
    "black_box",
    "block_shape",
    "blur_box",
    "box_shape",
    "check_level",
    "dataset_stats",
    "fill_seeds",
    "gaussian_blur",
    "get_patch",
    "gray_box",
    "grid_cutout",
    "make_patch",
    "noise_box",
    "occlude",
    "occlude_with_policy",
    "parse_patch_spec",
    "patch_label",
    "place_box",
    "place_one",
    "placement_seed",
    "plan_masks",
    "random_erase",
    "register_patch",
    "render_masks",
    "shuffle_box",
    "split_patch_specs",
    "target_area",
    "white_box",
]
