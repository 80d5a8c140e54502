"""Async Redis access for the service: user state reads, vector cache, event application."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import os
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
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from app.store.coalesce import Coalescer
from app.store.keys import (
    LEGACY_LOG_TAG,
    Keys,
    log_partition,
    log_partition_tags,
    readable_log_tags,
)
from app.store.scripts import (
    APPLY_EVENT,
    ERASE_LOG_PAGE,
    ERASE_USER,
    FOLLOWER_INDEX,
    LOG_EVENT,
    PUBLISH_RELOAD,
    READ_USER,
    SAVE_RANKED,
    UNLINK_FROM_FOLLOWED,
    UNLINK_FROM_FOLLOWER,
)
from app.store.seen import item_tag

log = logging.getLogger(__name__)
VECTOR_TTL_S = 7 * 24 * 3600
# Counts asked for per round trip by `popular` (ZMSCORE arguments): ~1 ms of packing and parsing
# on the event loop each.
POPULAR_CHUNK = 1000
# What a failing or unreachable Redis raises through this store: callers degrade or answer 503.
# A cluster client that cannot reach any node to learn the slot map raises
# RedisClusterException, which is not a RedisError.
STORE_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


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
    @property
    def log_partitions(self) -> int: ...


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


def reload_notice(raw: Mapping[Any, Any]) -> ReloadNotice:
    """The notice as stored in the reload HASH (app.store.keys `reload`)."""
    fields = {_s(k): _s(v) for k, v in raw.items()}
    if "generation" not in fields:
        return ReloadNotice(0)
    return ReloadNotice(int(fields["generation"]), fields.get("version", ""),
                        fields.get("origin", ""))


@dataclass(frozen=True, slots=True)
class LivePopular:
    """Live behaviour counts summed over the log partitions, most first; `complete` when every
    partition's counts were read whole (otherwise an item not listed has at most about the
    lowest count listed)."""

    counts: list[tuple[str, float]]
    complete: bool


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


def tie_rank(tie: tuple[str, float]) -> tuple[float, str]:
    """The sort key of a user's (friend_id, tie weight) pairs: the strongest tie first, equal
    ties by friend id (ids are ASCII, so str order is byte order). The service blends the
    first `max_friends` in this order (READ_USER sorts the same way), and so do training
    and the evaluator."""
    return -tie[1], tie[0]


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
    return decode_states([raw], version).entries()[0]


_STATE_HEAD = struct.Struct("=II")


@dataclass(frozen=True, slots=True)
class CachedVectors:
    """Several users' cached entries decoded together, aligned with the users asked:
    `found[n]` says whether user n has an entry of this model version; the found entries'
    vectors are the rows of `vectors` and their histories runs of `counts[r]` items in
    `items`/`weights`, in the same order. Three array conversions for a whole friend list
    instead of three per friend."""

    found: list[bool]
    vectors: np.ndarray  # (rows, dim) float32
    items: np.ndarray  # int64
    weights: np.ndarray  # float32
    counts: np.ndarray  # int64, one per row

    def entries(self) -> list[CachedVector | None]:
        """Each user's entry alone, aligned with the users asked (None: not found)."""
        out: list[CachedVector | None] = []
        row = start = 0
        for found in self.found:
            if not found:
                out.append(None)
                continue
            end = start + int(self.counts[row])
            out.append(CachedVector(self.vectors[row], self.items[start:end],
                                    self.weights[start:end]))
            row, start = row + 1, end
        return out


def decode_states(raws: Sequence[bytes | None], version: str) -> CachedVectors:
    """`decode_state` of several entries at once; an entry that would be None is not found
    (as is one whose vector length differs from the others')."""
    tag = version.encode() + _ENTRY
    at = len(tag) + _STATE_HEAD.size
    vectors, items, weights, counts, found = [], [], [], [], []
    dim = -1
    for raw in raws:
        ok = False
        if raw and raw.startswith(tag) and len(raw) >= at:
            d, n = _STATE_HEAD.unpack_from(raw, len(tag))
            if len(raw) == at + 4 * d + 8 * n and dim in (-1, d):
                dim = d
                view = memoryview(raw)
                vectors.append(view[at:at + 4 * d])
                items.append(view[at + 4 * d:at + 4 * d + 4 * n])
                weights.append(view[at + 4 * d + 4 * n:])
                counts.append(n)
                ok = True
        found.append(ok)
    return CachedVectors(
        found, np.frombuffer(b"".join(vectors), np.float32).reshape(len(vectors), max(dim, 0)),
        np.frombuffer(b"".join(items), np.int32).astype(np.int64),
        np.frombuffer(b"".join(weights), np.float32),
        np.asarray(counts, dtype=np.int64))


