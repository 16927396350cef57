"""Fingerprint (per-file hash cache) and the on-disk decoded-image cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_medrobust.datasets import base, decode_dataset, images, load_dataset

from dataset_builders import write_image  # noqa: I001


def test_fingerprint_is_stable_and_tracks_content(manifest_path):
    a = load_dataset(str(manifest_path))
    b = load_dataset(str(manifest_path), validate="exists")
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    img = manifest_path.parent / "images" / "img0.png"
    write_image(img, seed=99)
    assert load_dataset(str(manifest_path)).sha256 != a.sha256


def test_file_hashes_are_cached_by_stat_and_persisted(tmp_path, monkeypatch):
    files = [write_image(tmp_path / f"i{k}.png", seed=k) for k in range(3)]
    cache = tmp_path / "cache"
    first = base.file_digests(files, cache, tmp_path)
    assert list((cache / "file-sha256").glob("*.json"))
    # A fresh process: the in-process cache is empty, the JSON answers without reading files.
    monkeypatch.setattr(base, "_FILE_HASHES", {})
    monkeypatch.setattr(base, "_LOADED_CACHE_FILES", set())
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        reads.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    assert base.file_digests(files, cache, tmp_path) == first
    assert not [p for p in reads if str(p).endswith(".png")]
    monkeypatch.setattr("builtins.open", real_open)
    # A changed file (size/mtime) is hashed again.
    write_image(files[0], seed=42, size=(41, 48))
    assert base.file_digests(files, cache, tmp_path)[0] != first[0]


def test_decoded_cache_hit_skips_decoding(manifest_path, tmp_path, monkeypatch):
    ds = load_dataset(str(manifest_path), cache_dir=tmp_path / "cache")
    pixels = decode_dataset(ds, (24, 24), "pad")
    cached = list((tmp_path / "cache" / "decoded").glob("*.npy"))
    assert len(cached) == 1 and not list((tmp_path / "cache" / "decoded").glob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(images, "_decode_chunks", boom)
    again = decode_dataset(load_dataset(str(manifest_path), cache_dir=tmp_path / "cache"), (24, 24), "pad")
    assert torch.equal(pixels, again)
    monkeypatch.undo()
    # Another size, geometry or prepare is another cache entry.
    decode_dataset(ds, (24, 24), "crop")
    decode_dataset(ds, (24, 24), "pad", prepare=lambda im: im.resize((24, 24)))
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 3


def test_decoded_cache_ignores_a_damaged_file(manifest_path, tmp_path):
    ds = load_dataset(str(manifest_path), cache_dir=tmp_path / "c")
    pixels = decode_dataset(ds, (16, 16), "crop").clone()  # a copy: the result maps the file damaged below
    (entry,) = (tmp_path / "c" / "decoded").glob("*.npy")
    entry.write_bytes(b"garbage")
    assert torch.equal(decode_dataset(ds, (16, 16), "crop"), pixels)
    assert np.load(entry).shape == (6, 16, 16)  # rewritten


def test_prepare_identity_uses_behaviour_not_only_name():
    def make(offset):
        def prepare(im: Image.Image) -> Image.Image:
            return im.point(lambda v: min(255, v + offset)).resize((8, 8))

        return prepare

    assert images._prepare_id(make(0), (8, 8), "crop") != images._prepare_id(make(5), (8, 8), "crop")
    assert images._prepare_id(make(0), (8, 8), "crop") == images._prepare_id(make(0), (8, 8), "crop")


def test_cache_dir_from_environment(manifest_path, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDROBUST_CACHE_DIR", os.fspath(tmp_path / "envcache"))
    ds = load_dataset(str(manifest_path))
    assert ds.cache_dir == tmp_path / "envcache"
    decode_dataset(ds, (8, 8), "crop")
    assert list((tmp_path / "envcache" / "decoded").glob("*.npy"))


@pytest.mark.parametrize("geometry", ["crop", "pad"])
def test_decode_without_cache_is_unchanged(manifest_path, geometry):
    ds = load_dataset(str(manifest_path))
    assert ds.cache_dir is None
    assert decode_dataset(ds, (20, 30), geometry).shape == (6, 20, 30)
