"""Fault injection, caches: a stale or corrupt entry is never served, and clearing never touches
a folder the plugin did not create (issue 11, items 3, 4, 7 and 9)."""

import json
import os
import shutil
import sys

import numpy as np
import PIL.Image  # noqa: F401 - loaded before pytester's runs: C extensions cannot be imported twice
import pytest
import torch  # noqa: F401

import pytest_medrobust.runner  # noqa: F401
from pytest_medrobust.cache import CacheWarning, model_fingerprint
from pytest_medrobust.datasets import base, load_dataset
from pytest_medrobust.models import ModelSpec, model_card
from tests.plugin.fakes import MODELS, make_project, write_dataset

USAGE = pytest.ExitCode.USAGE_ERROR

SHIFTED = '''

SHIFT = 0  # a preprocessing constant: which slot the image encoder reads


class Shifted(Oracle):
    def encode_images(self, x):
        return torch.roll(super().encode_images(x), SHIFT, dims=1)


def shifted(device, **options):
    return Shifted(device)
'''

PYPROJECT = """
[tool.pytest.ini_options]
pythonpath = ["."]

[tool.medrobust]
models = [{name = "oracle", factory = "fakemodels:shifted"}]
dataset = "manifest.csv"
levels = [0.0, 0.5]
patches = ["black_box"]
device = "cpu"
search = {enabled = false}
bootstrap = {resamples = 0}

[tool.medrobust.thresholds]
min = {"i2t_unique_R@1" = 0.9}
"""


@pytest.fixture
def project(pytester: pytest.Pytester):
    return make_project(pytester, PYPROJECT, models=MODELS + SHIFTED)


def run(project, *args):
    result = project.runpytest("--medrobust-only", "-p", "no:cacheprovider", *args)
    results = json.loads((project.path / "reports" / "medrobust.json").read_text())
    return result, results


def cells(results):
    return {c["id"]: (c["outcome"], c["metrics"]["i2t_unique_R@1"], c["cached"]) for c in results["cells"]}


def outcomes(results):
    return {cell: v[:2] for cell, v in cells(results).items()}


CACHE = ".medrobust_cache"


# -- item 3: the key covers the model's code --------------------------------------------------


def test_a_changed_constant_in_the_models_module_recomputes(project):
    _, first = run(project)
    _, warm = run(project)
    assert {v[2] for v in cells(warm).values()} == {True}
    source = project.path / "fakemodels.py"
    source.write_text(source.read_text().replace("SHIFT = 0", "SHIFT = 3"))
    shutil.rmtree(project.path / "__pycache__", ignore_errors=True)  # same size, same second: no stale .pyc
    _, changed = run(project)
    assert {v[2] for v in cells(changed).values()} == {False}
    _, uncached = run(project, "--medrobust-no-cache")
    assert outcomes(changed) == outcomes(uncached) != outcomes(first)
    assert set(o for o, _ in outcomes(changed).values()) == {"failed"}


