"""The Redis store against a real Redis and a real Redis Cluster: events apply once, histories
stay capped and ordered, vectors from another model version are never returned, the log
round-trips to CSV."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.offline.dataset import read_interactions
from app.offline.events_export import export_events
from app.offline.load import load_into_redis
from app.store.redis_store import Event, RedisStore, VectorState, connect, event_calls
from app.store.seen import item_tag
from tests.support import data
from tests.support.log import live_counts, log_fields


@pytest.fixture(params=["single", "cluster"])
def store_settings(request: pytest.FixtureRequest, redis_url: str, key_prefix: str) -> Settings:
    """Every test here runs against a single Redis and against a Redis Cluster."""
    if request.param == "cluster":
        return Settings(redis_url=request.getfixturevalue("redis_cluster_url"),
                        redis_cluster=True, key_prefix=key_prefix, history_len=3, seen_len=8)
    return Settings(redis_url=redis_url, key_prefix=key_prefix, history_len=3, seen_len=8)


FRIENDS = 100  # friends read per user


def view(n: int, user: str = "u", item: str | None = None, kind: str = "view",
         weight: float = 1.0) -> Event:
    return Event(event_id=f"e{n}", user_id=user, type=kind, item_id=item or f"i{n}",
                 timestamp=1_700_000_000 + n, weight=weight)


async def test_events_apply_exactly_once(store: RedisStore, store_settings: Settings) -> None:
    assert await store.apply([view(1), view(2)]) == [True, True]
    assert await store.apply([view(2), view(3)]) == [False, True]
    assert [f["event_id"] for f in log_fields(store_settings)] == ["e1", "e2", "e3"]
    live = await store.popular(10)
    assert sorted(live.counts) == [("i1", 1.0), ("i2", 1.0), ("i3", 1.0)] and live.complete


async def test_history_is_capped_most_recent_first_and_weighted(store: RedisStore) -> None:
    await store.apply([view(n) for n in range(1, 6)])
    await store.apply([view(9, item="i5", kind="purchase", weight=8.0)])
    user = await store.user("u", "v1", FRIENDS)
    assert [i for i, _ in user.history] == ["i5", "i4", "i3"]
    assert dict(user.history)["i5"] == pytest.approx(1.0 + 8.0)


def tags(*items: str) -> bytes:
    return b"".join(item_tag(i) for i in items)


async def test_the_seen_set_outlives_the_history_and_is_bounded(store: RedisStore) -> None:
    """The history keeps 3 items, the seen set up to 8 (seen_len), each item once, oldest
    first; when full, the oldest eighth (here one) goes."""
    await store.apply([view(n) for n in range(1, 8)])
    await store.apply([view(20, item="i2"), Event("f", "u", "follow", friend_id="w")])
    raw = await store.user_raw("u", "v", FRIENDS)
    assert len(raw.history) == 3
    assert raw.seen == tags(*(f"i{n}" for n in range(1, 8)))
    await store.apply([view(8), view(9)])
    assert (await store.user_raw("u", "v", FRIENDS)).seen == tags(
        *(f"i{n}" for n in range(2, 10)))


async def test_follow_and_unfollow(store: RedisStore) -> None:
    await store.apply([Event("f1", "u", "follow", friend_id="a", value=0.5),
                       Event("f2", "u", "follow", friend_id="b")])
    assert sorted((await store.user("u", "v1", FRIENDS)).friends) == [("a", 0.5), ("b", 1.0)]
    await store.apply([Event("f3", "u", "unfollow", friend_id="a")])
    assert (await store.user("u", "v1", FRIENDS)).friends == [("b", 1.0)]


async def test_the_strongest_ties_are_read(store: RedisStore) -> None:
    await store.apply([Event(f"t{n}", "u", "follow", friend_id=f"f{n}", value=n + 1.0)
                       for n in range(5)])
    assert (await store.user("u", "v1", 2)).friends == [("f4", 5.0), ("f3", 4.0)]


async def test_equal_ties_are_capped_by_id_as_the_evaluator_does(store: RedisStore) -> None:
    """Both reads (the script of /recommend and the plain one) keep the same friends as the
    dataset's order when the cap falls among equal ties, whatever the hash's order: ids in
    byte order, upper case before lower case whatever the server's locale."""
    ids = ["b-2", "a.9", "B_1", "a:1", "c", "a.10", "Zed", "a"]
    await store.apply([Event(f"t{n}", "u", "follow", friend_id=f, value=1.0)
                       for n, f in enumerate(ids)] +
                      [Event("t-strong", "u", "follow", friend_id="z", value=2.0)])
    want = [("z", 2.0)] + [(f, 1.0) for f in sorted(ids)[:3]]
    assert want[1:] == [("B_1", 1.0), ("Zed", 1.0), ("a", 1.0)]
    assert (await store.user("u", "v1", 4)).friends == want
    read = await store.read_user("u", "v1", 4)
    assert read.raw is not None and read.raw.friends == want


