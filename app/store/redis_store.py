"""Async Redis access for the service: user state reads, vector cache, event application."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from app.store.keys import Keys
from app.store.scripts import APPLY_EVENT, LOG_EVENT, PUBLISH_RELOAD
from app.store.seen import item_tag

VECTOR_TTL_S = 7 * 24 * 3600
# What a failing or unreachable Redis raises through this store: callers degrade or answer 503.
STORE_ERRORS = (RedisError, OSError, TimeoutError)


class StoreSettings(Protocol):
    """The settings the store reads (app.config.Settings has them); a protocol, so the store
    depends on nothing else in the application."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_cluster(self) -> bool: ...
    @property
    def redis_timeout_s(self) -> float: ...
    @property
    def redis_max_connections(self) -> int: ...
    @property
    def key_prefix(self) -> str: ...
    @property
    def history_len(self) -> int: ...
    @property
    def seen_len(self) -> int: ...
    @property
    def dedup_ttl_s(self) -> int: ...
    @property
    def stream_maxlen(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Event:
    """One validated event as the store applies it; `weight` is what a behaviour event adds to
    the item's history weight (app.events.event_weight), unused by follows."""

    event_id: str
    user_id: str
    type: str
    item_id: str | None = None
    friend_id: str | None = None
    value: float | None = None
    timestamp: float | None = None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ReloadNotice:
    """The last model reload an API process accepted; generation 0: none yet."""

    generation: int
    version: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class UserRecord:
    history: list[tuple[str, float]]  # (item_id, weight), most recent first
    friends: list[tuple[str, float]]  # (friend_id, tie weight)
    vector: np.ndarray | None  # cached own vector for the current model, if any


@dataclass(frozen=True, slots=True)
class RawUser:
    """A user's state as read: the history HASH unparsed (a caller whose cached entry carries
    the history need not parse it), the cached entry, the seen set's tags (app.store.seen)."""

    history: dict[Any, Any]
    friends: list[tuple[str, float]]  # (friend_id, tie weight), strongest first
    entry: CachedVector | None
    seen: bytes


def history_entry(weight: float, recency: float) -> str:
    return f"{weight:.6g}:{recency:.17g}"


def parse_history(raw: dict[str, str]) -> list[tuple[str, float]]:
    """HASH item → "weight:recency" into (item, weight), most recent first."""
    entries = []
    for item, value in raw.items():
        weight, _, recency = value.partition(":")
        entries.append((float(recency), item, float(weight)))
    entries.sort(reverse=True)
    return [(item, weight) for _, item, weight in entries]


def decode_history(raw: dict[Any, Any]) -> list[tuple[str, float]]:
    """`parse_history` of a HASH as the client returns it (bytes or str)."""
    return parse_history({_s(k): _s(v) for k, v in raw.items()})


# After the model version: the entry layout's tag.
_ENTRY = b"\x01"


@dataclass(frozen=True, slots=True)
class CachedVector:
    """A cached vector and the history it was encoded from."""

    vector: np.ndarray
    items: np.ndarray  # model item indices, most recent first (int64)
    weights: np.ndarray  # their weights (float32)


@dataclass(frozen=True, slots=True)
class VectorState:
    """What `save_states` caches: a vector, the model-indexed history it was encoded from, and
    the history as read from Redis (`parse_history` form) to check it has not changed since."""

    vector: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    history: list[tuple[str, float]]


def encode_state(vector: np.ndarray, items: np.ndarray, weights: np.ndarray,
                 version: str) -> bytes:
    """A vector cache entry that also carries the history it was encoded from, so a reader
    that needs that history (a friend's items, for social proof) skips reading and parsing the
    history HASH. It is exactly as fresh as the vector: every history change deletes the entry
    (app.store.scripts APPLY_EVENT). Layout after the tag: uint32 dim, uint32 n, float32[dim]
    vector, int32[n] items, float32[n] weights."""
    vector = np.asarray(vector, dtype=np.float32)
    head = np.array([len(vector), len(items)], dtype=np.uint32)
    return (version.encode() + _ENTRY + head.tobytes() + vector.tobytes()
            + np.asarray(items, dtype=np.int32).tobytes()
            + np.asarray(weights, dtype=np.float32).tobytes())


def decode_state(raw: bytes | None, version: str) -> CachedVector | None:
    """None when absent, of another model version or layout, or malformed: the caller
    recomputes."""
    tag = version.encode() + _ENTRY
    if not raw or not raw.startswith(tag):
        return None
    body = raw[len(tag):]
    if len(body) < 8:
        return None
    dim, n = struct.unpack_from("=II", body)
    if len(body) != 8 + 4 * dim + 8 * n:
        return None
    return CachedVector(np.frombuffer(body, np.float32, dim, 8),
                        np.frombuffer(body, np.int32, n, 8 + 4 * dim).astype(np.int64),
                        np.frombuffer(body, np.float32, n, 8 + 4 * dim + 4 * n))


def connect(settings: StoreSettings) -> aioredis.Redis | RedisCluster:
    """A pooled client; no I/O happens until the first command.

    Every call is bounded by `redis_timeout_s` (connect and read). A call that fails with a
    connection error is retried once at once on a fresh connection: after a Redis restart the
    pooled connections are dead, and without the retry each of them would cost one degraded
    answer or one 503. Timeouts are not retried, so a hung Redis costs one timeout per call,
    not a growing back-off. Retrying a command that may have run is safe: reads, cache writes
    and the idempotent event scripts are the only commands this store sends."""
    timeout = settings.redis_timeout_s
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                               "health_check_interval": 10}
    if settings.redis_cluster:
        # The cluster client re-reads the slot map before its retry (failover, resharding).
        return RedisCluster.from_url(settings.redis_url, retry=Retry(NoBackoff(), 1),
                                     **options)
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    # A bounded pool that waits (up to the timeout) for a free connection: a burst of requests
    # queues briefly instead of failing at once or opening unbounded connections to Redis.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_max_connections, timeout=timeout,
        retry=retry, **options)
    return aioredis.Redis.from_pool(pool)


