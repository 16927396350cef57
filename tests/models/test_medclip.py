"""medclip: a MedCLIP ``pytorch_model.bin`` in the upstream layout, both variants.

The checkpoint is written as upstream's ``MedCLIPModel.state_dict()`` looks: Swin under
transformers-4.x names with its ``relative_position_index`` buffers, BERT with its pooler and
the stray ``embeddings.position_ids`` buffer, bias-free projection heads, ``logit_scale``. The
reference forward is written here from the upstream code: the processor (pad to a black square
of side max(224, w, h), resize 224 bicubic, 0-1, one-channel normalise, repeat to 3), Swin
``pooler_output`` -> head (or ResNet50 with its 512-d fc), and for text the mean over tokens of
the average of hidden states 1, 2 and -1 of each text tokenised alone (max 77).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from pytest_medrobust.errors import ModelLoadError
from pytest_medrobust.models import ModelSpec, load_model
from pytest_medrobust.models.medclip import load_medclip

FACTORY = "pytest_medrobust.models.medclip:load_medclip"
MEAN, STD = 0.5862785803043838, 0.27950088968644304


def build_upstream(variant: str, bert_dir, swin_dir, swin_to_upstream, proj_dim: int = 16):
    """Random MedCLIP parts and their upstream-format state dict."""
    import torchvision
    from transformers import BertConfig, BertModel, SwinConfig, SwinModel

    torch.manual_seed(11)
    bert = BertModel(BertConfig.from_pretrained(str(bert_dir))).eval()
    text_head = torch.randn(proj_dim, bert.config.hidden_size) * 0.1
    state = {f"text_model.model.{k}": v.clone() for k, v in bert.state_dict().items()}
    state["text_model.model.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)  # MedCLIP issue #37
    state["text_model.projection_head.weight"] = text_head
    state["logit_scale"] = torch.tensor(3.2)
    if variant == "vit":
        swin = SwinModel(SwinConfig.from_pretrained(str(swin_dir))).eval()
        vision = swin
        vision_head = torch.randn(proj_dim, swin.config.hidden_size) * 0.1
        state.update({f"vision_model.model.{k}": v for k, v in swin_to_upstream(swin).items()})
        state["vision_model.projection_head.weight"] = vision_head
    else:
        vision = torchvision.models.resnet50(weights=None)
        vision.fc = torch.nn.Linear(2048, proj_dim, bias=False)
        vision.eval()
        vision_head = None
        state.update({f"vision_model.model.{k}": v.clone() for k, v in vision.state_dict().items()})
    return state, bert, text_head, vision, vision_head


def upstream_pixels(image: Image.Image) -> torch.Tensor:
    x, y = image.size
    size = max(224, x, y)
    square = Image.new("L", (size, size), 0)
    square.paste(image, (int((size - x) / 2), int((size - y) / 2)))
    square = square.resize((224, 224), resample=Image.BICUBIC)
    arr = np.asarray(square).astype(np.float32) / 255.0
    arr = (arr - MEAN) / STD
    return torch.from_numpy(arr)[None].repeat(3, 1, 1)


def upstream_text(bert, head, tokenizer, texts):
    out = []
    for t in texts:
        enc = tokenizer([t], truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            hs = bert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True).hidden_states
        emb = torch.stack([hs[1], hs[2], hs[-1]]).permute(1, 0, 2, 3).mean(2).mean(1)
        out.append(emb @ head.T)
    return F.normalize(torch.cat(out), dim=-1)


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory, bert_dir, swin_dir, swin_to_upstream):
    state, bert, text_head, swin, vision_head = build_upstream("vit", bert_dir, swin_dir, swin_to_upstream)
    d = tmp_path_factory.mktemp("medclip-vit")
    torch.save(state, d / "pytorch_model.bin")
    return d, state, bert, text_head, swin, vision_head


def test_vit_variant_matches_upstream_forward(vit_ckpt, bert_dir, swin_dir, images, texts, harness_batch, record_diff):
    from transformers import BertTokenizer

    d, state, bert, text_head, swin, vision_head = vit_ckpt
    assert "vision_model.model.encoder.layers.0.blocks.0.attention.self.relative_position_bias_table" in state
    opts = {"checkpoint": str(d), "text_model_dir": str(bert_dir), "vision_model_dir": str(swin_dir)}
    model = load_model(ModelSpec("medclip", factory=FACTORY, options=opts), torch.device("cpu"))
    assert model.input_size == (224, 224) and model.geometry == "pad" and model.variant == "vit"

    got = model.encode_images(harness_batch(model, images))  # includes a 150 x 100 image: padded, not upscaled
    with torch.no_grad():
        px = torch.stack([upstream_pixels(im) for im in images])
        want = F.normalize(swin(pixel_values=px).pooler_output @ vision_head.T, dim=-1)
    assert record_diff("medclip vit tiny image", float((got - want).abs().max())) < 1e-5

    tokenizer = BertTokenizer.from_pretrained(str(bert_dir))
    got_t = model.encode_texts(texts)
    want_t = upstream_text(bert, text_head, tokenizer, texts)
    assert record_diff("medclip vit tiny text", float((got_t - want_t).abs().max())) < 1e-5

    card = model.card()
    assert card["variant"] == "vit" and card["embedding_dim"] == 16 and card["text_max_length"] == 77
    assert card["normalisation"]["mean"] == MEAN and card["normalisation"]["std"] == STD
    assert card["sha256"] and card["ignored_keys"] == []


def test_each_text_gets_its_own_embedding(vit_ckpt, bert_dir, swin_dir, texts):
    """The upstream pooling ignores the mask: padding would change the embedding, so texts are
    encoded unpadded and a text's embedding does not depend on its batch."""
    d = vit_ckpt[0]
    model = load_medclip(checkpoint=str(d), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir), batch_size=2)
    together = model.encode_texts(texts)
    alone = torch.cat([model.encode_texts([t]) for t in texts])
    assert float((together - alone).abs().max()) < 1e-6
    # what upstream's padded batch would give differs for the shorter texts
    tok = model.tokenizer(texts, truncation=True, padding=True, max_length=77, return_tensors="pt")
    text = model.net.text_model
    with torch.no_grad():
        hs = text.model(**tok, output_hidden_states=True).hidden_states
        pooled = torch.stack([hs[1], hs[2], hs[-1]]).permute(1, 0, 2, 3).mean(2).mean(1)
        padded = F.normalize(text.projection_head(pooled), dim=-1)
    assert float((padded - alone).abs().max()) > 1e-3


