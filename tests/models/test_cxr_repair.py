"""cxr-repair: an OpenAI-layout CLIP state dict, loaded and run as CXR-RePaiR runs it.

The reference side is built independently of the adapter: the model by open_clip's
``build_model_from_openai_state_dict`` (what ``clip.load`` + ``load_state_dict`` amounts to; the
weights are float16-exact so its float16 conversion is lossless), the image pipeline from the
upstream steps (PIL Lanczos resize of the longer side to 320 + black padding, then torchvision
``Normalize`` and tensor ``Resize(224, bicubic)`` without antialias, as torchvision 0.9 did), the
tokens from RePaiR's ``tokenize`` rule (SOT + BPE + EOT; over-long: cut to 77, last = EOT).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torch.nn import functional as F

from pytest_medrobust.errors import ModelLoadError
from pytest_medrobust.models import ModelSpec, load_model
from pytest_medrobust.models.cxr_repair import load_cxr_repair

FACTORY = "pytest_medrobust.models.cxr_repair:load_cxr_repair"


def tiny_openai_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    net = CLIP(
        32,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, patch_size=32, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=2),
        quick_gelu=True,
    )
    # float16-exact values: upstream's clip.load runs build_model, which converts to float16
    return {k: v.detach().half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    state = tiny_openai_state()
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in state
    assert "token_embedding.weight" in state and "logit_scale" in state
    path = tmp_path_factory.mktemp("repair") / "clip-imp-pretrained_128_6_after_4.pt"
    torch.save(state, path)
    return path, state


def reference_model(state):
    from open_clip.model import build_model_from_openai_state_dict

    return build_model_from_openai_state_dict(dict(state)).float().eval()


def upstream_pixels(image: Image.Image, resolution: int = 224) -> torch.Tensor:
    """data_preprocessing.preprocess + MIMICImageDataset, written from the upstream steps."""
    desired = 320
    ratio = float(desired) / max(image.size)
    new_size = tuple(int(x * ratio) for x in image.size)
    small = image.resize(new_size, Image.LANCZOS)
    canvas = Image.new("L", (desired, desired))
    canvas.paste(small, ((desired - new_size[0]) // 2, (desired - new_size[1]) // 2))
    arr = np.asarray(canvas).astype(np.float32)  # the h5 stores float32
    img = torch.from_numpy(np.repeat(arr[None], 3, axis=0))
    img = T.Normalize((101.48761,) * 3, (83.43944,) * 3)(img)
    img = T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC, antialias=False)(img)
    return img


def upstream_tokens(texts, context_length=77):
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    sot, eot = bpe.encoder["<start_of_text>"], bpe.encoder["<end_of_text>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [sot] + bpe.encode(text) + [eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[context_length - 1] = eot
        result[i, : len(tokens)] = torch.tensor(tokens)
    return result


def test_tiny_checkpoint_matches_upstream_forward(tiny_ckpt, images, texts, harness_batch, record_diff):
    path, state = tiny_ckpt
    model = load_model(ModelSpec("cxr-repair", factory=FACTORY, options={"checkpoint": str(path)}), torch.device("cpu"))
    assert model.input_size == (320, 320) and model.geometry == "pad"
    ref = reference_model(state)

    x = harness_batch(model, images)
    got = model.encode_images(x)
    with torch.no_grad():
        want = F.normalize(ref.encode_image(torch.stack([upstream_pixels(im) for im in images])), dim=-1)
    assert record_diff("cxr-repair tiny image", float((got - want).abs().max())) < 1e-5

    got_t = model.encode_texts(texts)
    with torch.no_grad():
        want_t = F.normalize(ref.encode_text(upstream_tokens(texts)), dim=-1)
    assert record_diff("cxr-repair tiny text", float((got_t - want_t).abs().max())) < 1e-5

    card = model.card()
    assert card["sha256"] and len(card["sha256"]) == 64
    assert card["embedding_dim"] == 32 and card["text_max_length"] == 77
    assert card["normalisation"] == {"mean": 101.48761, "std": 83.43944, "scale": "0-255", "channels": "gray x3"}


def test_black_occluder_value_and_geometry(tiny_ckpt):
    model = load_cxr_repair(checkpoint=str(tiny_ckpt[0]))
    black = model.normalise(torch.zeros(1, 3, 320, 320))
    assert black.shape == (1, 3, 224, 224)
    assert torch.allclose(black, torch.full_like(black, -101.48761 / 83.43944), atol=1e-5)
    assert round(float(black[0, 0, 0, 0]), 2) == -1.22
    # longer side to 320, centred on black: a 400 x 200 (w x h) white image fills rows 80..239
    out = np.asarray(model.prepare_image(Image.new("L", (400, 200), 255)))
    assert out.shape == (320, 320)
    assert (out[80:240] == 255).all() and (out[:80] == 0).all() and (out[240:] == 0).all()


def test_chexpert_pipeline(tiny_ckpt):
    model = load_cxr_repair(checkpoint=str(tiny_ckpt[0]), pipeline="chexpert")
    assert model.input_size == (224, 224)
    assert model.prepare_image(Image.new("L", (400, 200), 0)).size == (224, 224)
    black = model.normalise(torch.zeros(1, 3, 224, 224))
    assert torch.allclose(black, torch.full_like(black, -129.4185 / 73.3378), atol=1e-6)


def test_overlong_text_truncated_with_eot(tiny_ckpt):
    model = load_cxr_repair(checkpoint=str(tiny_ckpt[0]))
    long_text = " ".join(["bilateral pleural effusion with atelectasis"] * 40)
    tokens = model.tokenize([long_text, "no acute process"])
    assert tokens.shape == (2, 77)
    assert int(tokens[0, 76]) == 49407 and int(tokens[0, 0]) == 49406 and bool((tokens[0] != 0).all())
    assert torch.equal(tokens, upstream_tokens([long_text, "no acute process"]))
    assert model.encode_texts([long_text]).shape == (1, 32)


def test_missing_and_bad_checkpoints(tmp_path):
    with pytest.raises(ModelLoadError, match=r"cxr-repair: no weights given; pass checkpoint=.*CXR-RePaiR"):
        load_cxr_repair()
    with pytest.raises(ModelLoadError, match="is not a file"):
        load_cxr_repair(checkpoint=str(tmp_path / "absent.pt"))
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ModelLoadError, match="not an OpenAI-layout CLIP ViT state dict"):
        load_cxr_repair(checkpoint=str(other))
    with pytest.raises(ModelLoadError, match="pipeline must be"):
        load_cxr_repair(checkpoint=str(other), pipeline="nih")


def test_pickled_checkpoint_needs_trust(tmp_path, tiny_ckpt):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": tiny_ckpt[1], "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ModelLoadError, match=r"needs full unpickling.*argparse\.Namespace.*trust_pickle=True"):
        load_cxr_repair(checkpoint=str(path))
    model = load_cxr_repair(checkpoint=str(path), trust_pickle=True)
    assert model.encode_texts(["effusion"]).shape == (1, 32)


def test_safetensors_copy_loads(tmp_path, tiny_ckpt, texts):
    from safetensors.torch import save_file

    path = tmp_path / "repair.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_ckpt[1].items()}, str(path))
    a = load_cxr_repair(checkpoint=str(path)).encode_texts(texts)
    b = load_cxr_repair(checkpoint=str(tiny_ckpt[0])).encode_texts(texts)
    assert torch.equal(a, b)
    legacy = tmp_path / "legacy.pt"  # pre-1.6 torch.save format: cannot be memory-mapped
    torch.save(tiny_ckpt[1], legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_cxr_repair(checkpoint=str(legacy)).encode_texts(texts), b)


def test_model_card_through_the_registry(tiny_ckpt):
    import json

    from pytest_medrobust.models import model_card

    spec = ModelSpec("cxr-repair", factory=FACTORY, options={"checkpoint": str(tiny_ckpt[0])})
    model = load_model(spec, torch.device("cpu"))
    card = model_card(model, spec)
    json.dumps(card)
    assert card["geometry"] == "pad" and card["input_size"] == [320, 320] and card["adapter"] == "cxr-repair"
    assert card["variant"].startswith("ViT") and card["source"] == str(tiny_ckpt[0])
    assert model.encode_texts([]).shape == (0, 32)


@pytest.mark.slow
def test_full_size_vit_b32(vit_b32_openai_pt, images, texts, harness_batch, record_diff):
    path, _, ref = vit_b32_openai_pt  # ref: open_clip's OpenAI-architecture CLIP with these weights
    model = load_cxr_repair(checkpoint=str(path))
    assert model.card()["embedding_dim"] == 512 and model.model_resolution == (224, 224)
    got = model.encode_images(harness_batch(model, images[:2]))
    with torch.no_grad():
        want = F.normalize(ref.encode_image(torch.stack([upstream_pixels(im) for im in images[:2]])), dim=-1)
    assert record_diff("cxr-repair ViT-B/32 image", float((got - want).abs().max())) < 1e-5
    got_t = model.encode_texts(texts[:2])
    with torch.no_grad():
        want_t = F.normalize(ref.encode_text(upstream_tokens(texts[:2])), dim=-1)
    assert record_diff("cxr-repair ViT-B/32 text", float((got_t - want_t).abs().max())) < 1e-5
