"""All four upstream adapters in one real plugin grid, each loaded from a checkpoint in its upstream format.

The per-adapter tests (test_clip, test_cxr_repair, test_medclip, test_cxr_clip) prove each adapter
reproduces its upstream forward pass. This test proves the adapters also work *as grid models*:
configured through ``[[tool.medrobust.models]]`` tables in a pyproject (built-in names and explicit
factories, options with checkpoint paths and local tokenizer/config directories), run by
``pytest --medrobust`` on a tiny 32 x 32 dataset (each adapter brings it to its own input size and
geometry), with every item run (random weights may pass or fail the thresholds: only errors count),
the results JSON holding a model card per adapter whose sha256 is that of the file written here,
and every cell's numbers equal to those computed directly from the adapter outside the plugin.

The checkpoints are written by the same builders the per-adapter tests check against upstream.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

# pytester's in-process runs drop modules first imported during a run; C/Rust extensions cannot be
# imported twice, and re-imported pure-Python modules would hold new class objects. Import what the
# adapters use before any run.
import numpy  # noqa: F401
import open_clip
import pytest
import safetensors.torch  # noqa: F401
import tokenizers  # noqa: F401
import torch
import torchvision  # noqa: F401
import torchvision.transforms  # noqa: F401
from PIL import Image
from transformers import (  # noqa: F401  (resolve transformers' lazy modules now)
    AutoConfig,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
    SwinConfig,
    SwinModel,
)

import pytest_medrobust.models.clip  # noqa: F401
import pytest_medrobust.models.cxr_clip  # noqa: F401
import pytest_medrobust.models.cxr_repair  # noqa: F401
import pytest_medrobust.models.hub  # noqa: F401
import pytest_medrobust.models.medclip  # noqa: F401
import pytest_medrobust.runner  # noqa: F401
from pytest_medrobust import occlusion
from pytest_medrobust.metrics import retrieval_metrics, unique_texts
from pytest_medrobust.models import ModelSpec, load_model

from ..plugin.fakes import write_dataset
from .conftest import harness_pixels
from .test_cxr_clip import build as build_cxr_clip
from .test_cxr_clip import save_tar, upstream_config
from .test_cxr_repair import tiny_openai_state
from .test_medclip import build_upstream as build_medclip

TINY_CLIP = "medrobust-grid-tiny-vit"
LEVELS = ("0.00", "0.30")
N_IMAGES = 24  # write_dataset's default: 8 distinct reports


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checkpoints(root: Path, bert_dir: Path, swin_dir: Path, swin_to_upstream) -> dict[str, Path]:
    """One tiny random-weight checkpoint per adapter, each in its upstream file format."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    # open_clip: a registered tiny ViT config and its state dict as open_clip_model.safetensors
    cfg_dir = root / "open_clip_cfg"
    cfg_dir.mkdir()
    (cfg_dir / f"{TINY_CLIP}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    }))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(3)
    clip = open_clip.create_model(TINY_CLIP, pretrained=None)
    paths["clip"] = root / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(paths["clip"]))

    # CXR-RePaiR: a plain OpenAI-layout state dict saved with torch.save
    paths["cxr-repair"] = root / "repair" / "clip-imp-pretrained_128_6_after_4.pt"
    paths["cxr-repair"].parent.mkdir()
    torch.save(tiny_openai_state(), paths["cxr-repair"])

    # MedCLIP: the unzipped folder holding pytorch_model.bin (Swin "vit" variant, 4.x key names)
    state = build_medclip("vit", bert_dir, swin_dir, swin_to_upstream)[0]
    paths["medclip"] = root / "medclip-vit" / "pytorch_model.bin"
    paths["medclip"].parent.mkdir()
    torch.save(state, paths["medclip"])

    # CXR-CLIP: the trainer's .tar (model state dict + training config + optimizer, ...)
    state = build_cxr_clip("swin", bert_dir, swin_dir, swin_to_upstream)[0]
    paths["cxr-clip"] = save_tar(root / "swint_m.tar", state, upstream_config("swin"))
    return paths


