"""The partitioned event log against a real Redis and a real Redis Cluster: each user's events
in one partition, partitions spread evenly over the masters' slot ranges (every master of the
test cluster receives log entries), the export merges them in log order, and popularity is
summed over them."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from app.config import Settings
from app.store import redis_store
from app.store.bulk import sync_client
from app.store.keys import log_partition, log_partition_tags
from app.store.redis_store import Event, RedisStore
from tests.support.log import live_counts, log_fields

USERS = 90


def view(n: int, user: str, item: str) -> Event:
    return Event(f"e{n}", user, "view", item_id=item, timestamp=1_700_000_000 + n)


@pytest.mark.parametrize("n", [3, 12, 16, 24, 64])
def test_partitions_are_spread_evenly_over_equal_slot_ranges(n: int) -> None:
    """Masters that split the slots into equal ranges (`redis-cli --cluster create`) get
    n / masters partitions each whenever that divides."""
    slots = [key_slot(t.encode()) for t in log_partition_tags(n)]
    assert len(set(log_partition_tags(n))) == n
    for masters in (1, 2, 3, 4, 6, 8):
        if n % masters == 0:
            per = Counter(slot * masters // REDIS_CLUSTER_HASH_SLOTS for slot in slots)
            assert sorted(per.values()) == [n // masters] * masters, masters


async def test_each_users_events_are_in_one_partition_spread_over_the_masters(
        store: RedisStore, store_settings: Settings) -> None:
    users = [f"user-{u}" for u in range(USERS)]
    await store.apply([view(n, users[n % USERS], f"i{n % 7}") for n in range(3 * USERS)])
    n = store_settings.log_partitions
    assert set(await store.log_tags()) == {*log_partition_tags(n), "log"}
    client = sync_client(None, store_settings)
    try:
        where: dict[str, set[str]] = {}
        masters = set()
        for tag in log_partition_tags(n):
            entries = client.xrange(store.keys.events(tag))
            for _, fields in entries:
                where.setdefault(fields[b"user_id"].decode(), set()).add(tag)
            if entries and store_settings.redis_cluster:
                masters.add(client.get_node_from_key(store.keys.events(tag)).name)
        if store_settings.redis_cluster:
            # every master of the 3-master test cluster logs events, not one hot slot
            assert len(masters) == len(client.get_primaries()) == 3
    finally:
        client.close()
    assert where == {u: {log_partition(u, n)} for u in users}
    assert len({t for tags in where.values() for t in tags}) == n, "every partition written"


async def test_the_export_merges_the_partitions_in_log_order(
        store: RedisStore, store_settings: Settings) -> None:
    """One clock (a single Redis, or masters on one machine): the merged log is the order the
    events were logged in, across partitions."""
    sent = []
    for n in range(40):
        event = view(n, f"user-{n % 13}", f"i{n}")
        await store.apply([event])
        sent.append((event.user_id, event.event_id))
        await asyncio.sleep(0.002)  # the next event in a later millisecond
    assert [(f["user_id"], f["event_id"]) for f in log_fields(store_settings)] == sent


async def test_popularity_is_summed_over_the_partitions(store: RedisStore,
                                                        store_settings: Settings) -> None:
    users = [f"user-{u}" for u in range(30)]
    assert len({log_partition(u, store_settings.log_partitions) for u in users}) > 1
    events = [view(n, u, "hot") for n, u in enumerate(users)]
    events += [view(100 + n, u, "warm") for n, u in enumerate(users[:10])]
    await store.apply([*events, view(999, "user-0", "cold")])
    assert live_counts(store_settings) == {"hot": 30, "warm": 10, "cold": 1}
    live = await store.popular(100)
    assert live.counts == [("hot", 30.0), ("warm", 10.0), ("cold", 1.0)] and live.complete
    top = await store.popular(1)
    assert top.counts == [("hot", 30.0)] and not top.complete


def spread_thin(users: int, items: int, events: int, seed: int) -> list[Event]:
    """Events of many users (so every partition gets some) on items drawn Zipf(1.0): each
    partition's top holds a different set, as live counts spread thin do."""
    rng = random.Random(seed)
    names = [f"i{n}" for n in range(items)]
    weights = [1 / (r + 1) for r in range(items)]
    return [view(n, f"user-{rng.randrange(users)}", rng.choices(names, weights)[0])
            for n in range(events)]


@pytest.mark.parametrize("n", [1, 3, 5, 10, 20, 60])
async def test_popularity_is_exact_when_partition_tops_are_full(
        store: RedisStore, store_settings: Settings, n: int) -> None:
    """Tops of n items that leave out candidates other partitions list: their counts there are
    read (or shown not to matter), so the list is the exact top n by total, ties by name."""
    await store.apply(spread_thin(users=80, items=50, events=400, seed=n))
    counts = live_counts(store_settings)
    live = await store.popular(n)
    expected = sorted(counts.items(), key=lambda ic: (-ic[1], ic[0]))[:n]
    assert live.counts == [(i, float(c)) for i, c in expected]
    assert live.complete == (n == 60)


async def test_popularity_asks_for_counts_a_chunk_at_a_time(
        store: RedisStore, store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refresh runs on the event loop that serves requests: however many candidates the
    partitions' tops give, no single command carries more than POPULAR_CHUNK of them (one
    command of every candidate for every partition stalled the loop ~100 ms)."""
    monkeypatch.setattr(redis_store, "POPULAR_CHUNK", 4)
    await store.apply(spread_thin(users=80, items=50, events=400, seed=1))
    asked: list[int] = []
    client = store.client

    class Recording:
        """The store's client, counting the members of every ZMSCORE, sent alone or in a
        pipeline."""

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        async def zmscore(self, key: str, members: list[str]) -> Any:
            asked.append(len(members))
            return await client.zmscore(key, members)

        def pipeline(self, *args: Any, **kwargs: Any) -> Any:
            pipe = client.pipeline(*args, **kwargs)
            send = pipe.zmscore

            def zmscore(key: str, members: list[str]) -> Any:
                asked.append(len(members))
                return send(key, members)

            pipe.zmscore = zmscore  # type: ignore[method-assign]
            return pipe

    monkeypatch.setattr(store, "client", Recording())
    live = await store.popular(5)
    counts = live_counts(store_settings)
    assert live.counts == [(i, float(c)) for i, c in
                           sorted(counts.items(), key=lambda ic: (-ic[1], ic[0]))[:5]]
    assert asked and max(asked) <= 4
