"""The recommendation pipeline: encode → blend → retrieve → filter → rerank → popular fill.

`Recommender` is the single implementation used by the HTTP service and by `socialrec evaluate`.
It knows nothing about Redis: callers hand it a `UserState` they assembled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import numpy as np

from app.serving.artifacts import HistoryBand, Manifest, ModelArtifacts
from app.serving.blend import blend
from app.serving.catalog import CatalogView
from app.serving.encode import EMPTY_HISTORY, Encoder, History
from app.serving.engagements import Engagements
from app.serving.filter import keep
from app.serving.popular import Popularity
from app.serving.rerank import rerank
from app.serving.retrieve import retrieve
from app.serving.similar import neighbour_query

NO_ITEMS = np.zeros(0, dtype=np.int64)
SIDE_FIRST = 50  # live candidates asked for first (_merge_side)


class Basis(StrEnum):
    """Which part of an item's retrieval score carried it: the user's own history, the friends'
    taste, or the popularity prior (also every popular-fill item) — what the item's reasons
    say, so a list made from a signal too weak to rank by is not called "similar to history".
    A similar-items neighbour is carried by the item it is close to."""

    HISTORY = "history"
    FRIENDS = "friends"
    POPULARITY = "popularity"
    ITEM = "item"


class Strategy(StrEnum):
    PERSONAL_SOCIAL = "personal_social"
    PERSONAL = "personal"
    SOCIAL_COLD_START = "social_cold_start"
    POPULAR = "popular"


@dataclass(frozen=True, slots=True)
class FlatItems:
    """Several users' recent items end to end, `owner` the row (user) of each: one array
    for the whole friend list, as the vector cache entries are decoded together
    (app.store.redis_store.CachedVectors), instead of one array per friend."""

    items: np.ndarray  # int64
    owner: np.ndarray  # int64, ascending

    @classmethod
    def of(cls, lists: Sequence[np.ndarray]) -> FlatItems:
        if not lists:
            return cls(NO_ITEMS, NO_ITEMS)
        return cls.runs(np.concatenate(lists).astype(np.int64, copy=False),
                        np.asarray([len(i) for i in lists], dtype=np.int64))

    @classmethod
    def runs(cls, items: np.ndarray, counts: np.ndarray) -> FlatItems:
        """`items` made of runs of `counts[r]` items for row r."""
        return cls(items, np.repeat(np.arange(len(counts), dtype=np.int64), counts))

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, n: int) -> list[np.ndarray]:
        """Each of the `n` rows' items."""
        bounds = np.searchsorted(self.owner, np.arange(1, n))
        return np.split(self.items, bounds)