def model_tables(paths: dict[str, Path], bert_dir: Path, swin_dir: Path) -> dict[str, tuple[str | None, dict]]:
    """name -> (factory, options). Two spellings: a built-in name without factory (cxr-repair,
    medclip) and a custom name with an explicit factory (clip-tiny, cxr-clip-swin)."""
    hub_dirs = {"text_model_dir": str(bert_dir), "vision_model_dir": str(swin_dir)}
    return {
        "clip-tiny": (
            "pytest_medrobust.models.clip:load_clip",
            {"model_name": TINY_CLIP, "pretrained": str(paths["clip"]), "quick_gelu": False},
        ),
        "cxr-repair": (None, {"checkpoint": str(paths["cxr-repair"])}),
        "medclip": (None, {"checkpoint": str(paths["medclip"].parent), **hub_dirs}),  # the unzipped folder
        "cxr-clip-swin": ("pytest_medrobust.models.cxr_clip:load_cxr_clip", {"checkpoint": str(paths["cxr-clip"]), **hub_dirs}),
    }


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(str(value))  # a TOML basic string (paths with backslashes stay valid)


def pyproject(tables: dict[str, tuple[str | None, dict]]) -> str:
    text = """
[tool.medrobust]
dataset = "manifest.csv"
levels = [0.0, 0.3]
patches = ["black_box"]
device = "cpu"
"""
    for name, (factory, options) in tables.items():
        text += f"\n[[tool.medrobust.models]]\nname = {toml_value(name)}\n"
        if factory:
            text += f"factory = {toml_value(factory)}\n"
        text += "options = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in options.items()) + " }\n"
    return text


# What each adapter's card must say, besides source and sha256 (checked against the files).
EXPECTED = {
    "clip-tiny": {
        "factory": "pytest_medrobust.models.clip:load_clip",
        "adapter": "clip/open_clip",
        "class": "pytest_medrobust.models.clip.OpenClipAdapter",
        "variant": TINY_CLIP,
        "embedding_dim": 32,
        "input_size": [224, 224],
        "geometry": "crop",
        "text_max_length": 77,
        "quick_gelu": False,
        "normalisation": {
            "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711], "scale": "0-1",
        },
    },
    "cxr-repair": {
        "factory": "pytest_medrobust.models.cxr_repair:load_cxr_repair",
        "adapter": "cxr-repair",
        "class": "pytest_medrobust.models.cxr_repair.CXRRePaiR",
        "embedding_dim": 32,
        "input_size": [320, 320],
        "model_resolution": [224, 224],
        "geometry": "pad",
        "text_max_length": 77,
        "normalisation": {"mean": 101.48761, "std": 83.43944, "scale": "0-255", "channels": "gray x3"},
    },
    "medclip": {
        "factory": "pytest_medrobust.models.medclip:load_medclip",
        "adapter": "medclip",
        "class": "pytest_medrobust.models.medclip.MedCLIP",
        "variant": "vit",
        "embedding_dim": 16,
        "input_size": [224, 224],
        "geometry": "pad",
        "text_max_length": 77,
        "ignored_keys": [],
        "normalisation": {
            "mean": 0.5862785803043838, "std": 0.27950088968644304, "scale": "0-1", "channels": "1, repeated to 3",
        },
    },
    "cxr-clip-swin": {
        "factory": "pytest_medrobust.models.cxr_clip:load_cxr_clip",
        "adapter": "cxr-clip",
        "class": "pytest_medrobust.models.cxr_clip.CXRClip",
        "variant": "swin",
        "embedding_dim": 24,
        "input_size": [224, 224],
        "geometry": "crop",
        "text_max_length": 256,
        "text_pooling": "eos",
        "projection_head": "linear",
        "image_feature": "last_hidden_state[:, 0]",
        "normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3, "scale": "0-1"},
    },
}

METRICS = {
    "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_unique_R@1", "i2t_unique_R@5",
    "i2t_unique_R@10", "i2t_mean_rank", "i2t_median_rank", "t2i_mean_rank", "t2i_median_rank",
}


