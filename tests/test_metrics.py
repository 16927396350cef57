"""Recall@k and ranks against an independent brute-force computation, ties and duplicates included."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pytest_medrobust.metrics import compute_ranks, retrieval_metrics, unique_texts


def brute_force(images: np.ndarray, texts: list[str], text_emb: dict[str, np.ndarray], ks=(1, 5, 10)) -> dict:
    """Straight from the definitions, one query at a time, with Python loops."""
    n = len(texts)
    score = lambda i, t: float(np.float32(images[i].astype(np.float64) @ text_emb[t].astype(np.float64)))  # noqa: E731
    i2t, t2i, uniq = [], [], []
    for i in range(n):
        true = score(i, texts[i])
        # paired: every other report that scores >= the true one ranks ahead (ties against)
        i2t.append(1 + sum(1 for j in range(n) if j != i and score(i, texts[j]) >= true))
        uniq.append(1 + sum(1 for t in set(texts) if t != texts[i] and score(i, t) >= true))
    for j in range(n):
        true = score(j, texts[j])
        t2i.append(1 + sum(1 for i in range(n) if i != j and score(i, texts[j]) >= true))
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i), ("i2t_unique", uniq)):
        r = np.array(ranks)
        for k in ks:
            out[f"{name}_R@{k}"] = float(np.mean(r <= k))
        out[f"{name}_mean_rank"] = float(r.mean())
        out[f"{name}_median_rank"] = float(np.median(r))
    return out


def run(images: np.ndarray, texts: list[str], vocab: dict[str, np.ndarray], chunk_size: int = 7) -> dict:
    uniq, index = unique_texts(texts)
    text_emb = torch.from_numpy(np.stack([vocab[t] for t in uniq]))
    return retrieval_metrics(torch.from_numpy(images), text_emb, index, chunk_size=chunk_size)


# Embeddings on a coarse grid of small integers make exact ties common and exact in float32.
small = st.integers(-2, 2)


@given(data=st.data(), n=st.integers(1, 30), d=st.integers(1, 4), n_words=st.integers(1, 6), chunk=st.integers(1, 9))
def test_matches_brute_force_with_ties_and_duplicate_reports(data, n, d, n_words, chunk):
    words = [f"report {w}" for w in range(n_words)]
    texts = data.draw(st.lists(st.sampled_from(words), min_size=n, max_size=n))
    vocab = {w: np.array(data.draw(st.lists(small, min_size=d, max_size=d)), np.float32) for w in words}
    images = np.array(data.draw(st.lists(st.lists(small, min_size=d, max_size=d), min_size=n, max_size=n)), np.float32)
    expected = brute_force(images, texts, vocab)
    got = run(images, texts, vocab, chunk_size=chunk)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_constant_model_gets_the_worst_rank():
    texts = ["a", "b", "c", "a"]
    images = np.ones((4, 3), np.float32)
    vocab = {t: np.ones(3, np.float32) for t in "abc"}
    m = run(images, texts, vocab)
    assert m["i2t_R@1"] == 0 and m["i2t_mean_rank"] == 4
    assert m["i2t_unique_R@1"] == 0 and m["i2t_unique_mean_rank"] == 3
    assert m["t2i_R@1"] == 0 and m["t2i_mean_rank"] == 4


def test_identical_reports_compete_in_the_paired_protocol_only():
    # A perfect model: image i points at its report's direction.
    texts = ["normal", "normal", "effusion"]
    vocab = {"normal": np.array([1, 0], np.float32), "effusion": np.array([0, 1], np.float32)}
    images = np.stack([vocab[t] for t in texts])
    m = run(images, texts, vocab)
    assert m["i2t_unique_R@1"] == 1.0
    # Each "normal" image ties with the other "normal" report, which ranks ahead of it.
    assert m["i2t_R@1"] == pytest.approx(1 / 3)
    assert m["i2t_mean_rank"] == pytest.approx((2 + 2 + 1) / 3)


def test_large_n_is_chunked_and_matches_a_dense_computation():
    rng = np.random.default_rng(0)
    n, d = 3000, 16
    texts = [f"t{i % 700}" for i in range(n)]
    uniq, index = unique_texts(texts)
    text_emb = torch.from_numpy(rng.normal(size=(len(uniq), d)).astype(np.float32))
    images = text_emb[index] + 0.8 * torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
    ranks = compute_ranks(images, text_emb, index, chunk_size=256)
    dense = images @ text_emb.T
    true = dense[torch.arange(n), index]
    expected_unique = (dense >= true[:, None]).sum(1)
    assert torch.equal(ranks.i2t_unique, expected_unique)
    paired = images @ text_emb[index].T
    expected_t2i = (paired.T >= paired.diagonal()[:, None]).sum(1)
    assert torch.equal(ranks.t2i, expected_t2i)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="embedding sizes differ"):
        compute_ranks(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="text_index must have shape"):
        compute_ranks(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0]))
