"""Region probes: occlude a named region of each image (shortcut probes).

``region(name='heart')`` occludes, on every image that has the region (``dataset.regions``, see
:mod:`pytest_medrobust.datasets.regions`), the pixels of the model input that the region reaches:

* ``mode='inside'`` (default): the region itself;
* ``mode='outside'``: everything except the region;
* ``mode='box'``: one block of exactly the cell's level (share of the image area), its centre on
  a pixel of the region drawn per image from the seeded generator of (seed, image, patch, level),
  moved only as far as needed to stay inside the image.

``name`` may join several regions with ``+`` (``name='left_lung+right_lung'``: their union).
``fill`` names the patch type whose fill paints the pixels (``black_box`` default; any patch
type but ``region``).

Levels: ``inside`` and ``outside`` do not depend on the level (the region decides how much is
hidden), so their cells are collected at the clean level and at the grid's largest level only
(:func:`cell_levels`), and the level's gate rules judge them; ``box`` runs at every level like
any patch. Images without the region are left as they are: the cell's record says how many had
it (``region.images_with_region`` of ``region.n_images``) and the share each image lost
(``region.occluded_share_per_image``, dataset order; ``region.occluded_share`` is its mean over
every image). A region that no image has is a set-up error naming the regions there are.

Region cells count toward the verdict, not toward a model's robustness score nor its worst cell
(their level is not the occluded share), as search cells.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import OcclusionError
from .geometry import MaskSpec, block_boxes, block_shape, target_area

if TYPE_CHECKING:
    from ..datasets import Dataset
    from ..runner import GridRunner, Measurement

__all__ = ["MODES", "RegionPatch", "cell_levels", "check_region_patches", "is_region_patch", "measure_region",
           "plan_region_masks", "region"]

MODES = ("inside", "outside", "box")


@dataclass
class RegionPatch:
    """The ``region`` patch type (see the module docstring). Its masks come from the dataset, so
    it is measured by :func:`measure_region`, not by ``occlude``'s per-image ``place``."""

    region: str | None = None
    mode: str = "inside"
    fill_with: str = "black_box"
    name: str = "region"
    description: str = "occlude a named region of each image (inside it, outside it, or a box in it)"

    def with_options(self, **options: Any) -> RegionPatch:
        from .registry import make_patch

        unknown = sorted(set(options) - {"name", "mode", "fill"})
        if unknown:
            raise OcclusionError(f"patch 'region' has no option {unknown[0]!r} (its options: fill, mode, name)")
        found = replace(
            self,
            region=options.get("name", self.region),
            mode=options.get("mode", self.mode),
            fill_with=options.get("fill", self.fill_with),
        )
        if not isinstance(found.region, str) or not found.names:
            raise OcclusionError(
                f"patch 'region': option 'name' must name a region, e.g. region(name='heart'); got {found.region!r}"
            )
        if found.mode not in MODES:
            raise OcclusionError(f"patch 'region': option 'mode' must be one of {', '.join(MODES)}, got {found.mode!r}")
        if not isinstance(found.fill_with, str) or isinstance(make_patch(found.fill_with), RegionPatch):
            raise OcclusionError(
                f"patch 'region': option 'fill' must name a patch type other than region, got {found.fill_with!r}"
            )
        return found

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in (self.region or "").split("+") if n.strip())

    @property
    def label(self) -> str:
        """Every option, so that two spellings of one probe share a cache entry."""
        return f"region(fill={self.fill_with!r}, mode={self.mode!r}, name={self.region!r})"

    @property
    def level_free(self) -> bool:
        return self.mode != "box"

    def fill_patch(self) -> Any:
        from .registry import make_patch

        return make_patch(self.fill_with)

    def place(self, level: float, height: int, width: int, rng: np.random.Generator) -> MaskSpec:
        raise OcclusionError(
            f"patch {self.label} is placed from each image's regions, not at random: it runs as a grid cell "
            f"(measure_region), and has no random or searched placement"
        )

    def fill(self, images: torch.Tensor, masks: torch.Tensor, seeds: list[int], *, stats: Mapping[str, float] | None = None
             ) -> torch.Tensor:
        from .engine import _accepts_stats

        fill = self.fill_patch().fill
        return fill(images, masks, seeds, stats=stats) if _accepts_stats(fill) else fill(images, masks, seeds)


region = RegionPatch()


def as_region(patch: Any) -> RegionPatch | None:
    """The patch as a configured :class:`RegionPatch`, or None for any other patch type."""
    from .registry import make_patch

    found = make_patch(patch) if isinstance(patch, str) else patch
    return found if isinstance(found, RegionPatch) else None


def is_region_patch(patch: Any) -> bool:
    return as_region(patch) is not None


