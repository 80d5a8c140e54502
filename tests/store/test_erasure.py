"""Erasing a user against a real Redis and a real Redis Cluster: afterwards no key and no log
entry under the prefix holds the id, the export never names it, other users keep their data,
a repeat removes nothing, an interrupted erasure is finished by a retry, and events racing
with it leave a consistent state that a second erasure clears."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from app.config import Settings
from app.offline.events_export import export_events
from app.store import redis_store
from app.store.keys import LEGACY_LOG_TAG, log_partition
from app.store.redis_store import Erased, Event, RedisStore, connect, event_calls
from tests.support.log import live_counts, log_fields
from tests.support.processes import run_module
from tests.support.redis_scan import holders

GONE = "erase-me-7q"  # no other id in these tests contains it
FRIENDS = 100


@pytest.fixture
def sync(store_settings: Settings) -> Iterator[redis.Redis | RedisCluster]:
    client: redis.Redis | RedisCluster = (
        RedisCluster.from_url(store_settings.redis_url) if store_settings.redis_cluster
        else redis.Redis.from_url(store_settings.redis_url))
    yield client
    client.close()


def behaviour(n: int, user: str, item: str) -> Event:
    return Event(f"b{n}", user, "view", item_id=item, timestamp=1_700_000_000 + n)


def follow(n: int, user: str, friend: str, kind: str = "follow") -> Event:
    return Event(f"f{n}", user, kind, friend_id=friend)


def a_social_neighbourhood() -> list[Event]:
    """GONE views, follows two users and is followed by three (one of them unfollows again);
    the others have their own data."""
    return [behaviour(1, GONE, "i1"), behaviour(2, GONE, "i2"), behaviour(3, "ann", "i1"),
            follow(4, GONE, "ann"), follow(5, GONE, "bob"), follow(6, "ann", GONE),
            follow(7, "cid", GONE), follow(8, "dan", GONE), follow(9, "dan", GONE, "unfollow"),
            follow(10, "ann", "bob")]


async def test_erasure_removes_every_trace_and_only_the_users(
        store: RedisStore, store_settings: Settings, sync: redis.Redis | RedisCluster,
        tmp_path: Path) -> None:
    await store.apply(a_social_neighbourhood())
    await store.client.set(store.keys.vector(GONE), b"v\x01cached")
    assert holders(sync, store_settings.key_prefix, GONE), "the test data names the user"
    assert len({log_partition(u, store_settings.log_partitions)
                for u in (GONE, "ann", "cid", "dan")}) > 1, "follows naming the user are " \
        "logged in other partitions than the user's own events"

    erased = await store.erase(GONE)

    assert erased == Erased(history_items=2, friends=2, follower_links=2, seen_items=2,
                            cached_vectors=1, event_markers=4 + 4, log_events=4 + 4)
    assert holders(sync, store_settings.key_prefix, GONE) == []
    out = tmp_path / "interactions.csv"
    export_events(out, settings=store_settings, progress=False)
    exported = out.read_text() + (tmp_path / "social_events.csv").read_text()
    assert GONE not in exported
    with out.open() as fh:
        assert [r["user_id"] for r in csv.DictReader(fh)] == ["ann"]
    ann = await store.user("ann", "v", FRIENDS)
    assert ann.friends == [("bob", 1.0)] and [i for i, _ in ann.history] == ["i1"]
    assert (await store.user(GONE, "v", FRIENDS)).history == []
    assert await store.erase(GONE) == Erased(), "idempotent: nothing left to remove"


async def test_the_reverse_index_follows_follows_and_unfollows(store: RedisStore) -> None:
    """Every friend-list entry has its reverse entry, whatever order events arrive in."""
    await store.apply([follow(1, "a", "b"), follow(2, "a", "c"), follow(3, "a", "b", "unfollow"),
                       follow(4, "d", "c")])
    assert sorted(await store.client.smembers(store.keys.followers("c"))) == [b"a", b"d"]
    assert sorted(await store.client.smembers(store.keys.followed("a"))) == [b"b", b"c"]
    await store.erase("c")
    assert (await store.user("a", "v", FRIENDS)).friends == []
    assert await store.client.smembers(store.keys.followed("d")) == set()
    await store.erase("a")
    assert await store.client.smembers(store.keys.followers("b")) == set()


async def test_an_interrupted_erasure_is_finished_by_a_retry(
        store: RedisStore, store_settings: Settings, sync: redis.Redis | RedisCluster,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis fails after the other users' friend lists and the log were cleaned and before the
    user's own keys went: the reverse index is still there, and the retry finishes."""
    await store.apply(a_social_neighbourhood())
    failing = redis_store._Script.of("return redis.error_reply('ERR simulated failure')")
    with monkeypatch.context() as patch:
        patch.setattr(redis_store, "_ERASE_USER", failing)
        with pytest.raises(redis_store.STORE_ERRORS):
            await store.erase(GONE)
    assert holders(sync, store_settings.key_prefix, GONE), "interrupted: traces remain"
    assert (await store.user("ann", "v", FRIENDS)).friends == [("bob", 1.0)]
    retry = await store.erase(GONE)
    assert (retry.history_items, retry.friends, retry.log_events) == (2, 2, 0)
    assert holders(sync, store_settings.key_prefix, GONE) == []


