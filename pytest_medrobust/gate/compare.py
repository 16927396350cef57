"""Per-query hits and the paired bootstrap that compares models on the same queries.

A cell's recall is the mean of per-query hits (query i found its match in the top k). Two
models measured on one dataset answer the same queries, so their difference is estimated by
resampling *queries* and recomputing both models' figures on each resample: the paired
bootstrap. Its interval is far narrower than comparing two independent intervals (band
overlap), which ignores that the same hard queries are hard for both models.

Hits travel in the cell records packed as base64 bits (one bit per query), so a 100k-query cell
costs 17 kB in the results JSON, and ``medrobust merge`` can recompute the comparison.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np

# Resampling B x N weights in one block would take B * N * 8 bytes; this many resamples at a time.
_CHUNK = 64


def pack_hits(hits: Sequence[bool] | np.ndarray) -> str:
    """Per-query hits as base64 of the packed bits, prefixed by the query count (``"300:..."``)."""
    array = np.asarray(hits, dtype=bool)
    return f"{array.size}:" + base64.b64encode(np.packbits(array).tobytes()).decode("ascii")


def unpack_hits(packed: str) -> np.ndarray:
    """The inverse of :func:`pack_hits`; a malformed value raises ValueError."""
    count, sep, data = packed.partition(":")
    if not sep or not count.isdigit():
        raise ValueError(f"packed hits must look like '<count>:<base64>', got {packed[:20]!r}")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data, validate=True), dtype=np.uint8))
    n = int(count)
    if bits.size < n or bits.size - n >= 8:
        raise ValueError(f"packed hits hold {bits.size} bits, not the {n} announced")
    return bits[:n].astype(bool)


def resample_means(hits: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of each row of ``hits`` (cells x queries) on ``resamples`` bootstrap resamples of
    the queries, the same resamples for every row: a (resamples x cells) array."""
    n = hits.shape[1]
    rng = np.random.default_rng(seed)
    values = hits.astype(np.float64).T  # queries x cells
    out = np.empty((resamples, hits.shape[0]))
    for start in range(0, resamples, _CHUNK):
        stop = min(start + _CHUNK, resamples)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=stop - start)
        out[start:stop] = counts @ values / n
    return out


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of the finite ``values`` (NaN, NaN if there are none)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)