def test_truncation_at_77(vit_ckpt, bert_dir, swin_dir):
    model = load_medclip(checkpoint=str(vit_ckpt[0]), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    ids = model.token_ids(["small left pleural effusion " * 40, "no pneumothorax"])
    sep = model.tokenizer.sep_token_id
    assert len(ids[0]) == 77 and ids[0][-1] == sep and ids[0][0] == model.tokenizer.cls_token_id
    assert len(ids[1]) < 77 and ids[1][-1] == sep
    assert model.encode_texts(["small left pleural effusion " * 40]).shape == (1, 16)


def test_resnet50_variant(tmp_path, bert_dir, swin_to_upstream, images, texts, harness_batch, record_diff):
    from transformers import BertTokenizer

    state, bert, text_head, resnet, _ = build_upstream("resnet50", bert_dir, None, swin_to_upstream)
    assert "vision_model.model.fc.weight" in state and "vision_model.model.layer4.2.bn3.running_var" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    model = load_medclip(checkpoint=str(tmp_path / "pytorch_model.bin"), text_model_dir=str(bert_dir))
    assert model.variant == "resnet50" and model.card()["vision_model"] == "torchvision resnet50"
    got = model.encode_images(harness_batch(model, images[1:2]))
    with torch.no_grad():
        want = F.normalize(resnet(torch.stack([upstream_pixels(im) for im in images[1:2]])), dim=-1)
    assert record_diff("medclip resnet50 image", float((got - want).abs().max())) < 1e-5
    got_t = model.encode_texts(texts)
    want_t = upstream_text(bert, text_head, BertTokenizer.from_pretrained(str(bert_dir)), texts)
    assert record_diff("medclip resnet50 text", float((got_t - want_t).abs().max())) < 1e-5
    with pytest.raises(ModelLoadError, match="variant='vit' but .* holds the 'resnet50' variant"):
        load_medclip(checkpoint=str(tmp_path), variant="vit", text_model_dir=str(bert_dir))


def test_black_image_and_geometry(vit_ckpt, bert_dir, swin_dir):
    model = load_medclip(checkpoint=str(vit_ckpt[0]), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    px = model.pixel_values(torch.zeros(1, 3, 224, 224))
    assert px.shape == (1, 3, 224, 224) and torch.allclose(px, torch.full_like(px, -MEAN / STD))
    # pad to square with black, then resize: a 448 x 224 white image becomes rows 56..167 of 224
    out = np.asarray(model.prepare_image(Image.new("L", (448, 224), 255)))
    assert (out[60:164] == 255).all() and (out[:52] == 0).all() and (out[172:] == 0).all()


def test_missing_hub_pieces_offline(vit_ckpt, tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_medclip(checkpoint=str(vit_ckpt[0]), cache_dir=str(tmp_path / "empty-hf-cache"))
    msg = str(err.value)
    assert msg.startswith("medclip: cannot load the config of 'emilyalsentzer/Bio_ClinicalBERT'")
    assert "HF_HUB_OFFLINE is set" in msg and "text_model_dir=/path/to/a/directory" in msg
    with pytest.raises(ModelLoadError, match="text_model_dir=.* is not a directory"):
        load_medclip(checkpoint=str(vit_ckpt[0]), text_model_dir=str(tmp_path / "nope"))


def test_bad_checkpoints(tmp_path, bert_dir, swin_dir, vit_ckpt):
    with pytest.raises(ModelLoadError, match="medclip: no weights given; pass checkpoint=.*medclip-vit-pretrained.zip"):
        load_medclip()
    with pytest.raises(ModelLoadError, match="is not a file"):
        load_medclip(checkpoint=str(tmp_path))  # a directory without pytorch_model.bin
    state = dict(vit_ckpt[1])
    del state["text_model.model.encoder.layer.0.output.dense.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="lacks 1 parameter.*encoder.layer.0.output.dense.weight"):
        load_medclip(checkpoint=str(tmp_path), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    # the built-in swin-tiny config does not fit the 8-wide test Swin: shapes are checked
    with pytest.raises(ModelLoadError, match="medclip: .*(lacks|wrong shape)"):
        load_medclip(checkpoint=str(vit_ckpt[0]), text_model_dir=str(bert_dir))


def test_pickled_checkpoint_needs_trust(tmp_path, vit_ckpt, bert_dir, swin_dir):
    import argparse

    torch.save({"state_dict": vit_ckpt[1], "args": argparse.Namespace(lr=1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="trust_pickle=True"):
        load_medclip(checkpoint=str(tmp_path), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    model = load_medclip(
        checkpoint=str(tmp_path), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir), trust_pickle=True
    )
    assert model.encode_texts(["effusion"]).shape == (1, 16)
