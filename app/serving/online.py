"""The online path: read a user's live state from the store, run the shared pipeline.

Vectors are cached per model version; friends' missing vectors are computed in one batched
ONNX call. When Redis fails the request is still answered — from popularity, marked degraded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from redis.exceptions import RedisError

from app.serving.encode import History
from app.serving.pipeline import Friends, Query, Recommendation, Recommender, UserState
from app.store.redis_store import RedisStore, UserRecord

log = logging.getLogger(__name__)
STORE_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class Served:
    recommendation: Recommendation
    model_version: str
    degraded: bool


@dataclass(frozen=True)
class Request:
    user_id: str
    k: int = 20
    exclude_seen: bool = True
    exclude: tuple[str, ...] = ()
    categories: frozenset[str] = frozenset()


def known_history(rec: Recommender, history: Sequence[tuple[str, float]]) -> History:
    """Items the model knows, most recent first, capped at the model's history length."""
    index = rec.artifacts.catalog.index
    known = [(index[i], w) for i, w in history if i in index]
    return History.of(known[: rec.manifest.max_history])


async def recommend(rec: Recommender, store: RedisStore, req: Request,
                    popular: np.ndarray | None = None) -> Served:
    index = rec.artifacts.catalog.index
    query = Query(k=req.k, exclude_seen=req.exclude_seen, categories=req.categories,
                  exclude=np.fromiter((index[i] for i in req.exclude if i in index), np.int64))
    try:
        record = await store.user(req.user_id, rec.version)
        state = await _user_state(rec, store, req.user_id, record)
    except STORE_ERRORS as exc:
        log.warning("store unavailable, serving popularity: %s", type(exc).__name__)
        return Served(rec.recommend(UserState(), query, popular=popular), rec.version, True)
    return Served(rec.recommend(state, query, popular=popular), rec.version, False)


async def _user_state(rec: Recommender, store: RedisStore, user_id: str,
                      record: UserRecord) -> UserState:
    history = known_history(rec, record.history)
    friends = await _friends(rec, store, [f for f, _ in record.friends],
                             np.asarray([w for _, w in record.friends], dtype=np.float32))
    vector = record.vector
    if vector is None and len(history):
        vector = rec.encode([history])[0]
        await _cache_quietly(store, {user_id: vector}, rec.version)
    return UserState(history=history, friends=friends, vector=vector)


async def _friends(rec: Recommender, store: RedisStore, ids: list[str],
                   ties: np.ndarray) -> Friends:
    """Friends with a known history; their vectors from the cache, the missing ones encoded
    together and written back."""
    cached, histories = await store.friends_state(ids, rec.version)
    known = [known_history(rec, h) for h in histories]
    keep = [n for n, h in enumerate(known) if len(h)]
    missing = [n for n in keep if cached[n] is None]
    if missing:
        fresh = rec.encode([known[n] for n in missing])
        for row, n in enumerate(missing):
            cached[n] = fresh[row]
        await _cache_quietly(store, {ids[n]: cached[n] for n in missing}, rec.version)
    dim = rec.manifest.embedding_dim
    if not keep:
        return Friends.none(dim)
    return Friends(ids=[ids[n] for n in keep],
                   vectors=np.stack([cached[n] for n in keep]).reshape(len(keep), dim),
                   ties=ties[keep], items=[known[n].items for n in keep])


async def _cache_quietly(store: RedisStore, vectors: dict[str, np.ndarray], version: str) -> None:
    """A failed cache write only costs a recomputation next time."""
    try:
        await store.save_vectors(vectors, version)
    except STORE_ERRORS as exc:
        log.info("vector cache write failed: %s", type(exc).__name__)
