"""Precision: fp32 is the default on every device, and the opt-in bf16 autocast stays within a
measured distance of the fp32 embeddings (CPU-emulated here; the numbers are in docs/models.md,
"How faithful")."""

from __future__ import annotations

import pytest
import torch

from pytest_medrobust.runner import autocast_dtype

from .test_clip import TINY, tiny_open_clip  # noqa: F401  (the fixture registers the TINY config)


def test_auto_means_fp32_everywhere():
    for device in (torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)):
        assert autocast_dtype("auto", device) is None
        assert autocast_dtype("fp32", device) is None
    assert autocast_dtype("bf16", torch.device("cuda", 0)) is torch.bfloat16
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("fp16", torch.device("cuda", 0)) is torch.float16


def embed(model, pixels, texts, precision: str):
    """What GridRunner._forward does: the model's encoders under the precision's autocast."""
    dtype = autocast_dtype(precision, torch.device("cpu"))
    if dtype is None:
        return model.encode_images(pixels).float(), model.encode_texts(texts).float()
    with torch.autocast(device_type="cpu", dtype=dtype):
        return model.encode_images(pixels).float(), model.encode_texts(texts).float()


def deviation(model, images, texts, harness_batch, record_diff, label):
    pixels = harness_batch(model, images)
    ref_i, ref_t = embed(model, pixels, texts, "auto")
    fp32_i, fp32_t = embed(model, pixels, texts, "fp32")
    assert torch.equal(ref_i, fp32_i) and torch.equal(ref_t, fp32_t)  # auto is fp32, bit for bit
    bf_i, bf_t = embed(model, pixels, texts, "bf16")
    di = record_diff(f"bf16 vs fp32 {label} image", float((bf_i - ref_i).abs().max()))
    dt = record_diff(f"bf16 vs fp32 {label} text", float((bf_t - ref_t).abs().max()))
    # cosine similarity of each bf16 embedding with its fp32 one (both L2-normalised)
    cos = min(float((bf_i * ref_i).sum(-1).min()), float((bf_t * ref_t).sum(-1).min()))
    record_diff(f"bf16 vs fp32 {label} 1 - min cosine", 1 - cos)
    return di, dt, cos


def test_bf16_autocast_deviation_clip(tmp_path, tiny_open_clip, images, texts, harness_batch,  # noqa: F811
                                      record_diff):
    """A small random CLIP in OpenAI's layout (QuickGELU, ViT + text transformer)."""
    from pytest_medrobust.models.clip import load_clip

    from .test_cxr_repair import tiny_openai_state

    torch.save(tiny_openai_state(seed=4), tmp_path / "tiny-openai.pt")
    model = load_clip(model_name=TINY, pretrained=str(tmp_path / "tiny-openai.pt"))
    di, dt, cos = deviation(model, images, texts, harness_batch, record_diff, "tiny CLIP")
    # bf16 really ran (a lower bound), and moved the unit-norm embeddings by at most 2e-2
    assert 1e-4 < max(di, dt) and di < 2e-2 and dt < 2e-2 and cos > 0.999


def test_bf16_autocast_deviation_cxr_clip(tmp_path, bert_dir, swin_dir, swin_to_upstream, images, texts,
                                          harness_batch, record_diff):
    """A small random CXR-CLIP (Swin + BERT + linear heads)."""
    from pytest_medrobust.models.cxr_clip import load_cxr_clip

    from .test_cxr_clip import build, save_tar, upstream_config

    state = build("swin", bert_dir, swin_dir, swin_to_upstream)[0]
    path = save_tar(tmp_path / "swint_m.tar", state, upstream_config("swin"))
    model = load_cxr_clip(checkpoint=str(path), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    di, dt, cos = deviation(model, images, texts, harness_batch, record_diff, "tiny CXR-CLIP")
    assert 1e-4 < max(di, dt) and di < 2e-2 and dt < 2e-2 and cos > 0.999


@pytest.mark.slow
def test_bf16_autocast_deviation_full_size_vit_b32(vit_b32_openai_pt, images, texts, harness_batch, record_diff):
    """Full-size ViT-B/32 (random weights, OpenAI layout)."""
    from pytest_medrobust.models.clip import load_clip

    model = load_clip(model_name="ViT-B-32", pretrained=str(vit_b32_openai_pt[0]))
    di, dt, cos = deviation(model, images[:2], texts, harness_batch, record_diff, "ViT-B/32")
    assert 1e-4 < max(di, dt) and di < 2e-2 and dt < 2e-2 and cos > 0.999
