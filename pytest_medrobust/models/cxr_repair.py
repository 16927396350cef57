"""``cxr-repair``: the CLIP model of CXR-RePaiR (Endo et al., ML4H 2021; rajpurkarlab/CXR-RePaiR).

Weights: ``clip-imp-pretrained_128_6_after_4.pt``, a plain state dict in the OpenAI CLIP key
layout (``visual.conv1.weight``, ``visual.transformer.resblocks.0.attn.in_proj_weight``,
``token_embedding.weight``, ``positional_embedding``, ``text_projection``, ``logit_scale``, ...),
fine-tuned from OpenAI's ViT-B/32 on MIMIC-CXR. The authors publish it through the link in their
README (a Stanford Box folder); pass the downloaded file as ``checkpoint=``. It loads with
``torch.load(weights_only=True)``; a ``.safetensors`` copy works too.

Architecture: upstream calls ``clip.load("ViT-B/32")`` and then ``load_state_dict`` of the file.
Here the same architecture is built by open_clip's ``CLIP`` class (OpenAI parameter names,
QuickGELU), with its sizes read from the state dict, and the file is loaded strictly. Upstream ran
the CLIP layers in float16 on GPU (``clip.load`` converts them) and in float32 on CPU; this adapter
computes in float32.

Images (the MIMIC-CXR pipeline of the upstream ``run_test.py``/``MIMICImageDataset``):

1. ``prepare_image``: scale the grayscale image so its longer side is 320 (sizes truncated to
   integers, PIL ``ANTIALIAS``/Lanczos, as the upstream h5 preprocessing), paste it centred on a
   black 320 x 320 canvas. ``input_size`` is therefore (320, 320): occlusion is applied at this
   stage, before the model's own resize.
2. ``encode_images``: back to the 0-255 scale, gray channel repeated to 3, normalised with
   mean 101.48761 and std 83.43944 (so a black pixel, e.g. a black occluder, becomes -1.2163),
   then resized to the model's input resolution (224) with bicubic interpolation on the tensor
   (``F.interpolate``, align_corners=False, no antialias: torchvision 0.9's tensor ``Resize``).

``pipeline="chexpert"`` selects the CheXpert branch of ``run_test.py`` instead: resize straight to
224 x 224 (bicubic, aspect not kept), mean 129.4185, std 73.3378, no further resize.

Text: CLIP BPE (open_clip's ``SimpleTokenizer``, the same vocabulary and ids as OpenAI's), context
77; a longer text is cut to 77 tokens with the last one forced to end-of-text, as in RePaiR's
modified ``clip.tokenize``. The text the harness passes is used as given: upstream used the
IMPRESSION section of each report, which is a choice of the dataset (its report-section
option), not of this adapter. Embeddings are L2-normalised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.nn import functional as F

from ..errors import ModelLoadError
from . import hub
from .base import AdapterBase

if TYPE_CHECKING:
    from open_clip.model import CLIP

MIMIC_MEAN, MIMIC_STD = 101.48761, 83.43944
CHEXPERT_MEAN, CHEXPERT_STD = 129.4185, 73.3378
CANVAS = 320

_HOW = (
    "CXR-RePaiR's CLIP weights are the file clip-imp-pretrained_128_6_after_4.pt linked from "
    "https://github.com/rajpurkarlab/CXR-RePaiR (section 'Pre-trained CLIP Model')."
)


def build_openai_layout_clip(state: dict[str, torch.Tensor], *, model: str, source: Any) -> CLIP:
    """An open_clip ``CLIP`` (QuickGELU, float32) sized from an OpenAI-layout ViT state dict."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    need = ["visual.conv1.weight", "visual.positional_embedding", "visual.proj", "text_projection",
            "positional_embedding", "token_embedding.weight", "ln_final.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise ModelLoadError(
            f"{model}: {source} is not an OpenAI-layout CLIP ViT state dict (missing {', '.join(missing)})"
        )

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = int(state["ln_final.weight"].shape[0])
    vision = CLIPVisionCfg(
        layers=count("visual.transformer.resblocks."), width=width, head_width=64, patch_size=patch,
        image_size=patch * grid,
    )
    text = CLIPTextCfg(
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        width=text_width,
        heads=max(1, text_width // 64),
        layers=count("transformer.resblocks."),
    )
    net = CLIP(int(state["text_projection"].shape[1]), vision_cfg=vision, text_cfg=text, quick_gelu=True)
    hub.load_matching(net, state, model=model, source=source)
    return net.float().eval()


class CXRRePaiR(AdapterBase):
    net: CLIP  # declared: nn.Module's __getattr__ would type it Tensor | Module

    def __init__(self, net: CLIP, tokenizer: Any, *, pipeline: str, name: str, card: dict[str, Any], batch_size: int):
        super().__init__(name=name, batch_size=batch_size)
        self.net = net
        self.tokenizer = tokenizer
        self.pipeline = pipeline
        size = net.visual.image_size
        self.model_resolution = tuple(size) if isinstance(size, tuple) else (int(size), int(size))
        if pipeline == "mimic":
            self.mean_255, self.std_255 = MIMIC_MEAN, MIMIC_STD
            self.input_size = (CANVAS, CANVAS)
        else:
            self.mean_255, self.std_255 = CHEXPERT_MEAN, CHEXPERT_STD
            self.input_size = self.model_resolution
        self.geometry = "pad"
        self.context_length = int(net.context_length)
        self._card = {
            **card,
            "adapter": "cxr-repair",
            "variant": f"ViT (OpenAI layout), pipeline={pipeline}",
            "embedding_dim": int(net.text_projection.shape[1]),
            "input_size": list(self.input_size),
            "model_resolution": list(self.model_resolution),
            "geometry": self.geometry,
            "preprocess": (
                "longer side to 320 (Lanczos), centred on black 320x320; normalise; bicubic tensor resize to "
                f"{self.model_resolution[0]}"
                if pipeline == "mimic"
                else "resize to 224x224 bicubic (aspect not kept); normalise"
            ),
            "normalisation": {"mean": self.mean_255, "std": self.std_255, "scale": "0-255", "channels": "gray x3"},
            "text_max_length": self.context_length,
            "text_truncation": "truncate to 77 tokens, last token forced to end-of-text",
            "text_section": "as given by the dataset (upstream: IMPRESSION)",
        }

    def prepare_image(self, image: Image.Image) -> Image.Image:
        image = image.convert("L")
        if self.pipeline == "chexpert":
            h, w = self.input_size
            return image.resize((w, h), Image.Resampling.BICUBIC)
        ratio = float(CANVAS) / max(image.size)
        new_size = (int(image.size[0] * ratio), int(image.size[1] * ratio))
        resized = image.resize(new_size, Image.Resampling.LANCZOS)
        canvas = Image.new("L", (CANVAS, CANVAS))
        canvas.paste(resized, ((CANVAS - new_size[0]) // 2, (CANVAS - new_size[1]) // 2))
        return canvas

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] B x C x H x W -> the tensor the CLIP image tower sees (0-255 scale, then resized)."""
        x = (self._rgb(x) * 255.0 - self.mean_255) / self.std_255
        if tuple(x.shape[-2:]) != self.model_resolution:
            x = F.interpolate(x, size=self.model_resolution, mode="bicubic", align_corners=False)
        return x

    normalise = pixel_values  # the adapter's earlier public name

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.encode_image(pixels)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), context_length=self.context_length)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        return self.net.encode_text(self.tokenize(texts).to(self.device))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self._encode_in_batches(texts, self._text_features, int(self.net.text_projection.shape[1]))


def load_cxr_repair(
    *,
    device: torch.device | str = "cpu",
    checkpoint: str | None = None,
    pipeline: str = "mimic",
    trust_pickle: bool = False,
    batch_size: int = 64,
    name: str = "cxr-repair",
) -> CXRRePaiR:
    """Factory for ``cxr-repair``: ``checkpoint=`` the RePaiR ``.pt`` (or ``.safetensors``) file."""
    hub.bool_option(name, "trust_pickle", trust_pickle)
    from open_clip.tokenizer import SimpleTokenizer

    if pipeline not in ("mimic", "chexpert"):
        raise ModelLoadError(f"{name}: pipeline must be 'mimic' or 'chexpert', got {pipeline!r}")
    path = hub.require_file(name, checkpoint, "checkpoint", _HOW)
    obj = hub.load_checkpoint_file(path, model=name, trust_pickle=trust_pickle)
    state = hub.strip_prefix(hub.as_state_dict(obj, model=name, source=path))
    for key in ("input_resolution", "context_length", "vocab_size"):  # present in OpenAI's JIT exports
        state.pop(key, None)
    net = build_openai_layout_clip(state, model=name, source=path)
    tokenizer = SimpleTokenizer(context_length=int(net.context_length))
    card = {"source": str(path), "sha256": hub.sha256_file(path)}
    return CXRRePaiR(net, tokenizer, pipeline=pipeline, name=name, card=card, batch_size=batch_size).to(device)
