"""Memory that does not grow with N: decoded images streamed into a memory-mapped cache entry,
ranking in bounded chunks."""

import csv
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.overrides import TorchFunctionMode

from pytest_medrobust.datasets import decode_dataset, images, load_dataset
from pytest_medrobust.metrics import compute_ranks


def many_rows(folder: Path, n: int, files: int = 20) -> Path:
    """A manifest of ``n`` rows over ``files`` small PNGs (rows share files: writing is quick)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for f in range(files):
        Image.fromarray(rng.integers(0, 256, (40, 36), dtype=np.uint8), mode="L").save(folder / f"{f}.png")
    with open(folder / "manifest.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["id", "image", "report"])
        w.writerows([f"row-{i}", f"{i % files}.png", f"report {i % 97}"] for i in range(n))
    return folder / "manifest.csv"


def mapped_file(address: int) -> Path | None:
    """The file mapped at ``address`` in this process (Linux /proc/self/maps), if any."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps here")
    for line in maps.read_text().splitlines():
        span, *rest = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in span.split("-"))
        if lo <= address < hi and len(rest) == 5:
            return Path(rest[4].strip())
    return None


def traced_peak(work):
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_thousands_of_rows_never_holds_them_all(tmp_path, monkeypatch):
    """3,000 images of 64 x 64 (12 MB): a cold decode streams chunks into the cache file and a
    warm one maps it, so neither allocates a fraction of N x H x W. The old code held every
    image twice on a cold decode (a list, then np.stack: 2x) and read the file whole (1x)."""
    monkeypatch.setattr(images, "CHUNK", 256)
    n, size = 3000, (64, 64)
    dataset = load_dataset(str(many_rows(tmp_path / "ds", n)), cache_dir=tmp_path / "cache")
    assert dataset.sha256  # hashed before the measurement: not what is measured
    total = n * size[0] * size[1]
    cold, cold_peak = traced_peak(lambda: decode_dataset(dataset, size, "pad"))
    warm, warm_peak = traced_peak(lambda: decode_dataset(dataset, size, "pad"))
    # A few chunks' worth (the chunk's images, their stack): bounded by the chunk, not by N.
    bound = min(0.5 * total, 6 * 256 * size[0] * size[1])
    assert cold_peak < bound, f"cold decode peaked at {cold_peak / total:.2f} x the dataset"
    assert warm_peak < min(0.25 * total, 2 << 20), f"warm load peaked at {warm_peak / total:.2f} x the dataset"
    assert mapped_file(warm.data_ptr()) == next((tmp_path / "cache" / "decoded").glob("*.npy"))
    assert torch.equal(cold, warm)
    uncached = decode_dataset(load_dataset(str(tmp_path / "ds" / "manifest.csv")), size, "pad")
    assert torch.equal(uncached, warm)  # the same pixels with or without the cache


class LargestTensor(TorchFunctionMode):
    """Records the largest tensor (in elements) any torch call makes while it is active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("n_unique", [1200, 500])
def test_ranking_never_makes_a_tensor_larger_than_a_chunk_of_scores(n_unique):
    """No N x U (or N x N) matrix at any step: every intermediate is at most chunk x max(N, U)
    elements, so memory is O(chunk x N) (the 50k x 50k measurement is in benchmarks/)."""
    torch.manual_seed(0)
    n, chunk = 1200, 48
    images_ = torch.nn.functional.normalize(torch.randn(n, 16), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(n_unique, 16), dim=1)
    index = torch.cat([torch.randperm(n_unique), torch.randint(0, n_unique, (n - n_unique,))])
    with LargestTensor() as seen:
        chunked = compute_ranks(images_, texts, index, chunk_size=chunk)
    assert seen.largest <= chunk * max(n, n_unique) < n * n_unique // 10
    whole = compute_ranks(images_, texts, index, chunk_size=n)  # one chunk: the plain computation
    for direction in ("i2t", "t2i", "i2t_unique"):
        assert torch.equal(getattr(chunked, direction), getattr(whole, direction))
