"""Example pictures for the report's gallery: one per patch type and occluded level of a run.

Public API::

    render_examples(dataset, patches, levels, seed) -> Examples
    examples_from_config(config, seed, load=None) -> Examples   # none if the dataset does not load

Each picture is the dataset's first image at its decoded size (8-bit grayscale, as read from
its file), occluded as a grid cell occludes it: ``occlusion.occlude`` with the run's seed, the
patch specification and the level, so the mask is the one that image gets at that size. The
picture depends on no model. Two differences from a grid cell, said in the gallery: the image
is at its own size, not a model's input size (the mask is planned for that size), and fills
that use the dataset's mean intensity (gray_box, noise_box) use this image's mean.

Region probes (``region(name=...)``) are skipped: their masks come from each image's regions
mapped into a model's input frame; the report's "Region probes" section shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cells import level_id
from ..errors import MedrobustError
from .outputs import picture_path
from .pictures import render_mask_png
from .values import level_text

__all__ = ["EXAMPLES_DIR", "REGION_NOTE", "Examples", "examples_from_config", "render_examples"]

EXAMPLES_DIR = "examples"
REGION_NOTE = "region probes: see Region probes"


@dataclass
class Examples:
    """``index``: {patch: {level text: relative path}} in config order; ``files``: relative path
    -> PNG bytes; ``notes``: what was not rendered and why (shown in the gallery)."""

    index: dict[str, dict[str, str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _first_image(dataset: Any) -> tuple[str, Any]:
    """The first record's id and its image as a 1 x 3 x H x W float batch, made as the grid's
    batches are (``to_batch``: uint8 -> [0, 1], grayscale replicated)."""
    import torch  # here: the view imports this module's names without needing torch

    from ..datasets.images import DECODE_ERRORS, read_image, to_batch

    if not dataset.records:
        raise MedrobustError(f"dataset {dataset.name}: no image to show")
    record = dataset.records[0]
    try:
        pixels = np.asarray(read_image(record.image), dtype=np.uint8)
    except DECODE_ERRORS as exc:
        raise MedrobustError(f"{record.where}: cannot read {record.image}: {exc}") from exc
    return record.id, to_batch(torch.from_numpy(pixels.copy())[None], slice(0, 1), torch.device("cpu"))


def render_examples(dataset: Any, patches: Sequence[str], levels: Sequence[float], seed: int) -> Examples:
    """One picture per patch specification x occluded level (> 0), both in the given order."""
    from .. import occlusion
    from ..occlusion.regions import is_region_patch

    occluded_levels = [float(lv) for lv in levels if float(lv) > 0]
    out = Examples()
    image: tuple[str, Any, dict[str, float]] | None = None
    skipped_regions = False
    for spec in patches:
        try:
            if is_region_patch(spec):
                skipped_regions = True
                continue
            made = occlusion.make_patch(spec)
        except MedrobustError as exc:  # a third-party patch not installed where the reports are merged
            out.notes.append(f"{spec}: {exc}")
            continue
        row: dict[str, str] = {}
        for level in occluded_levels:
            if image is None:
                image_id, batch = _first_image(dataset)
                image = image_id, batch, occlusion.ImageStats().update(batch[:, :1]).as_dict()
            image_id, batch, stats = image
            occluded, (mask,) = occlusion.occlude(batch, [image_id], made, level, seed, stats=stats)
            text = level_text(level)
            path = picture_path(f"{spec}-{level_id(level)}", folder=EXAMPLES_DIR)
            out.files[path] = render_mask_png(batch[0], mask, occluded=occluded[0])  # the gallery names it
            row[text] = path
        if row:
            out.index[spec] = row
    if skipped_regions:
        out.notes.append(REGION_NOTE)
    return out


def examples_from_config(config: Mapping[str, Any], seed: int, load: Callable[[], Any] | None = None) -> Examples:
    """The examples of a run described by its results' ``config`` (dataset, options, patches,
    levels). ``load`` returns the run's dataset (the plugin passes its runner's, already
    loaded); by default it is loaded from ``config`` as the runner loads it (a ``limit`` subset
    follows the run's seed). When it does not load here (``medrobust merge`` on a machine
    without the data), there are no examples and the note says why."""
    from ..occlusion.regions import is_region_patch

    patches = [str(p) for p in config.get("patches") or []]
    levels = [float(lv) for lv in config.get("levels") or []]
    try:
        wanted = any(not is_region_patch(p) for p in patches) and any(lv > 0 for lv in levels)
    except MedrobustError:  # a patch unknown here: render_examples notes it
        wanted = True
    if not wanted:  # nothing to picture (or region probes only): no need for the dataset
        return render_examples(None, patches, [], seed)
    where = config.get("dataset") or "the bundled phantom"
    try:
        dataset = load() if load is not None else _load(config, seed)
    except Exception as exc:  # the run reports a broken dataset itself; here it only means no pictures
        return Examples(notes=[f"no example pictures: dataset {where} did not load here ({exc})"])
    try:
        return render_examples(dataset, patches, levels, seed)
    except MedrobustError as exc:  # its first image does not read
        return Examples(notes=[f"no example pictures: {exc}"])


def _load(config: Mapping[str, Any], seed: int) -> Any:
    from ..datasets import load_dataset

    options = dict(config.get("dataset_options") or {})
    if "limit" in options:  # as GridRunner.dataset: the subset follows the run's seed
        options.setdefault("seed", seed)
    return load_dataset(config.get("dataset"), **options)
