"""The online path: read a user's live state from the store, run the shared pipeline.

Vectors are cached per model version; friends' missing vectors are computed in one batched
ONNX call. When Redis fails the request is still answered — from popularity, marked degraded.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.serving.catalog import CatalogView
from app.serving.encode import EMPTY_HISTORY, History
from app.serving.pipeline import (
    FlatItems,
    Friends,
    Query,
    Ranked,
    Recommendation,
    Recommender,
    Scored,
    Strategy,
    UserState,
)
from app.serving.popular import Popularity
from app.serving.ranked import Rendered, encode_entry, encode_ranked, ranked_of, rendered_of
from app.store.redis_store import (
    STORE_ERRORS,
    CachedVectors,
    RedisStore,
    UserRead,
    VectorState,
    decode_history,
)

log = logging.getLogger(__name__)
# A stored list lives between (1 - LIST_TTL_JITTER) and 1 times SOCIALREC_CACHE_TTL_S. Lists
# computed together (a warm-up, a model reload, a burst of traffic) would otherwise expire in
# the same second and be computed again together: a burst of misses, every TTL again.
LIST_TTL_JITTER = 0.2
# Computations of one user's list a request waits for (Flights) before computing its own:
# each one whose write an event of the user voided costs the waiters its whole duration.
FLIGHT_JOINS = 3


def list_ttl_ms(ttl_s: int, draw: float) -> int:
    """A list's lifetime in milliseconds for `draw` uniform in [0, 1): never past `ttl_s`,
    so friends' behaviour still reaches a list within SOCIALREC_CACHE_TTL_S."""
    return max(1, round(ttl_s * 1000 * (1 - LIST_TTL_JITTER * draw)))



@dataclass
class Flights:
    """The users whose list this process is computing now (user, model version) → the list,
    once stored: requests for a user that arrive meanwhile wait for it instead of reading and
    computing the same list again. Without this, a user asked for again while the first miss
    computes (a popular user, a slow moment) is a miss each time, and every such miss makes
    the moment slower: under load the misses feed on themselves until the loop falls behind
    for good. A request joins only while the list is not yet sent to Redis, and gets it only
    if it was stored, i.e. no event of the user landed between the computation's read and
    the write (the lease, app.store.scripts): so an event acknowledged before the request
    arrived either preceded the read or voids the list — a joiner never gets a list older
    than its own arrival. A list that was not stored sends its joiners to the computation
    one of them then leads (its read follows their arrival), up to FLIGHT_JOINS times, and
    then the usual path: under load a popular user's events void many writes, and each
    joiner computing the list again on its own was a miss per joiner."""

    open: dict[tuple[str, str], asyncio.Future[Ranked | None]] = field(default_factory=dict)


class Render(Protocol):
    """Writes a list's items as the API answers them (app.api.render). Lists written with the
    same `key` (the rendering's options) are written alike: the key is stored with a cached
    answer, which only requests rendering with the same key reuse."""

    @property
    def key(self) -> int: ...

    def __call__(self, recommendation: Recommendation) -> bytes: ...


@dataclass(frozen=True)
class Served:
    strategy: Strategy
    items_json: bytes  # the items as `Render` wrote them
    popular_fill: bool  # the popular fill completed the list
    model_version: str
    degraded: bool
    cache: str = "off"  # the list cache: "hit", "miss" (computed here) or "off" (not asked)

    @classmethod
    def of(cls, recommendation: Recommendation, render: Render, model_version: str,
           degraded: bool, cache: str = "off") -> Served:
        return cls(recommendation.strategy, render(recommendation),
                   any(s.popular for s in recommendation.items), model_version, degraded,
                   cache)


@dataclass(frozen=True)
class Request:
    user_id: str
    k: int = 20
    exclude_seen: bool = True
    exclude: tuple[str, ...] = ()
    categories: frozenset[str] = frozenset()
    social: bool = True  # False: the pipeline's no-social ablation, for side-by-side comparison


@dataclass(frozen=True)
class SimilarRequest:
    item_id: str
    k: int = 20
    user_id: str | None = None  # personalise for this user
    exclude: tuple[str, ...] = ()
    categories: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SimilarServed:
    items: list[Scored]
    model_version: str
    degraded: bool


class UnknownItem(LookupError):
    """Nothing describes the item: neither the model nor the live catalogue knows it."""


def known_history(rec: Recommender, history: Sequence[tuple[str, float]],
                  catalog: CatalogView | None = None) -> History:
    """Items the model (or the live catalogue) knows, most recent first, capped at the
    model's history length."""
    index = rec.artifacts.catalog.index
    if catalog is None or not catalog.ids:
        known = [(index[i], w) for i, w in history if i in index]
    else:
        known = [(n, w) for i, w in history if (n := catalog.lookup(i)) is not None]
    return History.of(known[: rec.manifest.max_history])


