"""limit/seed subsets: stable, prefix-consistent, in dataset order; and option checking."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_medrobust.datasets import load_dataset
from pytest_medrobust.datasets.subset import Row, build_dataset, rank_key
from pytest_medrobust.errors import ConfigError, DatasetError

from dataset_builders import write_image  # noqa: I001


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("img") / "a.png")


def rows(n: int, image: Path, bad: frozenset[int] = frozenset()) -> list[Row]:
    return [Row(f"id{i}", f"row {i}", image, "" if i in bad else f"report {i}") for i in range(n)]


def build(n, image, **kw):
    kw.setdefault("validate", "exists")
    return build_dataset("t", image.parent, rows(n, image, kw.pop("bad", frozenset())), **kw)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), a=st.integers(1, 70), b=st.integers(1, 70), seed=st.integers(0, 5))
def test_smaller_limit_is_a_prefix_of_a_larger_one(one_image, n, a, b, seed):
    small, large = sorted((a, b))
    ds_small = build(n, one_image, limit=small, seed=seed)
    ds_large = build(n, one_image, limit=large, seed=seed)
    assert len(ds_small.records) == min(small, n)
    assert set(ds_small.ids) <= set(ds_large.ids)
    ranked = sorted((f"id{i}" for i in range(n)), key=lambda i: rank_key(seed, i))
    assert set(ds_small.ids) == set(ranked[: min(small, n)])
    # dataset order is kept
    assert ds_large.ids == sorted(ds_large.ids, key=lambda i: int(i[2:]))


def test_same_rows_every_run_and_seed_changes_them(one_image):
    first = build(50, one_image, limit=10, seed=0).ids
    assert build(50, one_image, limit=10, seed=0).ids == first
    assert build(50, one_image, limit=10, seed=1).ids != first
    assert build(50, one_image, limit="10").ids == first  # from a command line


def test_drop_tops_up_to_the_limit_and_keeps_the_prefix_property(one_image):
    ranked = sorted((f"id{i}" for i in range(30)), key=lambda i: rank_key(0, i))
    bad = frozenset(int(ranked[k][2:]) for k in (0, 3))  # two of the first ranked rows are bad
    with pytest.raises(DatasetError, match="2 problem"):
        build(30, one_image, limit=5, bad=bad)
    small = build(30, one_image, limit=5, bad=bad, on_bad_rows="drop")
    large = build(30, one_image, limit=12, bad=bad, on_bad_rows="drop")
    assert len(small.records) == 5 and len(large.records) == 12
    assert set(small.ids) == set([r for r in ranked if int(r[2:]) not in bad][:5])
    assert set(small.ids) <= set(large.ids)
    assert small.info["n_dropped"] == 2 and {d["reason"] for d in small.info["dropped"]} == {"empty report"}


def test_error_mode_with_limit_checks_only_the_chosen_rows(one_image):
    ranked = sorted((f"id{i}" for i in range(30)), key=lambda i: rank_key(0, i))
    bad = frozenset({int(ranked[-1][2:])})  # the last-ranked row is bad
    assert len(build(30, one_image, limit=5, bad=bad).records) == 5
    with pytest.raises(DatasetError):
        build(30, one_image, bad=bad)


def test_info_records_the_subset(one_image):
    info = build(20, one_image, limit=4, seed=3).info
    assert info["limit"] == 4 and info["seed"] == 3 and info["n_rows_available"] == 20 and info["n_dropped"] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit must be a positive integer"),
        ({"limit": "many"}, "limit must be a positive integer"),
        ({"limit": 2.5}, "limit must be a positive integer"),
        ({"on_bad_rows": "skip"}, "on_bad_rows must be one of error, drop"),
        ({"validate": "no"}, "validate must be one of decode, exists"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_bad_options(one_image, options, message):
    with pytest.raises(ConfigError, match=message):
        build(3, one_image, **options)


def test_limit_through_load_dataset_on_every_loader(manifest_path):
    a = load_dataset(str(manifest_path), limit=2)
    b = load_dataset(str(manifest_path), limit=4)
    assert len(a.records) == 2 and set(a.ids) <= set(b.ids)
