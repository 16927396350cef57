"""clip: open_clip weights (local file or tag) and transformers CLIPModel directories.

References are what a user of the upstream library would compute: open_clip's own
``create_model_and_transforms`` + ``preprocess(image)`` + ``get_tokenizer``; for the transformers
path ``CLIPModel.get_*_features`` on the output of the (PIL) ``CLIPImageProcessor`` and the
directory's tokenizer.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch.nn import functional as F

from pytest_medrobust.errors import ModelLoadError
from pytest_medrobust.models import ModelSpec, load_model
from pytest_medrobust.models.clip import load_clip

FACTORY = "pytest_medrobust.models.clip:load_clip"
TINY = "medrobust-test-tiny-vit"


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A tiny open_clip architecture registered under TINY, and its random weights on disk."""
    import open_clip
    from safetensors.torch import save_file

    cfg_dir = tmp_path_factory.mktemp("open_clip_cfg")
    (cfg_dir / f"{TINY}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    }))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(3)
    model = open_clip.create_model(TINY, pretrained=None)
    out = tmp_path_factory.mktemp("tiny_weights")
    st = out / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st))
    pt = out / "open_clip_model.pt"
    torch.save(model.state_dict(), pt)
    return st, pt


def reference(model_name, path):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path))
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_open_clip_file_matches_open_clip(fmt, tiny_open_clip, images, texts, harness_batch, record_diff):
    path = tiny_open_clip[0] if fmt == "safetensors" else tiny_open_clip[1]
    # GELU-trained open_clip weights saved as a bare state dict share OpenAI's key layout, which
    # alone would mean QuickGELU: such a file says quick_gelu = false
    options = {"model_name": TINY, "pretrained": str(path), "quick_gelu": False}
    spec = ModelSpec("clip", factory=FACTORY, options=options)
    model = load_model(spec, torch.device("cpu"))
    assert model.input_size == (224, 224) and model.geometry == "crop"
    ref, preprocess, tokenizer = reference(TINY, path)

    got = model.encode_images(harness_batch(model, images))
    with torch.no_grad():
        want = F.normalize(ref.encode_image(torch.stack([preprocess(im.convert("RGB")) for im in images])), dim=-1)
    assert record_diff(f"clip open_clip tiny ({fmt}) image", float((got - want).abs().max())) < 1e-5

    got_t = model.encode_texts(texts)
    with torch.no_grad():
        want_t = F.normalize(ref.encode_text(tokenizer(texts)), dim=-1)
    assert record_diff(f"clip open_clip tiny ({fmt}) text", float((got_t - want_t).abs().max())) < 1e-5

    card = model.card()
    assert card["source"] == str(path) and len(card["sha256"]) == 64
    assert card["embedding_dim"] == 32 and card["text_max_length"] == 77 and card["quick_gelu"] is False
    assert card["activation"] == "GELU (from the quick_gelu option)"
    assert card["normalisation"]["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert card["normalisation"]["std"] == [0.26862954, 0.26130258, 0.27577711]


def test_prepare_image_follows_the_model_preprocess(tiny_open_clip, images):
    """prepare_image applies the model's own resize/crop, and is named after it: the harness
    caches decoded pixels by (input size, geometry, prepare_image.__qualname__)."""
    import numpy as np
    import open_clip

    from pytest_medrobust.models.clip import OpenClipAdapter

    a = load_clip(model_name=TINY, pretrained=str(tiny_open_clip[0]))
    squash = open_clip.image_transform(224, is_train=False, interpolation="bilinear", resize_mode="squash")
    b = OpenClipAdapter(a.model, squash, a.tokenizer, name="clip-squash", card={})
    assert a.prepare_image.__qualname__ != b.prepare_image.__qualname__
    assert "bicubic" in a.prepare_image.__qualname__ and "bilinear" in b.prepare_image.__qualname__
    for adapter, preprocess in ((a, reference(TINY, tiny_open_clip[0])[1]), (b, squash)):
        want = preprocess(images[1].convert("RGB"))[0] * 0.26862954 + 0.48145466  # undo Normalize, channel 0
        got = torch.from_numpy(np.array(adapter.prepare_image(images[1]))).float() / 255
        assert float((got - want).abs().max()) < 1e-5


def test_clip_tokenizer_truncates_with_eot(tiny_open_clip):
    model = load_clip(model_name=TINY, pretrained=str(tiny_open_clip[0]))
    tokens = model.tokenizer([" ".join(["mild pulmonary edema"] * 60)])
    assert tokens.shape == (1, 77) and int(tokens[0, -1]) == 49407 and bool((tokens != 0).all())


def test_quick_gelu_option_changes_activation(tiny_open_clip, texts):
    plain = load_clip(model_name=TINY, pretrained=str(tiny_open_clip[0]), quick_gelu=False)
    quick = load_clip(model_name=TINY, pretrained=str(tiny_open_clip[0]), quick_gelu=True)
    assert quick.card()["quick_gelu"] is True and plain.card()["quick_gelu"] is False
    assert not torch.allclose(plain.encode_texts(texts), quick.encode_texts(texts))


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "pt-float16", "pt-torchscript-keys"])
def test_openai_layout_file_gets_quick_gelu(fmt, tmp_path, tiny_open_clip, images, texts, harness_batch, record_diff):
    """A local file of OpenAI CLIP weights in OpenAI's key layout, with no quick_gelu option:
    embeddings equal those of OpenAI's own model definition (QuickGELU), as built from that state
    dict by open_clip's port of OpenAI's ``build_model``. Formats: OpenAI's ``clip`` package
    ``state_dict()`` (float32 on the CPU, float16 on a GPU, with the TorchScript model's extra
    keys when taken from ``clip.load(jit=True)``) and a safetensors copy."""
    import open_clip
    from open_clip.model import build_model_from_openai_state_dict
    from safetensors.torch import save_file

    from .test_cxr_repair import tiny_openai_state

    state = tiny_openai_state(seed=4)
    saved = dict(state)
    if fmt == "pt-float16":
        saved = {k: v.half() if v.is_floating_point() else v for k, v in saved.items()}
    if fmt == "pt-torchscript-keys":
        saved.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / ("ViT-tiny-openai.safetensors" if fmt == "safetensors" else "ViT-tiny-openai.pt")
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in saved.items()}, str(path))
    else:
        torch.save(saved, path)

    model = load_clip(model_name=TINY, pretrained=str(path))
    ref = build_model_from_openai_state_dict(dict(state)).float().eval()
    assert ref.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    preprocess = open_clip.image_transform(224, is_train=False)
    tokenizer = open_clip.get_tokenizer(TINY)
    got = model.encode_images(harness_batch(model, images))
    got_t = model.encode_texts(texts)
    with torch.no_grad():
        want = F.normalize(ref.encode_image(torch.stack([preprocess(im.convert("RGB")) for im in images])), dim=-1)
        want_t = F.normalize(ref.encode_text(tokenizer(texts)), dim=-1)
    assert record_diff(f"clip OpenAI layout ({fmt}) image", float((got - want).abs().max())) < 1e-6
    assert record_diff(f"clip OpenAI layout ({fmt}) text", float((got_t - want_t).abs().max())) < 1e-6
    card = model.card()
    assert card["quick_gelu"] is True and card["activation"] == "QuickGELU (from the file's OpenAI state-dict layout)"
    # what the adapter computed before it read the layout: GELU, off by far more than rounding
    gelu = load_clip(model_name=TINY, pretrained=str(path), quick_gelu=False)
    assert float((gelu.encode_texts(texts) - want_t).abs().max()) > 1e-4