# A hit's friend entries (none are read): built once, as building even an empty one costs
# several array conversions.
NO_ENTRIES = decode_states([], "")

# After the model version: a ranked list's tag (app.store.keys `ranked`).
# The list entry's format (app.serving.ranked), changed whenever the format does: a process of
# another release, sharing the Redis in a rolling deploy, reads an entry of another format as
# no entry (a miss) instead of decoding it wrongly.
_RANKED = b"\x03"
# How long a lease on computing a user's list holds: far longer than a computation takes; a
# request that read a lease computes the list too, without storing it.
RANKED_LEASE_MS = 5000


def ranked_tag(version: str) -> bytes:
    return version.encode() + _RANKED


@dataclass(frozen=True, slots=True)
class UserRead:
    """What one read of a user returns: their cached ranked list (a hit: nothing else is
    read), or their state, the friends' cached vectors and, when this request should compute
    and store the list, the lease to store it with."""

    ranked: bytes | None  # the list after the model-version tag
    raw: RawUser | None
    friend_entries: CachedVectors  # aligned with raw.friends
    lease: bytes | None


def connect(settings: StoreSettings, timeout_s: float | None = None,
            max_connections: int | None = None) -> aioredis.Redis | RedisCluster:
    """A pooled client; no I/O happens until the first command.

    Every call is bounded by `redis_timeout_s` (connect and read); `timeout_s` lengthens the
    read for a client of long calls (the catalogue's bulk writes). A call that fails with a
    connection error is retried once at once on a fresh connection: after a Redis restart the
    pooled connections are dead, and without the retry each of them would cost one degraded
    answer or one 503. Timeouts are not retried, so a hung Redis costs one timeout per call,
    not a growing back-off. Retrying a command that may have run is safe: reads, cache writes
    and the idempotent event scripts are the only commands this store sends."""
    timeout = settings.redis_timeout_s if timeout_s is None else timeout_s
    options: dict[str, Any] = {"socket_timeout": timeout,
                               "socket_connect_timeout": settings.redis_timeout_s,
                               "health_check_interval": 10}
    if settings.redis_cluster:
        # The cluster client re-reads the slot map before its retry (failover, resharding).
        return RedisCluster.from_url(settings.redis_url, retry=Retry(NoBackoff(), 1),
                                     **options)
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    # A bounded pool that waits (up to the timeout) for a free connection: a burst of requests
    # queues briefly instead of failing at once or opening unbounded connections to Redis.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, timeout=timeout,
        max_connections=max_connections or settings.redis_max_connections,
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
_FOLLOWER = _Script.of(FOLLOWER_INDEX)
_UNLINK_FOLLOWER = _Script.of(UNLINK_FROM_FOLLOWER)
_UNLINK_FOLLOWED = _Script.of(UNLINK_FROM_FOLLOWED)
_ERASE_USER = _Script.of(ERASE_USER)
_ERASE_LOG_PAGE = _Script.of(ERASE_LOG_PAGE)
_READ_USER = _Script.of(READ_USER)
_SAVE_RANKED = _Script.of(SAVE_RANKED)
ScriptCall = tuple[_Script, list[str], list[Any]]
# Script calls per auto-pipelined batch (`_run_script`): a burst of requests goes out as several
# pipelines, so no reply waits behind hundreds of others and one timeout fails few requests.
AUTO_PIPELINE_CALLS = 64
# Stream entries one erasure script reads: each call blocks Redis for about a millisecond.
ERASE_LOG_PAGE_SIZE = 1000
# Erasure passes at most: another pass runs only for follows naming the user that landed
# while the previous pass ran.
ERASE_PASSES = 5


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure removed (all zero when there was nothing left to remove)."""

    history_items: int = 0
    friends: int = 0  # the user's own friend list
    follower_links: int = 0  # the user's entries in other users' friend lists
    seen_items: int = 0
    cached_vectors: int = 0
    event_markers: int = 0  # de-duplication markers (applied and logged)
    log_events: int = 0  # entries by the user, or following or unfollowing them, in the log


def event_calls(keys: Keys, settings: StoreSettings, e: Event,
                recency: float) -> list[ScriptCall]:
    """The script calls that store one event, with keys and arguments: log (in the user's log
    partition), then apply, then for a follow the reverse index in the followed user's slot."""
    value = "" if e.value is None else repr(e.value)
    s = settings
    part = log_partition(e.user_id, s.log_partitions)
    return [
        (_LOG, [keys.logged(part, e.user_id), keys.events(part), keys.popularity(part)],
         [s.dedup_ttl_s, math.ceil(s.stream_maxlen / s.log_partitions), e.event_id,
          e.user_id, e.type, e.item_id or "",
          e.friend_id or "", value, "" if e.timestamp is None else repr(e.timestamp)]),
        (_APPLY, [keys.applied(e.user_id), keys.history(e.user_id), keys.friends(e.user_id),
                  keys.vector(e.user_id), keys.seen(e.user_id), keys.followed(e.user_id),
                  keys.ranked(e.user_id)],
         [s.dedup_ttl_s, e.type, e.item_id or "", e.friend_id or "", value, repr(e.weight),
          repr(recency), s.history_len, item_tag(e.item_id or ""), s.seen_len, e.event_id]),
    ] + ([(_FOLLOWER, [keys.followers(e.friend_id)], [e.user_id])]
         if e.type == "follow" and e.friend_id is not None else [])


