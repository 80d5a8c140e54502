"""Blocking Redis access for the offline commands: bulk-writing users (`socialrec load`),
reading the event log and the live catalogue back (`socialrec events-export`) and the model
reload notice (`socialrec retrain`)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import redis
from redis.cluster import RedisCluster

from app.store.catalog import CatalogItem, parse_item, whole_generations
from app.store.keys import Keys, readable_log_tags
from app.store.redis_store import ReloadNotice, StoreSettings, history_entry, reload_notice
from app.store.scripts import PUBLISH_RELOAD
from app.store.seen import item_tag

LOG_PAGE = 5000


def sync_client(url: str | None, settings: StoreSettings) -> redis.Redis | RedisCluster:
    """A blocking client; a cluster client when the settings say `redis_cluster` (then `url`,
    default the settings' URL, is any seed node). Raises when Redis does not answer."""
    options = {"socket_timeout": max(5.0, settings.redis_timeout_s)}
    if settings.redis_cluster:
        client: redis.Redis | RedisCluster = RedisCluster.from_url(
            url or settings.redis_url, **options)
    else:
        client = redis.Redis.from_url(url or settings.redis_url, **options)
    try:
        client.ping()
    except BaseException:
        client.close()
        raise
    return client


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """A user's whole state as bootstrapped from a dataset."""

    user_id: str
    history: Sequence[tuple[str, float]]  # (item_id, weight), one per item, most recent first
    friends: Sequence[tuple[str, float]]  # (friend_id, tie weight)


def replace_users(client: redis.Redis | RedisCluster, keys: Keys,
                  users: Sequence[UserSnapshot], settings: StoreSettings) -> None:
    """Replace these users' history (the `history_len` most recent items), seen set (the
    `seen_len` most recent), friends and cached vector in one pipeline: writing the same users
    twice leaves the same state. Each friendship also enters the reverse index an erasure
    reads (app.store.keys `followers`, `followed`)."""
    pipe = client.pipeline(transaction=False)
    for user in users:
        u = user.user_id
        for key in (keys.history(u), keys.friends(u), keys.vector(u), keys.seen(u)):
            pipe.delete(key)
        if user.history:
            pipe.set(keys.seen(u), b"".join(
                item_tag(item) for item, _ in reversed(user.history[:settings.seen_len])))
        history = user.history[:settings.history_len]
        if history:
            # Dataset order becomes recency n..1 (older than any live event's unix time).
            n = len(history)
            pipe.hset(keys.history(u), mapping={
                item: history_entry(w, n - rank) for rank, (item, w) in enumerate(history)})
        if user.friends:
            pipe.hset(keys.friends(u), mapping=dict(user.friends))
            pipe.sadd(keys.followed(u), *(f for f, _ in user.friends))
            for f, _ in user.friends:
                pipe.sadd(keys.followers(f), u)
    pipe.execute()


def read_log(client: redis.Redis | RedisCluster, keys: Keys) -> Iterator[list[dict[str, str]]]:
    """The event log, page by page; each entry as its fields (app.store.scripts LOG_EVENT names
    them). The partitions are merged by stream id, the logging server's clock in milliseconds
    and a sequence: each partition, and so each user's events, in exact log order; across
    partitions in time order (entries of the same millisecond in a fixed partition order; on
    a cluster, as far as the masters' clocks agree)."""
    tags = readable_log_tags(cast("set[bytes]", client.smembers(keys.log_partitions)))
    merged = heapq.merge(*(_partition(client, keys.events(t), n) for n, t in enumerate(tags)))
    while page := [fields for *_, fields in itertools.islice(merged, LOG_PAGE)]:
        yield page


def _partition(client: redis.Redis | RedisCluster, stream: str,
               n: int) -> Iterator[tuple[int, int, int, dict[str, str]]]:
    """One partition's entries as (milliseconds, sequence, partition number, fields)."""
    last = "-"
    while entries := cast("list[tuple[bytes, dict[bytes, bytes]]]",
                          client.xrange(stream, min=last, max="+", count=LOG_PAGE)):
        for entry_id, fields in entries:
            ms, _, seq = entry_id.partition(b"-")
            yield int(ms), int(seq), n, {k.decode(): v.decode() for k, v in fields.items()}
        last = "(" + entries[-1][0].decode()


def read_catalogue(client: redis.Redis | RedisCluster, keys: Keys) -> Iterator[CatalogItem]:
    """Every record of the live catalogue, in the order of their last change (a record
    changed while this reads may come twice, the later state last)."""
    after = 0
    while True:
        changed = cast("list[tuple[bytes, float]]", client.zrangebyscore(
            keys.catalog_changes, f"({after}", "+inf", start=0, num=LOG_PAGE, withscores=True))
        entries, after = whole_generations([(i.decode(), int(g)) for i, g in changed],
                                           LOG_PAGE, after)
        if not entries:
            return
        pipe = client.pipeline(transaction=False)
        for item_id, _ in entries:
            pipe.hgetall(keys.catalog_item(item_id))
        for (item_id, _), raw in zip(entries, pipe.execute(), strict=True):
            if (item := parse_item(item_id, raw)) is not None:
                yield item


def last_reload(client: redis.Redis | RedisCluster, keys: Keys) -> ReloadNotice:
    """The last model reload an API process accepted (generation 0: none yet)."""
    return reload_notice(cast("dict[bytes, bytes]", client.hgetall(keys.reload)))


def announce_reload(client: redis.Redis | RedisCluster, keys: Keys, version: str,
                    origin: str) -> int:
    """Announce a model version to every API process, as `/admin/reload` does; returns the
    new generation. Each process loads its artifact folder and swaps when it holds `version`."""
    return int(cast("int", client.eval(PUBLISH_RELOAD, 1, keys.reload, version, origin)))
