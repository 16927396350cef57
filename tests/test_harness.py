"""The harness's fast paths give the numbers of the straightforward ones: prefetching loader,
masks planned for a batch (shared seeding, plans reused across models), lazy statistics."""

import random
import threading

import numpy as np
import pytest
import torch

from pytest_medrobust import occlusion
from pytest_medrobust.config import Settings
from pytest_medrobust.datasets import to_batch
from pytest_medrobust.models import ModelSpec
from pytest_medrobust.occlusion import engine
from pytest_medrobust.runner import GridRunner, prefetch


def test_seeded_generators_are_numpys_default_rng_bit_for_bit():
    r = random.Random(7)
    seeds = [0, 1, 2**32 - 1, 2**32, 2**64 - 1] + [r.getrandbits(64) for _ in range(300)] + [r.getrandbits(31) for _ in range(50)]
    for fast, s in zip(engine.seeded_generators(seeds, shared=True), seeds, strict=True):
        theirs = np.random.default_rng(s)
        assert fast.bit_generator.state == theirs.bit_generator.state
        assert fast.integers(0, 1000, 5).tolist() == theirs.integers(0, 1000, 5).tolist()


@pytest.mark.parametrize("patch", ["black_box", "noise_box", "annotation", "grid_cutout", "random_erase(count=3)"])
def test_planned_masks_equal_one_fresh_generator_per_image(patch):
    made = occlusion.make_patch(patch)
    ids = [f"img-{i}" for i in range(40)]
    expected = [
        engine.place_one(made, 0.2, 64, 48, np.random.default_rng(engine.placement_seed(3, i, made.name, 0.2))) for i in ids
    ]
    assert engine.plan_masks(made, 0.2, ids, 64, 48, 3) == expected


def test_prefetch_keeps_order_raises_the_producers_error_and_stops_early():
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise KeyError("the producer's own error")

    with pytest.raises(KeyError, match="the producer's own error"):
        list(prefetch(broken()))

    produced = []

    def endless():
        for i in range(10_000):
            produced.append(i)
            yield i

    before = threading.active_count()
    for item in prefetch(endless()):
        if item == 3:
            break
    assert len(produced) < 10 and threading.active_count() == before  # the producer stopped


class Pool:
    """A small deterministic model: each image average-pooled to 4 x 4, reports hashed."""

    geometry = "pad"

    def __init__(self, device, size=32):
        self.device, self.input_size = device, (size, size)

    def encode_images(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x[:, :1], 4).flatten(1)

    def encode_texts(self, texts):
        return torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(len(t))) for t in texts])

    def fingerprint(self):
        return "pool"


def pool(device, **options):
    return Pool(device)


def runner(tmp_path, **kw):
    specs = (ModelSpec("a", factory=f"{__name__}:pool"), ModelSpec("b", factory=f"{__name__}:pool"))
    settings = Settings(models=specs, device="cpu", batch_size=16, cache_dir=tmp_path / "cache", **kw)
    return GridRunner(settings)


@pytest.mark.parametrize("prefetched", [False, True], ids=["in-line", "prefetch-thread"])
@pytest.mark.parametrize("patch", ["black_box", "gray_box", "noise_box", "blur_box", "shuffle_box", "annotation"])
def test_cells_give_the_embeddings_of_the_plain_loop(tmp_path, monkeypatch, patch, prefetched):
    """The loader (in line, as on the CPU, or with the background thread an accelerator uses)
    with planned, shared masks against one batch at a time through ``occlusion.occlude`` with
    fresh statistics, as the harness did before."""
    r = runner(tmp_path, cache=False, dataset_options={"limit": 40})
    r.prefetch = prefetched
    threads = []
    monkeypatch.setattr("pytest_medrobust.runner.prefetch", lambda b, **k: threads.append(1) or prefetch(b, **k))
    r.prepare("a")
    got = r.image_embeddings("a", r._seeded_occluder("a", patch, 0.2, 0), "x")
    model, pixels, ids = r.model("a"), r.pixels(r.model("a")), r.dataset().ids
    stats = occlusion.ImageStats().update(pixels).as_dict()
    expected = []
    for s in range(0, len(ids), 16):
        batch = occlusion.occlude(to_batch(pixels, slice(s, s + 16), torch.device("cpu")), ids[s : s + 16], patch, 0.2, 0,
                                  stats=stats)[0]
        expected.append(model.encode_images(batch))
    assert torch.equal(got, torch.cat(expected))
    assert len(threads) == prefetched


def test_masks_are_planned_once_for_models_of_one_size_and_statistics_only_on_a_miss(tmp_path, monkeypatch):
    planned, stats = [], []
    real_plan, real_update = engine.plan_masks, occlusion.ImageStats.update
    monkeypatch.setattr(occlusion, "plan_masks", lambda *a, **k: planned.append(len(a[2])) or real_plan(*a, **k))
    monkeypatch.setattr(occlusion.ImageStats, "update", lambda self, x, **k: stats.append(1) or real_update(self, x, **k))
    r = runner(tmp_path, dataset_options={"limit": 40})
    first = r.measure("a", "black_box", 0.3)
    second = r.measure("b", "black_box", 0.3)
    assert sum(planned) == 40 and len(stats) == 1  # planned for "a", reused by "b"; one geometry
    assert torch.equal(first.ranks.i2t, second.ranks.i2t)
    warm = runner(tmp_path, dataset_options={"limit": 40})
    planned.clear(), stats.clear()
    assert warm.measure("a", "black_box", 0.3).cached and not planned and not stats