async def test_behaviour_racing_with_an_erasure(store: RedisStore, store_settings: Settings,
                                                sync: redis.Redis | RedisCluster) -> None:
    """The user's events sent while the erasure runs: what was stored before it goes; each
    event racing with it is erased or survives (the user's activity after the erasure began)
    in the user's own keys and the log, where a second erasure finds it; events after an
    erasure are new data."""
    await store.apply([behaviour(n, GONE, f"i{n}") for n in range(300)])

    async def traffic() -> None:
        for n in range(300, 340):
            await store.apply([behaviour(n, GONE, f"i{n}"), behaviour(n, "ann", f"i{n}")])

    erased, _ = await asyncio.gather(store.erase(GONE), traffic())
    assert erased.log_events >= 300 and erased.history_items >= 50
    await store.erase(GONE)
    assert holders(sync, store_settings.key_prefix, GONE) == []
    assert [f["user_id"] for f in log_fields(store_settings)] == ["ann"] * 40, \
        "only ann's events are left"
    await store.apply([behaviour(1000, GONE, "i1")])
    assert [i for i, _ in (await store.user(GONE, "v", FRIENDS)).history] == ["i1"]


async def test_a_follow_landing_during_the_erasure_is_erased_by_another_pass(
        store: RedisStore, store_settings: Settings, sync: redis.Redis | RedisCluster,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Follows of and by the user stored after the erasure read its reverse index (here: while
    it cleans the log) are unlinked by a second pass of the same erasure."""
    await store.apply(a_social_neighbourhood())
    run_scripts, landed = store._run_scripts, []

    async def with_follows_landing(calls: list[redis_store.ScriptCall]) -> list[object]:
        if calls[0][0] is redis_store._ERASE_LOG_PAGE and not landed:
            landed.append(await store.apply([follow(50, "eve", GONE), follow(51, GONE, "fay")]))
        return await run_scripts(calls)

    monkeypatch.setattr(store, "_run_scripts", with_follows_landing)
    erased = await store.erase(GONE)
    assert landed == [[True, True]]
    assert erased.follower_links == 3 and erased.friends == 3
    assert holders(sync, store_settings.key_prefix, GONE) == []
    assert (await store.user("eve", "v", FRIENDS)).friends == []


async def test_the_operators_command_erases_the_same(
        store: RedisStore, store_settings: Settings, sync: redis.Redis | RedisCluster) -> None:
    await store.apply(a_social_neighbourhood())
    env = {"SOCIALREC_KEY_PREFIX": store_settings.key_prefix,
           "SOCIALREC_REDIS_CLUSTER": str(store_settings.redis_cluster).lower()}
    done = run_module("app.cli", "delete-user", GONE, "--redis-url", store_settings.redis_url,
                      **env)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["user_id"] == GONE and answer["removed"]["history_items"] == 2
    assert holders(sync, store_settings.key_prefix, GONE) == []
    again = run_module("app.cli", "delete-user", GONE, "--redis-url", store_settings.redis_url,
                       **env)
    assert set(json.loads(again.stdout.strip().splitlines()[-1])["removed"].values()) == {0}


async def test_the_log_of_every_layout_is_erased_exported_and_counted(
        store: RedisStore, store_settings: Settings, sync: redis.Redis | RedisCluster,
        tmp_path: Path) -> None:
    """A log written before partitioning (one `{log}` slot), then with 4 partitions, then with
    the configured count: nothing is lost by the changes; the export reads every layout in
    order, popularity sums them, the erasure empties each of them of the user."""
    legacy = [behaviour(1, GONE, "i1"), behaviour(2, "ann", "i1"), follow(3, "ann", GONE)]
    for e in legacy:  # as the unpartitioned version logged them
        script, _, args = event_calls(store.keys, store_settings, e, 1.0)[0]
        keys = [store.keys.logged(LEGACY_LOG_TAG, e.user_id), store.keys.events(LEGACY_LOG_TAG),
                store.keys.popularity(LEGACY_LOG_TAG)]
        await store.client.eval(script.text, len(keys), *keys, *args)
        await asyncio.sleep(0.002)
    four = store_settings.model_copy(update={"log_partitions": 4})
    old = RedisStore(connect(four), four)
    try:
        for n in range(4, 10):
            await old.apply([behaviour(n, GONE if n % 2 else "ann", "i2")])
            await asyncio.sleep(0.002)
    finally:
        await old.close()
    now = [behaviour(10, GONE, "i3"), behaviour(11, "bob", "i3"), behaviour(12, GONE, "i1")]
    for e in now:
        await store.apply([e])
        await asyncio.sleep(0.002)
    assert log_partition(GONE, 4) != log_partition(GONE, store_settings.log_partitions)

    order = [e.event_id for e in legacy] + [f"b{n}" for n in range(4, 10)] + \
        [e.event_id for e in now]
    assert [f["event_id"] for f in log_fields(store_settings)] == order
    assert live_counts(store_settings) == {"i1": 3, "i2": 6, "i3": 2}
    assert dict((await store.popular(10)).counts) == {"i1": 3.0, "i2": 6.0, "i3": 2.0}

    erased = await store.erase(GONE)
    assert erased.log_events == 2 + 3 + 2, "own events and ann's follow, in 3 layouts"
    assert erased.event_markers == 6 + 5  # logged: 1 + 3 + 2 in 3 layouts; applied: 3 + 2
    assert holders(sync, store_settings.key_prefix, GONE) == []
    out = tmp_path / "interactions.csv"
    assert export_events(out, settings=store_settings, progress=False) == (5, 0)
    assert GONE not in out.read_text() + (tmp_path / "social_events.csv").read_text()
