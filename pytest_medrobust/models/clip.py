"""``clip``: general-domain CLIP, through open_clip or a transformers ``CLIPModel`` directory.

open_clip (default)
    ``model_name`` (an open_clip architecture, default ``ViT-B-32``) and ``pretrained``: an
    open_clip pretrained tag (default ``openai``, which open_clip fetches from the HF hub as
    ``timm/vit_base_patch32_clip_224.openai`` and then reads from the HF cache), a local
    ``.pt``/``.bin``/``.safetensors`` file, or ``"none"`` for random weights. The model and its
    preprocessing come from ``open_clip.create_model_and_transforms`` and the tokenizer from
    ``open_clip.get_tokenizer``. OpenAI's weights were trained with QuickGELU: for a tag the
    activation follows the tag's own setting (``ViT-B-32`` + ``openai`` gets QuickGELU, which
    plain ``create_model_and_transforms`` would only warn about). For a local file without
    ``quick_gelu``, the file's layout decides: a bare state dict in OpenAI's CLIP key layout
    (what OpenAI's ``clip`` package, its fine-tunes such as CXR-RePaiR, and open_clip's copy of
    the OpenAI weights save) gets QuickGELU; an open_clip training checkpoint (``state_dict``
    wrapper, ``module.`` keys) gets the model config's activation. GELU-trained weights saved
    as a bare state dict (open_clip's LAION/DataComp releases) share OpenAI's key layout and
    need ``quick_gelu=False``. The card records the activation and what decided it.

transformers (``hf_dir=``)
    A directory written by ``CLIPModel.save_pretrained`` holding the model, its tokenizer and its
    image-processor config (e.g. a local copy of ``openai/clip-vit-base-patch32``). The image
    geometry is the processor's own (PIL backend where available); the embeddings are
    ``get_image_features``/``get_text_features`` (``pooler_output`` on transformers 5).

Image path: the harness gives the grayscale X-ray; ``prepare_image`` applies the model's own
geometric steps (for OpenAI CLIP: resize the shorter side to 224, bicubic, then centre-crop 224),
so the pixels match ``preprocess(image)`` exactly; ``encode_images`` then normalises with the
model's mean/std (CLIP: mean 0.48145466/0.4578275/0.40821073, std
0.26862954/0.26130258/0.27577711 on the 0-1 scale). Text: CLIP BPE, context 77, a longer text
is truncated and its last token forced to end-of-text (open_clip's tokenizer; the HF tokenizer
truncates before adding end-of-text, the same ids). Embeddings are L2-normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn

from ..errors import ModelLoadError
from . import hub
from .base import MeanStdAdapter, apply_steps

if TYPE_CHECKING:
    from open_clip.model import CLIP
    from transformers import CLIPModel

_NO_WEIGHTS = {"", "none", "random"}
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _is_geometric(t: Any) -> bool:
    """Steps of an open_clip/torchvision preprocess that act on the PIL image's geometry."""
    name = type(t).__name__
    return name in {"Resize", "CenterCrop", "ResizeKeepRatio", "CenterCropOrPad", "RandomResizedCrop"}


def _bind_prepare(adapter: OpenClipAdapter | HFClipAdapter, signature: str) -> None:
    """Expose ``adapter.prepare_image`` as a function whose ``__qualname__`` carries the geometry.

    The harness caches decoded pixels per (input size, geometry, ``prepare_image.__qualname__``);
    two CLIP adapters with different resize/crop steps must not share that cache entry.
    """

    def prepare_image(image: Image.Image) -> Image.Image:
        return adapter._prepare(image)

    prepare_image.__qualname__ = f"{type(adapter).__qualname__}.prepare_image[{signature}]"
    prepare_image.__doc__ = "The model's own resize/crop steps on the grayscale image (see the module docstring)."
    object.__setattr__(adapter, "prepare_image", prepare_image)