def test_four_upstream_adapters_run_the_grid_from_their_checkpoints(
    pytester: pytest.Pytester, monkeypatch, bert_dir, swin_dir, swin_to_upstream
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    paths = write_checkpoints(pytester.path / "weights", bert_dir, swin_dir, swin_to_upstream)
    tables = model_tables(paths, bert_dir, swin_dir)
    pytester.makefile(".toml", pyproject=pyproject(tables))
    write_dataset(pytester.path)

    args = (
        "--medrobust", "-p", "no:cacheprovider", "--medrobust-search-examples", "0", "--medrobust-bootstrap", "0",
        "--medrobust-levels", "0,0.3", "--medrobust-patches", "black_box",
    )
    result = pytester.runpytest(*args)
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == 0 and "error" not in outcomes, out
    result.assert_outcomes(errors=0, passed=outcomes.get("passed", 0), failed=outcomes.get("failed", 0))
    expected_ids = [f"{m}-black_box-{lv}" for m in EXPECTED for lv in LEVELS]
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == len(expected_ids), out

    results = json.loads((pytester.path / "reports" / "medrobust.json").read_text())
    assert results["summary"]["errors"] == 0 and results["summary"]["cells"] == len(expected_ids)
    assert results["dataset"]["n_images"] == N_IMAGES

    # One card per adapter: the registry's fields, the adapter's own, and the weights' provenance.
    assert set(results["models"]) == set(EXPECTED)
    weights = {"clip-tiny": "clip", "cxr-repair": "cxr-repair", "medclip": "medclip", "cxr-clip-swin": "cxr-clip"}
    for name, want in EXPECTED.items():
        card = results["models"][name]
        path = paths[weights[name]]
        assert card["name"] == name
        assert card["source"] == str(path), (name, card["source"])
        assert card["sha256"] == sha256(path), name
        assert card["n_parameters"] > 0 and isinstance(card["options"], dict)
        for key, value in want.items():
            assert card.get(key) == value, (name, key, card.get(key), value)
    assert results["models"]["clip-tiny"]["weights_file"] == str(paths["clip"])
    assert results["models"]["medclip"]["text_model"] == str(bert_dir)
    assert results["models"]["medclip"]["vision_model"] == str(swin_dir)
    assert results["models"]["medclip"]["options"]["checkpoint"] == str(paths["medclip"].parent)
    assert results["models"]["cxr-clip-swin"]["text_model"] == str(bert_dir)
    assert results["models"]["cxr-clip-swin"]["vision_model"] == str(swin_dir)

    # Every cell ran and carries metrics.
    cells = {c["id"]: c for c in results["cells"]}
    assert sorted(cells) == sorted(expected_ids)
    for cell_id, cell in cells.items():
        assert cell["outcome"] in ("passed", "failed"), (cell_id, cell.get("error"))
        assert cell["n_images"] == N_IMAGES and not cell.get("error")
        assert METRICS <= set(cell["metrics"]), (cell_id, sorted(cell["metrics"]))
        for key, value in cell["metrics"].items():
            assert isinstance(value, (int, float)) and value == value, (cell_id, key, value)  # a number, not NaN
        assert all(0.0 <= cell["metrics"][k] <= 1.0 for k in METRICS if "_R@" in k), cell_id
        assert 1.0 <= cell["metrics"]["i2t_unique_mean_rank"] <= 8.0 and 1.0 <= cell["metrics"]["t2i_mean_rank"] <= N_IMAGES
    # The grid fed each adapter as the per-adapter tests do (prepare_image -> uint8 -> to_batch,
    # checked there against upstream), occluded with the public engine (seed 0, the manifest ids):
    # the same numbers for every cell, computed here outside the plugin.
    with open(pytester.path / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = []
    for r in rows:
        with Image.open(pytester.path / r["image"]) as im:
            images.append(im.convert("L"))
    ids = [r["id"] for r in rows]
    texts, index = unique_texts([r["report"] for r in rows])
    for name, (factory, options) in tables.items():
        model = load_model(ModelSpec(name, factory=factory, options=options), torch.device("cpu"))
        with torch.inference_mode():
            text_emb = model.encode_texts(texts)
            for level in LEVELS:
                batch = harness_pixels(model, images)
                if float(level) > 0:
                    batch = occlusion.occlude(batch, ids, "black_box", float(level), 0)[0]
                direct = retrieval_metrics(model.encode_images(batch), text_emb, index)
                grid = cells[f"{name}-black_box-{level}"]["metrics"]
                assert direct == grid, (name, level, direct, grid)

    # A second run reads every embedding from the cache (keyed by the card: weights sha256 and
    # preprocessing) and gives the same cells.
    again = pytester.runpytest(*args)
    again.assert_outcomes(errors=0, passed=outcomes.get("passed", 0), failed=outcomes.get("failed", 0))
    second = json.loads((pytester.path / "reports" / "medrobust.json").read_text())
    assert all(c["cached"] for c in second["cells"]), [(c["id"], c["cached"]) for c in second["cells"]]
    strip = lambda r: [{k: v for k, v in c.items() if k not in ("duration_s", "cached")} for c in r["cells"]]  # noqa: E731
    assert strip(second) == strip(results) and second["models"] == results["models"]
