"""``medclip``: MedCLIP (Wang et al., EMNLP 2022; RyanWangZf/MedCLIP, PyPI ``medclip`` 0.0.3).

The ``medclip`` package is not used (it ships no weights, fails to import on transformers >= 5 and
hard-codes ``.cuda()``); its architecture is rebuilt here from transformers and torchvision parts.

Weights: ``MedCLIPModel.from_pretrained()`` downloads a zip holding ``pytorch_model.bin`` (a state
dict): for the Swin ("vit") variant https://storage.googleapis.com/pytrial/medclip-vit-pretrained.zip,
for the ResNet50 variant https://storage.googleapis.com/pytrial/medclip-pretrained.zip (the URLs
are in ``medclip/medclip_vit_weight.txt`` / ``medclip_resnet_weight.txt`` upstream). Unzip it and
pass the file (or its directory) as ``checkpoint=``. Key layout::

    vision_model.model.*                 Swin-tiny (HF SwinModel, transformers 4.x names)
    vision_model.projection_head.weight  Linear(768 -> 512, no bias)          ("vit" variant)
    vision_model.model.*                 torchvision ResNet50, fc = Linear(2048 -> 512, no bias)
    text_model.model.*                   BERT (Bio_ClinicalBERT), with pooler
    text_model.projection_head.weight    Linear(768 -> 512, no bias)
    logit_scale

The stray ``text_model.model.embeddings.position_ids`` buffer that newer transformers reject
(MedCLIP issue #37) is dropped; Swin keys saved with transformers 4.x names are mapped to the
installed version's names. ``variant`` ("vit" or "resnet50") is read from the keys unless given.

Hub pieces: the BERT tokenizer and config of ``emilyalsentzer/Bio_ClinicalBERT`` come from
``text_model_dir=`` (a local directory with vocab.txt and config.json) or the HF cache; the Swin
config is swin-tiny-patch4-window7-224's, built in (``vision_model_dir=`` replaces it).

Images (``MedCLIPProcessor``): the grayscale image is pasted centred on a black square of side
max(224, w, h), resized to 224 x 224 (PIL bicubic), centre-cropped to 224 (a no-op), scaled to
0-1 and normalised on one channel with mean 0.5862785803043838, std 0.27950088968644304, then
repeated to 3 channels (as the vision model does with a 1-channel input). Geometry: "pad".

Text: Bio_ClinicalBERT tokenizer, truncated at 77 tokens (``model_max_length = 77``). The text
embedding is the mean over ALL token positions of the average of hidden states 1, 2 and -1,
then Linear(768 -> 512, no bias). That mean ignores the attention mask, so upstream (which pads
each batch to its longest text) gives a text a different embedding depending on the batch it is
padded with. A retrieval benchmark needs one embedding per text, so this adapter gives each
text the embedding it gets on its own, with no padding (texts of equal token length are batched
together, which is the same computation). Both sides are L2-normalised, as ``encode_text`` and
``encode_image`` do upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ..errors import ModelLoadError
from . import hub
from .base import AdapterBase

BERT_HUB_ID = "emilyalsentzer/Bio_ClinicalBERT"
SWIN_HUB_ID = "microsoft/swin-tiny-patch4-window7-224"
IMG_SIZE = 224
IMG_MEAN = 0.5862785803043838
IMG_STD = 0.27950088968644304
TEXT_MAX_LENGTH = 77
WEIGHTS_NAME = "pytorch_model.bin"
VARIANTS = ("vit", "resnet50")

_HOW = (
    "MedCLIP's weights are the pytorch_model.bin inside https://storage.googleapis.com/pytrial/medclip-vit-pretrained.zip "
    "(variant 'vit') or https://storage.googleapis.com/pytrial/medclip-pretrained.zip (variant 'resnet50'); "
    "pass the unzipped file or its directory."
)


class _Tower(nn.Module):
    """``<tower>.model`` plus an optional ``<tower>.projection_head``, MedCLIP's module names."""

    projection_head: nn.Linear  # set only when the tower has one (MedCLIP's ResNet50 vision tower has none)

    def __init__(self, model: nn.Module, projection_head: nn.Linear | None):
        super().__init__()
        self.model = model
        if projection_head is not None:
            self.projection_head = projection_head


class MedCLIPNet(nn.Module):
    def __init__(self, vision: _Tower, text: _Tower):
        super().__init__()
        self.vision_model = vision
        self.text_model = text
        self.logit_scale = nn.Parameter(torch.log(torch.tensor(1 / 0.07)))


def _checkpoint_path(checkpoint: str | None, name: str) -> Path:
    if checkpoint is not None and Path(checkpoint).expanduser().is_dir():
        return hub.require_file(name, Path(checkpoint).expanduser() / WEIGHTS_NAME, "checkpoint", _HOW)
    return hub.require_file(name, checkpoint, "checkpoint", _HOW)


def _detect_variant(state: dict[str, torch.Tensor], name: str, source: Path) -> str:
    if "vision_model.projection_head.weight" in state:
        return "vit"
    if "vision_model.model.fc.weight" in state:
        return "resnet50"
    raise ModelLoadError(
        f"{name}: cannot tell the MedCLIP variant of {source} (neither vision_model.projection_head.weight nor "
        f"vision_model.model.fc.weight is present); is it a MedCLIP pytorch_model.bin?"
    )