def cacheable(rec: Recommender, read: Sequence[tuple[str, float]]) -> bool:
    """A vector may be cached (shared by every process) when the model knows every item of
    the history it was encoded from: live items' indices are this process's own, and an item
    unknown now may become a live item whose proxy should count."""
    index = rec.artifacts.catalog.index
    return all(i in index for i, _ in read)


async def recommend(rec: Recommender, store: RedisStore, req: Request, render: Render,
                    catalog: CatalogView, popular: Popularity | None = None,
                    cache_ttl_s: int = 0, flights: Flights | None = None) -> Served:
    """The answer to `req`, its items written by `render`. `catalog`: the live catalogue of
    `rec` (availability, live items, their metadata). `cache_ttl_s` > 0: serve from the user's
    cached ranked list of this model when one fills k after the request's filters, else
    compute it, store it for that long, and serve from it (the full path when it cannot fill
    k). The user's own events delete the list (app.store.scripts), so only friends' behaviour
    waits for the TTL. `flights`: this process's lists being computed, shared by concurrent
    requests for one user (`Flights`)."""
    query = _query(req, catalog)
    call = _Call(rec, store, req, query, render, catalog, popular, cache_ttl_s)
    if not call.cached or flights is None:
        return await call.serve()
    key = (req.user_id, rec.version)
    joins = 0
    while (joined := flights.open.get(key)) is not None:
        # shielded: a joiner that goes away does not cancel the computation it waits for
        ranked = await asyncio.shield(joined)
        if ranked is not None:
            served = rec.from_ranked(ranked, query, catalog)
            if served is not None:
                return Served.of(served, render, rec.version, False, "hit")
        joins += 1
        if ranked is not None or joins == FLIGHT_JOINS:
            return await call.serve()
    flight = _Flight(flights, key)
    try:
        return await call.serve(flight)
    finally:
        flight.land(None)


@dataclass
class Unread:
    """The answers `without_user` wrote for requests without `exclude` or categories, by k and
    rendering key: the same for every user while the model, the catalogue generation and the
    popularity order stay, so a process shedding load builds and writes each list once and a
    shed request costs little more than its HTTP exchange."""

    answers: dict[tuple[int, int], Served] = field(default_factory=dict)
    basis: tuple[str, int, Popularity | None] | None = None  # (model, generation, order)


def without_user(rec: Recommender, req: Request, render: Render, catalog: CatalogView,
                 popular: Popularity | None, unread: Unread) -> Served:
    """The answer to `req` without reading the user's state: popularity, filtered by the
    request's `exclude` and categories, marked degraded (the caller could not afford a
    read)."""
    if req.exclude or req.categories:
        return _popular(rec, _query(req, catalog), render, catalog, popular)
    basis = (rec.version, catalog.generation, popular)
    old = unread.basis
    # `is` for the order: a new one is a new object (the refresh), equal or not
    if old is None or old[:2] != basis[:2] or old[2] is not popular:
        unread.answers.clear()
        unread.basis = basis
    key = (req.k, render.key)
    served = unread.answers.get(key)
    if served is None:
        served = unread.answers[key] = _popular(rec, _query(req, catalog), render, catalog,
                                                popular)
    return served


def _popular(rec: Recommender, query: Query, render: Render, catalog: CatalogView,
             popular: Popularity | None) -> Served:
    return Served.of(rec.recommend(UserState(), query, popular=popular, catalog=catalog),
                     render, rec.version, True)


def _query(req: Request, catalog: CatalogView) -> Query:
    return Query(k=req.k, exclude_seen=req.exclude_seen, categories=req.categories,
                 exclude=np.fromiter((n for i in req.exclude
                                      if (n := catalog.lookup(i)) is not None), np.int64))


class _Flight:
    """One request's computation of a user's list, open to joiners until its write is sent."""

    def __init__(self, flights: Flights, key: tuple[str, str]) -> None:
        self.flights, self.key = flights, key
        self.future: asyncio.Future[Ranked | None] = \
            asyncio.get_running_loop().create_future()
        flights.open[key] = self.future

    def close(self) -> None:
        if self.flights.open.get(self.key) is self.future:
            del self.flights.open[self.key]

    def land(self, ranked: Ranked | None) -> None:
        """The list the joiners get (None: they take the usual path)."""
        self.close()
        if not self.future.done():
            self.future.set_result(ranked)