@dataclass(frozen=True, slots=True)
class _Script:
    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> _Script:
        return cls(text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())


_LOG = _Script.of(LOG_EVENT)
_APPLY = _Script.of(APPLY_EVENT)
ScriptCall = tuple[_Script, list[str], list[Any]]


def event_calls(keys: Keys, settings: StoreSettings, e: Event,
                recency: float) -> list[ScriptCall]:
    """The two script calls (log, then apply) that store one event: keys and arguments."""
    value = "" if e.value is None else repr(e.value)
    s = settings
    return [
        (_LOG, [keys.logged(e.user_id, e.event_id), keys.events, keys.popularity],
         [s.dedup_ttl_s, s.stream_maxlen, e.event_id, e.user_id, e.type, e.item_id or "",
          e.friend_id or "", value, "" if e.timestamp is None else repr(e.timestamp)]),
        (_APPLY, [keys.applied(e.user_id, e.event_id), keys.history(e.user_id),
                  keys.friends(e.user_id), keys.vector(e.user_id), keys.seen(e.user_id)],
         [s.dedup_ttl_s, e.type, e.item_id or "", e.friend_id or "", value, repr(e.weight),
          repr(recency), s.history_len, item_tag(e.item_id or ""), s.seen_len]),
    ]


class RedisStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, settings: StoreSettings) -> None:
        self.client = client
        self.keys = Keys(settings.key_prefix)
        self._settings = settings

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> None:
        """On a cluster every primary must answer: each holds a third of the users, and one of
        them the event log."""
        if not isinstance(self.client, RedisCluster):
            await self.client.ping()
            return
        await self.client.initialize()  # no-op once the slot map is known
        primaries = self.client.get_primaries()
        if not primaries:
            raise RedisConnectionError("no cluster primary known")
        # One call per node, every outcome collected: a failed node's error is raised, and no
        # task is left with an exception nobody retrieves.
        answers = await asyncio.gather(*(self.client.ping(target_nodes=node)
                                         for node in primaries), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer

    async def user(self, user_id: str, version: str, max_friends: int) -> UserRecord:
        raw = await self.user_raw(user_id, version, max_friends)
        return UserRecord(history=decode_history(raw.history), friends=raw.friends,
                          vector=None if raw.entry is None else raw.entry.vector)

    async def user_raw(self, user_id: str, version: str, max_friends: int) -> RawUser:
        """A user's state in one round trip; friends are the `max_friends` strongest ties."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.history(user_id))
            pipe.hgetall(self.keys.friends(user_id))
            pipe.get(self.keys.vector(user_id))
            pipe.get(self.keys.seen(user_id))
            hist, friends, vec, seen = await pipe.execute()
        ties = sorted(((_s(f), float(w)) for f, w in friends.items()), key=lambda fw: -fw[1])
        return RawUser(hist, ties[:max_friends], decode_state(vec, version), seen or b"")

    async def cached_vectors(self, user_ids: Sequence[str],
                             version: str) -> list[CachedVector | None]:
        """Cached vector entries of several users (the current model's only) in one round trip:
        one MGET, or one GET each on a cluster, where different users live in different
        slots. Each pipelined command costs the client ~9 µs, an MGET of 13 keys about two."""
        if not user_ids:
            return []
        keys = [self.keys.vector(u) for u in user_ids]
        if isinstance(self.client, RedisCluster):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                raws = await pipe.execute()
        else:
            raws = await self.client.mget(keys)
        return [decode_state(raw, version) for raw in raws]

    async def histories(self, user_ids: Sequence[str]) -> list[list[tuple[str, float]]]:
        """Recent histories of several users in one round trip, each most recent first."""
        if not user_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for u in user_ids:
                pipe.hgetall(self.keys.history(u))
            replies = await pipe.execute()
        return [decode_history(h) for h in replies]

    async def save_states(self, states: Mapping[str, VectorState], version: str) -> None:
        """Cache vectors with the histories they were encoded from (`encode_state`), in one
        round trip that also re-reads each history: an entry whose history changed since it
        was read (an event landed in between, and its delete of the entry came before this
        write) is deleted again instead of serving a stale history until it expires."""
        users = list(states)
        async with self.client.pipeline(transaction=False) as pipe:
            for u in users:
                st = states[u]
                pipe.set(self.keys.vector(u), encode_state(st.vector, st.items, st.weights,
                                                           version), ex=VECTOR_TTL_S)
                pipe.hgetall(self.keys.history(u))
            replies = await pipe.execute()
        changed = [u for u, now in zip(users, replies[1::2], strict=True)
                   if decode_history(now) != states[u].history]
        if changed:
            async with self.client.pipeline(transaction=False) as pipe:
                for u in changed:
                    pipe.delete(self.keys.vector(u))
                await pipe.execute()

    async def apply(self, events: Sequence[Event]) -> list[bool]:
        """Log and apply events; True where applied now, False where the event id had been
        applied before. Raises on any Redis failure — callers answer 503 and the client's retry
        of the same batch is safe (see app.store.scripts)."""
        now = time.time()
        calls: list[ScriptCall] = []
        for n, e in enumerate(events):
            # Batch order breaks ties between events without a timestamp.
            recency = e.timestamp if e.timestamp is not None else now + n * 1e-6
            calls += event_calls(self.keys, self._settings, e, recency)
        results = await self._run_scripts(calls)
        return [bool(r) for r in results[1::2]]

    async def _run_scripts(self, calls: list[ScriptCall]) -> list[Any]:
        """Every call as EVALSHA in one pipeline. On a cluster the pipeline is split by node
        (each script's keys share one slot) and keeps the order of the calls per node, so one
        user's events and the log entries keep the batch order. A server that does not know a
        script yet (new, restarted, failed over) answers NOSCRIPT: exactly those calls are sent
        again, in order, as EVAL with the script text, which also caches the script on that
        server. Nothing that ran is run twice, and no other node is involved."""
        results = await self._pipeline("EVALSHA", calls, raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, NoScriptError):
                raise result
        missing = [n for n, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            again = await self._pipeline("EVAL", [calls[n] for n in missing],
                                         raise_on_error=True)
            for n, result in zip(missing, again, strict=True):
                results[n] = result
        return results

    async def _pipeline(self, command: str, calls: list[ScriptCall],
                        raise_on_error: bool) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                # A raw command: the cluster pipeline refuses its evalsha() helper, but routes
                # EVAL/EVALSHA by the slot of the keys.
                body = script.sha if command == "EVALSHA" else script.text
                pipe.execute_command(command, body, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=raise_on_error)

    async def publish_reload(self, version: str, origin: str) -> int:
        """Announce an accepted model version to every API process; returns its generation."""
        return int(await self.client.eval(PUBLISH_RELOAD, 1, self.keys.reload, version, origin))

    async def last_reload(self) -> ReloadNotice:
        raw = {_s(k): _s(v) for k, v in (await self.client.hgetall(self.keys.reload)).items()}
        if "generation" not in raw:
            return ReloadNotice(0)
        return ReloadNotice(int(raw["generation"]), raw.get("version", ""),
                            raw.get("origin", ""))

    async def popular(self, n: int) -> list[tuple[str, float]]:
        """The `n` items with the most behaviour events logged, with those counts, most first."""
        members = await self.client.zrevrange(self.keys.popularity, 0, n - 1, withscores=True)
        return [(_s(i), float(c)) for i, c in cast("list[tuple[bytes, float]]", members)]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
