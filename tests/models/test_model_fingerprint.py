"""Cache fingerprints of models that are not torch modules (the README's own-model example is a
plain class), and the one warning for a model whose embeddings cannot be cached."""

from __future__ import annotations

import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
import torch

from pytest_medrobust.cache import CacheWarning, missing_fingerprint, model_fingerprint
from pytest_medrobust.config import Settings
from pytest_medrobust.models import ModelSpec, load_model, model_card
from pytest_medrobust.runner import GridRunner

MODULE = '''
import torch


class Plain:
    """A plain class holding a torch network, as in the README."""
    name = "plain"
    input_size = (16, 16)
    geometry = "pad"

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.net = torch.nn.Linear(16 * 16, 4)

    def encode_images(self, x):
        return torch.nn.functional.normalize(self.net(x.mean(dim=1).flatten(1)), dim=-1)

    def encode_texts(self, texts):
        return torch.nn.functional.normalize(torch.stack([torch.ones(4) * (1 + len(t) % 3) for t in texts]), dim=-1)


class Tensorless(Plain):
    def __init__(self, table=None):
        self.table = table

    def encode_images(self, x):
        return torch.nn.functional.normalize(x.mean(dim=(1, 2, 3))[:, None].repeat(1, 4) + 1, dim=-1)


class Own(Plain):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def fingerprint(self):
        return self.value


def plain(device, seed=0):
    return Plain(seed)


def tensorless(device, table=None):
    return Tensorless(table)
'''


@pytest.fixture
def usermodels(tmp_path, monkeypatch):
    """The module above, importable as ``usermodels`` from a folder of its own."""
    (tmp_path / "usermodels.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "usermodels", raising=False)
    import usermodels

    yield usermodels, tmp_path / "usermodels.py"
    sys.modules.pop("usermodels", None)


def card_of(model, factory="usermodels:plain", **options):
    return model_card(model, ModelSpec(model.name, factory=factory, options=options))


def test_plain_class_gets_a_fingerprint_from_its_tensors_and_code(usermodels):
    module, path = usermodels
    a = module.Plain(seed=0)
    first = model_fingerprint(a, card_of(a))
    assert isinstance(first, str) and len(first) == 64
    assert model_fingerprint(module.Plain(seed=0), card_of(a)) == first  # a pure function of the model
    assert model_fingerprint(module.Plain(seed=1), card_of(a)) != first  # other weights
    with torch.no_grad():
        a.net.bias[0] += 1e-6
    assert model_fingerprint(a, card_of(a)) not in (first, None)
    # other code in the model's module: another fingerprint, for the same weights
    b = module.Plain(seed=0)
    path.write_text(MODULE.replace("len(t) % 3", "len(t) % 5"))
    assert model_fingerprint(b, card_of(b)) != first


def test_tensorless_plain_class_is_fingerprinted_by_code_options_and_named_files(usermodels, tmp_path):
    module, _ = usermodels
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"one")
    m = module.Tensorless()
    first = model_fingerprint(m, card_of(m, "usermodels:tensorless", weights=str(weights)))
    assert first is not None
    weights.write_bytes(b"two!")  # the file an option names changed: another fingerprint
    assert model_fingerprint(m, card_of(m, "usermodels:tensorless", weights=str(weights))) != first
    arrays = [model_fingerprint(module.Tensorless(np.full(3, v)), card_of(m, "usermodels:tensorless")) for v in (1, 2)]
    assert arrays[0] != arrays[1]  # numpy arrays in its attributes count as weights


def test_own_fingerprint_wins(usermodels):
    module, _ = usermodels
    m = module.Own("v1")
    fp = model_fingerprint(m, card_of(m))
    assert fp is not None and fp != model_fingerprint(module.Own("v2"), card_of(m))
    assert model_fingerprint(module.Own(None), card_of(m)) is None
    message = missing_fingerprint(module.Own(None), card_of(m))
    assert "its fingerprint() returned None; define fingerprint() on the model" in message


def _unreadable_model():
    """A model whose class lives in a module with no source file (made at run time)."""
    module = types.ModuleType("medrobust_runtime_models")
    exec(textwrap.dedent(MODULE), module.__dict__)  # noqa: S102 - test-only code written above
    module.__dict__.pop("__file__", None)
    sys.modules[module.__name__] = module
    module.Plain.__module__ = module.__name__
    module.plain.__module__ = module.__name__
    return module


def test_unreadable_code_means_no_fingerprint_and_says_how_to_fix_it():
    module = _unreadable_model()
    try:
        m = module.Plain()
        card = card_of(m, "medrobust_runtime_models:plain")
        assert model_fingerprint(m, card) is None
        msg = missing_fingerprint(m, card)
        assert msg.startswith("model 'plain': its embeddings are not cached: the code of medrobust_runtime_models")
        assert "define fingerprint() on the model" in msg
    finally:
        sys.modules.pop("medrobust_runtime_models", None)


def write_manifest(folder, n=6):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,report"]
    for i in range(n):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8), mode="L").save(folder / f"{i}.png")
        rows.append(f"{i}.png,report number {i}{' x' * i}")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def runner_for(tmp_path, factory):
    settings = Settings(
        models=(ModelSpec("mine", factory=factory),), dataset=str(write_manifest(tmp_path / "data")),
        device="cpu", cache_dir=tmp_path / "cache", levels=(0.0, 0.2, 0.4), patches=("black_box", "white_box"),
    )
    return GridRunner(settings)


def test_runner_caches_a_plain_class(usermodels, tmp_path):
    cold = runner_for(tmp_path, "usermodels:plain")
    first = cold.measure("mine", "black_box", 0.2)
    assert first.cached is False and cold.fingerprint("mine") is not None
    warm = runner_for(tmp_path, "usermodels:plain")
    again = warm.measure("mine", "black_box", 0.2)
    assert again.cached is True and again.metrics == first.metrics


def test_runner_warns_once_when_a_model_cannot_be_cached(tmp_path):
    _unreadable_model()
    try:
        runner = runner_for(tmp_path, "medrobust_runtime_models:plain")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cells = [runner.measure("mine", patch, level) for patch in ("black_box", "white_box") for level in (0.2, 0.4)]
        assert not any(c.cached for c in cells)
        ours = [w for w in caught if issubclass(w.category, CacheWarning)]
        assert len(ours) == 1, [str(w.message) for w in ours]
        assert "model 'mine': its embeddings are not cached" in str(ours[0].message)
        assert not (tmp_path / "cache" / "v1" / "embeddings").exists()
        assert load_model(ModelSpec("mine", factory="medrobust_runtime_models:plain"), torch.device("cpu"))
    finally:
        sys.modules.pop("medrobust_runtime_models", None)