@dataclass(frozen=True)
class _Call:
    """One /recommend request on its way through the store and the pipeline."""

    rec: Recommender
    store: RedisStore
    req: Request
    query: Query
    render: Render
    catalog: CatalogView
    popular: Popularity | None
    cache_ttl_s: int

    @property
    def cached(self) -> bool:
        """The cached list is the social list with seen items excluded."""
        return self.cache_ttl_s > 0 and self.req.social and self.req.exclude_seen

    @property
    def plain(self) -> bool:
        """Nothing filtered: a stored answer of this k and rendering is this request's."""
        return self.cached and not self.req.exclude and not self.req.categories

    async def serve(self, flight: _Flight | None = None) -> Served:
        """`flight` (this request leads it) hears of the list it stores."""
        rec, store, req, query, catalog = self.rec, self.store, self.req, self.query, \
            self.catalog
        max_friends = rec.manifest.blend.max_friends
        try:
            read = await store.read_user(req.user_id, rec.version, max_friends,
                                         ranked=self.cached)
            if read.ranked is not None:
                hit = self._hit(read.ranked)
                if hit is not None:
                    return hit
                read = await store.read_user(req.user_id, rec.version, max_friends)
            state, own = await _state(rec, store, req.user_id, read, catalog)
            if own is not None and (not self.cached or read.lease is None):
                await _cache_quietly(store, {req.user_id: own}, rec.version)
        except STORE_ERRORS as exc:
            log.warning("store unavailable, serving popularity: %s", type(exc).__name__)
            return _popular(rec, query, self.render, catalog, self.popular)
        if not self.cached:
            return Served.of(rec.recommend(state, query, social=req.social,
                                           popular=self.popular, catalog=catalog),
                             self.render, rec.version, False)
        ranked = rec.ranked(state, catalog)
        listed = rec.from_ranked(ranked, query, catalog)
        served = Served.of(listed if listed is not None else rec.recommend(
            state, query, popular=self.popular, catalog=catalog),
            self.render, rec.version, False, "miss")
        if read.lease is not None:
            if flight is not None:
                flight.close()  # before the write is sent (see Flights)
            rendered = None
            if listed is not None and self.plain:
                rendered = Rendered(req.k, self.render.key, served.strategy,
                                    catalog.generation, served.items_json)
            # the user's new vector goes with the list, under the same lease: one round trip
            stored = await _save_ranked_quietly(
                store, req.user_id, read.lease, rec,
                encode_entry(rendered, encode_ranked(ranked, len(rec.artifacts.catalog.ids),
                                                     catalog)),
                list_ttl_ms(self.cache_ttl_s, random.random()), own)
            if flight is not None:
                flight.land(ranked if stored else None)
        return served

    def _hit(self, raw: bytes) -> Served | None:
        """The answer from a cached entry: its stored answer when it is this request's and
        the catalogue has not changed since it was written, else the list filtered now."""
        rec, catalog = self.rec, self.catalog
        if self.plain:
            rendered = rendered_of(raw)
            if rendered is not None and rendered.k == self.req.k \
                    and rendered.key == self.render.key \
                    and rendered.generation == catalog.generation:
                return Served(rendered.strategy, rendered.items_json, False, rec.version,
                              False, "hit")
        ranked = ranked_of(raw, catalog)
        listed = None if ranked is None else rec.from_ranked(ranked, self.query, catalog)
        if listed is None:
            return None
        return Served.of(listed, self.render, rec.version, False, "hit")


async def similar(rec: Recommender, store: RedisStore, req: SimilarRequest,
                  popular: Popularity | None = None,
                  catalog: CatalogView | None = None) -> SimilarServed:
    """Items similar to `req.item_id` (a model item, or a live one by its text vector);
    personalised when `req.user_id` is given and the user's state can be read (else degraded:
    the same list without the user)."""
    lookup = rec.artifacts.catalog.index.get if catalog is None else catalog.lookup
    item = lookup(req.item_id)
    if item is None:
        raise UnknownItem(req.item_id)
    vector = (rec.artifacts.item_vectors[item] if catalog is None
              else catalog.vectors(np.asarray([item], dtype=np.int64))[0])
    query = Query(k=req.k, categories=req.categories,
                  exclude=np.fromiter((n for i in req.exclude if (n := lookup(i)) is not None),
                                      np.int64))
    if req.user_id is None:
        return SimilarServed(rec.similar(vector, query, item=item, popular=popular,
                                         catalog=catalog), rec.version, False)
    try:
        state = await _user_state(rec, store, req.user_id, catalog)
    except STORE_ERRORS as exc:
        log.warning("store unavailable, similar items without the user: %s",
                    type(exc).__name__)
        return SimilarServed(rec.similar(vector, query, item=item, popular=popular,
                                         catalog=catalog), rec.version, True)
    return SimilarServed(rec.similar(vector, query, state, item=item, popular=popular,
                                     catalog=catalog), rec.version, False)


async def _user_state(rec: Recommender, store: RedisStore, user_id: str,
                      catalog: CatalogView | None = None) -> UserState:
    read = await store.read_user(user_id, rec.version, rec.manifest.blend.max_friends)
    state, own = await _state(rec, store, user_id, read, catalog)
    if own is not None:
        await _cache_quietly(store, {user_id: own}, rec.version)
    return state