NO_ITEMS, NO_WEIGHTS = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


async def test_vector_cache_is_tagged_by_model_version(store: RedisStore) -> None:
    vector = np.arange(4, dtype=np.float32)
    await store.save_states({"u": VectorState(vector, NO_ITEMS, NO_WEIGHTS, [])}, "v1")
    assert np.array_equal((await store.user("u", "v1", FRIENDS)).vector, vector)
    assert (await store.user("u", "v2", FRIENDS)).vector is None
    await store.apply([view(1)])
    assert (await store.user("u", "v1", FRIENDS)).vector is None, "new behaviour drops it"


async def test_events_export_round_trips(store: RedisStore, store_settings: Settings,
                                         tmp_path: Path) -> None:
    await store.apply([view(1), Event("r", "u", "rate", item_id="i2", value=4.0, weight=3.0),
                       Event("f", "u", "follow", friend_id="w")])
    out = tmp_path / "live" / "interactions.csv"
    assert export_events(out, settings=store_settings, progress=False) == (2, 1)
    rows = read_interactions(out)
    assert [(r.user_id, r.item_id, r.event, r.value) for r in rows] == [
        ("u", "i1", "view", None), ("u", "i2", "rate", 4.0)]
    with (out.parent / "social_events.csv").open() as fh:
        assert [(r["user_id"], r["friend_id"], r["event"]) for r in csv.DictReader(fh)] == [
            ("u", "w", "follow")]


async def test_bootstrap_loads_histories_and_friends(artifacts_dir: Path, synth_dir: Path,
                                                     store_settings: Settings) -> None:
    settings = store_settings.model_copy(update={"artifacts": artifacts_dir, "history_len": 50,
                                                 "seen_len": 2000})
    n = load_into_redis(artifacts_dir, synth_dir, settings=settings, progress=False)
    assert n > 0
    again = load_into_redis(artifacts_dir, synth_dir, settings=settings, progress=False)
    assert again == n
    items = data.histories(synth_dir)
    heavy = max(sorted(items), key=lambda u: len(items[u]))
    s = RedisStore(connect(settings), settings)
    user = await s.user("u0001", "v", FRIENDS)
    raw = await s.user_raw(heavy, "v", FRIENDS)
    await s.close()
    assert 0 < len(user.history) <= settings.history_len
    assert user.friends
    assert len(raw.history) == settings.history_len < len(items[heavy])
    tagged = [raw.seen[n: n + 8] for n in range(0, len(raw.seen), 8)]
    assert sorted(tagged) == sorted(item_tag(i) for i in items[heavy]), "every item, once"


async def run_step(store: RedisStore, settings: Settings, event: Event, step: int) -> None:
    """One of the two scripts that store `event` (0 log, 1 apply), as `apply` sends it."""
    script, keys, args = event_calls(store.keys, settings, event, 1.0)[step]
    await store.client.eval(script.text, len(keys), *keys, *args)


async def test_retry_after_a_half_applied_event_completes_it_once(
        store: RedisStore, store_settings: Settings) -> None:
    """A crash after the log step and before the state step: the retry applies the state and
    does not log twice."""
    event = view(7)
    await run_step(store, store_settings, event, 0)
    assert (await store.user("u", "v", FRIENDS)).history == []
    assert await store.apply([event]) == [True]
    assert await store.apply([event]) == [False]
    assert [i for i, _ in (await store.user("u", "v", FRIENDS)).history] == ["i7"]
    assert [f["event_id"] for f in log_fields(store_settings)] == ["e7"]
    assert live_counts(store_settings) == {"i7": 1}


