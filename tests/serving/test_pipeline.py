"""Known-answer tests of each serving stage and of `Recommender.recommend`, on a toy world whose
numbers can be checked by hand: 2-D tastes plus the popularity coordinate (0 here unless a test
says otherwise) and a sum-of-embeddings ONNX encoder."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from app.offline.dataset import Dataset, IdMap, ItemMeta  # noqa: E402
from app.offline.export import export_artifacts  # noqa: E402
from app.serving.artifacts import (  # noqa: E402
    BlendParams,
    HistoryBand,
    ModelArtifacts,
    RerankParams,
)
from app.serving.blend import blend  # noqa: E402
from app.serving.encode import History  # noqa: E402
from app.serving.filter import keep  # noqa: E402
from app.serving.pipeline import (  # noqa: E402
    Basis,
    FlatItems,
    Friends,
    Query,
    Recommender,
    Strategy,
    UserState,
)
from app.serving.popular import Popularity  # noqa: E402
from app.serving.rerank import match, rerank  # noqa: E402
from app.serving.retrieve import retrieve  # noqa: E402

# item index → vector, category
ITEMS = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0], [0.5, 0.0]],
                 dtype=np.float32)
VECTORS = np.concatenate([ITEMS, np.zeros((len(ITEMS), 1), dtype=np.float32)], axis=1)
CATEGORIES = ["a", "a", "b", "b", "a", "b"]
HISTORIES = {"alice": [(0, 1.0)], "bob": [(3, 2.0), (2, 1.0)], "erin": [(3, 1.0), (5, 1.0)],
             "carol": [], "dave": []}
FRIENDS = {"alice": [("bob", 1.0)], "carol": [("bob", 1.0)]}
# popularity: i3 ×2, i0, i2, i5 ×1, i1, i4 ×0 → stable order by count
POPULAR = [3, 0, 2, 5, 1, 4]


class SumEncoder(torch.nn.Module):
    """user = Σ weight · item vector (weight 0 = padding)."""

    def __init__(self, vectors: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("vectors", torch.from_numpy(vectors))

    def forward(self, item_ids: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        return (item_weights.unsqueeze(-1) * self.vectors[item_ids]).sum(dim=1)


def _write_encoder(folder: Path) -> str:
    ids, weights = torch.zeros((1, 2), dtype=torch.int64), torch.ones((1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SumEncoder(VECTORS), (ids, weights), str(folder / "encoder.onnx"),
                          dynamo=False, opset_version=17,
                          input_names=["item_ids", "item_weights"],
                          output_names=["user_vector"],
                          dynamic_axes={"item_ids": {0: "b", 1: "l"},
                                        "item_weights": {0: "b", 1: "l"},
                                        "user_vector": {0: "b"}})
    return "encoder.onnx"


def _toy(folder: Path, vectors: np.ndarray, bands: list[HistoryBand]) -> Recommender:
    users = IdMap(list(HISTORIES))
    items = IdMap([f"i{n}" for n in range(len(vectors))])
    data = Dataset(
        users=users, items=items,
        histories=[HISTORIES[u] for u in users.ids],
        friends=[[(users.index[f], t) for f, t in FRIENDS.get(u, [])] for u in users.ids],
        item_meta={n: ItemMeta(title=f"Item {n}", category=c) for n, c in enumerate(CATEGORIES)})
    export_artifacts(folder, data=data, item_vectors=vectors, write_encoder=_write_encoder,
                     max_history=50, blend=BlendParams(), rerank=RerankParams(candidates=10),
                     bands=bands, event_weights={"view": 1.0}, data_fingerprint="toy",
                     model_info={"architecture": "sum"}, metrics={})
    return Recommender(ModelArtifacts.load(folder))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    return _toy(tmp_path_factory.mktemp("toy") / "model", VECTORS,
                [HistoryBand(friend_weight=0.5)])


def _with_bands(rec: Recommender, *bands: HistoryBand) -> Recommender:
    manifest = rec.manifest.model_copy(update={"bands": list(bands)})
    return Recommender(dataclasses.replace(rec.artifacts, manifest=manifest))


def _state(rec: Recommender, user: str) -> UserState:
    history = History.of(HISTORIES[user])
    friends = FRIENDS.get(user, [])
    if not friends:
        return UserState(history=history)
    hist = [History.of(HISTORIES[f]) for f, _ in friends]
    return UserState(history=history, friends=Friends(
        ids=[f for f, _ in friends], vectors=rec.encode(hist),
        ties=np.array([t for _, t in friends], dtype=np.float32),
        items=FlatItems.of([h.items for h in hist])))


def _items(rec: Recommender, state: UserState, query: Query, **flags: bool) -> list[int]:
    return [s.item for s in rec.recommend(state, query, **flags).items]


# --- blend ---------------------------------------------------------------------------------

def test_blend_is_tie_weighted_mean_times_friend_weight() -> None:
    own = np.array([1.0, 0.0], dtype=np.float32)
    friends = np.array([[0.0, 2.0], [2.0, 0.0]], dtype=np.float32)
    out = blend(own, friends, np.array([1.0, 3.0], dtype=np.float32), 0.5)
    # [1, 0] + 0.5 · (1·[0, 2] + 3·[2, 0]) / 4 = [1.75, 0.25]
    np.testing.assert_allclose(out, [1.75, 0.25], rtol=0, atol=1e-7)


def test_blend_without_friends_or_weight_returns_own_vector() -> None:
    own = np.array([1.0, 2.0], dtype=np.float32)
    none = np.zeros((0, 2), dtype=np.float32)
    assert blend(own, none, np.zeros(0, dtype=np.float32), 0.5) is own
    friends = np.ones((1, 2), dtype=np.float32)
    assert blend(own, friends, np.ones(1, dtype=np.float32), 0.0) is own
    assert blend(own, friends, np.zeros(1, dtype=np.float32), 0.5) is own


# --- retrieve ------------------------------------------------------------------------------

def _flat_index() -> faiss.Index:
    index = faiss.IndexFlatIP(2)
    index.add(ITEMS)
    return index


def test_retrieve_orders_by_inner_product() -> None:
    scores, ids = retrieve(_flat_index(), np.array([[1.0, 0.0]], dtype=np.float32), 3)
    assert ids[0].tolist() == [0, 1, 2]
    np.testing.assert_allclose(scores[0], [1.0, 0.8, 0.6], atol=1e-6)


def test_retrieve_restricts_to_allowed_inside_faiss() -> None:
    allowed = np.array([2, 3, 5], dtype=np.int64)
    scores, ids = retrieve(_flat_index(), np.array([[1.0, 0.0]], dtype=np.float32), 3, allowed)
    assert ids[0].tolist() == [2, 5, 3]
    np.testing.assert_allclose(scores[0], [0.6, 0.5, 0.0], atol=1e-6)
    # asking for more than the allowed set leaves empty (-1) slots, never other items
    _, ids = retrieve(_flat_index(), np.array([[1.0, 0.0]], dtype=np.float32), 5, allowed)
    assert sorted(i for i in ids[0].tolist() if i >= 0) == [2, 3, 5]
    assert (ids[0] == -1).sum() == 2


# --- rerank --------------------------------------------------------------------------------

def test_match_function_by_hand() -> None:
    user = np.array([1.0, 0.0], dtype=np.float32)
    items = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    # cos / (1 + dist): 1/1, 0/(1+√2), 1/2, −1/3
    np.testing.assert_allclose(match(user, items), [1.0, 0.0, 0.5, -1.0 / 3.0], atol=1e-6)


def test_rerank_adds_match_and_log_damped_social_proof() -> None:
    user = np.array([1.0, 0.0], dtype=np.float32)
    items = np.array([[1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    scores = np.array([1.0, 2.0], dtype=np.float32)
    social = np.array([0.0, 3.0], dtype=np.float32)
    band = HistoryBand(match_weight=2.0, social_weight=0.5)
    out = rerank(user, items, scores, social, band)
    np.testing.assert_allclose(out, [1.0 + 2.0 * 1.0, 2.0 + 2.0 * 0.5 + 0.5 * math.log(4.0)],
                               atol=1e-6)
    # zero weights leave the inner products untouched
    np.testing.assert_array_equal(rerank(user, items, scores, social, HistoryBand()), scores)


def test_social_term_reorders_equal_scores_by_friends_engaged() -> None:
    user = np.array([1.0, 0.0], dtype=np.float32)
    items = np.ones((3, 2), dtype=np.float32)
    scores = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    social = np.array([1.0, 3.0, 0.0], dtype=np.float32)
    out = rerank(user, items, scores, social, HistoryBand(social_weight=0.1))
    assert np.argsort(-out, kind="stable").tolist() == [1, 0, 2]


# --- filter --------------------------------------------------------------------------------

def test_filter_drops_empty_slots_and_banned_items() -> None:
    candidates = np.array([3, -1, 2, 5], dtype=np.int64)
    assert keep(candidates, np.array([2], dtype=np.int64)).tolist() == [True, False, False, True]
    assert keep(candidates, np.zeros(0, dtype=np.int64)).tolist() == [True, False, True, True]


# --- Recommender ---------------------------------------------------------------------------

def test_encoder_output_through_onnx(toy: Recommender) -> None:
    vectors = toy.encode([History.of(HISTORIES["alice"]), History.of(HISTORIES["bob"]),
                          History.of([])])
    np.testing.assert_allclose(vectors, [[1.0, 0.0, 0.0], [0.6, 2.8, 0.0], [0.0, 0.0, 0.0]],
                               atol=1e-6)


def test_personal_strategy_ranks_by_inner_product(toy: Recommender) -> None:
    state = UserState(history=History.of(HISTORIES["alice"]))
    rec = toy.recommend(state, Query(k=3))
    assert rec.strategy is Strategy.PERSONAL
    # alice = [1, 0]: i1 0.8, i2 0.6, i5 0.5, i3 0, i4 −1; i0 is seen
    assert [s.item for s in rec.items] == [1, 2, 5]
    np.testing.assert_allclose([s.score for s in rec.items], [0.8, 0.6, 0.5], atol=1e-6)


def test_personal_social_strategy_blends_friends(toy: Recommender) -> None:
    state = _state(toy, "alice")
    rec = toy.recommend(state, Query(k=5))
    assert rec.strategy is Strategy.PERSONAL_SOCIAL
    # [1, 0] + 0.5 · bob [0.6, 2.8] = [1.3, 1.4]: i2 1.90, i1 1.88, i3 1.40, i5 0.65, i4 −1.3
    assert [s.item for s in rec.items] == [2, 1, 3, 5, 4]
    np.testing.assert_allclose([s.score for s in rec.items], [1.9, 1.88, 1.4, 0.65, -1.3],
                               atol=1e-5)
    by_item = {s.item: s.friends for s in rec.items}
    assert by_item[2] == ("bob",) and by_item[3] == ("bob",) and by_item[1] == ()
    # the ablation without the social stages is the personal ranking
    assert _items(toy, state, Query(k=5), social=False) == [1, 2, 5, 3, 4]


def test_social_weight_lifts_items_friends_engaged_with(toy: Recommender) -> None:
    boosted = _with_bands(toy, HistoryBand(friend_weight=0.5, social_weight=10.0))
    state = _state(toy, "alice")
    # i2 1.90 + 10·ln 2, i3 1.40 + 10·ln 2, then i1, i5, i4
    assert _items(boosted, state, Query(k=5)) == [2, 3, 1, 5, 4]
    assert _items(boosted, state, Query(k=5), rerank_stage=False) == [2, 1, 3, 5, 4]


def test_social_cold_start_uses_friends_only(toy: Recommender) -> None:
    rec = toy.recommend(_state(toy, "carol"), Query(k=4))
    assert rec.strategy is Strategy.SOCIAL_COLD_START
    # 0.5 · [0.6, 2.8] = [0.3, 1.4]: i3 1.4, i2 1.3, i1 1.08, i0 0.3
    assert [s.item for s in rec.items] == [3, 2, 1, 0]


def test_popular_strategy_for_unknown_user(toy: Recommender) -> None:
    rec = toy.recommend(UserState(), Query(k=4))
    assert rec.strategy is Strategy.POPULAR
    assert [s.item for s in rec.items] == POPULAR[:4]
    assert all(s.popular for s in rec.items)
    assert [s.score for s in rec.items] == [2.0, 1.0, 1.0, 1.0]


def test_exclude_removes_caller_items(toy: Recommender) -> None:
    state = UserState(history=History.of(HISTORIES["alice"]))
    assert _items(toy, state, Query(k=3, exclude=np.array([1]))) == [2, 5, 3]
    assert _items(toy, UserState(), Query(k=3, exclude=np.array([0, 3]))) == [2, 5, 1]


def test_exclude_seen_can_be_switched_off(toy: Recommender) -> None:
    state = UserState(history=History.of(HISTORIES["alice"]))
    assert _items(toy, state, Query(k=2, exclude_seen=False)) == [0, 1]


def test_category_keeps_only_those_categories(toy: Recommender) -> None:
    state = UserState(history=History.of(HISTORIES["alice"]))
    assert _items(toy, state, Query(k=2, categories=frozenset({"b"}))) == [2, 5]
    assert _items(toy, UserState(), Query(k=3, categories=frozenset({"a"}))) == [0, 1, 4]
    # only two unseen "a" items exist: the list is as long as what qualifies
    assert _items(toy, state, Query(k=5, categories=frozenset({"a"}))) == [1, 4]


def test_list_is_k_long_and_filled_from_popularity(toy: Recommender) -> None:
    state = UserState(history=History.of(HISTORIES["alice"]))
    assert len(_items(toy, state, Query(k=5))) == 5
    assert len(_items(toy, state, Query(k=50))) == 5  # six items, one seen
    # a custom popularity order fills whatever the personal stage leaves
    order = Popularity(np.array([4, 5, 3, 2, 1, 0], dtype=np.int64),
                       np.array([9, 7, 5, 3, 0, 0], dtype=np.float32))
    rec = toy.recommend(UserState(), Query(k=3, exclude=np.array([5])), popular=order)
    assert [s.item for s in rec.items] == [4, 3, 2]


def _scores(rec: Recommender, state: UserState, query: Query,
            popular: Popularity | None = None) -> list[float]:
    return [s.score for s in rec.recommend(state, query, popular=popular).items]


def test_popular_items_show_the_score_their_order_is_sorted_by(toy: Recommender) -> None:
    """The live order (i4 most counted live, though least popular in training) shows the live
    counts; the items nobody engaged with live follow with a live count of 0."""
    live = toy.popular.with_live(np.array([4, 1]), np.array([5.0, 2.0]), complete=True)
    rec = toy.recommend(UserState(), Query(k=4), popular=live)
    assert [(s.item, s.score) for s in rec.items] == [(4, 5.0), (1, 2.0), (3, 0.0), (0, 0.0)]
    # when only the top of the live counts was read, the rest show the lowest count read
    top = toy.popular.with_live(np.array([4, 1]), np.array([5.0, 2.0]), complete=False)
    assert _scores(toy, UserState(), Query(k=3), top) == [5.0, 2.0, 2.0]


def test_scores_never_increase_down_a_personal_list_with_popular_fill(
        toy: Recommender) -> None:
    """An index that finds fewer candidates than asked for (here it holds i0-i2 only, as an
    approximate index may miss items): the list is filled from popularity below the personal
    items, whatever popularity counts are."""
    partial = faiss.IndexIDMap(faiss.IndexFlatIP(3))
    partial.add_with_ids(VECTORS[:3], np.arange(3, dtype=np.int64))
    rec = Recommender(dataclasses.replace(toy.artifacts, index=partial))
    live = rec.popular.with_live(np.array([5, 4]), np.array([1000.0, 900.0]), complete=True)
    state = UserState(history=History.of(HISTORIES["alice"]))
    for popular in (None, live):
        result = rec.recommend(state, Query(k=5), popular=popular)
        assert [s.popular for s in result.items] == [False, False, True, True, True]
        scores = [s.score for s in result.items]
        assert scores == sorted(scores, reverse=True), scores


# --- history bands, the popularity prior, items without information ------------------------

def test_band_is_chosen_by_the_number_of_known_items(toy: Recommender) -> None:
    # popularity coordinates that rank i4 first when the prior counts, last when it does not
    vectors = VECTORS.copy()
    vectors[:, 2] = [0.1, 0.2, 0.3, 0.4, 1.0, 0.0]
    rec = _toy(Path(toy.artifacts.folder).with_name("bands"), vectors,
               [HistoryBand(popularity_weight_alone=100.0), HistoryBand(min_items=2)])
    one = UserState(history=History.of(HISTORIES["alice"]))  # 1 item: band 0, prior dominates
    assert _items(rec, one, Query(k=2)) == [4, 3]
    two = UserState(history=History.of([(0, 1.0), (5, 1.0)]))  # 2 items: taste only
    assert _items(rec, two, Query(k=2)) == [1, 2]


def test_a_user_without_friends_is_served_the_bands_alone_weights(tmp_path: Path) -> None:
    rec = _toy(tmp_path / "model", VECTORS,
               [HistoryBand(match_weight=0.0, match_weight_alone=1.0)])
    u = VECTORS[0]  # alice's one item

    def scores(state: UserState, **flags: bool) -> tuple[list[float], np.ndarray]:
        items = rec.recommend(state, Query(k=3), **flags).items
        return [s.score for s in items], VECTORS[[s.item for s in items]]

    got, y = scores(UserState(history=History.of(HISTORIES["alice"])))
    np.testing.assert_allclose(got, y @ u + match(u[:-1], y[:, :-1]), atol=1e-5)
    got, y = scores(_state(rec, "alice"), social=False)  # the no-social ablation: the same
    np.testing.assert_allclose(got, y @ u + match(u[:-1], y[:, :-1]), atol=1e-5)
    got, y = scores(_state(rec, "alice"))  # with her friend: the band's own match weight 0
    np.testing.assert_allclose(got, y @ u, atol=1e-5)
    # a manifest written before the alone match weight served everyone with match_weight
    assert HistoryBand.model_validate({"match_weight": 0.5}).match_weight_alone == 0.5


def test_items_without_information_never_outrank_informed_ones(
        tmp_path: Path) -> None:
    vectors = VECTORS.copy()
    vectors[5] = 0.0  # i5: no interactions, no text — nothing known
    rec = _toy(tmp_path / "model", vectors, [HistoryBand()])
    # a taste that dislikes everything informed: every informed score is < 0 = i5's score
    state = UserState(history=History.of([(4, 1.0)]), vector=np.array([-1.0, -1.0, 0.0],
                                                                      dtype=np.float32))
    ranked = rec.recommend(state, Query(k=5)).items
    assert {s.item for s in ranked[:4]} == {0, 1, 2, 3}
    assert all(s.score < 0 for s in ranked[:4])
    assert ranked[4].item == 5 and ranked[4].popular  # only as the popular fill, last


def test_basis_names_the_part_of_the_score_that_carried_each_item(toy: Recommender) -> None:
    state = _state(toy, "alice")
    rec = toy.recommend(state, Query(k=5))
    basis = {s.item: s.basis for s in rec.items}
    # own alice [1, 0] vs friends 0.5 · bob [0.6, 2.8] = [0.3, 1.4]: i1 0.8 vs 1.08, i3 0 vs 1.4
    assert basis[1] is Basis.FRIENDS and basis[3] is Basis.FRIENDS
    assert basis[5] is Basis.HISTORY  # own 0.5 > friends 0.15
    assert basis[4] is Basis.POPULARITY  # nothing positive carries it


# --- similar items ---------------------------------------------------------------------------

def _with_similar(rec: Recommender, **params: float) -> Recommender:
    similar = rec.manifest.similar.model_copy(update=params)
    manifest = rec.manifest.model_copy(update={"similar": similar})
    return Recommender(dataclasses.replace(rec.artifacts, manifest=manifest))


def _similar(rec: Recommender, item: int, query: Query,
             user: UserState | None = None) -> list[int]:
    return [s.item for s in rec.similar(VECTORS[item], query, user, item=item)]


def test_similar_items_are_the_neighbours_by_taste_direction(toy: Recommender) -> None:
    items = toy.similar(VECTORS[0] * 3, Query(k=4), item=0)  # the norm does not matter
    # i0 = [1, 0]: i1 0.8, i2 0.6, i5 0.5, i3 0, i4 −1; the item itself is never returned
    assert [s.item for s in items] == [1, 2, 5, 3]
    np.testing.assert_allclose([s.score for s in items], [0.8, 0.6, 0.5, 0.0], atol=1e-6)
    assert all(s.basis is Basis.ITEM and not s.popular and not s.friends for s in items)


def test_similar_items_popularity_weight_adds_the_popularity_coordinate(
        tmp_path: Path) -> None:
    vectors = VECTORS.copy()
    vectors[:, 2] = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    rec = _with_similar(_toy(tmp_path / "model", vectors, [HistoryBand()]),
                        popularity_weight=0.4)
    # i5: 0.5 + 0.4 · 1 overtakes i1 0.8
    assert [s.item for s in rec.similar(vectors[0], Query(k=2), item=0)] == [5, 1]


def test_similar_items_filters_like_recommend(toy: Recommender) -> None:
    assert _similar(toy, 0, Query(k=3, exclude=np.array([1]))) == [2, 5, 3]
    assert _similar(toy, 0, Query(k=3, categories=frozenset({"b"}))) == [2, 5, 3]
    # the user's seen items (bob: i3, i2) go; without a user nothing is "seen"
    bob = UserState(history=History.of(HISTORIES["bob"]))
    assert _similar(toy, 0, Query(k=3), bob) == [1, 5, 4]


def test_similar_items_for_a_user_are_ordered_with_their_taste_and_friends(
        toy: Recommender) -> None:
    rec = _with_similar(toy, user_weight=1.0)
    alice = _state(rec, "alice")  # [1, 0] + 0.5 · bob [0.6, 2.8] = [1.3, 1.4]; i0 seen
    # neighbours of i3 = [0, 1]: i2 0.8, i1 0.6, i5 0, i4 0; + alice's /recommend score
    # i2 1.9, i1 1.88, i5 0.65, i4 −1.3
    items = rec.similar(VECTORS[3], Query(k=4), alice, item=3)
    assert [s.item for s in items] == [2, 1, 5, 4]
    np.testing.assert_allclose([s.score for s in items], [2.7, 2.48, 0.65, -1.3], atol=1e-5)
    assert {s.item: s.friends for s in items} == {2: ("bob",), 1: (), 5: (), 4: ()}
    # neighbours of i5 = [0.5, 0]: i1 0.8, i2 0.6, i3 0 (+ 1.88, 1.9, 1.4 for alice); social
    # proof counts as in /recommend: bob engaged with i2 and i3, + 10 · ln 2 each
    assert _similar(rec, 5, Query(k=3), alice) == [1, 2, 3]
    boosted = _with_similar(_with_bands(toy, HistoryBand(friend_weight=0.5, social_weight=10.0)),
                            user_weight=1.0)
    assert _similar(boosted, 5, Query(k=3), _state(boosted, "alice")) == [2, 3, 1]
    # user_weight 0: the user only removes what they saw
    assert _similar(toy, 3, Query(k=3), alice) == [2, 1, 5]


def test_similar_items_fill_from_popularity_when_neighbours_run_out(tmp_path: Path) -> None:
    vectors = VECTORS.copy()
    vectors[5] = 0.0  # i5: nothing known, so no neighbours
    rec = _toy(tmp_path / "model", vectors, [HistoryBand()])
    items = rec.similar(vectors[5], Query(k=3), item=5)
    assert [s.item for s in items] == POPULAR[:3] and all(s.popular for s in items)
    # a neighbour list shorter than k (a narrow category) ends with popular items
    short = rec.similar(vectors[0], Query(k=3, categories=frozenset({"a"})), item=0)
    assert [s.item for s in short] == [1, 4] and not short[0].popular