async def _state(rec: Recommender, store: RedisStore, user_id: str, read: UserRead,
                 catalog: CatalogView | None = None) -> tuple[UserState, VectorState | None]:
    """The user's state, and their vector to cache when it was encoded now (None: it was
    cached, or may not be: `cacheable`); the caller writes it."""
    raw = read.raw
    assert raw is not None
    friends = await _friends(rec, store, [f for f, _ in raw.friends],
                             np.asarray([w for _, w in raw.friends], dtype=np.float32),
                             read.friend_entries, catalog)
    seen = rec.artifacts.catalog.tags.indices(raw.seen)
    if catalog is not None and catalog.ids:
        seen = np.concatenate([seen, catalog.seen_live(raw.seen)])
    if raw.entry is not None:
        # the cached entry carries the known history it was encoded from: nothing to parse
        entry = raw.entry
        return UserState(history=History(entry.items, entry.weights), friends=friends,
                         vector=entry.vector, seen=seen), None
    stored = decode_history(raw.history)
    history = known_history(rec, stored, catalog)
    vector, own = None, None
    if len(history):
        vector = rec.encode([history if catalog is None
                             else catalog.encoder_history(history)])[0]
        if cacheable(rec, stored):
            own = VectorState(vector, history.items, history.weights, stored)
    return UserState(history=history, friends=friends, vector=vector, seen=seen), own


async def _friends(rec: Recommender, store: RedisStore, ids: list[str], ties: np.ndarray,
                   cached: CachedVectors, catalog: CatalogView | None = None) -> Friends:
    """Friends with a known history: their vectors and recent items from their vector cache
    entries (`cached`, read with the user and decoded together), where each entry carries the
    history it was encoded from (so no friend's history is read or parsed while their entry
    lives); the others' histories are read in one round trip, encoded together and cached
    with their history."""
    dim = rec.manifest.embedding_dim
    if all(cached.found):
        # every entry cached (the steady state): the decoded arrays as they are, without the
        # friends whose history is empty (their runs hold no items)
        keep = np.flatnonzero(cached.counts > 0)
        if not len(keep):
            return Friends.none(dim)
        rows = cached.vectors.reshape(len(ids), dim)
        if len(keep) == len(ids):
            return Friends(ids=ids, vectors=rows, ties=ties,
                           items=FlatItems.runs(cached.items, cached.counts))
        return Friends(ids=[ids[n] for n in keep.tolist()], vectors=rows[keep],
                       ties=ties[keep], items=FlatItems.runs(cached.items, cached.counts[keep]))
    vectors: dict[int, np.ndarray] = {}
    known: list[History] = [EMPTY_HISTORY] * len(ids)
    stale = []
    for n, entry in enumerate(cached.entries()):
        if entry is None:
            stale.append(n)
        else:
            vectors[n], known[n] = entry.vector, History(entry.items, entry.weights)
    read = await store.histories([ids[n] for n in stale])
    for n, history in zip(stale, read, strict=True):
        known[n] = known_history(rec, history, catalog)
    fresh = rec.encode([known[n] if catalog is None else catalog.encoder_history(known[n])
                        for n in stale])
    for row, n in enumerate(stale):
        vectors[n] = fresh[row]
    await _cache_quietly(store, {ids[n]: VectorState(vectors[n], known[n].items,
                                                     known[n].weights, history)
                                 for n, history in zip(stale, read, strict=True)
                                 if cacheable(rec, history)},
                         rec.version)
    keep_rows = [n for n, h in enumerate(known) if len(h)]
    if not keep_rows:
        return Friends.none(dim)
    return Friends(ids=[ids[n] for n in keep_rows],
                   vectors=np.stack([vectors[n] for n in keep_rows]).reshape(len(keep_rows), dim),
                   ties=ties[keep_rows], items=FlatItems.of([known[n].items for n in keep_rows]))


async def _save_ranked_quietly(store: RedisStore, user_id: str, lease: bytes,
                               rec: Recommender, body: bytes, ttl_ms: int,
                               own: VectorState | None) -> bool:
    """A failed list write only costs a recomputation next time. True when stored."""
    try:
        return await store.save_ranked(user_id, lease, rec.version, body, ttl_ms, own)
    except STORE_ERRORS as exc:
        log.info("list cache write failed: %s", type(exc).__name__)
        return False


async def _cache_quietly(store: RedisStore, states: dict[str, VectorState],
                         version: str) -> None:
    """A failed cache write only costs a recomputation next time."""
    if not states:
        return
    try:
        await store.save_states(states, version)
    except STORE_ERRORS as exc:
        log.info("vector cache write failed: %s", type(exc).__name__)
