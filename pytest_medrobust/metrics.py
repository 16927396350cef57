"""Retrieval metrics between N images and their N paired reports.

Two protocols (see README, "Metrics"):

* **paired** (as open_clip's ``metrics.py``): N images x N reports, the true match of image i is
  report i and vice versa, both directions, no de-duplication. Identical reports therefore
  compete with each other.
* **unique-text** (as CXR-CLIP's evaluator): identical report strings are merged first; an
  image query ranks the unique reports and hits when its own report's string is in the top k.

Ranks are 1-based and ties are broken *against* the model: every candidate that scores at least
as high as the true match ranks ahead of it, so a constant model gets the worst rank, never a
lucky one. ``R@k`` is the share of queries whose rank is <= k.

Scores are computed in chunks on the embeddings' device, so memory is O(chunk x max(N, U)), never
N x N: no intermediate holds more than chunk x max(N, U) elements (tests/test_memory.py), and the
few alive at once (a score block, its comparisons, a row gather) stay near 20 x chunk x max(N, U)
bytes beside the embeddings (benchmarks/bench_memory.py). Every true-match score is read from
the same matrix product as the scores it is compared with, so identical reports tie exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

DEFAULT_KS = (1, 5, 10)


@dataclass(frozen=True)
class Ranks:
    """1-based ranks of the true match for every query, per direction and protocol."""

    i2t: torch.Tensor  # (N,) paired image->report
    t2i: torch.Tensor  # (N,) paired report->image
    i2t_unique: torch.Tensor  # (N,) image->unique report


def unique_texts(texts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Merge identical strings: returns the unique strings (first-seen order) and, per input,
    the index of its unique string."""
    index: dict[str, int] = {}
    inverse = [index.setdefault(t, len(index)) for t in texts]
    return list(index), torch.tensor(inverse, dtype=torch.long)


def compute_ranks(
    image_emb: torch.Tensor,
    unique_text_emb: torch.Tensor,
    text_index: torch.Tensor,
    *,
    chunk_size: int = 1024,
) -> Ranks:
    """Ranks for N images against their reports.

    ``unique_text_emb`` holds one embedding per unique report string (U x D) and
    ``text_index[i]`` is the unique report of image i. Embeddings are compared by dot product;
    pass L2-normalised embeddings for cosine similarity.
    """
    if image_emb.ndim != 2 or unique_text_emb.ndim != 2:
        raise ValueError("embeddings must be 2-D (rows are items)")
    if image_emb.shape[1] != unique_text_emb.shape[1]:
        raise ValueError(
            f"image and text embedding sizes differ: {image_emb.shape[1]} != {unique_text_emb.shape[1]}"
        )
    n = image_emb.shape[0]
    if text_index.shape != (n,):
        raise ValueError(f"text_index must have shape ({n},), got {tuple(text_index.shape)}")
    device = image_emb.device
    images = image_emb.float()
    texts = unique_text_emb.to(device).float()
    owner = text_index.to(device)
    # How many of the N paired reports each unique string stands for.
    multiplicity = torch.bincount(owner, minlength=texts.shape[0]).to(images.dtype)

    i2t = torch.empty(n, dtype=torch.long, device=device)
    i2t_unique = torch.empty(n, dtype=torch.long, device=device)
    # Every report unique: the paired rank counts the same candidates as the unique-text one.
    all_unique = texts.shape[0] == n and bool((multiplicity == 1).all())
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        scores = images[start:stop] @ texts.T  # (c, U)
        rows = torch.arange(stop - start, device=device)
        true = scores[rows, owner[start:stop]].unsqueeze(1)
        # includes the true report itself; a NaN true score counts every candidate as ahead
        ahead = (scores >= true) | true.isnan()
        i2t_unique[start:stop] = ahead.sum(dim=1)
        del scores
        # Paired protocol: the true report is one of the N candidates, and every other
        # candidate with a score >= the true one ranks ahead; a duplicate of the true string
        # scores exactly the same and so ranks ahead too.
        if not all_unique:
            i2t[start:stop] = (ahead.to(images.dtype) @ multiplicity).round().long()
        del ahead
    if all_unique:
        i2t.copy_(i2t_unique)

    t2i = torch.empty(n, dtype=torch.long, device=device)
    order = torch.argsort(owner, stable=True)  # the paired reports, grouped by their string
    bounds = torch.searchsorted(owner[order], torch.arange(0, texts.shape[0] + chunk_size, chunk_size, device=device))
    for c, start in enumerate(range(0, texts.shape[0], chunk_size)):
        stop = min(start + chunk_size, texts.shape[0])
        scores = texts[start:stop] @ images.T  # (c, N): unique report -> every image
        queries = order[int(bounds[c]) : int(bounds[c + 1])]
        # Many paired reports may share one string: their score rows are gathered at most as
        # many at a time as the score block has (a few unique reports, many images: few rows).
        step = stop - start
        for q0 in range(0, queries.numel(), step):
            q = queries[q0 : q0 + step]
            picked = scores[owner[q] - start]  # (q, N)
            true = picked[torch.arange(q.numel(), device=device), q].unsqueeze(1)
            t2i[q] = ((picked >= true) | true.isnan()).sum(dim=1)
            del picked
        del scores
    return Ranks(i2t=i2t.cpu(), t2i=t2i.cpu(), i2t_unique=i2t_unique.cpu())


DIRECTIONS = ("i2t", "t2i", "i2t_unique")


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """The names :func:`summarize` returns, in its order."""
    names = []
    for direction in DIRECTIONS:
        names += [f"{direction}_R@{k}" for k in ks] + [f"{direction}_mean_rank", f"{direction}_median_rank"]
    return names


def summarize(ranks: Ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@k (fractions in [0, 1]) and mean/median rank from :func:`compute_ranks`."""
    out: dict[str, float] = {}
    for direction in DIRECTIONS:
        r = getattr(ranks, direction).double()
        for k in ks:
            out[f"{direction}_R@{k}"] = float((r <= k).double().mean())
        out[f"{direction}_mean_rank"] = float(r.mean())
        # numpy.median semantics: the mean of the two middle ranks when N is even.
        out[f"{direction}_median_rank"] = float(torch.quantile(r, 0.5))
    return out


def retrieval_metrics(
    image_emb: torch.Tensor,
    unique_text_emb: torch.Tensor,
    text_index: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """All metrics of both protocols, as fractions and 1-based ranks."""
    return summarize(compute_ranks(image_emb, unique_text_emb, text_index, chunk_size=chunk_size), ks)