def test_a_constant_in_a_sibling_module_of_the_users_package_changes_the_fingerprint(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "prep.py").write_text("SCALE = 1.0\n")
    (package / "model.py").write_text(
        "import torch\nfrom userpkg.prep import SCALE\n\n\nclass M:\n    name = 'm'\n    input_size = (8, 8)\n"
        "    geometry = 'pad'\n\n    def encode_images(self, x):\n        return x.flatten(1) * SCALE\n\n"
        "    def encode_texts(self, texts):\n        return torch.ones(len(texts), 192)\n\n\n"
        "def load(device):\n    return M()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("userpkg", "userpkg.prep", "userpkg.model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import userpkg.model

    try:
        m = userpkg.model.M()
        card = model_card(m, ModelSpec("m", factory="userpkg.model:load"))
        first = model_fingerprint(m, card)
        assert first is not None
        (package / "prep.py").write_text("SCALE = 2.0\n")
        assert model_fingerprint(m, card) not in (first, None)
    finally:
        for name in ("userpkg", "userpkg.prep", "userpkg.model"):
            sys.modules.pop(name, None)


# -- item 4: checksummed entries ----------------------------------------------------------------


def image_entries(project):
    """The image embedding entries by occlusion label."""
    from safetensors import safe_open

    found = {}
    for path in (project.path / CACHE).rglob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            fields = json.loads(f.metadata()["fields"])
        if fields["kind"] == "image":
            found[fields["occlusion"]] = path
    return found


def swap_data(a, b):
    """Put each entry's tensor in the other's file, keeping each file's own metadata (key...)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    opened = {}
    for path in (a, b):
        with safe_open(str(path), framework="pt") as f:
            opened[path] = (f.metadata(), f.get_tensor("embeddings"))
    save_file({"embeddings": opened[b][1]}, str(a), metadata=opened[a][0])
    save_file({"embeddings": opened[a][1]}, str(b), metadata=opened[b][0])


def test_embedding_entries_with_swapped_data_are_recomputed_and_counted(project):
    _, first = run(project)
    assert first["models"]["oracle"]["cache_corrupt"] == 0
    assert sorted(o for o, _ in outcomes(first).values()) == ["failed", "passed"]
    entries = image_entries(project)
    swap_data(entries["clean"], next(p for label, p in entries.items() if label != "clean"))
    result, again = run(project)
    assert outcomes(again) == outcomes(first)  # not a passing occluded cell, not a failing clean one
    assert {v[2] for v in cells(again).values()} == {False}
    assert again["models"]["oracle"]["cache_corrupt"] == 2
    # Counted per cell (both swapped cells) and in the run's summary and terminal table.
    assert again["summary"]["cache_corrupt"] == sum(c["cache_corrupt"] for c in again["cells"]) >= 2
    assert "corrupt cache entr(ies) were found, recomputed and overwritten" in result.stdout.str()
    assert "corrupt cache entry recomputed and overwritten" in result.stdout.str()
    _, healed = run(project)  # overwritten: read back, nothing corrupt
    assert healed["models"]["oracle"]["cache_corrupt"] == 0 and healed["summary"]["cache_corrupt"] == 0
    assert {v[2] for v in cells(healed).values()} == {True}


def test_a_garbled_embedding_file_is_recomputed_and_counted(project):
    _, first = run(project)
    entry = image_entries(project)["clean"]
    entry.write_bytes(entry.read_bytes()[:-7] + b"garbage")
    _, again = run(project)
    assert outcomes(again) == outcomes(first) and again["models"]["oracle"]["cache_corrupt"] == 1


def garble_decoded(folder):
    """Change the decoded pixels of every entry in ``folder``, keeping whatever checksum it holds."""
    entries = [p for p in folder.rglob("*") if p.suffix in (".npy", ".npz")]
    assert entries
    for path in entries:
        if path.suffix == ".npz":
            with np.load(path) as z:
                stored = {k: z[k] for k in z.files}
            stored["pixels"] = 255 - stored["pixels"]
            with open(path, "wb") as f:
                np.savez(f, **stored)
        else:
            np.save(path, 255 - np.load(path))


def test_garbled_decoded_pixels_are_decoded_again_and_counted(project):
    _, first = run(project)
    decoded = project.path / CACHE / "decoded"
    assert {p.parent for p in decoded.rglob("*.npy")} == {decoded}  # <cache>/decoded/<key>.npy, not nested
    garble_decoded(decoded)
    shutil.rmtree(next((project.path / CACHE).glob("v*")) / "embeddings")  # embeddings computed afresh
    with pytest.warns(CacheWarning, match="corrupt cache entry recomputed and overwritten: .*decoded"):
        _, again = run(project)
    assert cells(again) == cells(first)  # computed from the right pixels, not the inverted ones
    assert again["models"]["oracle"]["cache_corrupt"] == 1
    _, healed = run(project)
    assert healed["models"]["oracle"]["cache_corrupt"] == 0


# -- item 7: the dataset fingerprint does not trust size and mtime ------------------------------


@pytest.mark.parametrize("how", ["in place", "moved in"])
def test_a_same_size_replacement_with_the_old_mtime_changes_the_fingerprint(tmp_path, monkeypatch, how):
    manifest = write_dataset(tmp_path, n=6)
    cache = tmp_path / "cache"
    first = load_dataset(str(manifest), validate="exists", cache_dir=cache).sha256
    image = tmp_path / "img" / "000.png"
    before = image.stat()
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes ("exists" does not decode them)
    if how == "in place":
        image.write_bytes(bytes(data))
    else:
        (tmp_path / "new.png").write_bytes(bytes(data))
        os.replace(tmp_path / "new.png", image)
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    # In the same process, and in a fresh one that has only the persisted hash cache.
    assert load_dataset(str(manifest), validate="exists", cache_dir=cache).sha256 != first
    monkeypatch.setattr(base, "_FILE_HASHES", {})
    monkeypatch.setattr(base, "_LOADED_CACHE_FILES", set())
    assert load_dataset(str(manifest), validate="exists", cache_dir=cache).sha256 != first


# -- item 9: clear only a folder the plugin created ---------------------------------------------


def test_cache_clear_refuses_a_folder_without_the_marker(project):
    mine = project.path / "mine"
    precious = [mine / "notes.txt", mine / "decoded" / "a.npy", mine / "file-sha256" / "a.json", mine / "v1" / "embeddings" / "x"]
    for path in precious:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("precious")
    args = ("--medrobust-only", "--medrobust-cache-dir=mine", "--medrobust-cache-clear", "-p", "no:cacheprovider")
    result = project.runpytest(*args)
    err = result.stderr.str()
    assert result.ret == USAGE, err
    assert err.count(f"--medrobust-cache-clear: refusing to clear {mine}") == 1, err
    assert "Traceback" not in err + result.stdout.str()
    assert all(p.read_text() == "precious" for p in precious)


def test_cache_clear_empties_a_folder_the_plugin_created(project):
    run(project)
    marker = project.path / CACHE / "CACHEDIR.TAG"
    assert "pytest-medrobust" in marker.read_text()
    _, cleared = run(project, "--medrobust-cache-clear")
    assert {v[2] for v in cells(cleared).values()} == {False}
    assert marker.is_file()


def test_an_empty_folder_is_taken_and_marked(project):
    (project.path / "fresh").mkdir()
    run(project, "--medrobust-cache-dir=fresh")
    assert (project.path / "fresh" / "CACHEDIR.TAG").is_file()
    _, cleared = run(project, "--medrobust-cache-dir=fresh", "--medrobust-cache-clear")
    assert {v[2] for v in cells(cleared).values()} == {False}

