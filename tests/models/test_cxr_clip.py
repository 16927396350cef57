"""cxr-clip: ``.tar`` checkpoints as ``cxrclip/trainer.py`` writes them, Swin and ResNet50.

The file is ``{"model": state_dict, "config": plain dicts, "optimizer": ..., "scheduler": ...,
"epoch": ..., "train_loss": ...}`` with upstream's module names (``image_encoder.image_encoder.*``
Swin under transformers-4.x names, ``image_encoder.resnet.*``, ``text_encoder.text_encoder.*``,
``image_projection.projection.*``, ``text_projection.projection.*``, ``logit_scale``). The
reference forward follows upstream's evaluator: RGB -> torchvision Resize(224) + CenterCrop(224)
-> ToTensor -> Normalize (0.5 for Swin, ImageNet for ResNet); Swin ``last_hidden_state[:, 0]``;
texts tokenised as one batch padded to the longest (max 256) and pooled at the last unmasked
token; projection; L2 normalisation.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torchvision.transforms as T
from torch.nn import functional as F

from pytest_medrobust.errors import ModelLoadError
from pytest_medrobust.models import ModelSpec, load_model
from pytest_medrobust.models.cxr_clip import load_cxr_clip

FACTORY = "pytest_medrobust.models.cxr_clip:load_cxr_clip"


def upstream_config(variant: str, head: str = "linear") -> dict:
    image = (
        {"source": "huggingface", "name": "microsoft/swin-tiny-patch4-window7-224", "pretrained": True, "model_type": "swin"}
        if variant == "swin"
        else {"source": "torchvision", "name": "resnet", "pretrained": True}
    )
    return {
        "base": {"seed": 1234, "amp": True, "image_size": 224, "text_max_length": 256, "loss_best": "contrastive"},
        "model": {
            "name": "clip_custom",
            "temperature": 0.07,
            "image_encoder": image,
            "text_encoder": {
                "source": "huggingface", "name": "emilyalsentzer/Bio_ClinicalBERT", "pretrained": True,
                "gradient_checkpointing": False, "pooling": "eos", "cache_dir": "huggingface/",
                "trust_remote_code": True, "mlm_head": True,
            },
            "projection_head": {"name": head, "dropout": 0.1, "proj_dim": 24},
        },
        "tokenizer": {"source": "huggingface", "pretrained_model_name_or_path": "emilyalsentzer/Bio_ClinicalBERT",
                      "cache_dir": "huggingface/tokenizers"},
        "transform": {"test": {"Resize": {"size": 224}, "CenterCrop": {"size": 224}}},
    }


def build(variant, bert_dir, swin_dir, swin_to_upstream, head="linear", proj=24):
    import torchvision
    from transformers import BertConfig, BertModel, SwinConfig, SwinModel

    torch.manual_seed(21)
    bert = BertModel(BertConfig.from_pretrained(str(bert_dir))).eval()
    state = {f"text_encoder.text_encoder.{k}": v.clone() for k, v in bert.state_dict().items()}
    if variant == "swin":
        swin = SwinModel(SwinConfig.from_pretrained(str(swin_dir))).eval()
        state.update({f"image_encoder.image_encoder.{k}": v for k, v in swin_to_upstream(swin).items()})
        vision, dim = swin, swin.config.hidden_size
    else:
        resnet = torchvision.models.resnet50(weights=None)
        del resnet.fc
        resnet.eval()
        state.update({f"image_encoder.resnet.{k}": v.clone() for k, v in resnet.state_dict().items()})
        vision, dim = resnet, 2048
    heads = {}
    for side, d_in in (("image", dim), ("text", bert.config.hidden_size)):
        h = {"projection.weight": torch.randn(proj, d_in) * 0.1, "projection.bias": torch.randn(proj) * 0.1}
        if head == "mlp":
            h.update({"fc.weight": torch.randn(proj, proj) * 0.1, "fc.bias": torch.randn(proj) * 0.1,
                      "layer_norm.weight": 1 + torch.randn(proj) * 0.1, "layer_norm.bias": torch.randn(proj) * 0.1})
        heads[side] = h
        state.update({f"{side}_projection.{k}": v for k, v in h.items()})
    state["logit_scale"] = torch.tensor(2.6592)
    return state, bert, vision, heads


def save_tar(path, state, config, **extra):
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
                "scheduler": {"last_epoch": 3, "_step_count": 4}, "config": config, "epoch": 4, "train_loss": 1.25,
                **extra}, path)
    return path


def head_forward(h, x):
    projected = x @ h["projection.weight"].T + h["projection.bias"]
    if "fc.weight" not in h:
        return projected
    y = F.gelu(projected) @ h["fc.weight"].T + h["fc.bias"] + projected
    return F.layer_norm(y, (y.shape[-1],), h["layer_norm.weight"], h["layer_norm.bias"])


def upstream_pixels(images, mean, std):
    tf = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(), T.Normalize(mean=mean, std=std)])
    return torch.stack([tf(im.convert("RGB")) for im in images])


def upstream_text(bert, head, tokenizer, texts):
    tok = tokenizer(texts, padding="longest", truncation=True, return_tensors="pt", max_length=256)
    with torch.no_grad():
        hidden = bert(**tok).last_hidden_state
    eos = tok["attention_mask"].sum(dim=-1) - 1
    return F.normalize(head_forward(head, hidden[torch.arange(hidden.shape[0]), eos]), dim=-1)


@pytest.fixture(scope="module")
def swin_tar(tmp_path_factory, bert_dir, swin_dir, swin_to_upstream):
    state, bert, swin, heads = build("swin", bert_dir, swin_dir, swin_to_upstream)
    path = save_tar(tmp_path_factory.mktemp("cxrclip") / "swint_m.tar", state, upstream_config("swin"))
    return path, state, bert, swin, heads


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_swin_matches_upstream_forward(head, swin_tar, tmp_path, bert_dir, swin_dir, swin_to_upstream, images, texts,
                                       harness_batch, record_diff):
    from transformers import BertTokenizer

    if head == "linear":
        path, state, bert, swin, heads = swin_tar
    else:
        state, bert, swin, heads = build("swin", bert_dir, swin_dir, swin_to_upstream, head="mlp")
        path = save_tar(tmp_path / "swint_mlp.tar", state, upstream_config("swin", "mlp"))
    assert "image_encoder.image_encoder.encoder.layers.0.blocks.1.attention.self.query.weight" in state
    opts = {"checkpoint": str(path), "text_model_dir": str(bert_dir), "vision_model_dir": str(swin_dir)}
    model = load_model(ModelSpec("cxr-clip", factory=FACTORY, options=opts), torch.device("cpu"))
    assert model.input_size == (224, 224) and model.geometry == "crop" and model.variant == "swin"

    got = model.encode_images(harness_batch(model, images))
    with torch.no_grad():
        feats = swin(pixel_values=upstream_pixels(images, [0.5] * 3, [0.5] * 3)).last_hidden_state[:, 0]
        want = F.normalize(head_forward(heads["image"], feats), dim=-1)
    assert record_diff(f"cxr-clip swin tiny ({head}) image", float((got - want).abs().max())) < 1e-5

    long_text = "small left pleural effusion with bibasilar atelectasis . " * 30
    batch = texts + [long_text]
    got_t = model.encode_texts(batch)
    want_t = upstream_text(bert, heads["text"], BertTokenizer.from_pretrained(str(bert_dir)), batch)
    assert record_diff(f"cxr-clip swin tiny ({head}) text", float((got_t - want_t).abs().max())) < 1e-5

    card = model.card()
    assert card["variant"] == "swin" and card["embedding_dim"] == 24 and card["text_max_length"] == 256
    assert card["normalisation"] == {"mean": [0.5] * 3, "std": [0.5] * 3, "scale": "0-1"}
    assert card["image_feature"] == "last_hidden_state[:, 0]" and card["text_pooling"] == "eos"
    assert card["projection_head"] == head and len(card["sha256"]) == 64


def test_truncation_at_256(swin_tar, bert_dir, swin_dir):
    model = load_cxr_clip(checkpoint=str(swin_tar[0]), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    ids = model.token_ids(["mild cardiomegaly and edema " * 100, "no pneumothorax"])
    assert len(ids[0]) == 256 and ids[0][-1] == model.tokenizer.sep_token_id
    assert len(ids[1]) < 256


def test_resnet50_variant(tmp_path, bert_dir, swin_to_upstream, images, texts, harness_batch, record_diff):
    from transformers import BertTokenizer

    state, bert, resnet, heads = build("resnet50", bert_dir, None, swin_to_upstream)
    assert "image_encoder.resnet.layer4.2.conv3.weight" in state and not any(".fc." in k for k in state)
    path = save_tar(tmp_path / "r50_m.tar", state, upstream_config("resnet50"))
    model = load_cxr_clip(checkpoint=str(path), text_model_dir=str(bert_dir))
    assert model.variant == "resnet50"
    got = model.encode_images(harness_batch(model, images[1:2]))
    with torch.no_grad():
        px = upstream_pixels(images[1:2], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(px))))  # upstream ResNet50.forward, fc deleted
        x = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))
        want = F.normalize(head_forward(heads["image"], torch.flatten(resnet.avgpool(x), 1)), dim=-1)
    assert record_diff("cxr-clip resnet50 image", float((got - want).abs().max())) < 1e-5
    got_t = model.encode_texts(texts)
    want_t = upstream_text(bert, heads["text"], BertTokenizer.from_pretrained(str(bert_dir)), texts)
    assert record_diff("cxr-clip resnet50 text", float((got_t - want_t).abs().max())) < 1e-5
    assert model.card()["normalisation"]["mean"] == [0.485, 0.456, 0.406]


def test_pickled_tar_needs_trust(tmp_path, swin_tar, bert_dir, swin_dir):
    path = save_tar(tmp_path / "pickled.tar", swin_tar[1], upstream_config("swin"), args=argparse.Namespace(lr=1e-4))
    opts = dict(text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    with pytest.raises(ModelLoadError, match=r"cxr-clip: .*needs full unpickling.*argparse\.Namespace.*trust_pickle=True"):
        load_cxr_clip(checkpoint=str(path), **opts)
    model = load_cxr_clip(checkpoint=str(path), trust_pickle=True, **opts)
    assert model.encode_texts(["edema"]).shape == (1, 24)


class FakeOmegaConf:
    """Classes pickled under omegaconf's names and in its layout (NEWOBJ + BUILD of the state
    omegaconf's ``__getstate__`` returns: ``_metadata``, ``_parent``, ``_content`` / ``_val``),
    without omegaconf installed. ``tree`` builds a whole config as omegaconf containers, the way
    hydra composes it; ``to_trainer_dict`` is what CXR-CLIP's ``convert_dictconfig_to_dict`` does
    with it (DictConfig levels become dicts, list values stay ListConfig objects)."""

    MODULES = ("omegaconf", "omegaconf.base", "omegaconf.dictconfig", "omegaconf.listconfig", "omegaconf.nodes")
    CLASSES = [("omegaconf.base", "Metadata"), ("omegaconf.base", "ContainerMetadata"),
               ("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig"),
               ("omegaconf.nodes", "AnyNode"), ("omegaconf.nodes", "StringNode")]

    def __init__(self, stack):
        import sys
        import types

        self.classes = {}
        for module in self.MODULES:
            stack.setitem(sys.modules, module, types.ModuleType(module))
        for module, name in self.CLASSES:
            cls = type(name, (), {"__module__": module})
            setattr(sys.modules[module], name, cls)
            self.classes[name] = cls

    def _new(self, name, **fields):
        obj = self.classes[name].__new__(self.classes[name])
        obj.__dict__.update(fields)
        return obj

    def meta(self, kind, key, object_type, resolver_cache=None, flags=None):
        import collections
        import typing

        m = self._new(kind, ref_type=typing.Any, object_type=object_type, optional=True, key=key, flags=flags,
                      flags_root=False, resolver_cache=resolver_cache or collections.defaultdict(dict))
        if kind == "ContainerMetadata":
            m.__dict__.update(key_type=typing.Any if object_type is dict else int, element_type=typing.Any)
        return m

    def tree(self, value, key=None, parent=None, **root_meta):
        if isinstance(value, dict):
            node = self._new("DictConfig", _metadata=self.meta("ContainerMetadata", key, dict, **root_meta),
                             _parent=parent)
            node.__dict__["_content"] = {k: self.tree(v, k, node) for k, v in value.items()}
        elif isinstance(value, list):
            node = self._new("ListConfig", _metadata=self.meta("ContainerMetadata", key, list), _parent=parent)
            node.__dict__["_content"] = [self.tree(v, i, node) for i, v in enumerate(value)]
        else:
            kind = "StringNode" if isinstance(value, str) and key == "name" else "AnyNode"
            node = self._new(kind, _metadata=self.meta("Metadata", key, None), _parent=parent, _val=value)
        return node

    def to_trainer_dict(self, node):
        if type(node) is self.classes["DictConfig"]:
            return {k: self.to_trainer_dict(v) for k, v in node._content.items()}
        if type(node) in (self.classes["AnyNode"], self.classes["StringNode"]):
            return node._val
        return node  # a ListConfig, as DictConfig.items() hands it out


def hydra_trained_tar(path, state, stack, **extra):
    """A .tar as ``cxrclip/trainer.py`` writes it after a real ``@hydra.main`` run: the config
    composed as OmegaConf containers, hydra's ``${now:...}`` resolver cache filled in the root's
    metadata (keys are the tuples of argument strings omegaconf caches by), DictConfig levels
    converted to dicts, list values (transform scale, optimizer betas, loss list) still
    ListConfigs pointing up to that root; real AdamW and LambdaLR state dicts."""
    import collections

    omega = FakeOmegaConf(stack)
    cfg = upstream_config("swin")
    cfg["transform"]["train"] = {"RandomResizedCrop": {"size": 224, "scale": [0.8, 1.1]}, "CLAHE": {"clip_limit": 4.0}}
    cfg["optimizer"] = {"name": "adamw", "config": {"lr": 5e-5, "weight_decay": 1e-4, "betas": [0.9, 0.999]}}
    cfg["loss"] = {"cxr_clip": {"loss_ratio": 1.0, "label_smoothing": [0.0, 0.1]}}
    cfg["base"]["output"] = {"checkpoint": "./outputs/2023-04-12/09-41-07/checkpoints/"}
    resolver_cache = collections.defaultdict(dict)
    resolver_cache["now"][("%Y-%m-%d",)] = "2023-04-12"
    resolver_cache["now"][("%H-%M-%S",)] = "09-41-07"
    root = omega.tree(cfg, resolver_cache=resolver_cache, flags={"struct": True})
    assert len(root._metadata.resolver_cache["now"]) == 2
    config = omega.to_trainer_dict(root)
    assert type(config["transform"]["train"]["RandomResizedCrop"]["scale"]).__name__ == "ListConfig"

    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([param], lr=5e-5, weight_decay=1e-4)
    param.grad = torch.ones(3)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    save_tar(path, state, config, **extra)
    checkpoint = torch.load(path, weights_only=False)  # what the trainer's dict became on disk
    checkpoint["optimizer"], checkpoint["scheduler"] = opt.state_dict(), sched.state_dict()
    torch.save(checkpoint, path)
    return path


def test_hydra_trained_tar_loads_safely_without_omegaconf(tmp_path, swin_tar, bert_dir, swin_dir, monkeypatch, texts):
    """The root config's resolver cache (a non-empty defaultdict, reachable from every ListConfig
    through its parents) and the ListConfigs are read by inert stand-ins: no trust_pickle, no
    omegaconf; the model equals the one from the plain-dict .tar."""
    import sys

    path = tmp_path / "model-best.tar"
    with monkeypatch.context() as stack:
        hydra_trained_tar(path, swin_tar[1], stack)
    assert "omegaconf.listconfig" not in sys.modules or not hasattr(sys.modules["omegaconf.listconfig"], "ListConfig")
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "collections.defaultdict" in unsafe and "omegaconf.listconfig.ListConfig" in unsafe
    from pytest_medrobust.models.hub import load_checkpoint_file

    loaded = load_checkpoint_file(path, model="cxr-clip")
    assert loaded["config"]["transform"]["train"]["RandomResizedCrop"]["scale"] == [0.8, 1.1]
    assert loaded["config"]["optimizer"]["config"]["betas"] == [0.9, 0.999]
    assert loaded["config"]["loss"]["cxr_clip"]["label_smoothing"] == [0.0, 0.1]
    assert loaded["config"]["model"]["image_encoder"]["model_type"] == "swin"
    opts = dict(text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    model = load_cxr_clip(checkpoint=str(path), **opts)
    plain = load_cxr_clip(checkpoint=str(swin_tar[0]), **opts)
    assert torch.equal(model.encode_texts(texts), plain.encode_texts(texts))


def test_refusal_names_the_exact_global(tmp_path, swin_tar, bert_dir, swin_dir, monkeypatch):
    """Only what the stand-ins cover is let through: another class in the same hydra checkpoint
    is refused by name (not torch's generic text); with trust_pickle=True the file is unpickled
    with omegaconf classes still read by the stand-ins, so omegaconf need not be installed."""
    import collections

    path = tmp_path / "model-last.tar"
    with monkeypatch.context() as stack:
        hydra_trained_tar(path, swin_tar[1], stack, args=argparse.Namespace(lr=1e-4),
                          counts=collections.Counter(a=1), queue=collections.deque([1, 2]))
    opts = dict(text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    with pytest.raises(ModelLoadError) as err:
        load_cxr_clip(checkpoint=str(path), **opts)
    msg = str(err.value)
    assert "it stores the Python object argparse.Namespace" in msg and "collections.deque" in msg
    assert "add_safe_globals" not in msg and "omegaconf" not in msg and "defaultdict" not in msg
    assert "trust_pickle=True" in msg and str(path) in msg
    model = load_cxr_clip(checkpoint=str(path), trust_pickle=True, **opts)
    assert model.encode_texts(["edema"]).shape == (1, 24)


def test_unknown_omegaconf_class_is_refused_by_name(tmp_path, swin_tar, monkeypatch):
    from pytest_medrobust.models.hub import load_checkpoint_file

    path = tmp_path / "odd.tar"
    with monkeypatch.context() as stack:
        omega = FakeOmegaConf(stack)
        import sys

        odd = type("EnumNode2", (), {"__module__": "omegaconf.nodes"})
        stack.setattr(sys.modules["omegaconf.nodes"], "EnumNode2", odd, raising=False)
        cfg = upstream_config("swin")
        cfg["extra"] = {"scale": omega.tree([1, 2]), "odd": odd()}
        save_tar(path, swin_tar[1], cfg)
    with pytest.raises(ModelLoadError, match=r"refused it: it stores the Python object omegaconf\.nodes\.EnumNode2\)"):
        load_checkpoint_file(path, model="cxr-clip")
    with pytest.raises(ModelLoadError, match="needs the Python module 'omegaconf'"):
        load_checkpoint_file(path, model="cxr-clip", trust_pickle=True)


def test_config_with_omegaconf_lists_loads_without_omegaconf(tmp_path, swin_tar, bert_dir, swin_dir, monkeypatch):
    """A ListConfig whose parents carry only empty resolver caches (a config never resolved with
    ``${now:}``) is read as a plain list too."""
    path = tmp_path / "swint_hydra.tar"
    with monkeypatch.context() as stack:
        omega = FakeOmegaConf(stack)
        cfg = upstream_config("swin")
        parent = omega.tree({"scale": [0.8, 1.1]}, "RandomResizedCrop")
        cfg["transform"] = {"train": {"RandomResizedCrop": {"size": 224, "scale": parent._content["scale"]}}}
        save_tar(path, swin_tar[1], cfg)
    from pytest_medrobust.models.hub import load_checkpoint_file

    loaded = load_checkpoint_file(path, model="cxr-clip")
    assert loaded["config"]["transform"]["train"]["RandomResizedCrop"]["scale"] == [0.8, 1.1]
    model = load_cxr_clip(checkpoint=str(path), text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    assert model.encode_texts(["edema"]).shape == (1, 24)


def test_safetensors_state_dict(tmp_path, swin_tar, bert_dir, swin_dir, texts):
    from safetensors.torch import save_file

    path = tmp_path / "swint_m.safetensors"
    save_file({k: v.contiguous() for k, v in swin_tar[1].items()}, str(path))
    opts = dict(text_model_dir=str(bert_dir), vision_model_dir=str(swin_dir))
    a = load_cxr_clip(checkpoint=str(path), **opts)
    b = load_cxr_clip(checkpoint=str(swin_tar[0]), **opts)
    assert a.variant == "swin" and torch.equal(a.encode_texts(texts), b.encode_texts(texts))


def test_missing_hub_pieces_offline(swin_tar, tmp_path, swin_dir):
    with pytest.raises(ModelLoadError) as err:
        load_cxr_clip(checkpoint=str(swin_tar[0]), vision_model_dir=str(swin_dir), cache_dir=str(tmp_path / "empty"))
    msg = str(err.value)
    assert "cxr-clip: cannot load the config of 'emilyalsentzer/Bio_ClinicalBERT'" in msg
    assert "HF_HUB_OFFLINE is set" in msg and "text_model_dir=" in msg and "hf download emilyalsentzer/Bio_ClinicalBERT" in msg


def test_bad_inputs(tmp_path, swin_tar, bert_dir):
    with pytest.raises(ModelLoadError, match="cxr-clip: no weights given; pass checkpoint=.*Soombit-ai/cxr-clip"):
        load_cxr_clip()
    cfg = upstream_config("swin")
    cfg["model"]["image_encoder"] = {"source": "huggingface", "name": "google/vit-base-patch16-224", "model_type": "vit"}
    path = save_tar(tmp_path / "vit.tar", swin_tar[1], cfg)
    with pytest.raises(ModelLoadError, match="unsupported image encoder"):
        load_cxr_clip(checkpoint=str(path), text_model_dir=str(bert_dir))
    with pytest.raises(ModelLoadError, match="variant='resnet50' but .* holds a 'swin' model"):
        load_cxr_clip(checkpoint=str(swin_tar[0]), variant="resnet50", text_model_dir=str(bert_dir))


@pytest.mark.slow
def test_full_size_swin_tiny_and_bert_base(tmp_path, bert_dir, swin_to_upstream, images, texts, harness_batch,
                                           record_diff):
    """swint_m-sized: swin-tiny (built-in config, no vision_model_dir) + BERT-base (Bio_ClinicalBERT's
    config.json, vocabulary size 28996), projection 768 -> 512."""
    from transformers import BertTokenizer

    from .conftest import write_bert_dir

    full_bert = write_bert_dir(tmp_path / "bert_base", vocab_size=28996, hidden_size=768, num_hidden_layers=12,
                               num_attention_heads=12, intermediate_size=3072)
    config = json.loads((full_bert / "config.json").read_text())
    assert config["hidden_size"] == 768 and config["vocab_size"] == 28996
    from transformers import SwinModel

    from pytest_medrobust.models.hub import swin_tiny_config

    swin_cfg_dir = tmp_path / "swin_full"
    swin_tiny_config().save_pretrained(swin_cfg_dir)
    state, bert, swin, heads = build("swin", full_bert, swin_cfg_dir, swin_to_upstream, proj=512)
    assert isinstance(swin, SwinModel) and swin.config.hidden_size == 768
    path = save_tar(tmp_path / "swint_m.tar", state, upstream_config("swin"))
    model = load_cxr_clip(checkpoint=str(path), text_model_dir=str(full_bert))
    assert model.card()["vision_model"].startswith("built-in config of microsoft/swin-tiny")
    got = model.encode_images(harness_batch(model, images[:2]))
    with torch.no_grad():
        feats = swin(pixel_values=upstream_pixels(images[:2], [0.5] * 3, [0.5] * 3)).last_hidden_state[:, 0]
        want = F.normalize(head_forward(heads["image"], feats), dim=-1)
    assert record_diff("cxr-clip swin-tiny/BERT-base image", float((got - want).abs().max())) < 1e-5
    got_t = model.encode_texts(texts)
    want_t = upstream_text(bert, heads["text"], BertTokenizer.from_pretrained(str(bert_dir)), texts)
    assert record_diff("cxr-clip swin-tiny/BERT-base text", float((got_t - want_t).abs().max())) < 1e-5
    assert model.card()["embedding_dim"] == 512
    path.unlink()  # 500 MB: do not leave it to pytest's tmp rotation
