"""Occlusion sensitivity maps: where hiding part of an image hurts a retrieval model.

A window of ``window`` x ``window`` pixels (model input frame) slides over the image in steps of
``stride`` and is painted with a patch type's fill (black_box's by default). For each position
the image is encoded and compared with every unique report: the *drop* is the fall of the image's
similarity to its own report, and the *rank* is where its own report then stands among all
reports (1 = first; ties count against it, as :func:`~pytest_medrobust.metrics.compute_ranks`).

Window positions follow Captum's ``Occlusion`` (Zeiler & Fergus): starts ``0, s, 2s, ...``,
``ceil((H - w) / s) + 1`` of them per axis, the last one cut at the image's edge. The pixel map
gives each pixel the mean drop of the windows that cover it, which is what ``Occlusion`` returns
for a forward function that outputs the similarity to the own report
(``tests/test_sensitivity.py`` checks this against Captum). The windows of one image are encoded
in batches of the run's batch size, never all images at once: memory is one batch of windows
plus the ``U x D`` report embeddings, whatever the dataset size.

Public API::

    window_starts(size, window, stride) -> list[int]
    default_geometry(height, width, window=None, stride=None) -> (window, stride)
    image_sensitivity(encode, image, image_id, own, texts, window, stride, *, patch, stats, seed, batch_size)
        -> ImageSensitivity
    pixel_map(drops, height, width, window, stride) -> np.ndarray (H x W)
    region_shares(maps, regions) -> {region: share_inside}
    guide_from(sensitivity) -> Guide                  # the per-image anchor of guided placement
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import MedrobustError
from .files import atomic_write
from .occlusion import apply_masks, make_patch
from .occlusion.geometry import Box, MaskSpec


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of every window along one axis, as Captum's Occlusion places them."""
    if window < 1 or stride < 1 or window > size:
        raise MedrobustError(
            f"sensitivity: window {window} and stride {stride} must be >= 1 and the window <= the image side {size}"
        )
    if stride > window and window < size:
        raise MedrobustError(f"sensitivity: stride {stride} is larger than the window {window}: pixels would be skipped")
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


