"""The vectorised serving steps give the same answers as the straightforward versions they
replaced: banned-item filter, friends' social proof, category index, stored vectors, the merge of
live and model candidates."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import cast

import faiss
import numpy as np
import pytest

from app.serving.artifacts import ItemCatalog, ModelArtifacts, stored_vectors
from app.serving.catalog import CatalogView
from app.serving.encode import History
from app.serving.filter import keep
from app.serving.pipeline import FlatItems, Friends, Query, Recommender, UserState, _merge_side
from app.serving.side import EXACT_MAX_ROWS, SideIndex
from app.store.catalog import CatalogItem


@pytest.mark.parametrize("seed", range(20))
def test_keep_equals_isin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    candidates = rng.integers(-1, 60, size=rng.integers(0, 80))
    banned = [np.sort(rng.integers(0, 60, size=rng.integers(0, 30))) for _ in range(3)]
    expected = (candidates >= 0) & ~np.isin(candidates, np.concatenate(banned))
    assert np.array_equal(keep(candidates, *banned), expected)
    assert np.array_equal(keep(candidates, banned[0]),
                          (candidates >= 0) & ~np.isin(candidates, banned[0]))


@pytest.mark.parametrize("seed", range(20))
def test_engaged_with_lists_every_friend_interaction_with_a_candidate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = [rng.choice(50, size=rng.integers(0, 12), replace=False) for _ in range(6)]
    friends = Friends([f"f{n}" for n in range(6)], np.zeros((6, 2), np.float32),
                      rng.random(6).astype(np.float32), FlatItems.of(items))
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


class _Live:
    """The part of a CatalogView `_merge_side` reads: live items from `base` on."""

    def __init__(self, base: int, side: SideIndex) -> None:
        self.base, self.side = base, side
        self.ids = [f"live{n}" for n in range(len(side))]

    def search(self, vector: np.ndarray, n: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.side.search(vector, n, allowed)
        return scores, rows + self.base


@pytest.mark.parametrize(("model_items", "live_items"), [(500, 40), (500, 300), (60, 3000)])
@pytest.mark.parametrize("seed", range(4))
def test_merged_candidates_are_the_top_of_model_and_live_items_together(
        model_items: int, live_items: int, seed: int) -> None:
    # small and large live shares take different search plans; the answer must not differ
    rng = np.random.default_rng(seed)
    dim, n = 8, 120
    model = rng.standard_normal((model_items, dim)).astype(np.float32)
    side = SideIndex(dim)
    for vector in rng.standard_normal((live_items, dim)).astype(np.float32):
        side.set(side.append(), vector)
    query = rng.standard_normal(dim).astype(np.float32)
    everything = np.concatenate([model, side.rows(np.arange(live_items))]) @ query
    banned = np.sort(rng.choice(len(everything), 30, replace=False))
    ranked = [i for i in np.argsort(-everything, kind="stable").tolist()
              if i not in set(banned.tolist())]
    model_scores = model @ query
    faiss_top = [i for i in np.argsort(-model_scores, kind="stable").tolist()
                 if i not in set(banned.tolist())][: n - len(banned)]
    ids, scores = _merge_side(np.asarray(faiss_top, np.int64), model_scores[faiss_top],
                              cast(CatalogView, _Live(model_items, side)), query, n,
                              n - len(banned), banned, None)
    # `n` leaves room for the banned: the first n − len(banned) are the wanted ones
    assert ids[: n - len(banned)].tolist() == ranked[: n - len(banned)]
    assert not np.isin(ids, banned).any()
    assert np.allclose(scores, everything[ids], atol=1e-5)


def test_a_folded_catalogue_retrieves_the_top_of_model_and_live_items_in_one_search(
        artifacts_dir: Path) -> None:
    # past EXACT_MAX_ROWS live items the side index's codes hold the model's items too: one
    # search must still give the top of both by exact inner product, without banned items
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    rec = Recommender(artifacts)
    view = CatalogView(artifacts)
    model = artifacts.item_vectors
    rng = np.random.default_rng(0)
    count = EXACT_MAX_ROWS + 300
    scale = float(np.linalg.norm(model, axis=1).mean()) / np.sqrt(view.dim)
    live = (rng.standard_normal((count, view.dim)) * scale).astype(np.float32)
    for n, vector in enumerate(live):
        view.apply(CatalogItem(f"new-{n}", title=f"new {n}"), vector)
    view.apply(CatalogItem("new-7", title="new 7", available=False), live[7])
    job = view.side.code_job()
    assert job is not None and not view.folded
    view.side.install(job())
    assert view.folded
    everything = np.concatenate([model, live])
    informed = np.any(everything != 0, axis=1)
    wanted, hits = 120, 0
    for _ in range(30):
        query = model[rng.choice(len(model), 5)].sum(axis=0) + \
            rng.standard_normal(view.dim).astype(np.float32) * scale
        query = query.astype(np.float32)
        banned = np.union1d(rng.choice(len(everything), 25, replace=False), view.unavailable)
        ids, scores = rec._candidates(query, wanted + len(banned), wanted, banned, None, view)
        exact = [i for i in np.argsort(-(everything @ query), kind="stable").tolist()
                 if informed[i] and i not in set(banned.tolist())][:wanted]
        assert not np.isin(ids, banned).any() and informed[ids].all()
        assert np.allclose(scores, everything[ids] @ query, atol=1e-4)
        assert np.all(np.diff(scores) <= 0)
        hits += len(set(ids[:wanted].tolist()) & set(exact))
    assert hits >= 0.98 * wanted * 30


def test_unavailable_items_widen_the_search_only_as_far_as_it_meets_them(
        artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shop with half its items out of stock: every list still holds k available, unseen
    items, and the candidate search widens by the unavailable items it meets, not by all of
    them (which made each computed list search and re-rank every one)."""
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    rec = Recommender(artifacts)
    view = CatalogView(artifacts)
    model = artifacts.item_vectors
    rng = np.random.default_rng(3)
    scale = float(np.linalg.norm(model, axis=1).mean()) / np.sqrt(view.dim)
    for n in range(2000):  # a catalogue several times the candidates the rerank takes
        vector = (rng.standard_normal(view.dim) * scale).astype(np.float32)
        view.apply(CatalogItem(f"new-{n}", title=f"new {n}"), vector)
    for index in range(0, len(view), 2):
        view.apply(CatalogItem(view.item_id(index), title=f"item {index}", available=False),
                   view.vectors(np.asarray([index]))[0])
    gone = set(view.unavailable.tolist())
    widths: list[int] = []
    candidates = Recommender._candidates

    def recording(self: Recommender, vector: np.ndarray, n: int, *args: object) -> object:
        widths.append(n)
        return candidates(self, vector, n, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Recommender, "_candidates", recording)
    for _ in range(20):
        items = rng.choice(len(model), rng.integers(1, 11), replace=False).astype(np.int64)
        state = UserState(history=History(items, np.ones(len(items), np.float32)))
        listed = [s.item for s in rec.recommend(state, Query(k=20), catalog=view).items]
        assert len(listed) == 20
        assert not gone & set(listed) and not set(items.tolist()) & set(listed)
    # all of them on top of the wanted would be wanted + len(gone) at least
    wanted = rec.manifest.rerank.candidates
    assert max(widths) < 0.5 * (wanted + len(gone)), (widths, wanted, len(gone))
