"""The engine behind the grid: loads the dataset and models once per process and measures cells.

One :class:`GridRunner` lives per pytest process (each xdist worker has its own). It holds the
decoded dataset, the loaded models and their text embeddings, so a grid of many cells decodes
each image and encodes each report once. Every number it produces is a pure function of the
settings, the data and the weights: the same on every worker and every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import occlusion
from .config import Settings
from .datasets import Dataset, decode_dataset, load_dataset, to_batch
from .errors import MedrobustError
from .metrics import Ranks, compute_ranks, summarize, unique_texts
from .models import RetrievalModel, load_model, model_card


@dataclass(frozen=True)
class Cell:
    """One test of the grid: a model under one patch type at one occlusion level."""

    model: str
    patch: str
    level: float
    kind: str = "grid"  # "grid": seeded random placement; "search": Hypothesis worst case

    @property
    def id(self) -> str:
        return f"{self.model}-{self.patch}-{self.level:.2f}"


@dataclass
class Measurement:
    metrics: dict[str, float]
    ranks: Ranks
    n_images: int
    seconds: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MedrobustError(f"--medrobust-device {name}: CUDA is not available on this machine")
    return torch.device(name)


# Placement: given (images, ids) returns the occluded images. The grid's seeded random placement
# and a Hypothesis placement policy both fit this shape.
Occluder = Callable[[torch.Tensor, Sequence[str]], torch.Tensor]


class GridRunner:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._device: torch.device | None = None
        self._dataset: Dataset | None = None
        self._dataset_error: BaseException | None = None
        self._models: dict[str, RetrievalModel | BaseException] = {}
        self._texts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pixels: dict[tuple, torch.Tensor] = {}
        self._measured: dict[tuple, Measurement] = {}
        self._specs = {m.name: m for m in settings.models}

    # -- resources, each loaded once; a failure is remembered so every dependent cell errors ----

    @property
    def device_name(self) -> str:
        """The device in use, or the one asked for when nothing has run yet."""
        return str(self._device) if self._device is not None else self.settings.device

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = resolve_device(self.settings.device)
        return self._device

    def dataset(self) -> Dataset:
        if self._dataset_error is not None:
            raise self._dataset_error
        if self._dataset is None:
            try:
                self._dataset = load_dataset(self.settings.dataset, **dict(self.settings.dataset_options))
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

    def model_card(self, name: str) -> dict[str, Any]:
        return model_card(self.model(name), self._specs[name])

    def pixels(self, model: RetrievalModel) -> torch.Tensor:
        """The dataset at the model's input size (uint8 N x H x W), decoded once per geometry."""
        prepare = getattr(model, "prepare_image", None)
        key = (tuple(model.input_size), model.geometry, prepare.__qualname__ if prepare else None)
        if key not in self._pixels:
            self._pixels[key] = decode_dataset(self.dataset(), tuple(model.input_size), model.geometry, prepare)
        return self._pixels[key]

    def prepare(self, name: str) -> None:
        """Load what a cell of this model needs: the dataset (every row checked), the model, and
        every image decoded at its input size. Runs as the item's setup, so a failure is an error."""
        self.dataset()
        self.pixels(self.model(name))

    # -- measurements ---------------------------------------------------------------------------

    @torch.inference_mode()
    def text_embeddings(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the unique report strings, and each image's index into them."""
        if name not in self._texts:
            model = self.model(name)
            texts, index = unique_texts(self.dataset().reports)
            bs = self.settings.batch_size
            chunks = [model.encode_texts(texts[i : i + bs]).float() for i in range(0, len(texts), bs)]
            self._texts[name] = (torch.cat(chunks).to(self.device), index)
        return self._texts[name]

    @torch.inference_mode()
    def image_embeddings(self, name: str, occluder: Occluder) -> torch.Tensor:
        model = self.model(name)
        pixels = self.pixels(model)
        ids = self.dataset().ids
        bs = self.settings.batch_size
        out = []
        for start in range(0, len(ids), bs):
            stop = min(start + bs, len(ids))
            batch = occluder(to_batch(pixels, slice(start, stop), self.device), ids[start:stop])
            out.append(model.encode_images(batch).float())
        return torch.cat(out)

    def measure_with(self, name: str, occluder: Occluder) -> Measurement:
        started = time.perf_counter()
        texts, index = self.text_embeddings(name)
        images = self.image_embeddings(name, occluder)
        ranks = compute_ranks(images, texts, index)
        metrics = summarize(ranks, self.settings.ks)
        return Measurement(metrics, ranks, len(index), time.perf_counter() - started)

    def measure(self, name: str, patch: str, level: float) -> Measurement:
        """The grid's seeded random placement; the clean level is shared by every patch type."""
        key = (name, patch if level > 0 else "", level)
        if key not in self._measured:
            seed = self.settings.seed

            def occluder(images: torch.Tensor, ids: Sequence[str]) -> torch.Tensor:
                return occlusion.occlude(images, ids, patch, level, seed)[0] if level > 0 else images

            self._measured[key] = self.measure_with(name, occluder)
        return self._measured[key]

    def clean(self, name: str) -> Measurement:
        return self.measure(name, "", 0.0)