def cell_levels(patch: str, levels: Sequence[float]) -> tuple[float, ...]:
    """The grid levels a patch's cells are collected at: all of them, except for a level-free
    region probe (inside, outside): the clean level and the largest level only."""
    probe = as_region(patch)
    if probe is None or not probe.level_free:
        return tuple(levels)
    occluded = [lv for lv in levels if lv > 0]
    return tuple(lv for lv in levels if lv == 0) + ((max(occluded),) if occluded else ())


def check_region_patches(patches: Sequence[str], dataset: Dataset) -> None:
    """A region probe naming a region that no image of ``dataset`` has is a set-up error."""
    from ..datasets.regions import region_names

    there = region_names(dataset.regions)
    for spec in patches:
        probe = as_region(spec)
        if probe is None:
            continue
        if not probe.names:
            raise OcclusionError(f"patch {spec!r}: name the region to occlude, e.g. region(name='heart')")
        for name in probe.names:
            if name not in there:
                known = ", ".join(f"{n} ({c} images)" for n, c in there.items()) or "none (set dataset_options.regions)"
                raise OcclusionError(
                    f"patch {spec!r}: no image of dataset {dataset.name} has region {name!r}; regions there: {known}"
                )


def plan_region_masks(
    probe: RegionPatch, inside: Mapping[str, np.ndarray], ids: Sequence[str], level: float, seed: int, shape: tuple[int, int]
) -> list[MaskSpec]:
    """Each image's mask under ``probe`` given its region mask ``inside[id]`` in the model input
    frame (an image without one gets an empty mask)."""
    from .engine import placement_seed

    height, width = shape
    out = []
    for image_id in ids:
        region_mask = inside.get(image_id)
        if region_mask is None:
            out.append(MaskSpec(height, width))
        elif probe.mode == "inside":
            out.append(MaskSpec.from_array(region_mask))
        elif probe.mode == "outside":
            out.append(MaskSpec.from_array(~region_mask))
        else:
            rows, block_w, rest = block_shape(target_area(level, height, width), height, width)
            block_h = rows + (rest > 0)
            rng = np.random.default_rng(placement_seed(seed, image_id, probe.label, level))
            ys, xs = np.nonzero(region_mask)
            pick = int(rng.integers(len(ys)))
            top = min(max(int(ys[pick]) - block_h // 2, 0), height - block_h)
            left = min(max(int(xs[pick]) - block_w // 2, 0), width - block_w)
            out.append(MaskSpec(height, width, block_boxes(top, left, rows, block_w, rest)))
    return out


def measure_region(runner: GridRunner, name: str, patch: str, level: float) -> Measurement:
    """One region cell of model ``name``: every image occluded by the probe, through
    ``runner.measure_with``; the measurement's ``extra`` holds the cell's ``region`` record."""
    from ..cells import LEVEL_DECIMALS
    from ..datasets.regions import region_masks
    from .engine import apply_masks

    probe = as_region(patch)
    if probe is None:
        raise OcclusionError(f"{patch!r} is not a region probe")
    dataset = runner.dataset()
    check_region_patches([patch], dataset)
    model = runner.model(name)
    height, width = model.input_size
    inside = region_masks(dataset, probe.names, (height, width), model.geometry, getattr(model, "prepare_image", None))
    ids = dataset.ids
    specs = dict(zip(ids, plan_region_masks(probe, inside, ids, level, runner.settings.seed, (height, width)), strict=True))
    digest = hashlib.sha256()
    for image_id in ids:  # the masks themselves key the cache: new boxes, new embeddings
        digest.update(image_id.encode() + b"\0" + specs[image_id].to_numpy().tobytes())
    label = f"{probe.label}|level={level:.{LEVEL_DECIMALS}f}|seed={runner.settings.seed}|masks={digest.hexdigest()[:16]}"
    stats = runner.image_stats(name)
    fill = probe.fill_patch()
    seed = runner.settings.seed

    def occluder(images: torch.Tensor, batch_ids: Sequence[str]) -> torch.Tensor:
        return apply_masks(images, batch_ids, [specs[i] for i in batch_ids], fill, level, seed, stats=stats, inplace=True)

    measurement = runner.measure_with(name, occluder, label)
    pixels = float(height * width)
    shares = [specs[i].area / pixels for i in ids]
    record: dict[str, Any] = {
        "name": probe.region,
        "mode": probe.mode,
        "fill": probe.fill_with,
        "occluded_share": float(np.mean(shares)) if shares else 0.0,
        "images_with_region": len(inside),
        "n_images": len(ids),
        "occluded_share_per_image": [round(s, 5) for s in shares],
    }
    if probe.mode == "box":  # how much of each box fell on the region (images with it)
        on = [float((specs[i].to_numpy() & m).sum()) / max(specs[i].area, 1) for i, m in inside.items()]
        record["box_on_region_share"] = float(np.mean(on)) if on else 0.0
    measurement.extra = {"region": record}
    return measurement
