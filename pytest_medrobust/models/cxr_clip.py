"""``cxr-clip``: CXR-CLIP (You et al., MICCAI 2023; Soombit-ai/cxr-clip, formerly kakaobrain/cxr-clip).

Weights: the ``.tar`` checkpoints of the authors' README (``r50_m``, ``r50_mc``, ``r50_mcc``,
``swint_m``, ``swint_mc``, ``swint_mcc``; e.g.
https://twg.kakaocdn.net/brainrepo/models/cxr-clip/a21ef120894e072ae77434daf6b98b72/swint_m.tar).
Each is a ``torch.save``'d dict with ``config`` (the training configuration, as dicts:
``config["model"]`` holds ``image_encoder``, ``text_encoder``, ``projection_head``,
``temperature``; ``config["tokenizer"]`` the tokenizer) and ``model`` (the state dict), plus
optimizer/scheduler state that is not used. It is read with ``torch.load(weights_only=True)``.
Upstream converts only the DictConfig levels of its hydra config to dicts, so list values (e.g.
the ``RandomResizedCrop`` scale) are still OmegaConf ``ListConfig`` objects in the file, linked
through their parents to the root config and its filled hydra resolver cache (a
``defaultdict``); they are read as plain lists through inert stand-ins
(``hub.load_checkpoint_file``), without importing omegaconf. Any other object that needs full
unpickling is refused, by name, unless ``trust_pickle=True``. A ``.safetensors``
state dict also works, with ``variant=`` ("swin" or "resnet50") saying which model it is.

Model (upstream ``CXRClip``), rebuilt from ``config["model"]`` with upstream's module names, so
the state dict loads as it is (upstream loads with ``strict=False``; here every parameter the
model needs must be present, extra keys are listed on the card)::

    image_encoder.image_encoder.*   HF SwinModel (swin-tiny; transformers 4.x names are mapped)
    image_encoder.resnet.*          or torchvision ResNet50 without fc (2048-d)
    text_encoder.text_encoder.*     BERT (Bio_ClinicalBERT)
    image_projection.projection.*   Linear(768 or 2048 -> 512), or the MLP head (projection, fc,
    text_projection.projection.*    layer_norm) when config says "mlp"
    logit_scale                     log(1 / 0.07)

* Image feature: Swin ``last_hidden_state[:, 0]`` (the first token of the last stage, not the
  pooled output: upstream treats it as a [CLS] token), or the ResNet's pooled 2048-d vector.
* Text feature: pooling ``config["model"]["text_encoder"]["pooling"]``; "eos" (the released
  models) takes the last non-pad token ([SEP]); "bos" and "mean" are also supported.
* Projection to 512, then L2-normalised (upstream ``Evaluator.encode_image/encode_text``).

Images (upstream ``configs/transform/default.yaml`` test split + ``transform_image``): RGB,
torchvision ``Resize(224)`` (shorter side to 224; torchvision's default BILINEAR interpolation)
and ``CenterCrop(224)``, then ``ToTensor`` and ``Normalize``: mean = std = 0.5 for Swin
("huggingface"), ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225) for ResNet50.
``prepare_image`` applies the same two torchvision transforms to the grayscale image.

Text: the checkpoint's tokenizer (Bio_ClinicalBERT, from ``text_model_dir=`` or the HF cache),
truncated at ``text_max_length`` = 256 tokens (upstream ``ImageTextEvalDataset``). Upstream pads
each batch to its longest text with the attention mask set, which does not change a text's
embedding; here texts of equal length are batched together, so no padding is needed at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ..errors import ModelLoadError
from . import hub
from .base import MeanStdAdapter, apply_steps

BERT_HUB_ID = "emilyalsentzer/Bio_ClinicalBERT"
SWIN_HUB_ID = "microsoft/swin-tiny-patch4-window7-224"
IMG_SIZE = 224
TEXT_MAX_LENGTH = 256
HF_MEAN, HF_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VARIANTS = ("swin", "resnet50")

_HOW = (
    "CXR-CLIP's checkpoints (r50_m.tar, swint_m.tar, ...) are linked from https://github.com/Soombit-ai/cxr-clip "
    "(formerly kakaobrain/cxr-clip; section 'Pre-trained model checkpoint')."
)


class _LinearHead(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.projection = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class _MLPHead(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.projection = nn.Linear(dim_in, dim_out)
        self.fc = nn.Linear(dim_out, dim_out)
        self.layer_norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        return self.layer_norm(self.fc(F.gelu(projected)) + projected)  # dropout is off at eval


class _SwinEncoder(nn.Module):
    def __init__(self, swin: nn.Module):
        super().__init__()
        self.image_encoder = swin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixel_values=x).last_hidden_state[:, 0]


class _ResNetEncoder(nn.Module):
    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet = resnet  # fc is Identity: the pooled, flattened 2048-d feature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(x)


class _TextEncoder(nn.Module):
    def __init__(self, bert: nn.Module):
        super().__init__()
        self.text_encoder = bert


class CXRClipNet(nn.Module):
    def __init__(self, image_encoder: nn.Module, text_encoder: _TextEncoder, image_projection: nn.Module | None,
                 text_projection: nn.Module | None, temperature: float | None):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        if image_projection is not None:
            self.image_projection = image_projection
            self.text_projection = text_projection
        if temperature:
            self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / temperature))


def _get(cfg: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(cfg, Mapping) or k not in cfg:
            return default
        cfg = cfg[k]
    return cfg


class CXRClip(MeanStdAdapter):
    def __init__(self, net: CXRClipNet, tokenizer: Any, *, variant: str, pooling: str, max_length: int, name: str,
                 card: dict[str, Any], batch_size: int):
        super().__init__(name=name, batch_size=batch_size)
        import torchvision.transforms as T

        self.net = net.eval()
        self.tokenizer = tokenizer
        self.variant = variant
        self.pooling = pooling
        self.max_length = int(max_length)
        self.input_size = (IMG_SIZE, IMG_SIZE)
        self.geometry = "crop"
        self._geometric = [T.Resize(IMG_SIZE), T.CenterCrop(IMG_SIZE)]
        mean, std = (HF_MEAN, HF_STD) if variant == "swin" else (IMAGENET_MEAN, IMAGENET_STD)
        self._set_normalisation(mean, std)
        proj = getattr(net, "text_projection", None)
        bert: Any = net.text_encoder.text_encoder  # a transformers BertModel: its config is untyped
        dim = proj.projection.out_features if proj is not None else bert.config.hidden_size
        self._card = {
            **card,
            "adapter": "cxr-clip",
            "variant": variant,
            "embedding_dim": int(dim),
            "input_size": list(self.input_size),
            "geometry": self.geometry,
            "preprocess": "RGB; resize shorter side to 224 (torchvision default bilinear); centre-crop 224",
            "normalisation": {"mean": list(mean), "std": list(std), "scale": "0-1"},
            "image_feature": "last_hidden_state[:, 0]" if variant == "swin" else "resnet50 pooled",
            "text_max_length": self.max_length,
            "text_pooling": pooling,
        }

    def prepare_image(self, image: Image.Image) -> Image.Image:
        return apply_steps(image.convert("L"), self._geometric)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.net.image_encoder(pixels)
        proj = getattr(self.net, "image_projection", None)
        return proj(feats) if proj is not None else feats

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return hub.tokenize_unpadded(self.tokenizer, texts, self.max_length)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "eos":
            idx = mask.sum(dim=-1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
        if self.pooling == "bos":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        ids = self.token_ids(list(texts))
        proj = getattr(self.net, "text_projection", None)
        bert = self.net.text_encoder.text_encoder
        chunks: dict[int, torch.Tensor] = {}
        for group, input_ids in hub.equal_length_batches(ids, self.batch_size, self.device):
            mask = torch.ones_like(input_ids)
            hidden = bert(input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            feats = self._pool(hidden, mask)
            z = (proj(feats) if proj is not None else feats).float()
            for j, i in enumerate(group):
                chunks[i] = z[j]
        out = torch.stack([chunks[i] for i in range(len(ids))]) if ids else torch.empty(0, 0)
        return F.normalize(out, dim=-1)


def _default_config(variant: str) -> dict[str, Any]:
    """The released models' ``config`` (for a bare state dict, e.g. a .safetensors copy)."""
    image = (
        {"source": "huggingface", "name": SWIN_HUB_ID, "model_type": "swin"}
        if variant == "swin"
        else {"source": "torchvision", "name": "resnet"}
    )
    return {
        "model": {
            "temperature": 0.07,
            "image_encoder": image,
            "text_encoder": {"source": "huggingface", "name": BERT_HUB_ID, "pooling": "eos"},
            "projection_head": {"name": "linear", "proj_dim": 512, "dropout": 0.1},
        },
        "tokenizer": {"source": "huggingface", "pretrained_model_name_or_path": BERT_HUB_ID},
        "base": {"text_max_length": TEXT_MAX_LENGTH},
    }