def default_geometry(height: int, width: int, window: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """The window (default: an eighth of the shorter side) and stride (default: half the window)."""
    side = min(height, width)
    w = window if window is not None else max(1, side // 8)
    if w > side:
        raise MedrobustError(f"sensitivity window {w} px is larger than the model input ({height}x{width})")
    s = stride if stride is not None else max(1, w // 2)
    window_starts(side, w, s)  # checks
    return w, s


def _windows(height: int, width: int, window: int, stride: int) -> list[Box]:
    return [
        Box(top, left, min(window, height - top), min(window, width - left))
        for top in window_starts(height, window, stride)
        for left in window_starts(width, window, stride)
    ]


@dataclass
class ImageSensitivity:
    """One image's occlusion sensitivity on the window grid (rows = window rows, top first)."""

    id: str
    similarity: float  # to its own report, unoccluded
    rank: int  # of its own report among the unique reports, unoccluded
    drops: np.ndarray  # ny x nx float32: similarity before minus after, per window
    ranks: np.ndarray  # ny x nx int32: rank of the own report with that window occluded
    height: int
    width: int
    window: int
    stride: int

    def pixel_map(self) -> np.ndarray:
        return pixel_map(self.drops, self.height, self.width, self.window, self.stride)

    def worst(self) -> tuple[int, int]:
        """(row, column) of the window whose occlusion lowers the similarity most (first on ties)."""
        iy, ix = np.unravel_index(int(np.argmax(self.drops)), self.drops.shape)
        return int(iy), int(ix)

    @property
    def max_drop(self) -> float:
        return float(self.drops.max())

    def to_tensor(self) -> torch.Tensor:
        """Drops and ranks, then similarity and rank, as one float64 tensor (the cache entry)."""
        head = torch.tensor([self.similarity, float(self.rank)], dtype=torch.float64)
        return torch.cat([head, torch.from_numpy(self.drops.astype(np.float64)).reshape(-1),
                          torch.from_numpy(self.ranks.astype(np.float64)).reshape(-1)])

    @classmethod
    def from_tensor(cls, image_id: str, t: torch.Tensor, height: int, width: int, window: int, stride: int) -> ImageSensitivity:
        ny, nx = len(window_starts(height, window, stride)), len(window_starts(width, window, stride))
        values = t.to(torch.float64).numpy()
        if values.shape != (2 + 2 * ny * nx,):
            raise MedrobustError(f"sensitivity entry of {image_id!r} has {values.shape} values, expected {2 + 2 * ny * nx}")
        drops = values[2 : 2 + ny * nx].reshape(ny, nx).astype(np.float32)
        ranks = values[2 + ny * nx :].reshape(ny, nx).astype(np.int32)
        return cls(image_id, float(values[0]), int(values[1]), drops, ranks, height, width, window, stride)


def pixel_map(drops: np.ndarray, height: int, width: int, window: int, stride: int) -> np.ndarray:
    """Each pixel's mean drop over the windows that cover it (Captum's Occlusion convention)."""
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    tops, lefts = window_starts(height, window, stride), window_starts(width, window, stride)
    for iy, top in enumerate(tops):
        for ix, left in enumerate(lefts):
            total[top : top + window, left : left + window] += float(drops[iy, ix])
            count[top : top + window, left : left + window] += 1.0
    return (total / count).astype(np.float32)


def image_sensitivity(
    encode: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    image_id: str,
    own: int,
    texts: torch.Tensor,
    window: int,
    stride: int,
    *,
    patch: str = "black_box",
    stats: Mapping[str, float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> ImageSensitivity:
    """Slide the occluder over one image (C x H x W floats in [0, 1]); ``own`` indexes its report
    in ``texts`` (U x D unique report embeddings); ``encode`` maps a batch to embeddings."""
    _, height, width = image.shape
    boxes = _windows(height, width, window, stride)
    ny, nx = len(window_starts(height, window, stride)), len(window_starts(width, window, stride))
    p = make_patch(patch)
    texts = texts.float()

    def score(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sims = encode(batch).float().to(texts.device) @ texts.T
        mine = sims[:, own]
        return mine, (sims >= mine.unsqueeze(1)).sum(dim=1)

    # The clean image rides in the first batch, so that it and the windows go through the same
    # kernels: a window the model does not look at then costs exactly nothing.
    jobs: list[Box | None] = [None, *boxes]
    level = window * window / (height * width)
    with torch.inference_mode():
        sims, ranks = [], []
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            batch = image.unsqueeze(0).expand(len(chunk), *image.shape).clone()
            painted = [(i, b) for i, b in enumerate(chunk) if b is not None]
            specs = [MaskSpec(height, width, (b,)) for _, b in painted]
            # Fill seeds come from the window's own id: a noise fill is the same on every run.
            ids = [f"{image_id}@{b.top},{b.left}" for _, b in painted]
            rows = [i for i, _ in painted]
            batch[rows] = apply_masks(batch[rows], ids, specs, p, level, seed, stats=stats, inplace=True)
            s, r = score(batch)
            sims.append(s.cpu())
            ranks.append(r.cpu())
    all_sims, all_ranks = torch.cat(sims).double(), torch.cat(ranks)
    clean_sim, clean_rank = float(all_sims[0]), int(all_ranks[0])
    drops = (clean_sim - all_sims[1:]).numpy().reshape(ny, nx).astype(np.float32)
    rank_after = all_ranks[1:].numpy().reshape(ny, nx).astype(np.int32)
    return ImageSensitivity(image_id, clean_sim, clean_rank, drops, rank_after, height, width, window, stride)


def region_shares(maps: Mapping[str, np.ndarray], regions: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """For each region name, the share of the harmful effect (positive map values, summed over
    the images that have the region) that lies inside it: 1 = all of it, 0 = none.

    ``maps``: image id -> H x W pixel map; ``regions``: name -> {image id -> H x W boolean mask,
    or boxes ``(top, left, height, width)`` in the same frame}. Images without the region, or
    without a map, do not count; a region on none of the mapped images is left out."""
    out: dict[str, dict[str, float]] = {}
    for name, per_image in regions.items():
        inside = total = 0.0
        images = 0
        for image_id, where in per_image.items():
            if image_id not in maps:
                continue
            effect = np.clip(maps[image_id].astype(np.float64), 0.0, None)
            mask = as_mask(where, effect.shape, f"region {name!r} of image {image_id!r}")
            inside += float(effect[mask].sum())
            total += float(effect.sum())
            images += 1
        if images:
            out[str(name)] = {"share_inside": inside / total if total > 0 else 0.0, "images": images,
                              "area": _mean_area(per_image, maps)}
    return out


def _mean_area(per_image: Mapping[str, Any], maps: Mapping[str, np.ndarray]) -> float:
    """Mean share of the image the region covers (what share_inside would be for a flat map)."""
    areas = [float(as_mask(w, maps[i].shape, i).mean()) for i, w in per_image.items() if i in maps]
    return sum(areas) / len(areas) if areas else 0.0


def as_mask(where: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A boolean mask of ``shape`` from a mask (array or tensor) or a list of boxes (top, left, h, w)."""
    if isinstance(where, torch.Tensor):
        where = where.cpu().numpy()
    if isinstance(where, np.ndarray) and where.ndim == 2:
        if where.shape != tuple(shape):
            raise MedrobustError(f"sensitivity: {what} is a {where.shape} mask, the model input is {tuple(shape)}")
        return where.astype(bool)
    mask = np.zeros(shape, dtype=bool)
    try:
        for top, left, h, w in where:
            mask[max(int(top), 0) : int(top) + int(h), max(int(left), 0) : int(left) + int(w)] = True
    except (TypeError, ValueError):
        raise MedrobustError(f"sensitivity: {what} is neither a boolean mask nor boxes (top, left, height, width)") from None
    return mask


@dataclass(frozen=True)
class Guide:
    """Where one image is most sensitive, for guided placement (pixels of the model input):
    the centre of its most damaging window, and the bounding box (top, left, bottom, right) of
    the windows that cost at least half as much (its *sensitive region*)."""

    cy: float
    cx: float
    region: tuple[int, int, int, int]


def guide_from(s: ImageSensitivity) -> Guide:
    iy, ix = s.worst()
    tops, lefts = window_starts(s.height, s.window, s.stride), window_starts(s.width, s.window, s.stride)

    def span(starts: Sequence[int], i: int, size: int) -> tuple[int, int]:
        return starts[i], min(starts[i] + s.window, size)

    top, bottom = span(tops, iy, s.height)
    left, right = span(lefts, ix, s.width)
    peak = s.max_drop
    if peak > 0:
        rows, cols = np.nonzero(s.drops >= 0.5 * peak)
        region = (tops[rows.min()], lefts[cols.min()], min(tops[rows.max()] + s.window, s.height),
                  min(lefts[cols.max()] + s.window, s.width))
    else:  # nothing hurts: the sensitive region is the most damaging window alone
        region = (top, left, bottom, right)
    return Guide((top + bottom) / 2.0, (left + right) / 2.0, region)


# -- a model's maps, from the run's runner ------------------------------------------------------

# Guides of every image, per runner and model: computed once per process for the search cells
# (weak keys: a finished run's runner, and its guides, go away with it).
_GUIDES: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Guide]]] = weakref.WeakKeyDictionary()


def subset_ids(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded, stable subset of ``n`` image ids, in dataset order: the ids whose hash with the
    seed is smallest, so the subset of an image does not depend on the other rows' order."""
    import hashlib

    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{int(seed)}|sensitivity|{i}".encode()).digest())
    chosen = set(ranked[: max(0, n)])
    return [i for i in ids if i in chosen]


def model_maps(runner: Any, name: str, ids: Sequence[str], window: int, stride: int, patch: str) -> list[ImageSensitivity]:
    """Every image's sensitivity (``ids``, dataset order) for one model, each read from or
    written to the run's cache on its own: keyed by the model fingerprint, the dataset, the
    image id, window, stride and fill."""
    from . import __version__
    from .datasets import to_batch
    from .occlusion import patch_label

    model = runner.model(name)
    pixels = runner.pixels(model)
    dataset = runner.dataset()
    position = {image_id: i for i, image_id in enumerate(dataset.ids)}
    texts, index = runner.text_embeddings(name)
    settings = runner.settings
    stats = runner.image_stats(name)
    height, width = model.input_size
    device = runner.device
    autocast = runner.autocast
    label = patch_label(make_patch(patch))

    def encode(batch: torch.Tensor) -> torch.Tensor:
        if autocast is None:
            return model.encode_images(batch)
        with torch.autocast(device_type=device.type, dtype=autocast):
            return model.encode_images(batch)

    fingerprint = runner.fingerprint(name) if runner.cache.enabled else None
    out = []
    for image_id in ids:
        i = position[image_id]

        def compute(i: int = i, image_id: str = image_id) -> torch.Tensor:
            image = to_batch(pixels, slice(i, i + 1), device)[0]
            s = image_sensitivity(encode, image, image_id, int(index[i]), texts, window, stride, patch=patch,
                                  stats=stats, seed=settings.seed, batch_size=settings.batch_size)
            return s.to_tensor()

        if fingerprint is None:
            value = compute()
        else:
            fields = {
                "kind": "sensitivity", "model": fingerprint, "dataset": dataset.sha256, "image": image_id,
                "window": window, "stride": stride, "fill": label, "seed": settings.seed,
                "pytest_medrobust": __version__, "torch": torch.__version__, "device": device.type,
                "autocast": str(autocast), "batch_size": settings.batch_size,
            }
            value = runner.cache.get_or_compute(fields, compute)
        out.append(ImageSensitivity.from_tensor(image_id, value, height, width, window, stride))
    return out


def guides(runner: Any, name: str) -> dict[str, Guide]:
    """Every image's :class:`Guide` for guided placement: a coarse map (4 x 4 windows of a
    quarter of the side, black fill) of every image of the dataset, cached like the maps."""
    known = _GUIDES.setdefault(runner, {})
    if name not in known:
        height, width = runner.model(name).input_size
        window = max(1, min(height, width) // 4)
        maps = model_maps(runner, name, runner.dataset().ids, window, window, "black_box")
        known[name] = {s.id: guide_from(s) for s in maps}
    return known[name]


def dataset_regions(runner: Any, name: str, ids: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """The dataset's named regions (``dataset.regions``) as masks in the model's input frame,
    for the images ``ids``: name -> {image id -> mask}. Empty when the dataset has none."""
    dataset = runner.dataset()
    if not getattr(dataset, "regions", None):
        return {}
    from .datasets.regions import region_masks, region_names

    model = runner.model(name)
    wanted = set(ids)
    sub = type(dataset)(dataset.name, dataset.source, [r for r in dataset.records if r.id in wanted])
    sub.regions = {i: r for i, r in dataset.regions.items() if i in wanted}
    prepare = getattr(model, "prepare_image", None)
    out = {}
    for region in region_names(sub.regions):
        out[region] = region_masks(sub, region, tuple(model.input_size), model.geometry, prepare)
    return out


def run_model(runner: Any, name: str, regions: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A model's sensitivity step: the maps of a seeded subset of images, their mean, the worst-hit
    images and the region shares; writes PNG and NPZ files under the report folder and returns
    the summary that goes to ``results["sensitivity"][model]`` (paths relative to that folder)."""
    from .datasets import to_batch
    from .occlusion import patch_label

    settings = runner.settings
    options = settings.sensitivity
    model = runner.model(name)
    height, width = model.input_size
    window, stride = default_geometry(height, width, options.window, options.stride)
    dataset = runner.dataset()
    ids = subset_ids(dataset.ids, options.images, settings.seed)
    found = model_maps(runner, name, ids, window, stride, options.patch)
    maps = {s.id: s.pixel_map() for s in found}
    mean = np.mean(np.stack([maps[i] for i in ids]), axis=0).astype(np.float32)
    worst = sorted(found, key=lambda s: (-s.max_drop, s.id))[: min(options.worst, len(found))]
    if regions is None:
        regions = dataset_regions(runner, name, ids)
    shares = region_shares(maps, regions)

    pixels = runner.pixels(model)
    position = {image_id: i for i, image_id in enumerate(dataset.ids)}

    def gray(image_id: str) -> np.ndarray:
        i = position[image_id]
        return to_batch(pixels, slice(i, i + 1), torch.device("cpu"))[0].mean(dim=0).numpy()

    folder = Path(settings.report_dir)
    base = f"sensitivity/{safe_name(name)}"
    mean_image = np.mean(np.stack([gray(i) for i in ids]), axis=0)
    files = {f"{base}-mean.png": overlay_png(mean_image, mean, f"{name}: mean over {len(ids)} images")}
    entries = []
    for s in worst:
        iy, ix = s.worst()
        png = f"{base}-{safe_name(s.id)}.png"
        files[png] = overlay_png(gray(s.id), maps[s.id], f"{name}: {s.id}")
        entries.append({"id": s.id, "png": png, "drop": round(s.max_drop, 6), "rank_before": s.rank,
                        "rank_after": int(s.ranks[iy, ix]), "similarity": round(s.similarity, 6)})
    npz = f"{base}.npz"
    files[npz] = npz_bytes({
        "ids": np.array(ids), "mean_map": mean, "maps": np.stack([maps[i] for i in ids]),
        "drops": np.stack([s.drops for s in found]), "ranks_after": np.stack([s.ranks for s in found]),
        "similarity": np.array([s.similarity for s in found]), "rank_before": np.array([s.rank for s in found]),
        "window": np.array(window), "stride": np.array(stride),
    })
    for relative, data in files.items():
        atomic_write(folder / relative, data)
    return {
        "window": window, "stride": stride, "n_images": len(ids), "fill": patch_label(make_patch(options.patch)),
        "input_size": [height, width], "mean_map": f"{base}-mean.png", "npz": npz, "worst": entries,
        "regions": shares, "peak": peak_of(mean), "sha256": hashlib_hex(mean),
    }


def peak_of(mean: np.ndarray) -> dict[str, float]:
    """Where the mean map is highest, as relative (y, x) in [0, 1] of the input, and its value."""
    iy, ix = np.unravel_index(int(np.argmax(mean)), mean.shape)
    return {"y": round((iy + 0.5) / mean.shape[0], 4), "x": round((ix + 0.5) / mean.shape[1], 4),
            "value": round(float(mean[iy, ix]), 6)}


def hashlib_hex(a: np.ndarray) -> str:
    """sha256 of an array's bytes: runs that agree bit for bit have the same one."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def safe_name(name: str) -> str:
    """A plain file name for a model or image id (a hash keeps two odd names apart)."""
    import hashlib
    import re

    plain = re.sub(r"[^A-Za-z0-9_=+@-]+", "_", name).strip("_")[:60]
    return plain if plain == name else f"{plain}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` (readable by ``numpy.load``) whose bytes depend on the arrays only: numpy's own
    savez stamps the current time into the zip, so two identical runs would differ."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buffer.getvalue())
    return out.getvalue()


def overlay_png(image: np.ndarray, heat: np.ndarray, title: str) -> bytes:
    """The image in gray with the map over it (red: hiding there lowers the similarity to the
    own report; blue: raises it), with a colour bar in similarity units."""
    import io

    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend

    limit = float(np.abs(heat).max()) or 1e-6
    fig = Figure(figsize=(3.2, 2.7), dpi=100)
    ax = fig.add_axes((0.02, 0.02, 0.74, 0.86))
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    shown = ax.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=7)
    bar = fig.colorbar(shown, ax=ax, fraction=0.08, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    bar.set_label("similarity drop", fontsize=6)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