def test_open_clip_training_checkpoint_keeps_the_model_activation(tmp_path, tiny_open_clip, texts):
    """open_clip's trainer saves ``{"epoch", "name", "state_dict": {"module.*"}}``: weights trained
    with the model config's activation (GELU for a plain model name)."""
    import open_clip

    torch.manual_seed(3)
    net = open_clip.create_model(TINY, pretrained=None)
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = load_clip(model_name=TINY, pretrained=str(path))
    assert model.card()["quick_gelu"] is False
    assert model.card()["activation"] == f"GELU (from model_name {TINY} (open_clip training checkpoint))"
    with torch.no_grad():
        want = F.normalize(net.eval().encode_text(open_clip.get_tokenizer(TINY)(texts)), dim=-1)
    assert float((model.encode_texts(texts) - want).abs().max()) < 1e-6


def test_random_weights_and_errors(tmp_path):
    model = load_clip(model_name="ViT-B-32", pretrained="none")
    assert model.card()["source"] == "random-init" and model.card()["sha256"] is None
    with pytest.raises(ModelLoadError, match="unknown open_clip model_name"):
        load_clip(model_name="ViT-Nope-1", pretrained="none")
    with pytest.raises(ModelLoadError, match="neither an open_clip tag"):
        load_clip(model_name="ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(ModelLoadError, match="no such file"):
        load_clip(model_name="ViT-B-32", pretrained=str(tmp_path / "absent.safetensors"))


def test_tag_offline_names_the_weights_and_the_way_out(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_clip(model_name="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path / "empty-cache"))
    msg = str(err.value)
    assert "ViT-B-32/openai" in msg and "timm/vit_base_patch32_clip_224.openai" in msg
    assert "HF_HUB_OFFLINE" in msg and "pretrained=/path/to/weights" in msg


def test_pickled_file_needs_trust(tmp_path, tiny_open_clip):
    import open_clip

    state = open_clip.create_model(TINY, pretrained=None).state_dict()
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": state, "args": argparse.Namespace(epochs=3)}, path)
    with pytest.raises(ModelLoadError, match=r"needs full unpickling.*trust_pickle=True"):
        load_clip(model_name=TINY, pretrained=str(path))
    assert load_clip(model_name=TINY, pretrained=str(path), trust_pickle=True).encode_texts(["x"]).shape == (1, 32)


# --- transformers CLIPModel directory ----------------------------------------------------------


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    d = tmp_path_factory.mktemp("hf_clip")
    # a small byte-level BPE in CLIP's format: every byte as a symbol and as a word end, a few merges
    from open_clip.tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = [("e", "f"), ("ef", "f"), ("eff", "u"), ("l", "u"), ("lu", "n"), ("lun", "g"), ("o", "n</w>")]
    vocab += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tok = CLIPTokenizer(vocab_file=str(d / "vocab.json"), merges_file=str(d / "merges.txt"))
    tok.save_pretrained(d)
    bos, eos = len(vocab) - 2, len(vocab) - 1
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=32),
        projection_dim=16,
    )
    torch.manual_seed(5)
    CLIPModel(cfg).save_pretrained(d)
    CLIPImageProcessorPil().save_pretrained(d)
    return d


def test_hf_dir_matches_transformers(hf_clip_dir, images, texts, harness_batch, record_diff):
    from transformers import AutoTokenizer, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = load_model(ModelSpec("clip-hf", factory=FACTORY, options={"hf_dir": str(hf_clip_dir)}), torch.device("cpu"))
    assert model.input_size == (224, 224) and model.geometry == "crop"
    ref = CLIPModel.from_pretrained(str(hf_clip_dir)).eval()
    proc = CLIPImageProcessorPil.from_pretrained(str(hf_clip_dir))
    tok = AutoTokenizer.from_pretrained(str(hf_clip_dir))

    def feats(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    got = model.encode_images(harness_batch(model, images))
    with torch.no_grad():
        px = proc(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        want = F.normalize(feats(ref.get_image_features(pixel_values=px)), dim=-1)
    assert record_diff("clip transformers tiny image", float((got - want).abs().max())) < 1e-5

    long_text = "effusion lung " * 60
    batch = texts + [long_text]
    got_t = model.encode_texts(batch)
    with torch.no_grad():
        enc = tok(batch, padding=True, truncation=True, max_length=77, return_tensors="pt")
        want_t = F.normalize(feats(ref.get_text_features(**enc)), dim=-1)
    assert enc["input_ids"].shape[1] == 77
    assert record_diff("clip transformers tiny text", float((got_t - want_t).abs().max())) < 1e-5
    card = model.card()
    assert card["adapter"] == "clip/transformers" and card["embedding_dim"] == 16 and len(card["sha256"]) == 64


def test_hf_dir_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not a transformers model directory"):
        load_clip(hf_dir=str(tmp_path))


@pytest.mark.slow
def test_full_size_vit_b32_openai_weights(vit_b32_openai_pt, images, texts, harness_batch, record_diff):
    """OpenAI-layout ViT-B/32 weights from a local file: the adapter builds it through
    create_model_and_transforms + load_checkpoint; the reference is open_clip's OpenAI-architecture
    model holding the same weights, with open_clip's ViT-B/32 preprocess and tokenizer."""
    import open_clip

    path, _, ref = vit_b32_openai_pt
    model = load_clip(model_name="ViT-B-32", pretrained=str(path), quick_gelu=True)
    preprocess = open_clip.image_transform(224, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    got = model.encode_images(harness_batch(model, images[:2]))
    with torch.no_grad():
        want = F.normalize(ref.encode_image(torch.stack([preprocess(im.convert("RGB")) for im in images[:2]])), dim=-1)
    assert record_diff("clip ViT-B/32 image", float((got - want).abs().max())) < 1e-5
    got_t = model.encode_texts(texts[:2])
    with torch.no_grad():
        want_t = F.normalize(ref.encode_text(tokenizer(texts[:2])), dim=-1)
    assert record_diff("clip ViT-B/32 text", float((got_t - want_t).abs().max())) < 1e-5
    assert model.card()["embedding_dim"] == 512


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_archive_is_refused_by_name(tmp_path, tiny_open_clip):
    """OpenAI's original ViT-B-32.pt is a TorchScript archive: code as well as weights."""
    path = tmp_path / "ViT-B-32.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(ModelLoadError, match=r"clip: .*ViT-B-32\.pt is a TorchScript archive .* trust_pickle=True"):
        load_clip(model_name=TINY, pretrained=str(path))
    with pytest.raises(ModelLoadError, match="does not fit open_clip"):  # trusted: its weights are read, and checked
        load_clip(model_name=TINY, pretrained=str(path), trust_pickle=True)