class RedisStore:
    def __init__(self, client: aioredis.Redis | RedisCluster, settings: StoreSettings) -> None:
        self.client = client
        self.keys = Keys(settings.key_prefix)
        self._settings = settings
        self._registered = False  # this process's log partitions are in the registry
        # Concurrent requests' script calls on a single Redis, sent together (`_run_script`).
        self._batches: Coalescer[ScriptCall, Any] | None = (
            None if isinstance(client, RedisCluster)
            else Coalescer(self._eval, self._send_scripts, AUTO_PIPELINE_CALLS))

    async def close(self) -> None:
        if self._batches is not None:
            await self._batches.drain()
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
        ties = sorted(((_s(f), float(w)) for f, w in friends.items()), key=tie_rank)
        return RawUser(hist, ties[:max_friends], decode_state(vec, version), seen or b"")

    async def read_user(self, user_id: str, version: str, max_friends: int,
                        ranked: bool = False) -> UserRead:
        """The user's ranked list when `ranked` and one of this model version is cached;
        otherwise the user's state and the friends' cached vectors, and a lease when this
        request should store the list it computes (`save_ranked`). One script in the user's
        slot: on a single Redis it also reads the friends' vectors, so this is one round trip;
        on a cluster they live in other slots and are a second one (`cached_vectors`)."""
        cluster = isinstance(self.client, RedisCluster)
        tag = ranked_tag(version) if ranked else b""
        lease = b"\x00" + os.urandom(8) if ranked else b""
        head, tail = ("", "") if cluster else self.keys.vector_key_parts()
        k = self.keys
        reply = await self._run_script(
            _READ_USER, [k.ranked(user_id), k.history(user_id), k.friends(user_id),
                         k.vector(user_id), k.seen(user_id)],
            [tag, lease, RANKED_LEASE_MS, max_friends, head, tail])
        if reply[0] == 1:
            return UserRead(reply[1][len(tag):], None, NO_ENTRIES, None)
        hist, flat = reply[2], reply[3]
        friends = [(_s(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]
        raw = RawUser(dict(zip(hist[::2], hist[1::2], strict=True)), friends,
                      decode_state(reply[4], version), reply[5] or b"")
        entries = (decode_states(reply[6:], version) if not cluster
                   else await self.cached_vectors([f for f, _ in friends], version))
        return UserRead(None, raw, entries, lease if reply[1] == 1 else None)

    async def save_ranked(self, user_id: str, lease: bytes, version: str, body: bytes,
                          ttl_ms: int, own: VectorState | None = None) -> bool:
        """Store a user's ranked list for `ttl_ms` milliseconds if the lease `read_user` took
        is still there (no event of the user landed since the read), and with it `own`, the
        user's vector encoded from the history that read returned; True when stored."""
        entry = b"" if own is None else encode_state(own.vector, own.items, own.weights,
                                                     version)
        return bool(await self._run_script(
            _SAVE_RANKED, [self.keys.ranked(user_id), self.keys.vector(user_id)],
            [lease, ranked_tag(version) + body, ttl_ms, entry, VECTOR_TTL_S]))

    async def cached_vectors(self, user_ids: Sequence[str],
                             version: str) -> CachedVectors:
        """Cached vector entries of several users (the current model's only) in one round trip:
        one MGET, or one GET each on a cluster, where different users live in different
        slots. Each pipelined command costs the client ~9 µs, an MGET of 13 keys about two."""
        if not user_ids:
            return decode_states([], version)
        keys = [self.keys.vector(u) for u in user_ids]
        if isinstance(self.client, RedisCluster):
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get(key)
                raws = await pipe.execute()
        else:
            raws = await self.client.mget(keys)
        return decode_states(raws, version)

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
        if not self._registered:
            await self.register_log_partitions()
        now = time.time()
        calls: list[ScriptCall] = []
        applies = []
        for n, e in enumerate(events):
            # Batch order breaks ties between events without a timestamp.
            recency = e.timestamp if e.timestamp is not None else now + n * 1e-6
            applies.append(len(calls) + 1)
            calls += event_calls(self.keys, self._settings, e, recency)
        results = await self._run_scripts(calls)
        return [bool(results[n]) for n in applies]

    async def register_log_partitions(self) -> None:
        """Add this process's log partitions to the registry readers use, before its first
        event (idempotent), and say when the log also holds partitions of another layout."""
        tags = log_partition_tags(self._settings.log_partitions)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.log_partitions, *tags)
            pipe.smembers(self.keys.log_partitions)
            pipe.exists(self.keys.events(LEGACY_LOG_TAG))
            _, registered, legacy = await pipe.execute()
        self._registered = True
        others = sorted({_s(t) for t in registered} - set(tags))
        if others or legacy:
            layouts = sorted({t.split(":")[1] for t in others})
            log.warning(
                "the event log also holds %s besides its %d partitions: still read by "
                "events-export, erasure and popularity; an event logged there and retried "
                "now within SOCIALREC_DEDUP_TTL_S is logged twice (applied once)",
                " and ".join((["the unpartitioned log"] if legacy else [])
                             + ([f"partitions of a {'/'.join(layouts)}-partition layout"]
                                if layouts else [])),
                len(tags))

    async def log_tags(self) -> list[str]:
        """Every log partition that may hold entries (app.store.keys readable_log_tags)."""
        return readable_log_tags(await self.client.smembers(self.keys.log_partitions))

    async def erase(self, user_id: str) -> Erased:
        """Remove everything held about a user, in steps each confined to one slot:

        1. the user's entry in each follower's friend list, and the user in the reverse index
           of each user they followed, as the user's reverse index lists them;
        2. the user's events in the log, and events naming the user as friend, page by page
           in every partition at once (a follow naming the user is logged in the follower's
           partition; a changed partition count leaves the user's own events in several),
           then the user's log markers in each;
        3. the user's own keys, the reverse index entries handled in step 1 last.

        Every step is idempotent and the index step 1 reads goes last, so a retry after an
        interruption (Redis down, process killed) finishes the erasure; running it again
        afterwards removes nothing. A follow that entered the index while this ran is left in
        it by step 3 and handled by another pass (up to ERASE_PASSES). An event for the user
        stored while this runs is the user's activity after the erasure began: it survives
        whole or in part, in keys a second erasure finds (app.store.scripts)."""
        total = Erased()
        for _ in range(ERASE_PASSES):
            erased, left = await self._erase_pass(user_id)
            total = Erased(*(a + b for a, b in zip(dataclasses.astuple(total),
                                                   dataclasses.astuple(erased), strict=True)))
            if not left:
                break
        return total

    async def _erase_pass(self, user_id: str) -> tuple[Erased, int]:
        """One pass of `erase`; also returns the reverse index entries left for another."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.smembers(k.followers(user_id))
            pipe.smembers(k.followed(user_id))
            replies = await pipe.execute()
        followers, followed = (sorted(_s(u) for u in reply) for reply in replies)
        calls: list[ScriptCall] = [
            (_UNLINK_FOLLOWER, [k.friends(a), k.followed(a), k.ranked(a)], [user_id])
            for a in followers]
        calls += [(_UNLINK_FOLLOWED, [k.followers(f)], [user_id]) for f in followed]
        unlinked = await self._run_scripts(calls) if calls else []
        links = sum(int(r) for r in unlinked[:len(followers)])
        log_events = logged_markers = 0
        starts = dict.fromkeys(await self.log_tags(), "-")
        while starts:
            tags = list(starts)
            pages = await self._run_scripts([
                (_ERASE_LOG_PAGE, [k.events(t), k.logged(t, user_id)],
                 [starts[t], ERASE_LOG_PAGE_SIZE, user_id]) for t in tags])
            for tag, (deleted, last, markers) in zip(tags, pages, strict=True):
                log_events += int(deleted)
                logged_markers += int(markers)
                if last:
                    starts[tag] = "(" + _s(last)
                else:
                    del starts[tag]
        history, friends, seen, vectors, markers, left = (await self._run_scripts(
            [(_ERASE_USER, list(k.user_keys(user_id)),
              [len(followers), *followers, *followed])]))[0]
        return Erased(history_items=int(history), friends=int(friends), follower_links=links,
                      seen_items=int(seen), cached_vectors=int(vectors),
                      event_markers=int(markers) + int(logged_markers),
                      log_events=log_events), int(left)

    async def eviction_risk(self) -> str | None:
        """Why Redis may silently drop durable state, or None. Under an `allkeys-*`
        maxmemory-policy a full Redis evicts keys without a TTL too: histories, friend lists,
        the reverse index, the event log. `noeviction` (writes fail, events get 503 and are
        retried) and `volatile-*` (only keys with a TTL: cached vectors, markers) are safe."""
        unsafe = sorted({p for p in await self.eviction_policies() if p.startswith("allkeys-")})
        if not unsafe:
            return None
        return (f"redis maxmemory-policy {'/'.join(unsafe)} may evict histories, friend lists "
                f"and the event log; set maxmemory-policy noeviction (or volatile-lru)")

    async def eviction_policies(self) -> list[str]:
        """The maxmemory-policy of every primary (one on a single Redis), from INFO, which
        managed Redis services answer even where CONFIG is disabled."""
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()
            infos = await asyncio.gather(*(self.client.info("memory", target_nodes=node)
                                           for node in self.client.get_primaries()))
        else:
            infos = [await self.client.info("memory")]
        return [_s(info.get("maxmemory_policy", "noeviction")) for info in infos]

    async def _run_script(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """One script call of a request (the user read, the list write). On a single Redis
        the calls concurrent requests make while others are on the way are sent together
        (app.store.coalesce): one connection checkout and one write per batch instead of per
        call, which is most of the client's cost of a call (a command alone ~65 µs, each
        further one of a pipeline ~9 µs). A call alone, and every call on a cluster, is a
        plain EVALSHA (`_eval`), as a one-command pipeline costs the client about as much
        again as the command."""
        if self._batches is None:
            return await self._eval((script, keys, args))
        return await self._batches.call((script, keys, args))

    async def _send_scripts(self, calls: list[ScriptCall]) -> list[Any]:
        """A batch of `_run_script` calls in one pipeline: each call's result or its own error
        (one request's failing script fails only that request). redis-py sends a pipeline
        again once, whole, on a fresh connection after a connection error and does not retry
        a timeout, like a single command (`connect`); either error reaches every call of the
        batch."""
        results = await self._pipeline("EVALSHA", calls, raise_on_error=False)
        # independent calls: the others' errors do not keep a call from being sent again
        await self._send_missing(calls, results, raise_on_error=False)
        return results

    async def _eval(self, call: ScriptCall) -> Any:
        """One script call as a plain EVALSHA, without a pipeline. A server that does not know
        the script (new, restarted, failed over) answers NOSCRIPT before running anything, and
        the call is sent again as EVAL, which also caches the script there. The cluster client
        routes both by the slot of the keys."""
        script, keys, args = call
        try:
            return await self.client.execute_command("EVALSHA", script.sha, len(keys), *keys,
                                                     *args)
        except NoScriptError:
            return await self.client.execute_command("EVAL", script.text, len(keys), *keys,
                                                     *args)

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
        await self._send_missing(calls, results, raise_on_error=True)
        return results

    async def _send_missing(self, calls: list[ScriptCall], results: list[Any],
                            raise_on_error: bool) -> None:
        """The calls whose result is NOSCRIPT sent again, in order, as EVAL in one pipeline;
        their results replace the NOSCRIPT ones."""
        missing = [n for n, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            again = await self._pipeline("EVAL", [calls[n] for n in missing], raise_on_error)
            for n, result in zip(missing, again, strict=True):
                results[n] = result

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
        return reload_notice(await self.client.hgetall(self.keys.reload))

    async def popular(self, n: int) -> LivePopular:
        """The `n` items with the most behaviour events logged, with those counts, most first.
        Each partition's top `n` (with their counts there) are the candidates; a candidate's
        count in a partition whose top `n` is full but does not list it is read with ZMSCORE,
        unless even the most that partition can hold for it (its lowest listed count) would
        not lift it into the top `n`. Exact for every item listed; an item in no partition's
        top `n` is missed only when its total beats a listed one, which needs it just under
        the top `n` of many partitions at once (users are spread over them by a hash).

        A background task of every process calls this while requests are served on the same
        event loop, and the candidates reach 10,000s when counts are spread thin (every
        partition's top a different set): the missing counts are asked for POPULAR_CHUNK at a
        time, one round trip each, and the sums are numpy's, so no stretch of this runs long
        enough to hold up requests (one pipeline of every count would pack and parse tens of
        ms of arguments and replies in one go)."""
        keys = [self.keys.popularity(t) for t in await self.log_tags()]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrevrange(key, 0, n - 1, withscores=True)
            tops = cast("list[list[tuple[bytes, float]]]", await pipe.execute())
        names = sorted({_s(i) for top in tops for i, _ in top})
        if not names:
            return LivePopular([], complete=True)
        index = {name: at for at, name in enumerate(names)}
        totals = np.zeros(len(names))
        unread: list[tuple[str, np.ndarray, float]] = []  # (key, candidates, most they can hold)
        for key, top in zip(keys, tops, strict=True):
            listed = np.fromiter((index[_s(i)] for i, _ in top), np.int64, len(top))
            counts = np.fromiter((c for _, c in top), np.float64, len(top))
            totals[listed] += counts
            if len(listed) == n:
                missing = np.ones(len(names), dtype=bool)
                missing[listed] = False
                unread.append((key, np.flatnonzero(missing), float(counts[-1])))
        # the n-th largest count known so far is a floor for the n-th total: a candidate that
        # cannot reach it even with the most every unread partition can hold is not listed
        most = totals.copy()
        for _, rows, floor in unread:
            most[rows] += floor
        wanted = np.ones(len(names), dtype=bool)
        if len(names) > n:
            wanted = most >= np.partition(totals, len(names) - n)[len(names) - n]
        for key, rows, _ in unread:
            rows = rows[wanted[rows]]
            for start in range(0, len(rows), POPULAR_CHUNK):
                part = rows[start:start + POPULAR_CHUNK]
                scores = await self.client.zmscore(key, [names[i] for i in part.tolist()])
                totals[part] += np.fromiter((s or 0.0 for s in scores), np.float64, len(part))
        # most first; ties in name order, as the candidates are sorted
        ranked = np.flatnonzero(wanted)
        ranked = ranked[np.argsort(-totals[ranked], kind="stable")][:n]
        return LivePopular(list(zip([names[i] for i in ranked.tolist()],
                                    totals[ranked].tolist(), strict=True)),
                           complete=len(names) <= n and all(len(top) < n for top in tops))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