class OpenClipAdapter(MeanStdAdapter):
    """An open_clip CLIP model behind the medrobust model contract."""

    model: CLIP  # declared: nn.Module's __getattr__ would type it Tensor | Module

    def __init__(
        self,
        model: nn.Module,
        preprocess: Any,
        tokenizer: Any,
        *,
        name: str,
        card: dict[str, Any],
        batch_size: int = 64,
    ):
        super().__init__(name=name, batch_size=batch_size)
        self.model = model.eval()
        self.tokenizer = tokenizer
        steps = list(getattr(preprocess, "transforms", [preprocess]))
        self._geometric: list[Any] = []
        normalize = None
        for t in steps:
            cls = type(t).__name__
            if cls in ("ToTensor", "MaybeToTensor"):
                continue
            if cls == "Normalize":
                normalize = t
            elif _is_geometric(t):
                if normalize is not None:
                    raise ModelLoadError(f"{name}: unsupported open_clip preprocess order: {preprocess}")
                self._geometric.append(t)
            elif "Convert" in cls or "convert" in getattr(t, "__name__", ""):
                continue  # RGB conversion: the harness replicates the gray channel
            else:
                raise ModelLoadError(f"{name}: unsupported step {cls} in open_clip preprocess {preprocess}")
        if normalize is None:
            raise ModelLoadError(f"{name}: open_clip preprocess has no Normalize step: {preprocess}")
        size = getattr(model.visual, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.input_size = (int(h), int(w))
        crop = any(type(t).__name__ in ("CenterCrop", "CenterCropOrPad") for t in self._geometric)
        self.geometry = "crop" if crop else "pad"
        self._set_normalisation(normalize.mean, normalize.std)
        self._card = {
            **card,
            "embedding_dim": getattr(model.visual, "output_dim", None),
            "input_size": list(self.input_size),
            "geometry": self.geometry,
            "preprocess": [repr(t) for t in self._geometric],
            "normalisation": {"mean": list(normalize.mean), "std": list(normalize.std), "scale": "0-1"},
            "text_max_length": int(getattr(tokenizer, "context_length", 77) or 77),
            "text_truncation": "truncate to the context length, last token forced to end-of-text",
        }

        _bind_prepare(self, "|".join(repr(t) for t in self._geometric))

    def _prepare(self, image: Image.Image) -> Image.Image:
        return apply_steps(image, self._geometric)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self._encode_in_batches(texts, self._text_features, self._card["embedding_dim"] or 0)


class HFClipAdapter(MeanStdAdapter):
    """A transformers ``CLIPModel`` directory behind the medrobust model contract."""

    model: CLIPModel  # declared: nn.Module's __getattr__ would type it Tensor | Module

    def __init__(
        self, model: CLIPModel, tokenizer: Any, processor: Any, *, name: str, card: dict[str, Any], batch_size: int = 64
    ):
        super().__init__(name=name, batch_size=batch_size)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = processor
        crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        if crop:
            h, w = int(crop["height"]), int(crop["width"])
        else:
            size = processor.size
            h, w = (int(size["height"]), int(size["width"])) if "height" in size else (int(size["shortest_edge"]),) * 2
        self.input_size = (h, w)
        self.geometry = "crop" if crop else "pad"
        scale = float(getattr(processor, "rescale_factor", 1 / 255))
        mean = [float(m) for m in processor.image_mean]
        std = [float(s) for s in processor.image_std]
        if abs(scale * 255.0 - 1.0) > 1e-9:
            raise ModelLoadError(f"{name}: image processor rescale_factor {scale} is not 1/255; unsupported")
        self._set_normalisation(mean, std)
        from transformers import CLIPTextConfig

        text_cfg, projection_dim = model.config.text_config, model.config.projection_dim
        if not isinstance(text_cfg, CLIPTextConfig) or projection_dim is None:  # CLIPConfig fills both in __init__
            raise ModelLoadError(f"{name}: the CLIPModel's config has no text_config or projection_dim")
        self.max_length = int(min(getattr(tokenizer, "model_max_length", 77) or 77, text_cfg.max_position_embeddings))
        self._card = {
            **card,
            "embedding_dim": int(projection_dim),
            "input_size": list(self.input_size),
            "geometry": self.geometry,
            "image_processor": type(processor).__name__,
            "normalisation": {"mean": mean, "std": std, "scale": "0-1"},
            "text_max_length": self.max_length,
        }

        _bind_prepare(
            self,
            f"{type(processor).__name__}:size={processor.size}:crop={crop}:resample={getattr(processor, 'resample', None)}",
        )

    def _prepare(self, image: Image.Image) -> Image.Image:
        out = self.processor(images=image.convert("RGB"), do_rescale=False, do_normalize=False, return_tensors="pt")
        px = out["pixel_values"][0, 0]
        arr = px.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return Image.fromarray(arr, mode="L")

    @staticmethod
    def _features(out: Any) -> torch.Tensor:
        if isinstance(out, torch.Tensor):
            return out
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            raise ModelLoadError("CLIPModel returned no projected features (pooler_output)")
        return pooled

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._features(self.model.get_image_features(pixel_values=pixels))

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tok = tok.to(self.device)
        feats = self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        return self._features(feats)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self._encode_in_batches(texts, self._text_features, self._card["embedding_dim"])


def _load_open_clip(
    *,
    device: torch.device | str,
    model_name: str,
    pretrained: str | None,
    quick_gelu: bool | None,
    cache_dir: str | None,
    trust_pickle: bool,
    name: str,
    batch_size: int,
) -> OpenClipAdapter:
    import open_clip

    if open_clip.get_model_config(model_name) is None:
        raise ModelLoadError(
            f"{name}: unknown open_clip model_name {model_name!r}; e.g. ViT-B-32, ViT-B-16, RN50 "
            f"(see open_clip.list_models())"
        )
    tag = None if pretrained is None or str(pretrained).strip().lower() in _NO_WEIGHTS else str(pretrained)
    weights_file: Path | None = None
    tag_cfg: dict[str, Any] = {}
    if tag is not None:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
        if not tag_cfg:
            p = Path(tag).expanduser()
            if p.is_file():
                weights_file = p
            elif p.suffix in _WEIGHT_SUFFIXES or "/" in tag or "\\" in tag:
                raise ModelLoadError(f"{name}: pretrained={tag!r}: no such file")
            else:
                tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
                raise ModelLoadError(
                    f"{name}: pretrained={tag!r} is neither an open_clip tag for {model_name} ({tags}) nor a file"
                )
    model_quick_gelu = bool(open_clip.get_model_config(model_name).get("quick_gelu", False))
    state: dict[str, torch.Tensor] | None = None
    layout = None
    if weights_file is not None:
        state, layout = _local_state(weights_file, name=name, trust_pickle=trust_pickle)
    if quick_gelu is not None:
        activation_from = "the quick_gelu option"
    elif model_quick_gelu:
        quick_gelu, activation_from = True, f"model_name {model_name}"
    elif tag_cfg:
        quick_gelu, activation_from = bool(tag_cfg.get("quick_gelu", False)), f"open_clip tag {tag}"
    elif layout == OPENAI_LAYOUT:
        # OpenAI trained CLIP with QuickGELU; its key layout is what its weights (and fine-tunes
        # of them) are saved in. Running them with GELU moves embeddings by ~1e-3, silently.
        quick_gelu, activation_from = True, "the file's OpenAI state-dict layout"
    else:
        quick_gelu, activation_from = False, f"model_name {model_name}" + (f" ({layout})" if layout else "")
    quick_gelu = bool(quick_gelu)
    if model_quick_gelu and not quick_gelu:
        raise ModelLoadError(f"{name}: model_name {model_name!r} always uses QuickGELU; drop quick_gelu=False")

    kwargs: dict[str, Any] = dict(force_quick_gelu=quick_gelu, cache_dir=cache_dir, device="cpu", precision="fp32")
    if tag_cfg:
        try:
            weights_file = Path(open_clip.pretrained.download_pretrained(tag_cfg, cache_dir=cache_dir))
        except Exception as exc:
            where = tag_cfg.get("hf_hub") or tag_cfg.get("url") or "?"
            offline = " (HF_HUB_OFFLINE is set)" if hub.hub_offline() else ""
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{name}: cannot fetch open_clip weights {model_name}/{tag} ({where}){offline}: {reason}. "
                f"Download them once where the hub is "
                f"reachable (they are then read from the HF cache), or pass pretrained=/path/to/weights"
                f"(.bin|.pt|.safetensors) with quick_gelu=True for OpenAI weights."
            ) from exc
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=tag, **kwargs)
        source = f"open_clip:{model_name}/{tag}"
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, **kwargs)
        source = "random-init" if weights_file is None else str(weights_file)
        if weights_file is not None and state is not None:
            _load_state(open_clip, model, state, name=name, path=weights_file)
    tokenizer = open_clip.get_tokenizer(model_name)
    card = {
        "adapter": "clip/open_clip",
        "variant": model_name,
        "source": source,
        "weights_file": None if weights_file is None else str(weights_file),
        "sha256": None if weights_file is None else hub.sha256_file(weights_file),
        "quick_gelu": quick_gelu,
        "activation": f"{'QuickGELU' if quick_gelu else 'GELU'} (from {activation_from})",
        "open_clip_version": getattr(open_clip, "__version__", "?"),
    }
    adapter = OpenClipAdapter(model, preprocess, tokenizer, name=name, card=card, batch_size=batch_size)
    return adapter.to(device)


