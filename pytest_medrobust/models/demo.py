"""The bundled demo models: small dual encoders trained on the phantom chest X-rays.

``demo-plain`` was trained on clean images, ``demo-occaug`` with random box occlusions; both by
``scripts/train_demo_models.py``. Weights ship in ``fixtures/models/<name>.safetensors`` beside a
JSON card holding the architecture, the training recipe and the measured clean metrics.

Image side: a 5-stage CNN on the grayscale image, whose last feature map is pooled to a 4 x 4
grid (so left and right stay apart) and projected. Text side: word unigrams and bigrams hashed
into an embedding bag (bigrams carry negation: "no effusion" differs from "effusion"), then an
MLP. Both sides are L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelLoadError

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class DemoConfig:
    input_size: int = 128
    channels: tuple[int, ...] = (16, 32, 48, 64, 96)
    grid: int = 4
    hash_buckets: int = 1 << 12
    text_width: int = 128
    embed_dim: int = 128


def hashed_ngrams(text: str, buckets: int) -> list[int]:
    """Hashed word unigrams and bigrams; crc32 so the buckets are the same in every process."""
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return [zlib.crc32(g.encode()) % buckets for g in grams] or [0]


class DemoDualEncoder(nn.Module):
    geometry = "pad"
    _card: dict[str, Any]  # set by load_demo; card() falls back to {} without it

    def __init__(self, config: DemoConfig = DemoConfig(), name: str = "demo"):
        super().__init__()
        self.config = config
        self.name = name
        self.input_size = (config.input_size, config.input_size)
        layers: list[nn.Module] = []
        width = 1
        for c in config.channels:
            layers += [nn.Conv2d(width, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.GELU()]
            width = c
        self.image_backbone = nn.Sequential(*layers)
        self.image_pool = nn.AdaptiveAvgPool2d(config.grid)
        self.image_proj = nn.Linear(width * config.grid * config.grid, config.embed_dim)
        self.text_bag = nn.EmbeddingBag(config.hash_buckets, config.text_width, mode="mean")
        self.text_mlp = nn.Sequential(
            nn.LayerNorm(config.text_width),
            nn.Linear(config.text_width, config.text_width),
            nn.GELU(),
            nn.Linear(config.text_width, config.embed_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        gray = x.mean(dim=1, keepdim=True)  # the phantoms are grayscale; RGB input is averaged
        z = self.image_backbone((gray - 0.5) / 0.25)
        return self.image_proj(self.image_pool(z).flatten(1))

    def text_features(self, texts: list[str]) -> torch.Tensor:
        ids: list[int] = []
        offsets: list[int] = []
        for t in texts:
            offsets.append(len(ids))
            ids.extend(hashed_ngrams(t, self.config.hash_buckets))
        ids_t = torch.tensor(ids, dtype=torch.long, device=self.device)
        off_t = torch.tensor(offsets, dtype=torch.long, device=self.device)
        return self.text_mlp(self.text_bag(ids_t, off_t))

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(x.to(self.device)), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_features(list(texts)), dim=-1)

    def card(self) -> dict[str, Any]:
        return dict(getattr(self, "_card", {}))


def _bundled_dir() -> Path:
    return Path(str(resources.files("pytest_medrobust.fixtures") / "models"))


def load_demo(weights: str | Path, *, name: str, device: torch.device | str = "cpu") -> DemoDualEncoder:
    """Load demo weights (``.safetensors``) and the JSON card beside them."""
    from safetensors.torch import load_file

    weights = Path(weights)
    card_path = weights.with_suffix(".json")
    for p in (weights, card_path):
        if not p.is_file():
            raise ModelLoadError(
                f"{name}: {p} is missing; regenerate the demo models with `python scripts/train_demo_models.py`"
            )
    card = json.loads(card_path.read_text())
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in card["config"].items()}
    config = DemoConfig(**fields)
    model = DemoDualEncoder(config, name=name)
    state = load_file(str(weights), device="cpu")
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    model._card = {
        "adapter": "demo",
        "source": str(weights),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "embedding_dim": config.embed_dim,
        "normalisation": {"mean": 0.5, "std": 0.25, "channels": "mean of RGB"},
        "training": card.get("training", {}),
    }
    return model


def save_demo(model: DemoDualEncoder, path: str | Path, card: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors) and its JSON card, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".safetensors.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.chmod(0o644)  # a shipped fixture: readable by everyone, as the rest of the checkout
    tmp.replace(path)
    full = {"config": asdict(model.config), **card}
    tmp_card = path.with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    tmp_card.replace(path.with_suffix(".json"))


def demo_plain(*, device: torch.device | str = "cpu", weights: str | Path | None = None) -> DemoDualEncoder:
    return load_demo(weights or _bundled_dir() / "demo-plain.safetensors", name="demo-plain", device=device)


def demo_occaug(*, device: torch.device | str = "cpu", weights: str | Path | None = None) -> DemoDualEncoder:
    return load_demo(weights or _bundled_dir() / "demo-occaug.safetensors", name="demo-occaug", device=device)
