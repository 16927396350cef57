"""The common skeleton of the upstream adapters (CLIP, CXR-RePaiR, MedCLIP, CXR-CLIP).

``AdapterBase`` holds what every adapter shares: ``name``, ``batch_size``, ``device`` (read from
a buffer, so it follows ``.to()``), ``card()``, and the image template::

    encode_images(x) = L2-normalise(float(_image_features(pixel_values(x))))

Each adapter supplies ``pixel_values`` (its own normalisation) and ``_image_features`` (its
vision tower). ``MeanStdAdapter`` supplies the common ``pixel_values``: float32 on the device,
one channel expanded to three, then ``(x - mean) / std`` with per-channel buffers on the 0-1 scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F


class AdapterBase(nn.Module):
    """Name, batch size, device, card and the ``encode_images`` template of an adapter."""

    _anchor: torch.Tensor  # a registered buffer (nn.Module's __getattr__ is typed Tensor | Module)

    def __init__(self, *, name: str, batch_size: int):
        super().__init__()
        self.name = name
        self.batch_size = int(batch_size)
        self._card: dict[str, Any] = {}
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as float32 on the device, a single channel expanded to three."""
        x = x.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] B x C x H x W -> the tensor the vision tower sees."""
        raise NotImplementedError

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The vision tower's embedding (before L2 normalisation) of normalised pixels."""
        raise NotImplementedError

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._image_features(self.pixel_values(x)).float(), dim=-1)

    def _encode_in_batches(
        self, texts: Iterable[str], encode_batch: Callable[[list[str]], torch.Tensor], dim: int
    ) -> torch.Tensor:
        """``encode_batch`` over chunks of ``batch_size`` texts, in order, L2-normalised; (0, dim) for none."""
        texts = list(texts)
        if not texts:
            return torch.empty(0, dim, device=self.device)
        out = [encode_batch(texts[i : i + self.batch_size]).float() for i in range(0, len(texts), self.batch_size)]
        return F.normalize(torch.cat(out), dim=-1)

    def card(self) -> dict[str, Any]:
        return dict(self._card)


class MeanStdAdapter(AdapterBase):
    """An adapter whose pixels are normalised per channel with a mean and std on the 0-1 scale."""

    mean: torch.Tensor  # registered buffers, set by _set_normalisation
    std: torch.Tensor

    def _set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        return (self._rgb(x) - self.mean) / self.std


def apply_steps(image: Image.Image, steps: Iterable[Callable[[Any], Any]]) -> Image.Image:
    """``image`` through PIL transforms (resize, crop, ...) in order."""
    for step in steps:
        image = step(image)
    return image