OPENAI_LAYOUT = "OpenAI state-dict layout"
OPEN_CLIP_CHECKPOINT = "open_clip training checkpoint"
# Keys OpenAI's TorchScript model carries besides its weights (open_clip drops them too).
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _is_openai_layout(keys: set[str]) -> bool:
    """Top-level text tower and ``visual.*`` image tower under OpenAI CLIP's names."""
    text = {"token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight"}
    return (
        text <= keys
        and any(k.startswith("transformer.resblocks.") for k in keys)
        and any(k.startswith("visual.") for k in keys)
    )


def _local_state(path: Path, *, name: str, trust_pickle: bool) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of a local weights file, read safely, and its layout (which tells how the
    weights were trained when the user does not say)."""
    obj = hub.load_checkpoint_file(path, model=name, trust_pickle=trust_pickle)
    wrapped = isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)
    state = obj["state_dict"] if wrapped else obj
    if not isinstance(state, dict) or not state:
        raise ModelLoadError(f"{name}: {path} does not hold a CLIP state dict (a mapping of parameter names to tensors)")
    prefixed = all(str(k).startswith("module.") for k in state)
    state = hub.strip_prefix(state)
    for key in _OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if wrapped or prefixed:
        layout: str | None = OPEN_CLIP_CHECKPOINT
    elif _is_openai_layout(set(tensors)):
        layout = OPENAI_LAYOUT
    else:
        layout = None
    return tensors, layout


def _load_state(open_clip: Any, model: nn.Module, state: dict[str, torch.Tensor], *, name: str, path: Path) -> None:
    """Load ``state`` strictly, after the adjustments ``open_clip.load_checkpoint`` makes
    (custom-text key names, scalar logit_scale, position-embedding resizing)."""
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    state = dict(state)
    try:
        from open_clip.convert import convert_state_dict

        state = convert_state_dict(model, state)
    except ImportError:  # older open_clip: no third-party layouts to convert
        pass
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    scale = getattr(model, "logit_scale", None)
    if "logit_scale" in state and scale is not None and scale.ndim != state["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(scale.shape)
    bias = getattr(model, "logit_bias", None)
    if "logit_bias" not in state and isinstance(bias, torch.Tensor):
        state["logit_bias"] = torch.zeros_like(bias)
    try:
        resize_pos_embed(state, model)
        resize_text_pos_embed(state, model)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:  # missing/unexpected keys, shape mismatch
        raise ModelLoadError(f"{name}: {path} does not fit open_clip {type(model).__name__}: {exc}") from exc


def _load_hf_dir(
    *, device: torch.device | str, hf_dir: str, name: str, batch_size: int
) -> HFClipAdapter:
    from transformers import AutoTokenizer, CLIPModel

    d = Path(hf_dir).expanduser()
    if not (d / "config.json").is_file():
        raise ModelLoadError(
            f"{name}: hf_dir={hf_dir!r} is not a transformers model directory (no config.json); write one with "
            f"CLIPModel.save_pretrained(...) plus the tokenizer and image processor (e.g. a local copy of "
            f"openai/clip-vit-base-patch32)"
        )
    try:
        model = CLIPModel.from_pretrained(str(d), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{name}: cannot load CLIPModel/tokenizer from hf_dir={hf_dir!r}: {exc}") from exc
    processor = _image_processor(d, name)
    weights = next((d / f for f in ("model.safetensors", "pytorch_model.bin") if (d / f).is_file()), None)
    card = {
        "adapter": "clip/transformers",
        "variant": getattr(model.config.vision_config, "_name_or_path", "") or "CLIPModel",
        "source": str(d),
        "weights_file": None if weights is None else str(weights),
        "sha256": None if weights is None else hub.sha256_file(weights),
    }
    return HFClipAdapter(model, tokenizer, processor, name=name, card=card, batch_size=batch_size).to(device)


def _image_processor(d: Path, name: str) -> Any:
    """The directory's CLIP image processor on the PIL backend (what OpenAI CLIP used), when the
    installed transformers has one; else its default."""
    from transformers.image_processing_utils import BaseImageProcessor

    proc: type[BaseImageProcessor]
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        proc = CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor

        proc = CLIPImageProcessor
    try:
        return proc.from_pretrained(str(d), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{name}: cannot load the image processor config from hf_dir={str(d)!r}: {exc}") from exc


def load_clip(
    *,
    device: torch.device | str = "cpu",
    model_name: str = "ViT-B-32",
    pretrained: str | None = "openai",
    hf_dir: str | None = None,
    quick_gelu: bool | None = None,
    cache_dir: str | None = None,
    trust_pickle: bool = False,
    batch_size: int = 64,
    name: str = "clip",
) -> nn.Module:
    """Factory for ``clip`` (see the module docstring for the options)."""
    trust_pickle = bool(hub.bool_option(name, "trust_pickle", trust_pickle))
    quick_gelu = hub.bool_option(name, "quick_gelu", quick_gelu, allow_none=True)
    if hf_dir:
        return _load_hf_dir(device=device, hf_dir=str(hf_dir), name=name, batch_size=batch_size)
    return _load_open_clip(
        device=device,
        model_name=model_name,
        pretrained=pretrained,
        quick_gelu=quick_gelu,
        cache_dir=cache_dir,
        trust_pickle=trust_pickle,
        name=name,
        batch_size=batch_size,
    )