async def test_an_event_id_is_unique_per_user_in_both_steps(store: RedisStore,
                                                            store_settings: Settings) -> None:
    """Two users' events with one id are two events, each logged and applied once; the log
    and the state agree on that in both slots."""
    alice, bob = view(1, user="alice", item="i1"), view(1, user="bob", item="i2")
    assert await store.apply([alice]) == [True]
    assert await store.apply([bob]) == [True]
    assert await store.apply([bob, alice]) == [False, False]
    assert sorted((f["user_id"], f["event_id"]) for f in log_fields(store_settings)) == [
        ("alice", "e1"), ("bob", "e1")]
    assert [i for i, _ in (await store.user("bob", "v", FRIENDS)).history] == ["i2"]
    assert live_counts(store_settings) == {"i1": 1, "i2": 1}


async def test_retry_after_an_applied_but_unlogged_event_logs_it_once(
        store: RedisStore, store_settings: Settings) -> None:
    """A failure of the log step after the state step (the log's node down): the retry logs
    the event and does not apply it twice."""
    event = view(8)
    await run_step(store, store_settings, event, 1)
    assert log_fields(store_settings) == []
    assert await store.apply([event]) == [False], "applied before: counted as a duplicate"
    assert await store.apply([event]) == [False]
    assert [f["event_id"] for f in log_fields(store_settings)] == ["e8"]
    assert (await store.user("u", "v", FRIENDS)).history == [("i8", 1.0)]


async def test_a_batch_keeps_its_order_per_user_and_in_the_log(
        store: RedisStore, store_settings: Settings) -> None:
    """On a cluster the batch is split by node; one user's events keep the batch order in the
    user's state and in the log (each user's events are in one log partition)."""
    batch = [Event("o1", "u", "follow", friend_id="a"), view(1, user="v"),
             Event("o2", "u", "unfollow", friend_id="a"), view(2, user="w"),
             Event("o3", "u", "follow", friend_id="b"), view(3, user="v")]
    assert await store.apply(batch) == [True] * len(batch)
    assert (await store.user("u", "v1", FRIENDS)).friends == [("b", 1.0)]
    log = log_fields(store_settings)
    for user in ("u", "v", "w"):
        assert [f["event_id"] for f in log if f["user_id"] == user] == [
            e.event_id for e in batch if e.user_id == user]


async def test_scripts_unknown_to_the_server_are_loaded_and_run_once(
        store: RedisStore, store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart or failover Redis has no scripts cached and answers NOSCRIPT. Simulated
    with script texts this server has never seen (SCRIPT FLUSH would touch a shared Redis)."""
    from app.store import redis_store, scripts

    def fresh_scripts() -> None:
        tag = f"\n-- {uuid.uuid4().hex}\n"
        monkeypatch.setattr(redis_store, "_LOG", redis_store._Script.of(scripts.LOG_EVENT + tag))
        monkeypatch.setattr(redis_store, "_APPLY",
                            redis_store._Script.of(scripts.APPLY_EVENT + tag))

    fresh_scripts()
    assert await store.apply([view(1), view(2, user="x")]) == [True, True]
    fresh_scripts()
    assert await store.apply([view(1), view(3)]) == [False, True]
    assert len(log_fields(store_settings)) == 3
    assert [i for i, _ in (await store.user("u", "v", FRIENDS)).history] == ["i3", "i1"]


async def test_the_user_read_and_the_list_write_load_unknown_scripts(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-request read and list write are single EVALSHA calls: a server that answers
    NOSCRIPT gets the script text once (EVAL) and the call runs once."""
    from app.store import redis_store, scripts

    tag = f"\n-- {uuid.uuid4().hex}\n"
    monkeypatch.setattr(redis_store, "_READ_USER",
                        redis_store._Script.of(scripts.READ_USER + tag))
    monkeypatch.setattr(redis_store, "_SAVE_RANKED",
                        redis_store._Script.of(scripts.SAVE_RANKED + tag))
    assert await store.apply([view(1), Event("f1", "u", "follow", friend_id="a", value=2.0)])
    read = await store.read_user("u", "v1", FRIENDS, ranked=True)
    assert read.ranked is None and read.raw is not None and read.lease is not None
    assert read.raw.friends == [("a", 2.0)]
    assert await store.save_ranked("u", read.lease, "v1", b"the list", 30_000)
    assert (await store.read_user("u", "v1", FRIENDS, ranked=True)).ranked == b"the list"
    # a lease another request's write has replaced stores nothing
    assert not await store.save_ranked("u", read.lease, "v1", b"older", 30_000)
