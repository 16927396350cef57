"""Fixtures for the upstream-adapter tests: everything offline, small, and in upstream formats.

* The HF hub is switched off (``HF_HUB_OFFLINE=1`` and huggingface_hub's own flag, which it reads
  at import time), so a test that needs a hub piece must hand the adapter a local directory.
* ``bert_dir``: a tiny BERT in the shape of ``emilyalsentzer/Bio_ClinicalBERT``'s hub folder
  (a legacy ``config.json`` without ``model_type`` + a WordPiece ``vocab.txt``, nothing else),
  the hardest layout for ``AutoConfig``/``AutoTokenizer``.
* ``swin_dir``: a tiny Swin ``config.json`` (224 input, like swin-tiny, but 8-wide).
* ``swin_to_upstream``: Swin parameter names as transformers 4.x saved them (what the MedCLIP and
  CXR-CLIP checkpoints hold), with the ``relative_position_index`` buffers they also hold.
* ``images``: grayscale PIL images of awkward sizes (portrait, landscape, smaller than 224).
* ``harness_batch``: prepare_image -> uint8 -> the harness's own ``to_batch``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

WORDS = (
    "no acute cardiopulmonary process . there is a small left pleural effusion , with mild "
    "cardiomegaly and bibasilar atelectasis ; lungs are clear heart size normal pneumothorax "
    "edema consolidation opacity stable unchanged right lower lobe upper "
).split()


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a busy 2-core runner (or under ``-n 2``) torch's two OpenMP threads
    wait on each other; a ResNet50 forward measured 2.6 s with two threads vs 0.09 s with one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hf_constants

        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    torch.manual_seed(0)


def write_bert_dir(path: Path, **config) -> Path:
    from transformers import BertConfig

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + ["##s", "##ed", "##al", "##y"]
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = list(dict.fromkeys(vocab))
    fields = dict(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512,
    )
    fields.update(config)
    # a vocab.txt has one line per embedding row, as the real one does (28,996 for Bio_ClinicalBERT)
    vocab += [f"[unused{i}]" for i in range(int(fields["vocab_size"]) - len(vocab))]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # written as the hub folder's legacy config.json: BERT fields only, no model_type
    data = {k: v for k, v in BertConfig(**fields).to_dict().items() if k not in ("model_type", "transformers_version")}
    (path / "config.json").write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return write_bert_dir(tmp_path_factory.mktemp("bio_clinicalbert_tiny"))


@pytest.fixture(scope="session")
def swin_dir(tmp_path_factory) -> Path:
    from transformers import SwinConfig

    path = tmp_path_factory.mktemp("swin_tiny_tiny")
    SwinConfig(
        image_size=224, patch_size=4, embed_dim=8, depths=[2, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
        drop_path_rate=0.0,
    ).save_pretrained(path)
    return path


_TO_4X = [
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("attention.q_proj.", "attention.self.query."),
    ("attention.k_proj.", "attention.self.key."),
    ("attention.v_proj.", "attention.self.value."),
    ("attention.o_proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
]


def swin_state_4x(swin: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A SwinModel's weights under transformers-4.x names, buffers included (as upstream saved)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in swin.state_dict().items():
        for new, old in _TO_4X:
            key = key.replace(new, old)
        out[key] = value.clone()
    for key, buf in swin.named_buffers():
        m = re.match(r"(encoder\.layers\.\d+\.blocks\.\d+)\.attention\..*relative_position_index$", key)
        if m:
            out[f"{m.group(1)}.attention.self.relative_position_index"] = buf.clone()
    assert "encoder.layers.0.blocks.0.attention.self.query.weight" in out
    assert "encoder.layers.0.blocks.0.output.dense.weight" in out
    return out


@pytest.fixture(scope="session")
def swin_to_upstream():
    return swin_state_4x


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    rng = np.random.RandomState(7)
    out = []
    for h, w in [(300, 260), (250, 380), (150, 100)]:
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = 127 + 100 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
        arr = np.clip(smooth + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr, mode="L"))
    return out


def harness_pixels(model, images: list[Image.Image]) -> torch.Tensor:
    from pytest_medrobust.datasets.images import to_batch

    prepared = [model.prepare_image(im) for im in images]
    for p in prepared:
        assert p.size == (model.input_size[1], model.input_size[0])
    pixels = torch.from_numpy(np.stack([np.asarray(p.convert("L"), dtype=np.uint8) for p in prepared]))
    return to_batch(pixels, slice(None), torch.device("cpu"))


@pytest.fixture(scope="session")
def harness_batch():
    return harness_pixels


TEXTS = [
    "No acute cardiopulmonary process.",
    "There is a small left pleural effusion, with mild cardiomegaly.",
    "Lungs are clear. Heart size normal.",
    "Bibasilar atelectasis; stable right lower lobe opacity unchanged.",
    "no pneumothorax",
]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="session")
def record_diff():
    """Print measured max-abs differences (shown with -s / in the captured output)."""

    def record(label: str, value: float) -> float:
        print(f"[max-abs-diff] {label}: {value:.3e}")
        return value

    return record


@pytest.fixture(scope="session")
def vit_b32_openai_pt(tmp_path_factory) -> Iterator[tuple[Path, dict[str, torch.Tensor], torch.nn.Module]]:
    """A full-size ViT-B/32 CLIP, random weights in the OpenAI key layout, values float16-exact
    (so OpenAI's float16 conversion loses nothing), saved as a plain state dict ``.pt``; and the
    open_clip OpenAI-architecture model (QuickGELU) holding those weights, as the reference."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(1)
    net = CLIP(
        512,
        vision_cfg=CLIPVisionCfg(layers=12, width=768, patch_size=32, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    )
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("vitb32") / "clip-imp-pretrained_128_6_after_4.pt"
    torch.save(state, path)
    yield path, state, net.eval()
    path.unlink(missing_ok=True)  # 600 MB: do not leave it to pytest's tmp rotation