def _variant_of(model_cfg: Any, name: str) -> str:
    image = _get(model_cfg, "image_encoder", default={})
    if _get(image, "name") == "resnet":
        return "resnet50"
    if str(_get(image, "source", default="")).lower() == "huggingface" and _get(image, "model_type") == "swin":
        return "swin"
    raise ModelLoadError(
        f"{name}: unsupported image encoder in the checkpoint config: {dict(image) if isinstance(image, Mapping) else image!r} "
        "(supported: torchvision resnet, huggingface swin)"
    )


def _projection(cfg: Any, dim_in: int, state: Mapping[str, torch.Tensor], prefix: str, name: str) -> nn.Module:
    kind = str(_get(cfg, "name", default="linear")).lower()
    weight = state.get(f"{prefix}.projection.weight")
    out = int(weight.shape[0]) if weight is not None else int(_get(cfg, "proj_dim", default=512))
    if kind == "linear":
        return _LinearHead(dim_in, out)
    if kind == "mlp":
        return _MLPHead(dim_in, out)
    raise ModelLoadError(f"{name}: unsupported projection head {kind!r} (linear or mlp)")


def load_cxr_clip(
    *,
    device: torch.device | str = "cpu",
    checkpoint: str | None = None,
    variant: str | None = None,
    text_model_dir: str | None = None,
    vision_model_dir: str | None = None,
    text_max_length: int | None = None,
    cache_dir: str | None = None,
    trust_pickle: bool = False,
    batch_size: int = 32,
    name: str = "cxr-clip",
) -> CXRClip:
    """Factory for ``cxr-clip`` (see the module docstring for the options)."""
    hub.bool_option(name, "trust_pickle", trust_pickle)
    path = hub.require_file(name, checkpoint, "checkpoint", _HOW)
    if variant is not None and variant not in VARIANTS:
        raise ModelLoadError(f"{name}: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    obj = hub.load_checkpoint_file(path, model=name, trust_pickle=trust_pickle)
    if isinstance(obj, Mapping) and "model" in obj and "config" in obj:
        config, state = obj["config"], obj["model"]
        if not isinstance(state, Mapping):
            raise ModelLoadError(f"{name}: {path}: 'model' is not a state dict")
        state = hub.strip_prefix({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
        found = _variant_of(_get(config, "model"), name)
        if variant is not None and variant != found:
            raise ModelLoadError(f"{name}: variant={variant!r} but {path} holds a {found!r} model")
        variant = found
    else:
        state = hub.strip_prefix(hub.as_state_dict(obj, model=name, source=path))
        if variant is None:
            variant = "swin" if any(k.startswith("image_encoder.image_encoder.") for k in state) else "resnet50"
        config = _default_config(variant)
    model_cfg = _get(config, "model", default={})
    text_cfg = _get(model_cfg, "text_encoder", default={})
    pooling = str(_get(text_cfg, "pooling", default="eos"))
    if pooling not in ("eos", "bos", "mean"):
        raise ModelLoadError(f"{name}: unsupported text pooling {pooling!r} in the checkpoint config")
    text_hub_id = str(_get(text_cfg, "name", default=BERT_HUB_ID))
    tok_hub_id = str(_get(config, "tokenizer", "pretrained_model_name_or_path", default=text_hub_id))
    max_length = int(text_max_length or TEXT_MAX_LENGTH)

    word_embeddings = state.get("text_encoder.text_encoder.embeddings.word_embeddings.weight")
    if word_embeddings is None:
        raise ModelLoadError(f"{name}: {path} lacks text_encoder.text_encoder.embeddings.word_embeddings.weight")
    config_bert, tokenizer = hub.load_bert_pieces(
        model=name, text_model_dir=text_model_dir, hub_id=text_hub_id, tokenizer_hub_id=tok_hub_id, cache_dir=cache_dir,
        word_embedding_rows=int(word_embeddings.shape[0]), checkpoint=path,
    )
    text = _TextEncoder(hub.build_bert(config_bert, state, "text_encoder.text_encoder.", hidden_states=False))

    image: nn.Module
    if variant == "swin":
        from transformers import SwinConfig, SwinModel

        image_name = str(_get(model_cfg, "image_encoder", "name", default=SWIN_HUB_ID))
        if vision_model_dir:
            vcfg = hub.load_hf_config(
                model=name, local_dir=vision_model_dir, hub_id=image_name, option="vision_model_dir", config_class=SwinConfig
            )
            vision_source = str(vision_model_dir)
        elif image_name == SWIN_HUB_ID:
            vcfg = hub.swin_tiny_config()
            vision_source = f"built-in config of {SWIN_HUB_ID}"
        else:
            vcfg = hub.load_hf_config(
                model=name, local_dir=None, hub_id=image_name, option="vision_model_dir", cache_dir=cache_dir,
                config_class=SwinConfig,
            )
            vision_source = f"hf-hub:{image_name}"
        image = _SwinEncoder(SwinModel(vcfg, add_pooling_layer=True).eval())
        image_dim = int(vcfg.hidden_size)
    else:
        image = _ResNetEncoder(hub.build_resnet50(None))
        image_dim = 2048
        vision_source = "torchvision resnet50"

    head_cfg = _get(model_cfg, "projection_head")
    image_proj: nn.Module | None
    text_proj: nn.Module | None
    if head_cfg is not None:
        image_proj = _projection(head_cfg, image_dim, state, "image_projection", name)
        text_proj = _projection(head_cfg, int(config_bert.hidden_size), state, "text_projection", name)
    else:
        image_proj = text_proj = None
    net = CXRClipNet(image, text, image_proj, text_proj, _get(model_cfg, "temperature"))
    info = hub.load_matching(
        net, state, model=name, source=path, swin_prefixes=("image_encoder.image_encoder.",), allow_unexpected=True
    )
    card = {
        "source": str(path),
        "sha256": hub.sha256_file(path),
        "text_model": str(text_model_dir) if text_model_dir else f"hf-hub:{tok_hub_id}",
        "vision_model": vision_source,
        "ignored_keys": info["unexpected"],
        "projection_head": None if head_cfg is None else str(_get(head_cfg, "name", default="linear")),
    }
    return CXRClip(
        net, tokenizer, variant=variant, pooling=pooling, max_length=max_length, name=name, card=card, batch_size=batch_size
    ).to(device)