@dataclass(frozen=True)
class Friends:
    """The friends the service knows for a user, aligned row by row."""

    ids: list[str]
    vectors: np.ndarray  # (F, D) each friend's own (unblended) vector
    ties: np.ndarray  # (F,) tie strengths
    items: FlatItems  # the friends' recent item indices, for social proof

    @classmethod
    def none(cls, dim: int) -> Friends:
        return cls([], np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.float32),
                   FlatItems.of([]))

    def engaged_with(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate position, friend position) of every friend interaction with one of the
        `candidates` (distinct item ids), in friend order."""
        if not len(self.items) or not len(candidates):
            return NO_ITEMS, NO_ITEMS
        items, owner = self.items.items, self.items.owner
        order = np.argsort(candidates, kind="stable")
        ranked = candidates[order]
        at = np.minimum(np.searchsorted(ranked, items), len(ranked) - 1)
        hit = ranked[at] == items
        return order[at[hit]], owner[hit]


@dataclass(frozen=True)
class UserState:
    history: History = EMPTY_HISTORY
    friends: Friends | None = None
    vector: np.ndarray | None = None  # the user's own vector when the caller has it cached
    # items engaged with before the recent history (its window is short), excluded as seen
    seen: np.ndarray = field(default_factory=lambda: NO_ITEMS)


@dataclass(frozen=True)
class Query:
    k: int = 20
    exclude_seen: bool = True
    exclude: np.ndarray = field(default_factory=lambda: NO_ITEMS)
    categories: frozenset[str] = frozenset()
    within: np.ndarray | None = None  # rank only these items (ascending indices)


class Scored(NamedTuple):
    """One item of a list (a tuple: built per item and request, and a tuple is the cheapest
    to build)."""

    item: int
    score: float
    friends: tuple[str, ...] = ()
    popular: bool = False  # from the popular fill
    basis: Basis = Basis.POPULARITY


@dataclass(frozen=True)
class Recommendation:
    strategy: Strategy
    items: list[Scored]


BASES = tuple(Basis)  # a basis by its code in `Ranked.basis`
_POPULARITY_CODE = BASES.index(Basis.POPULARITY)


@dataclass(frozen=True)
class Ranked:
    """A user's personal list before the per-request filters (k, exclude, categories) and
    without the popular fill: what the list cache holds (app.serving.ranked). Its first k
    items are the personal part of the unfiltered list of length k."""

    strategy: Strategy
    items: np.ndarray  # item indices, best first (int64; -1: an item not known here)
    scores: np.ndarray  # (float32)
    basis: np.ndarray  # codes into BASES (uint8)
    friends: Engagements  # by list position

    @classmethod
    def empty(cls, strategy: Strategy) -> Ranked:
        return cls(strategy, NO_ITEMS, np.zeros(0, dtype=np.float32),
                   np.zeros(0, dtype=np.uint8), Engagements.none())

    def scored(self, picked: np.ndarray) -> list[Scored]:
        """The items at list positions `picked`."""
        return [Scored(i, s, f, False, BASES[b])
                for i, s, f, b in zip(self.items[picked].tolist(),
                                      self.scores[picked].tolist(), self.friends.at(picked),
                                      self.basis[picked].tolist(), strict=True)]


@dataclass(frozen=True)
class _Engaged:
    """Which friends engaged with which of `n` candidates: (candidate position, friend
    position) pairs in friend order (Friends.engaged_with)."""

    friends: Friends | None
    n: int
    cand: np.ndarray
    pos: np.ndarray

    @classmethod
    def of(cls, friends: Friends | None, ids: np.ndarray) -> _Engaged:
        if friends is None:
            return cls(None, len(ids), NO_ITEMS, NO_ITEMS)
        return cls(friends, len(ids), *friends.engaged_with(ids))

    def ties(self) -> np.ndarray:
        """Σ ties of the friends who engaged with each candidate, added in friend order in
        float32 (ufunc.at is sequential): the same numbers as summing friend by friend."""
        social = np.zeros(self.n, dtype=np.float32)
        if self.friends is not None and len(self.cand):
            np.add.at(social, self.cand, self.friends.ties[self.pos])
        return social

    def by_position(self, top: np.ndarray) -> Engagements:
        """The engagements with the shown candidates `top`, by their position in `top`."""
        if self.friends is None or not len(self.cand):
            return Engagements.none()
        position = np.full(self.n, -1, dtype=np.int64)
        position[top] = np.arange(len(top))
        at = position[self.cand]
        hit = at >= 0
        where, who = at[hit], self.pos[hit]
        order = np.argsort(where, kind="stable")  # a position's friends stay in friend order
        return Engagements(self.friends.ids, where[order], who[order])

    def named(self, top: np.ndarray) -> dict[int, tuple[str, ...]]:
        """Shown candidate position (`top`) → the friends who engaged, in friend order."""
        if self.friends is None or not len(self.cand):
            return {}
        shown = np.zeros(self.n, dtype=bool)
        shown[top] = True
        hit = shown[self.cand]
        out: dict[int, list[str]] = {}
        for c, p in zip(self.cand[hit].tolist(), self.pos[hit].tolist(), strict=True):
            out.setdefault(c, []).append(self.friends.ids[p])
        return {c: tuple(names) for c, names in out.items()}


def choose_strategy(has_history: bool, has_friends: bool) -> Strategy:
    if has_history:
        return Strategy.PERSONAL_SOCIAL if has_friends else Strategy.PERSONAL
    return Strategy.SOCIAL_COLD_START if has_friends else Strategy.POPULAR


class Recommender:
    """Ranks items for one user from loaded artifacts; `social`/`rerank` switch stages off for
    ablations."""

    def __init__(self, artifacts: ModelArtifacts) -> None:
        self.artifacts = artifacts
        self.encoder = Encoder(artifacts.session, artifacts.manifest.max_history)
        self.popular = Popularity.of_counts(artifacts.popularity)
        # Computed once instead of for every request's candidates (bit-identical per row).
        self.taste_norms = np.linalg.norm(artifacts.item_vectors[:, :-1], axis=1)
        # An item the model knows nothing about (no interactions, no text) has an all-zero
        # vector: its score would be 0, which outranks every informed item whose score is
        # negative — never show it over them.
        self.informed = np.any(artifacts.item_vectors != 0, axis=1)

    @property
    def manifest(self) -> Manifest:
        return self.artifacts.manifest

    @property
    def version(self) -> str:
        return self.artifacts.version

    def encode(self, histories: Sequence[History]) -> np.ndarray:
        return self.encoder(histories)

    def recommend(self, user: UserState, query: Query, *, social: bool = True,
                  rerank_stage: bool = True, popular: Popularity | None = None,
                  catalog: CatalogView | None = None) -> Recommendation:
        """`catalog`: the live catalogue (app.serving.catalog) — its unavailable items are
        banned from every list, its live items are retrieved beside the FAISS ones and its
        categories filter; None = the model's items as trained (the evaluator)."""
        friends = user.friends if social and user.friends is not None else None
        has_friends = friends is not None and len(friends.ids) > 0
        strategy = choose_strategy(len(user.history) > 0, has_friends)
        banned = self._banned(user, query, catalog)
        allowed = self._allowed(query.categories, query.within, catalog)
        scored: list[Scored] = []
        if strategy is not Strategy.POPULAR:
            personal = self._personal(user, friends if has_friends else None, query, banned,
                                      allowed, rerank_stage, catalog, strategy)
            scored = personal.scored(np.arange(len(personal.items)))
        if len(scored) < query.k:
            scored += self._fill(scored, query.k, banned, allowed, popular)
        return Recommendation(strategy, scored)

    def ranked(self, user: UserState, catalog: CatalogView | None = None) -> Ranked:
        """The user's list as `recommend` ranks it for the longest k the rerank orders, with
        seen items excluded and no other filter: what `from_ranked` serves requests from."""
        friends = user.friends if user.friends is not None and user.friends.ids else None
        strategy = choose_strategy(len(user.history) > 0, friends is not None)
        if strategy is Strategy.POPULAR:
            return Ranked.empty(strategy)
        query = Query(k=self.manifest.rerank.candidates)
        return self._personal(user, friends, query, self._banned(user, query, catalog), None,
                              True, catalog, strategy)

    def from_ranked(self, ranked: Ranked, query: Query,
                    catalog: CatalogView | None = None) -> Recommendation | None:
        """The request's list from a `ranked` one, filtered now by the catalogue's current
        availability, `exclude` and categories; None when it cannot fill k (or the request
        wants seen items, or a candidate set): the caller runs `recommend`."""
        if not query.exclude_seen or query.within is not None:
            return None
        gone = [catalog.unavailable] if catalog is not None else []
        mask = keep(ranked.items, np.sort(query.exclude), *gone)
        if query.categories:
            allowed = self._allowed(query.categories, None, catalog)
            assert allowed is not None
            mask &= np.isin(ranked.items, allowed)
        picked = np.flatnonzero(mask)[: query.k]
        if len(picked) < query.k:
            return None
        return Recommendation(ranked.strategy, ranked.scored(picked))

    def taste(self, user: UserState, friends: Friends | None,
              catalog: CatalogView | None = None) -> tuple[np.ndarray, np.ndarray, HistoryBand]:
        """The user's own vector, the retrieval vector (blended with the friends' and ending in
        the popularity weight of the user's history band) and that band's weights as they
        apply to this user (its `alone` weights without friends)."""
        band = self.manifest.band(len(user.history))
        if friends is None:
            band = band.alone()
        own = user.vector if user.vector is not None else self.encode(
            [user.history if catalog is None else catalog.encoder_history(user.history)])[0]
        vector = (own if friends is None else blend(own, friends.vectors, friends.ties,
                                                    band.friend_weight)).copy()
        vector[-1] = band.popularity_weight
        return own, vector, band

    def _personal(self, user: UserState, friends: Friends | None, query: Query,
                  banned: np.ndarray, allowed: np.ndarray | None, rerank_stage: bool,
                  catalog: CatalogView | None, strategy: Strategy) -> Ranked:
        own, vector, band = self.taste(user, friends, catalog)
        ids, scores = self._enough(vector, max(self.manifest.rerank.candidates, query.k),
                                   banned, allowed, catalog)
        vectors = self._vectors(ids, catalog)
        engaged = _Engaged.of(friends, ids)
        if rerank_stage:
            scores = self._rerank(vector, band, ids, vectors, scores, engaged, catalog)
        top = np.argsort(-scores, kind="stable")[: query.k]
        return Ranked(strategy, ids[top].astype(np.int64), scores[top].astype(np.float32),
                      self._basis(own, vector, vectors[top]), engaged.by_position(top))

    def similar(self, vector: np.ndarray, query: Query, user: UserState | None = None,
                item: int | None = None, popular: Popularity | None = None,
                catalog: CatalogView | None = None) -> list[Scored]:
        """Items close to the one whose item vector is `vector` (`item`: its index; never
        returned), most similar first (app/serving/similar.py). With a `user`, their seen
        items are excluded (as `query` says) and the neighbours are ordered with the score
        /recommend gives each for them. Filters and the live catalogue as in `recommend`;
        popular items fill a short list (an item without a taste vector has no neighbours)."""
        params = self.manifest.similar
        state = user if user is not None else UserState()
        banned = self._banned(state, query, catalog)
        if item is not None:
            banned = np.union1d(banned, np.asarray([item], dtype=np.int64))
        allowed = self._allowed(query.categories, query.within, catalog)
        scored: list[Scored] = []
        if np.any(vector[:-1]):
            wanted = max(params.candidates, query.k)
            q = neighbour_query(vector, params.popularity_weight)
            ids, scores = self._enough(q, wanted, banned, allowed, catalog)
            ids, scores = ids[:wanted], scores[:wanted]
            friends = state.friends if state.friends is not None and state.friends.ids \
                else None
            engaged = _Engaged.of(friends, ids)
            if params.user_weight and (len(state.history) or friends is not None):
                _, taste, band = self.taste(state, friends, catalog)
                y = self._vectors(ids, catalog)
                personal = self._rerank(taste, band, ids, y, y @ taste, engaged, catalog)
                scores = scores + np.float32(params.user_weight) * personal
            top = np.argsort(-scores, kind="stable")[: query.k]
            named = engaged.named(top)
            scored = [Scored(int(ids[t]), float(scores[t]), named.get(t, ()), basis=Basis.ITEM)
                      for t in top.tolist()]
        if len(scored) < query.k:
            scored += self._fill(scored, query.k, banned, allowed, popular)
        return scored

    def _enough(self, vector: np.ndarray, wanted: int, banned: np.ndarray,
                allowed: np.ndarray | None,
                catalog: CatalogView | None) -> tuple[np.ndarray, np.ndarray]:
        """`_candidates` asked for `wanted` more than the banned items, of which the
        catalogue's unavailable ones (all in `banned`) count only as far as the search meets
        them: a shop may have thousands out of stock, and searching and re-ranking that many
        more candidates for every list made a computed list many times slower. The search
        starts as wide as the unavailable share of the catalogue says and widens until
        `wanted` candidates are left (or nothing more can be). With every item available it
        is exactly `_candidates` with `wanted + len(banned)`."""
        gone = 0 if catalog is None else len(catalog.unavailable)
        n = wanted + len(banned) - gone
        if not gone:
            return self._candidates(vector, n, wanted, banned, allowed, catalog)
        assert catalog is not None
        total = len(catalog) if allowed is None else len(allowed)
        n = min(total, math.ceil(1.25 * n * len(catalog) / max(1, len(catalog) - gone)))
        while True:
            ids, scores = self._candidates(vector, n, wanted, banned, allowed, catalog)
            if len(ids) >= wanted or n >= total:
                return ids, scores
            # as wide again as the share of candidates left says, with slack
            n = min(total, max(2 * n, math.ceil(1.25 * wanted * n / max(1, len(ids)))))

    def _candidates(self, vector: np.ndarray, n: int, wanted: int, banned: np.ndarray,
                    allowed: np.ndarray | None,
                    catalog: CatalogView | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`n` (ids, scores) by inner product with `vector` of the FAISS index and the
        live side index, merged, without the banned, empty and uninformed slots, of which the
        first `wanted` are exact; one search of both when the catalogue folded them
        (app.serving.side)."""
        if catalog is not None and allowed is None and catalog.folded:
            scores, ids = catalog.search_all(vector, n)
            mask = keep(ids, banned)
            return ids[mask], scores[mask]
        scores, ids = retrieve(self.artifacts.index, vector[None, :], n,
                               allowed if catalog is None or allowed is None
                               else allowed[allowed < catalog.base])
        ids, scores = ids[0], scores[0]
        mask = keep(ids, banned)
        mask[mask] = self.informed[ids[mask]]
        ids, scores = ids[mask], scores[mask]
        if catalog is not None and catalog.ids:
            ids, scores = _merge_side(ids, scores, catalog, vector, n, wanted, banned,
                                      allowed)
        return ids, scores

    def _vectors(self, ids: np.ndarray, catalog: CatalogView | None) -> np.ndarray:
        return self.artifacts.item_vectors[ids] if catalog is None else catalog.vectors(ids)

    def _rerank(self, vector: np.ndarray, band: HistoryBand, ids: np.ndarray,
                vectors: np.ndarray, scores: np.ndarray, engaged: _Engaged,
                catalog: CatalogView | None) -> np.ndarray:
        norms = None  # only the match term reads them
        if band.match_weight:
            norms = (self.taste_norms[ids] if catalog is None or not len(ids)
                     or ids.max() < catalog.base else np.linalg.norm(vectors[:, :-1], axis=1))
        return rerank(vector, vectors, scores, engaged.ties(), band, item_norms=norms)

    @staticmethod
    def _basis(own: np.ndarray, vector: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The largest positive part of each item's retrieval score (`y`: the items' vectors):
        own taste u·y, the friends' blended taste (v − u)·y, or the popularity prior
        p·popularity — as codes into BASES, whose first three are those kinds."""
        parts = np.stack([y[:, :-1] @ own[:-1], y[:, :-1] @ (vector[:-1] - own[:-1]),
                          y[:, -1] * vector[-1]])
        best = parts.argmax(axis=0)
        positive = parts[best, np.arange(len(best))] > 0
        return np.where(positive, best, _POPULARITY_CODE).astype(np.uint8)

    def _fill(self, have: list[Scored], k: int, banned: np.ndarray, allowed: np.ndarray | None,
              popular: Popularity | None) -> list[Scored]:
        """Popular items after the personal ones, scored as their popularity order says
        (app.serving.popular), capped at the last personal score: a list's scores never
        increase."""
        pop = self.popular if popular is None else popular
        order = pop.items
        shown = np.sort(np.fromiter((s.item for s in have), dtype=np.int64))
        need = k - len(have)
        # The first `need` qualifying items of `order`: look at a prefix that must hold them
        # (without a category filter), widened while it falls short — not the whole catalogue.
        limit = need + len(banned) + len(shown)
        while True:
            head = order[:limit]
            mask = keep(head, banned, shown)
            if allowed is not None:
                mask &= np.isin(head, allowed)
            picked = np.flatnonzero(mask)[:need]
            if len(picked) >= need or limit >= len(order):
                break
            limit *= 4
        scores = pop.scores[picked]
        if have:
            scores = np.minimum(scores, have[-1].score)
        return [Scored(int(i), float(s), popular=True)
                for i, s in zip(order[picked].tolist(), scores.tolist(), strict=True)]

    @staticmethod
    def _banned(user: UserState, query: Query, catalog: CatalogView | None) -> np.ndarray:
        seen = [user.history.items, user.seen] if query.exclude_seen else []
        gone = [catalog.unavailable] if catalog is not None else []
        return np.unique(np.concatenate([*seen, query.exclude.astype(np.int64), *gone]))

    def _allowed(self, categories: frozenset[str], within: np.ndarray | None,
                 catalog: CatalogView | None) -> np.ndarray | None:
        if not categories:
            return within
        in_categories = (self.artifacts.catalog.indices_in(categories) if catalog is None
                         else catalog.in_categories(categories))
        return in_categories if within is None else np.intersect1d(in_categories, within)


def _merge_side(ids: np.ndarray, scores: np.ndarray, catalog: CatalogView, vector: np.ndarray,
                n: int, wanted: int, banned: np.ndarray, allowed: np.ndarray | None) -> tuple[
                    np.ndarray, np.ndarray]:
    """The FAISS candidates and the side index's, by retrieval score: both are the inner
    product of the same query with vectors in the same space. The first `wanted` of the top
    `n` are exact (`banned`: sorted): the side index needs only its own share of them.

    While live items are a small share of the catalogue, most lists take far fewer of them
    than that share, and a search for fewer is cheaper: the side index is asked for SIDE_FIRST
    first, and for the whole share only when every one of those made the merged list (else no
    live item below them can). When the live items' share of the catalogue says SIDE_FIRST of
    them would make the list anyway, the first search would be wasted: the whole share is
    asked for at once."""
    live_banned = banned[int(np.searchsorted(banned, catalog.base)):]
    side_n = wanted + len(live_banned)
    live = len(catalog.ids)
    first = side_n if side_n * live >= SIDE_FIRST * (live + catalog.base) else \
        min(SIDE_FIRST, side_n)
    for ask in (first, side_n):
        side_scores, side_ids = catalog.search(vector, ask, allowed)
        fetched = len(side_ids)
        if len(live_banned):
            mask = keep(side_ids, live_banned)
            side_ids, side_scores = side_ids[mask], side_scores[mask]
        merged_ids = np.concatenate([ids, side_ids])
        merged = np.concatenate([scores, side_scores])
        order = np.argsort(-merged, kind="stable")[:n]
        if fetched < ask or ask == side_n or \
                np.count_nonzero(order >= len(ids)) < len(side_ids):
            break
    return merged_ids[order], merged[order]
