"""Percentile-bootstrap confidence intervals for Recall@k.

The unit that is resampled is the **query pair**: row ``i`` of the test split is one image and
its report, so image query ``i`` (directions ``i2t`` and ``i2t_unique``) and report query ``i``
(direction ``t2i``) are drawn together. Every resample draws N row indices with replacement and
that one draw is shared by every direction whose rank array has length N. Sharing keeps the
resampled metrics of a cell coherent with each other (``R@1 <= R@5 <= R@10`` holds inside every
resample, and the three directions see the same rows); each marginal interval has the same
distribution as it would with independent draws. Directions of a different length (not produced
by :mod:`pytest_medrobust.metrics`, but accepted) get their own draws, in order of increasing
length.

The gallery is held fixed: ranks are computed once on the full split and only the queries are
resampled, which is the usual bootstrap for retrieval benchmarks (re-ranking every resample
would cost N x N work per resample).

Determinism: all draws come from one ``numpy.random.default_rng(seed)``; resample ``b`` of a
group of length N is ``rng.integers(0, N, size=N)``, drawn in order ``b = 0, 1, ...``. The result
therefore depends only on ``seed``, ``resamples`` and the data, never on the chunk size used to
bound memory.

Vectorisation: a chunk of resamples is turned into a count matrix ``C`` (chunk x N, how often
each query was drawn) with one ``bincount``, and every recall of every direction and k comes out
of one integer matrix product ``C @ H / N`` where ``H`` holds the 0/1 hits, so the values are
bit-identical to averaging the hits of the drawn queries directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["bootstrap_intervals", "percentile_bounds", "DEFAULT_CHUNK_ELEMENTS"]

# Upper bound on the number of entries of one chunk's index/count matrix (about 32 MB of int64).
DEFAULT_CHUNK_ELEMENTS = 4_000_000


def percentile_bounds(confidence: float) -> tuple[float, float]:
    """The two percentiles (0-100) of a two-sided percentile interval, e.g. 2.5 and 97.5."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    alpha = 1.0 - confidence
    return 100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)


def _as_ranks(direction: str, values: object) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"ranks of {direction!r} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"ranks of {direction!r} are empty: nothing to resample")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"ranks of {direction!r} must be numbers, got dtype {array.dtype}")
    return array


def bootstrap_intervals(
    ranks: Mapping[str, np.ndarray],
    ks: Iterable[int],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals for every ``{direction}_R@{k}``.

    ``ranks`` maps a direction (``"i2t"``, ``"t2i"``, ``"i2t_unique"``) to its N 1-based ranks
    (NumPy arrays or anything :func:`numpy.asarray` accepts, CPU torch tensors included).
    Returns ``{"i2t_R@1": (low, high), ...}`` in the order of ``ranks`` then ``ks``; the bounds
    are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles (NumPy's default
    linear interpolation) of the resampled recalls. See the module docstring for what is
    resampled and how the draws are made.
    """
    ks = list(dict.fromkeys(int(k) for k in ks))
    if not ks:
        raise ValueError("ks is empty: no Recall@k to bootstrap")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    resamples = int(resamples)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    low_pct, high_pct = percentile_bounds(confidence)
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")

    arrays = {direction: _as_ranks(direction, values) for direction, values in ranks.items()}
    if not arrays:
        return {}

    # Group the directions by length; one shared draw per group.
    groups: dict[int, list[str]] = {}
    for direction, array in arrays.items():
        groups.setdefault(array.size, []).append(direction)

    rng = np.random.default_rng(seed)
    bounds: dict[str, tuple[float, float]] = {}
    for n in sorted(groups):
        directions = groups[n]
        names = [f"{d}_R@{k}" for d in directions for k in ks]
        # H: (N, M) hits, one column per (direction, k).
        hits = np.stack([arrays[d] <= k for d in directions for k in ks], axis=1).astype(np.int64)
        stats = np.empty((resamples, hits.shape[1]), dtype=np.float64)
        chunk = max(1, min(resamples, chunk_elements // n))
        for start in range(0, resamples, chunk):
            rows = min(chunk, resamples - start)
            # One call per resample keeps the stream independent of the chunk size.
            idx = np.stack([rng.integers(0, n, size=n) for _ in range(rows)])
            idx += (np.arange(rows, dtype=idx.dtype) * n)[:, None]
            counts = np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n)
            # An integer product: NumPy runs it without BLAS. OpenBLAS's threads keep spinning
            # for a while after each call and stalled the next model forward on a small machine
            # by 30-75 ms a cell (benchmarks/bench_grid.py; docs/performance.md).
            stats[start : start + rows] = (counts @ hits) / n
        lows = np.percentile(stats, low_pct, axis=0)
        highs = np.percentile(stats, high_pct, axis=0)
        for j, name in enumerate(names):
            bounds[name] = (float(lows[j]), float(highs[j]))

    # Report in the caller's order (directions as given, then ks).
    return {f"{d}_R@{k}": bounds[f"{d}_R@{k}"] for d in arrays for k in ks}
