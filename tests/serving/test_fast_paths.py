"""The vectorised serving steps give the same answers as the straightforward versions they
replaced: banned-item filter, friends' social proof, category index, stored vectors."""

from __future__ import annotations

import gc

import faiss
import numpy as np
import pytest

from app.serving.artifacts import ItemCatalog, stored_vectors
from app.serving.filter import keep
from app.serving.pipeline import Friends


@pytest.mark.parametrize("seed", range(20))
def test_keep_equals_isin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    candidates = rng.integers(-1, 60, size=rng.integers(0, 80))
    banned = rng.integers(0, 60, size=rng.integers(0, 30))
    expected = (candidates >= 0) & ~np.isin(candidates, banned)
    assert np.array_equal(keep(candidates, banned), expected)


@pytest.mark.parametrize("seed", range(20))
def test_engaged_with_lists_every_friend_interaction_with_a_candidate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = [rng.choice(50, size=rng.integers(0, 12), replace=False) for _ in range(6)]
    friends = Friends([f"f{n}" for n in range(6)], np.zeros((6, 2), np.float32),
                      rng.random(6).astype(np.float32), items)
    candidates = rng.choice(50, size=20, replace=False)
    pos, who = friends.engaged_with(candidates)
    # the straightforward double loop: friend by friend, item by item
    expected = [(c, f) for f, theirs in enumerate(items) for item in theirs.tolist()
                for c in range(len(candidates)) if candidates[c] == item]
    assert list(zip(pos.tolist(), who.tolist(), strict=True)) == expected


def test_indices_in_equals_the_category_mask() -> None:
    records = [{"item_id": f"i{n}", "category": "abc"[n % 3] if n % 5 else ""}
               for n in range(40)]
    catalog = ItemCatalog.from_records(records)
    for wanted in ({"a"}, {"a", "c"}, {""}, {"zzz"}, {"b", "zzz"}):
        cats = frozenset(wanted)
        assert np.array_equal(catalog.indices_in(cats),
                              np.flatnonzero([c in cats for c in catalog.categories]))


def _index(kind: str, x: np.ndarray) -> faiss.Index:
    d = x.shape[1]
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind == "hnsw":
        return faiss.IndexHNSWFlat(d, 8, faiss.METRIC_INNER_PRODUCT)
    codes = faiss.index_factory(d, f"PQ{d}x4fs", faiss.METRIC_INNER_PRODUCT)
    codes.train(x)
    return faiss.IndexRefineFlat(codes)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "pqfs"])
def test_stored_vectors_view_the_index_and_keep_it_alive(kind: str) -> None:
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    index = _index(kind, x)
    index.add(x)
    view = stored_vectors(index)
    assert not view.flags.owndata and not view.flags.writeable
    del index
    gc.collect()
    assert np.array_equal(view, x)
