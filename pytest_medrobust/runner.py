"""The engine behind the grid: loads the dataset and models once per process and measures cells.

One :class:`GridRunner` lives per pytest process (each xdist worker has its own). It holds the
decoded dataset, the loaded models and their text embeddings, so a grid of many cells decodes
each image and encodes each report once. Every number it produces is a pure function of the
settings, the data and the weights: the same on every worker and every run.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__, occlusion
from .allocator import tune_cpu_allocator
from .cache import CacheWarning, EmbeddingCache, check_clearable, claim_cache_dir
from .cells import LEVEL_DECIMALS, Cell
from .config import Settings
from .datasets import Dataset, decode_dataset, load_dataset, to_batch
from .errors import MedrobustError, ModelLoadError
from .gate import Verdict, chance_levels, check_compatible, judge_cell, load_baseline
from .gate.compare import pack_hits
from .metrics import Ranks, compute_ranks, summarize, unique_texts
from .models import RetrievalModel, load_model, model_card


@dataclass
class Measurement:
    metrics: dict[str, float]
    ranks: Ranks
    n_images: int
    seconds: float
    intervals: dict[str, list[float]] | None = None
    cached: bool = False  # image embeddings read from the on-disk cache
    cache_corrupt: int = 0  # corrupt cache entries found (and recomputed) for this measurement
    extra: dict[str, Any] | None = None  # more keys for the cell's record (a region probe's "region")


def _call(name: str, method: str, encode: Callable[[Any], Any], batch: Any) -> Any:
    """A model method on the probe batch; whatever it raises is the model's set-up error, one
    message naming the model, not a traceback (a tokenizer, CUDA or shape error in its code)."""
    try:
        return encode(batch)
    except MedrobustError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model {name!r}: {method} raised {type(exc).__name__}: {exc}") from exc


def resolve_device(name: str, worker: str | None = None) -> torch.device:
    """The device of this process. Under xdist, ``auto`` and a bare ``cuda`` give worker gwN the
    visible GPU N mod count, so every GPU of the machine is busy (CUDA_VISIBLE_DEVICES set by the
    caller is respected: indices are into the visible devices)."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedrobustError(f"--medrobust-device {name}: CUDA is not available on this machine")
    if name in ("auto", "cuda"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        index = int(worker[2:]) % torch.cuda.device_count() if worker and worker[2:].isdigit() else 0
        return torch.device("cuda", index)
    return torch.device(name)


def _check_finite(model: str, side: str, embeddings: torch.Tensor, names: Sequence[str], label: str) -> None:
    """NaN or inf would rank as a perfect match (every comparison with NaN is false): refuse."""
    bad = ~torch.isfinite(embeddings).all(dim=1)
    if bool(bad.any()):
        first = names[int(torch.nonzero(bad)[0])]
        where = f" ({label})" if label else ""
        raise MedrobustError(
            f"model {model!r} returned non-finite {side} embeddings for {int(bad.sum())} of {len(names)} "
            f"inputs{where}, the first for {first!r}; with --medrobust-precision fp16 try bf16 or fp32"
        )


def _share_cpu_threads(device: torch.device) -> None:
    """On the CPU, run as many torch threads as this process has CPUs (:func:`usable_cpus`), split
    between xdist workers. torch counts the machine's cores, not a container's CPU limit: in a
    2-CPU pod on a 64-core node it would start 64 threads that contend for 2 CPUs, the way two
    2-thread processes on this project's 2-core VM made the demo grid 2.5-5x slower
    (docs/performance.md). The embeddings do not depend on the thread count (tests/plugin compare
    -n 2 with -n 0). OMP_NUM_THREADS, if set, wins."""
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    threads = max(1, usable_cpus() // workers)
    if threads < torch.get_num_threads():
        torch.set_num_threads(threads)


def usable_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (cgroup
    v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``: ``docker --cpus``, a Kubernetes CPU limit), rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_cpu_quota(root: str) -> float | None:
    base = Path(root)
    try:
        limit, period = (base / "cpu.max").read_text().split()
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        limit = (base / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (base / "cpu" / "cpu.cfs_period_us").read_text().strip()
        return None if int(limit) <= 0 else int(limit) / int(period)
    except (OSError, ValueError):
        return None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for model forwards, or None for plain fp32.

    ``auto`` is fp32 on every device: the gate's numbers must match the upstream fp32 embeddings
    and replay exactly, and bf16 moves them by up to ~1e-3 (docs/models.md, "How faithful").
    bf16 and fp16 are opt-in (``--medrobust-precision``), for speed on a GPU."""
    if precision in ("auto", "fp32"):
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _describe(value: Any) -> str:
    """What a model returned, for an error message: type, and shape, dtype and device if any."""
    if value is None:
        return "None"
    kind = type(value).__qualname__
    if type(value).__module__ not in ("builtins", "torch"):
        kind = f"{type(value).__module__}.{kind}"
    elif isinstance(value, torch.Tensor):
        kind = "torch.Tensor"
    shape = getattr(value, "shape", None)
    if shape is not None:
        device = f" on {value.device}" if isinstance(value, torch.Tensor) else ""
        return f"a {kind} of shape {tuple(shape)}, dtype {getattr(value, 'dtype', '?')}{device}"
    if isinstance(value, (list, tuple, dict)):
        return f"a {kind} of {len(value)} items"
    return f"a {kind}"


def check_output(model: str, method: str, value: Any, n: int) -> torch.Tensor:
    """``value``, if it is what ``method`` must return for ``n`` inputs: a 2-D floating-point
    tensor (on any device) with one row per input. Anything else would be ranked as if it were
    embeddings and read as "not robust" instead of "this model is broken": refuse it."""
    problem = None
    if not isinstance(value, torch.Tensor):
        problem = "not a torch.Tensor"
    elif value.ndim != 2:
        problem = f"{value.ndim}-D, not 2-D"
    elif value.shape[0] != n:
        problem = f"{value.shape[0]} rows for {n} inputs"
    elif value.shape[1] == 0:
        problem = "no columns"
    elif not value.is_floating_point():
        problem = "not a floating-point dtype"
    if problem is not None:
        raise ModelLoadError(
            f"model {model!r}: {method} returned {_describe(value)} for {n} inputs ({problem}); it must return "
            f"a 2-D floating-point torch.Tensor with one row per input, shape ({n}, D)"
        )
    assert isinstance(value, torch.Tensor)
    return value


def check_widths(model: str, images: torch.Tensor, texts: torch.Tensor) -> None:
    """Image and text embeddings are compared by dot product: they must have one width."""
    if images.shape[1] != texts.shape[1]:
        raise ModelLoadError(
            f"model {model!r}: encode_images returned {images.shape[1]}-wide embeddings and encode_texts "
            f"{texts.shape[1]}-wide ones; both must have the same width to be compared"
        )


# Placement: given (images, ids) returns the occluded images. The grid's seeded random placement
# and a Hypothesis placement policy both fit this shape.
Occluder = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]

# Planned masks kept for reuse by the next model of the same input size (masks do not depend on
# the model): at most this many images' masks in all, about 100 MB of box masks.
PLAN_CACHE_IMAGES = 250_000


def prefetch(batches: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """``batches``, produced by a background thread ``depth`` items ahead of the consumer: the
    next batch is decoded, moved and occluded while the current one runs through the model.

    The items and their order are those of ``batches`` (every batch is a pure function of its
    images and ids, so the numbers do not depend on the overlap). An exception in the producer
    is raised in the consumer, as it was raised; a consumer that stops early stops the producer."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple[BaseException | None, Any]) -> bool:
        """Queue ``entry`` unless the consumer has stopped (then never block: it is gone)."""
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.inference_mode():  # thread-local: the producer enters it itself
                for item in batches:
                    if not offer((None, item)):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            offer((exc, None))
            return
        offer((None, done))

    worker = threading.Thread(target=produce, name="medrobust-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            error, item = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()


class GridRunner:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._device: torch.device | None = None
        self.allocator = "not chosen yet (no device)"
        # Occlude the next batch in a background thread while this one is encoded: None means on
        # an accelerator only. On the CPU both would share the same cores: measured on 2 cores,
        # the overlap cost 13-56 % of the harness's throughput (docs/performance.md).
        self.prefetch: bool | None = None
        self._dataset: Dataset | None = None
        self._dataset_error: BaseException | None = None
        self._models: dict[str, RetrievalModel | BaseException] = {}
        self._texts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pixels: dict[tuple, torch.Tensor] = {}
        self._stats: dict[tuple, dict[str, float]] = {}  # pixels key -> intensity statistics
        self._plans: dict[tuple, dict[str, Any]] = {}  # (patch, level, seed, H, W) -> image id -> mask
        self._measured: dict[tuple, Measurement] = {}
        self._specs = {m.name: m for m in settings.models}
        self._baseline: Any = None
        self._fingerprints: dict[str, str | None] = {}
        self._error_cells: dict[int, str] = {}  # id of a remembered set-up error -> first cell
        self._checked: dict[str, BaseException | None] = {}  # model -> outcome of check_outputs
        self._corrupt: dict[str, int] = {}  # model -> corrupt cache entries found in this process
        self.cache = EmbeddingCache(settings.cache_dir / "v1" if settings.cache else None)
        self.progress_writer: Callable[[str], Any] = sys.stderr.write

    # -- resources, each loaded once; a failure is remembered so every dependent cell errors ----

    @property
    def device_name(self) -> str:
        """The device in use, or the one asked for when nothing has run yet."""
        return str(self._device) if self._device is not None else self.settings.device

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = resolve_device(self.settings.device, os.environ.get("PYTEST_XDIST_WORKER"))
            _share_cpu_threads(self._device)
            if self._device.type == "cpu":
                self.allocator = tune_cpu_allocator(self.settings.cpu_allocator)
            self._pin_numerics()
        return self._device

    def _pin_numerics(self) -> None:
        """fp32 on CUDA means fp32 (no TF32) and deterministic kernels, so reruns agree."""
        if self._device is not None and self._device.type == "cuda" and self.autocast is None:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    @property
    def autocast(self) -> torch.dtype | None:
        return autocast_dtype(self.settings.precision, self.device)

    def _forward(self, name: str, method: str, encode: Callable[[Any], Any], batch: Any) -> torch.Tensor:
        """``encode(batch)`` under the run's precision, checked to be embeddings of the batch."""
        dtype = self.autocast
        if dtype is None:
            out = encode(batch)
        else:
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                out = encode(batch)
        return check_output(name, method, out, len(batch)).float()

    def dataset(self) -> Dataset:
        if self._dataset_error is not None:
            raise self._dataset_error
        if self._dataset is None:
            try:
                options = dict(self.settings.dataset_options)
                if "limit" in options:  # the subset follows the run's seed unless the options set one
                    options.setdefault("seed", self.settings.seed)
                if self.settings.cache:
                    # Created (and marked as ours) before the first entry is written into it.
                    claim_cache_dir(self.settings.cache_dir)
                    options.setdefault("cache_dir", self.settings.cache_dir)
                self._dataset = load_dataset(self.settings.dataset, **options)
            except BaseException as exc:
                self._dataset_error = exc
                raise
        return self._dataset

    def model(self, name: str) -> RetrievalModel:
        if name not in self._models:
            try:
                self._models[name] = load_model(self._specs[name], self.device)
            except BaseException as exc:
                self._models[name] = exc
        entry = self._models[name]
        if isinstance(entry, BaseException):
            raise entry
        return entry

    def _name_of(self, model: RetrievalModel) -> str:
        """The name the run knows a loaded model by (its spec's, which may differ from model.name)."""
        return next((n for n, m in self._models.items() if m is model), str(getattr(model, "name", "?")))

    def model_card(self, name: str) -> dict[str, Any]:
        """The model's card for the results JSON, with ``cache_corrupt``: how many of its cache
        entries (embeddings, decoded images) this process found corrupt and recomputed."""
        return {**model_card(self.model(name), self._specs[name]), "cache_corrupt": self._corrupt.get(name, 0)}

    @property
    def cache_corrupt(self) -> int:
        """Corrupt cache entries found (and recomputed) by this process, over all models."""
        return sum(self._corrupt.values())

    def _found_corrupt(self, name: str, where: str) -> None:
        """Count a corrupt cache entry against ``name`` and say so: it was recomputed, but a cache
        that goes bad is worth knowing about."""
        import warnings

        self._corrupt[name] = self._corrupt.get(name, 0) + 1
        warnings.warn(CacheWarning(f"model {name!r}: corrupt cache entry recomputed and overwritten: {where}"), stacklevel=3)

    def fingerprint(self, name: str) -> str | None:
        """What the model's numbers depend on: weights, code and preprocessing (None: unknown,
        so its embeddings are not cached, which the run says once per model)."""
        if name not in self._fingerprints:
            import warnings

            from .cache import CacheWarning, missing_fingerprint, model_fingerprint

            model = self.model(name)
            card = model_card(model, self._specs[name])  # without the run's counts
            found = model_fingerprint(model, card)
            if found is None and self.cache.enabled:
                warnings.warn(CacheWarning(missing_fingerprint(model, card)), stacklevel=2)
            self._fingerprints[name] = found
        return self._fingerprints[name]

    def _cached(self, name: str, what: dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        fingerprint = self.fingerprint(name) if self.cache.enabled else None
        if fingerprint is None:
            self.cache.last_hit = False
            return compute()
        fields = {
            "model": fingerprint,
            "dataset": self.dataset().sha256,
            # Code and numerics that shape an embedding beyond the weights and the data.
            "pytest_medrobust": __version__,
            "torch": torch.__version__,
            "device": self.device.type,
            "autocast": str(self.autocast),
            "batch_size": self.settings.batch_size,
            **what,
        }
        value = self.cache.get_or_compute(fields, compute)
        if self.cache.last_corrupt is not None:
            self._found_corrupt(name, self.cache.last_corrupt)
        return value

    def _pixels_key(self, model: RetrievalModel) -> tuple:
        # A model with its own prepare_image gets its own entry; the generic geometry is shared.
        if getattr(model, "prepare_image", None):
            return ("model", id(model))
        return (tuple(model.input_size), model.geometry)

    def pixels(self, model: RetrievalModel) -> torch.Tensor:
        """The dataset at the model's input size (uint8 N x H x W), decoded once per geometry.

        With the cache on, a memory map of the decoded-image cache entry: the images are held
        once, by the page cache, not copied per cell or per model (batches are staged for the
        GPU one at a time by ``to_batch``)."""
        key = self._pixels_key(model)
        if key not in self._pixels:
            cache_dir = self.settings.cache_dir if self.settings.cache else None  # entries go to <cache>/decoded/
            height, width = model.input_size
            self._pixels[key] = decode_dataset(
                self.dataset(), (height, width), model.geometry, getattr(model, "prepare_image", None),
                cache_dir=cache_dir, on_corrupt=lambda where: self._found_corrupt(self._name_of(model), where),
            )
        return self._pixels[key]

    def image_stats(self, name: str) -> dict[str, float]:
        """Dataset intensity mean and std at the model's input size, for fills such as gray_box
        (computed once per decoded geometry, whichever model asks)."""
        model = self.model(name)
        key = self._pixels_key(model)
        if key not in self._stats:
            self._stats[key] = occlusion.ImageStats().update(self.pixels(model)).as_dict()
        return self._stats[key]

    def preflight(self, *, distributed: bool) -> None:
        """Everything a cell needs, checked once before the grid runs, so a broken set-up is one
        error rather than one per cell: the dataset (every row), the baseline, every model.

        In-process the models stay loaded for the cells. Under xdist the workers load their own,
        so here each model is built on the CPU once and dropped: that costs one extra load per
        model, the price of learning about a broken model before any worker starts. Under
        ``--medrobust-shard`` only the models with cells in this shard are loaded."""
        self.dataset()
        occlusion.regions.check_region_patches(self.settings.patches, self.dataset())
        self.baseline()
        mine = self.shard_models()
        for spec in self.settings.models:
            if spec.name not in mine:
                continue
            if distributed:
                self._check_outputs_on_cpu(spec, load_model(spec, torch.device("cpu")))
            else:
                self.prepare(spec.name)

    def shard_models(self) -> set[str]:
        """The models with cells in this run's share of the grid (every model when unsharded)."""
        from .sharding import Share, share_cells

        if not isinstance(self.settings.shard, Share):
            return set(self.settings.model_names)
        return {cell.model for cell in share_cells(self.settings)}

    def check_outputs(self, name: str) -> None:
        """Run the model once on the dataset's first images and reports and refuse what is not
        embeddings (see :func:`check_output`), so a broken model is a set-up error, once, before
        any cell ranks its outputs. Remembered: every later call raises the same error."""
        if name not in self._checked:
            try:
                self._check_outputs(name, self.model(name), self.pixels(self.model(name)), self.device)
                self._checked[name] = None
            except MedrobustError as exc:
                self._checked[name] = exc
        error = self._checked[name]
        if error is not None:
            raise error

    def _check_outputs(self, name: str, model: RetrievalModel, pixels: torch.Tensor, device: torch.device) -> None:
        n = min(2, len(pixels))
        texts = self.dataset().reports[:n]
        with torch.inference_mode():
            images = check_output(name, "encode_images", _call(name, "encode_images", model.encode_images,
                                                                to_batch(pixels, slice(0, n), device)), n)
            embedded = check_output(name, "encode_texts", _call(name, "encode_texts", model.encode_texts, texts), len(texts))
        check_widths(name, images, embedded)

    def _check_outputs_on_cpu(self, spec: Any, model: RetrievalModel) -> None:
        """:meth:`check_outputs` for the controller under xdist: the model on the CPU, the first
        images decoded apart (the workers decode the dataset, not the controller)."""
        dataset = self.dataset()
        first = Dataset(dataset.name, dataset.source, dataset.records[:2])
        height, width = model.input_size
        pixels = decode_dataset(first, (height, width), model.geometry, getattr(model, "prepare_image", None))
        self._check_outputs(spec.name, model, pixels, torch.device("cpu"))

    def first_cell_with(self, error: BaseException, cell_id: str) -> str:
        """The id of the first cell that reported ``error`` (``cell_id`` if it is the first)."""
        return self._error_cells.setdefault(id(error), cell_id)

    def prepare(self, name: str) -> None:
        """Load what a cell of this model needs: the dataset (every row checked), the model, and
        every image decoded at its input size. Runs as the item's setup, so a failure is an error."""
        self.dataset()
        self.pixels(self.model(name))
        self.baseline()
        self.check_outputs(name)

    # -- measurements ---------------------------------------------------------------------------

    def text_embeddings(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the unique report strings, and each image's index into them. Computed
        once per (model, dataset): in memory here, across processes through the cache."""
        if name not in self._texts:
            texts, index = unique_texts(self.dataset().reports)

            @torch.inference_mode()
            def compute() -> torch.Tensor:
                model = self.model(name)
                bs = self.settings.batch_size
                return torch.cat(
                    [self._forward(name, "encode_texts", model.encode_texts, texts[i : i + bs]) for i in range(0, len(texts), bs)]
                )

            embeddings = self._cached(name, {"kind": "text"}, compute)
            _check_finite(name, "text", embeddings, texts, "")
            self._texts[name] = (embeddings.to(self.device), index)
        return self._texts[name]

    def occluded_batches(self, name: str, occluder: Occluder) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, batch)`` for every batch of the dataset: uint8 pixels taken from the
        (memory-mapped) decoded images, moved to the model's device, turned into floats there and
        occluded there by ``occluder``."""
        pixels = self.pixels(self.model(name))
        ids = self.dataset().ids
        device = self.device
        bs = self.settings.batch_size
        for start in range(0, len(ids), bs):
            stop = min(start + bs, len(ids))
            yield start, stop, occluder(to_batch(pixels, slice(start, stop), device), ids[start:stop])

    def image_embeddings(self, name: str, occluder: Occluder, label: str) -> torch.Tensor:
        @torch.inference_mode()
        def compute() -> torch.Tensor:
            model = self.model(name)
            progress = Progress(f"{name} {label}", len(self.dataset().ids), self.progress_writer)
            out = []
            batches = self.occluded_batches(name, occluder)
            threaded = self.device.type != "cpu" if self.prefetch is None else self.prefetch
            if threaded:
                batches = prefetch(batches)
            for _, stop, batch in batches:
                out.append(self._forward(name, "encode_images", model.encode_images, batch))
                progress.update(stop)
            return torch.cat(out)

        if label.startswith("policy=") and not self.settings.search.cache_policies:
            self.cache.last_hit = False
            return compute()
        return self._cached(name, {"kind": "image", "occlusion": label}, compute)

    def measure_with(self, name: str, occluder: Occluder, label: str) -> Measurement:
        """Metrics with every image occluded by ``occluder``; ``label`` names the occlusion
        uniquely (patch spec, level, seed or policy) and keys the cache."""
        started = time.perf_counter()
        corrupt_before = self._corrupt.get(name, 0)
        texts, index = self.text_embeddings(name)
        images = self.image_embeddings(name, occluder, label)
        cached = self.cache.last_hit
        _check_finite(name, "image", images, self.dataset().ids, label)
        check_widths(name, images, texts)
        ranks = compute_ranks(images.to(self.device), texts, index)
        metrics = summarize(ranks, self.settings.ks)
        corrupt = self._corrupt.get(name, 0) - corrupt_before
        return Measurement(metrics, ranks, len(index), time.perf_counter() - started, cached=cached, cache_corrupt=corrupt)

    def measure(self, name: str, patch: str, level: float) -> Measurement:
        """The grid's seeded random placement; the clean level is shared by every patch type."""
        key = (name, patch if level > 0 else "", level)
        if key not in self._measured and level > 0 and occlusion.regions.is_region_patch(patch):
            self._measured[key] = occlusion.regions.measure_region(self, name, patch, level)
        if key not in self._measured:
            seed = self.settings.seed
            if level > 0:
                label = f"{occlusion.patch_label(occlusion.make_patch(patch))}|level={level:.{LEVEL_DECIMALS}f}|seed={seed}"
                occluder = self._seeded_occluder(name, patch, level, seed)

            else:
                label = "clean"

                def occluder(images: torch.Tensor, ids: Sequence[str]) -> torch.Tensor:
                    return images

            self._measured[key] = self.measure_with(name, occluder, label)
        return self._measured[key]

    def _seeded_occluder(self, name: str, patch: str, level: float, seed: int) -> Occluder:
        """The grid's seeded random placement as an occluder. Its masks are planned once per
        input size and reused by every model of that size; the dataset statistics (for fills
        such as gray_box) are computed only when a batch is occluded, never for a cache hit."""
        made = occlusion.make_patch(patch)
        height, width = self.model(name).input_size
        key = (occlusion.patch_label(made), round(level, 9), seed, height, width)
        n = len(self.dataset().ids)
        if key not in self._plans and sum(map(len, self._plans.values())) + n > PLAN_CACHE_IMAGES:
            self._plans.clear()  # bounded: a very large dataset plans again for the next model
        plans = self._plans.setdefault(key, {})

        def occluder(images: torch.Tensor, ids: Sequence[str]) -> torch.Tensor:
            todo = [i for i in dict.fromkeys(ids) if i not in plans]
            if todo:
                plans.update(zip(todo, occlusion.plan_masks(made, level, todo, height, width, seed), strict=True))
            specs = [plans[i] for i in ids]
            stats = self.image_stats(name)
            return occlusion.apply_masks(images, ids, specs, made, level, seed, stats=stats, inplace=True)

        return occluder

    def clean(self, name: str) -> Measurement:
        return self.measure(name, "", 0.0)

    def mask_preview(self, cell: Cell, policy: Any) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The dataset's first image at the model's input size, its mask under ``policy`` and
        the occluded image (for the picture of a search cell's failing placement)."""
        image = to_batch(self.pixels(self.model(cell.model)), slice(0, 1), torch.device("cpu"))
        occluded, masks = occlusion.occlude_with_policy(
            image, self.dataset().ids[:1], policy, cell.patch, cell.level, self.settings.seed,
            stats=self.image_stats(cell.model),
        )
        return image[0], masks[0], occluded[0]

    def cache_root_clear(self) -> None:
        """Remove what the cache folder holds of ours: embeddings, decoded images and file
        hashes. Only a folder that carries our marker is touched (one the user pointed at may
        hold their own ``decoded/``): any other raises :class:`MedrobustError`."""
        import shutil

        if not check_clearable(self.settings.cache_dir):
            return
        self.cache.clear()
        for sub in ("decoded", "file-sha256"):
            shutil.rmtree(self.settings.cache_dir / sub, ignore_errors=True)

    def chance(self, metrics: Sequence[str]) -> dict[str, float]:
        """Each recall's chance level on this dataset (what random ranking scores)."""
        dataset = self.dataset()
        return chance_levels(metrics, len(dataset.records), dataset.n_unique_reports)

    def intervals(self, measurement: Measurement) -> dict[str, list[float]]:
        """Bootstrap confidence intervals of every recall (empty when resamples is 0)."""
        boot = self.settings.bootstrap
        if boot.resamples == 0:
            return {}
        if measurement.intervals is None:
            from .stats import bootstrap_intervals

            ranks = {d: getattr(measurement.ranks, d).numpy() for d in ("i2t", "t2i", "i2t_unique")}
            found = bootstrap_intervals(
                ranks, self.settings.ks, resamples=boot.resamples, confidence=boot.confidence, seed=self.settings.seed
            )
            measurement.intervals = {k: [float(lo), float(hi)] for k, (lo, hi) in found.items()}
        return measurement.intervals

    def verdict(self, cell: Cell, measurement: Measurement) -> Verdict:
        """The gate's verdict on one measurement of ``cell``: its thresholds, on the point
        estimate or the bootstrap lower bound, then the saved baseline if one was given."""
        clean = self.clean(cell.model).metrics if cell.level > 0 else None
        return judge_cell(
            self.settings.thresholds,
            cell,
            measurement.metrics,
            clean=clean,
            intervals=self.intervals(measurement),
            chance=self.chance(list(measurement.metrics)),
            baseline=self.baseline(),
            baseline_options=self.settings.baseline,
        )

    def hits(self, measurement: Measurement) -> dict[str, str]:
        """Per-query hits of the primary metric (packed), for paired model comparisons."""
        metric = self.settings.primary_metric
        direction, sep, k = metric.rpartition("_R@")
        if not sep:
            return {}
        return {metric: pack_hits((getattr(measurement.ranks, direction) <= int(k)).cpu().numpy())}

    def baseline(self) -> Any:
        """The saved baseline, checked against this run's dataset fingerprint (None if not given)."""
        options = self.settings.baseline
        if options.path is None:
            return None
        if self._baseline is None:
            baseline = load_baseline(options.path)
            check_compatible(baseline, self.dataset().sha256, options.allow_dataset_mismatch)
            self._baseline = baseline
        return self._baseline



class Progress:
    """Progress lines for long encodes, so that a long cell is never silent for more than about
    five seconds: the first after 4 s, then every 5 s. A line names the running cell in words
    (:attr:`current`, set by the plugin around each cell), not the encode's cache key. The plugin
    writes them past pytest's capture without cutting its line of dots."""

    FIRST, EVERY = 4.0, 5.0
    # What the running cell measures, in words ("demo-plain: black_box over 20% of each image");
    # None outside a cell (then the encode's own description is shown).
    current: str | None = None

    def __init__(self, what: str, total: int, write: Callable[[str], Any]):
        self.what, self.total, self.write = what, total, write
        self.started = self.last = time.perf_counter()
        self.shown = False

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < (self.EVERY if self.shown else self.FIRST):
            return
        self.last, self.shown = now, True
        rate = done / max(now - self.started, 1e-9)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        what = Progress.current or self.what
        self.write(f"[medrobust{' ' + worker if worker else ''}] {what}: {done}/{self.total} images, {rate:.0f} img/s\n")