class MedCLIP(AdapterBase):
    geometry = "pad"

    def __init__(self, net: MedCLIPNet, tokenizer: Any, *, variant: str, name: str, card: dict[str, Any], batch_size: int):
        super().__init__(name=name, batch_size=batch_size)
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.variant = variant
        self.input_size = (IMG_SIZE, IMG_SIZE)
        self.max_length = TEXT_MAX_LENGTH
        self._card = {
            **card,
            "adapter": "medclip",
            "variant": variant,
            "embedding_dim": int(net.text_model.projection_head.weight.shape[0]),
            "input_size": list(self.input_size),
            "geometry": self.geometry,
            "preprocess": "pad to a black square of side max(224, w, h), resize 224 bicubic, centre-crop 224",
            "normalisation": {"mean": IMG_MEAN, "std": IMG_STD, "scale": "0-1", "channels": "1, repeated to 3"},
            "text_max_length": self.max_length,
            "text_pooling": "mean over all tokens of mean(hidden_states[1], [2], [-1]); each text encoded alone",
        }

    def prepare_image(self, image: Image.Image) -> Image.Image:
        image = image.convert("L")
        w, h = image.size
        side = max(IMG_SIZE, w, h)
        canvas = Image.new("L", (side, side), 0)
        canvas.paste(image, (int((side - w) / 2), int((side - h) / 2)))
        resized = canvas.resize((IMG_SIZE, IMG_SIZE), Image.Resampling.BICUBIC)
        return resized  # the centre crop to 224 of a 224 x 224 image changes nothing

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        g = hub.gray_channel(x.to(self.device, torch.float32))
        return ((g - IMG_MEAN) / IMG_STD).repeat(1, 3, 1, 1)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        vision = self.net.vision_model
        if self.variant == "vit":
            return vision.projection_head(vision.model(pixel_values=pixels).pooler_output)
        return vision.model(pixels)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return hub.tokenize_unpadded(self.tokenizer, texts, self.max_length)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        ids = self.token_ids(list(texts))
        text = self.net.text_model
        out = torch.empty(len(ids), text.projection_head.weight.shape[0], device=self.device)
        for group, input_ids in hub.equal_length_batches(ids, self.batch_size, self.device):
            res = text.model(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True
            )
            hs = res.hidden_states
            stacked = torch.stack([hs[1], hs[2], hs[-1]])  # layers x batch x tokens x dim
            pooled = stacked.permute(1, 0, 2, 3).mean(2).mean(1)
            out[group] = text.projection_head(pooled).float()
        return F.normalize(out, dim=-1)


def load_medclip(
    *,
    device: torch.device | str = "cpu",
    checkpoint: str | None = None,
    variant: str | None = None,
    text_model_dir: str | None = None,
    text_model: str = BERT_HUB_ID,
    vision_model_dir: str | None = None,
    cache_dir: str | None = None,
    trust_pickle: bool = False,
    batch_size: int = 32,
    name: str = "medclip",
) -> MedCLIP:
    """Factory for ``medclip`` (see the module docstring for the options)."""
    hub.bool_option(name, "trust_pickle", trust_pickle)
    path = _checkpoint_path(checkpoint, name)
    obj = hub.load_checkpoint_file(path, model=name, trust_pickle=trust_pickle)
    state = hub.strip_prefix(hub.as_state_dict(obj, model=name, source=path))
    state.pop("text_model.model.embeddings.position_ids", None)  # MedCLIP issue #37
    found = _detect_variant(state, name, path)
    if variant is not None and variant not in VARIANTS:
        raise ModelLoadError(f"{name}: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant is not None and variant != found:
        raise ModelLoadError(f"{name}: variant={variant!r} but {path} holds the {found!r} variant")
    variant = found

    # Text tower: Bio_ClinicalBERT config + tokenizer (local dir or HF cache), weights from the file.
    emb = state.get("text_model.model.embeddings.word_embeddings.weight")
    proj = state.get("text_model.projection_head.weight")
    if emb is None or proj is None:
        raise ModelLoadError(f"{name}: {path} lacks the text tower (text_model.model.* / text_model.projection_head.weight)")
    config, tokenizer = hub.load_bert_pieces(
        model=name, text_model_dir=text_model_dir, hub_id=text_model, cache_dir=cache_dir,
        word_embedding_rows=int(emb.shape[0]), checkpoint=path,
    )
    tokenizer.model_max_length = TEXT_MAX_LENGTH
    bert = hub.build_bert(config, state, "text_model.model.", hidden_states=True)
    text = _Tower(bert, nn.Linear(proj.shape[1], proj.shape[0], bias=False))

    # Vision tower.
    if variant == "vit":
        from transformers import SwinConfig, SwinModel

        if vision_model_dir:
            vcfg = hub.load_hf_config(
                model=name, local_dir=vision_model_dir, hub_id=SWIN_HUB_ID, option="vision_model_dir", config_class=SwinConfig
            )
        else:
            vcfg = hub.swin_tiny_config()
        vproj = state["vision_model.projection_head.weight"]
        vision = _Tower(SwinModel(vcfg, add_pooling_layer=True).eval(), nn.Linear(vproj.shape[1], vproj.shape[0], bias=False))
        vision_source = str(vision_model_dir) if vision_model_dir else f"built-in config of {SWIN_HUB_ID}"
    else:
        fc = state["vision_model.model.fc.weight"]
        vision = _Tower(hub.build_resnet50(int(fc.shape[0])), None)
        vision_source = "torchvision resnet50"

    net = MedCLIPNet(vision, text)
    info = hub.load_matching(net, state, model=name, source=path, swin_prefixes=("vision_model.model.",))
    text_source = str(text_model_dir) if text_model_dir else f"hf-hub:{text_model}"
    card = {
        "source": str(path),
        "sha256": hub.sha256_file(path),
        "text_model": text_source,
        "vision_model": vision_source,
        "ignored_keys": info["unexpected"],
    }
    return MedCLIP(net, tokenizer, variant=variant, name=name, card=card, batch_size=batch_size).to(device)
