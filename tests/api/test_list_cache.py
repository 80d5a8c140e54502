"""The per-user ranked-list cache (SOCIALREC_CACHE_TTL_S): each freshness rule, checked against
what an app without the cache (TTL 0) answers from the same Redis."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from app.config import Settings
from app.serving.pipeline import Recommender
from app.serving.ranked import rendered_of
from app.store.redis_store import RedisStore
from tests.support import data
from tests.support.auth import ADMIN, CATALOG, CATALOG_TOKEN
from tests.support.client import app_client
from tests.support.lists import ids, recommend
from tests.support.models import replace_folder
from tests.support.redis_scan import holders


def list_keys(settings: Settings) -> list[bytes]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return list(client.scan_iter(match=f"{settings.key_prefix}:*:list", count=1000))
    finally:
        client.close()


def social_user(synth_dir: Path) -> str:
    hist, friends = data.histories(synth_dir), data.friends(synth_dir)
    return next(u for u in sorted(hist) if u in friends and len(hist[u]) >= 5)


@pytest.fixture
def cached(loaded: Settings) -> Settings:
    return loaded.model_copy(update={"cache_ttl_s": 60, "catalog_token": CATALOG_TOKEN})


@pytest.fixture
def uncached(cached: Settings) -> Settings:
    return cached.model_copy(update={"cache_ttl_s": 0})


async def test_a_cached_list_is_what_the_full_path_answers(cached: Settings, uncached: Settings,
                                                           synth_dir: Path) -> None:
    user = social_user(synth_dir)
    async with app_client(cached) as client, app_client(uncached) as fresh:
        first = await recommend(client, user, k=20, explain=True)
        assert len(list_keys(cached)) == 1
        again = await recommend(client, user, k=20, explain=True)
        shorter = await recommend(client, user, k=5)
        assert first == again == await recommend(fresh, user, k=20, explain=True)
        assert ids(shorter) == ids(first)[:5]
        assert len(list_keys(cached)) == 1


async def test_stored_lists_expire_within_the_ttl_spread_apart(cached: Settings,
                                                                synth_dir: Path) -> None:
    hist = data.histories(synth_dir)
    users = [u for u in sorted(hist) if len(hist[u]) >= 5][:24]
    async with app_client(cached) as client:
        started = time.monotonic()
        for user in users:
            await recommend(client, user, k=5)
        took_ms = (time.monotonic() - started) * 1000
    client_ = redis.Redis.from_url(cached.redis_url)
    try:
        left = [client_.pttl(k) for k in list_keys(cached)]
    finally:
        client_.close()
    ttl_ms = cached.cache_ttl_s * 1000
    assert len(left) == len(users)
    assert all(0 < t <= ttl_ms for t in left), left
    # one lifetime for all would leave them no further apart than the requests were; spread
    # over the last fifth of the TTL (12 s here) they are
    assert max(left) - min(left) > took_ms + 1000, (left, took_ms)
    assert min(left) > 0.8 * ttl_ms - took_ms - 1000


async def test_the_users_own_event_shows_in_the_very_next_request(
        cached: Settings, uncached: Settings, synth_dir: Path) -> None:
    user = social_user(synth_dir)
    async with app_client(cached) as client, app_client(uncached) as fresh:
        before = await recommend(client, user, k=20)
        bought = ids(before)[0]
        event = {"event_id": "own-1", "user_id": user, "type": "purchase", "item_id": bought}
        assert (await client.post("/events", json={"events": [event]})).status_code == 202
        after = await recommend(client, user, k=20)
        assert bought not in ids(after)
        assert after == await recommend(fresh, user, k=20)


async def test_the_users_own_follow_shows_in_the_very_next_request(
        cached: Settings, uncached: Settings, synth_dir: Path) -> None:
    user = social_user(synth_dir)
    hist = data.histories(synth_dir)
    new_friends = [u for u in sorted(hist, key=lambda u: -len(hist[u]))
                   if u != user and u not in data.friends(synth_dir)[user]][:5]
    async with app_client(cached) as client, app_client(uncached) as fresh:
        before = await recommend(client, user, k=20, explain=True)
        events = [{"user_id": user, "type": "follow", "friend_id": f, "value": 5}
                  for f in new_friends]
        assert (await client.post("/events", json={"events": events})).status_code == 202
        after = await recommend(client, user, k=20, explain=True)
        assert after != before
        assert after == await recommend(fresh, user, k=20, explain=True)


async def test_a_friends_event_reaches_the_user_within_the_ttl(
        loaded: Settings, synth_dir: Path) -> None:
    ttl = 2
    hist, cats = data.histories(synth_dir), data.item_categories(synth_dir)
    friends = [u for u in sorted(hist) if len(hist[u]) >= 20][:2]
    follows = [{"user_id": "fan", "type": "follow", "friend_id": f} for f in friends]
    # the friends buy a category they hardly touched: the fan's list moves towards it
    category = min(sorted(set(cats.values())),
                   key=lambda c: sum(cats[i] == c for f in friends for i in hist[f]))
    buys = [{"event_id": f"f-{f}-{i}", "user_id": f, "type": "purchase", "item_id": i}
            for f in friends for i in sorted(i for i in cats if cats[i] == category)[:15]]
    async with app_client(loaded.model_copy(update={"cache_ttl_s": ttl})) as client, \
            app_client(loaded.model_copy(update={"cache_ttl_s": 0})) as fresh:
        assert (await client.post("/events", json={"events": follows})).status_code == 202
        before = await recommend(client, "fan", k=30, explain=True)
        assert (await client.post("/events", json={"events": buys})).status_code == 202
        now = await recommend(fresh, "fan", k=30, explain=True)
        assert now != before, "the friends' purchases change the fan's list"
        assert await recommend(client, "fan", k=30, explain=True) == before, "cached for the TTL"
        await asyncio.sleep(ttl + 0.2)
        assert await recommend(client, "fan", k=30, explain=True) == now


async def test_a_reload_never_serves_the_old_models_list(
        cached: Settings, synth_dir: Path, tmp_path: Path, second_artifacts_dir: Path) -> None:
    folder = tmp_path / "live"
    shutil.copytree(cached.artifacts, folder)
    own = cached.model_copy(update={"artifacts": folder})
    second = cached.model_copy(update={"artifacts": second_artifacts_dir, "cache_ttl_s": 0})
    user = social_user(synth_dir)
    async with app_client(own) as client:
        old = await recommend(client, user, k=20)
        replace_folder(second_artifacts_dir, folder)
        reloaded = await client.post("/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        after = await recommend(client, user, k=20)
        async with app_client(second) as fresh:
            expected = await recommend(fresh, user, k=20)
        assert after["model_version"] == expected["model_version"] != old["model_version"]
        assert after == expected
        assert after == await recommend(client, user, k=20), "the new model's list is cached"


async def test_an_unavailable_or_withdrawn_item_never_comes_from_the_cache(
        cached: Settings, synth_dir: Path) -> None:
    user = social_user(synth_dir)
    async with app_client(cached) as client:
        before = ids(await recommend(client, user, k=20))
        put = await client.put(f"/items/{before[0]}", json={"available": False}, headers=CATALOG)
        assert put.status_code == 200, put.text
        assert (await client.delete(f"/items/{before[1]}", headers=CATALOG)).status_code == 200
        after = ids(await recommend(client, user, k=20))
        assert len(after) == 20
        assert not {before[0], before[1]} & set(after)
        assert after[:18] == before[2:20]


async def test_a_stored_answer_is_reused_only_for_its_request_and_catalogue(
        cached: Settings, uncached: Settings, synth_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer written with the list serves later requests with the same k and rendering
    and no filter, without filtering the list again; any other request, and any request after
    a catalogue change (a title here), filters the list now: every answer is the full
    path's."""
    user = social_user(synth_dir)
    filtered = []
    from_ranked = Recommender.from_ranked

    def counting(self: Recommender, *args: Any, **kwargs: Any) -> Any:
        filtered.append(1)
        return from_ranked(self, *args, **kwargs)

    monkeypatch.setattr(Recommender, "from_ranked", counting)
    quiet = cached.model_copy(update={"reason_friend_ids": False})
    async with app_client(cached) as client, app_client(uncached) as fresh, \
            app_client(quiet) as other, \
            app_client(quiet.model_copy(update={"cache_ttl_s": 0})) as other_fresh:
        first = await recommend(client, user, k=20, explain=True)
        filtered.clear()
        assert await recommend(client, user, k=20, explain=True) == first
        assert filtered == [], "the stored answer, as it was written"
        for params in ({"k": 20}, {"k": 19, "explain": True},
                       {"k": 20, "explain": True, "exclude": ids(first)[3]},
                       {"k": 20, "explain": True, "category": first["items"][0]["category"]}):
            assert await recommend(client, user, **params) == \
                await recommend(fresh, user, **params)
        assert len(filtered) == 4
        # another process rendering friends' reasons without their ids
        assert await recommend(other, user, k=20, explain=True) == \
            await recommend(other_fresh, user, k=20, explain=True)
        renamed = ids(first)[0]
        put = await client.put(f"/items/{renamed}", json={"title": "Renamed"}, headers=CATALOG)
        assert put.status_code == 200, put.text
        after = await recommend(client, user, k=20, explain=True)
        assert after["items"][0]["title"] == "Renamed"

        async def renamed_there() -> bool:  # the other app reads the change within a second
            body = await recommend(fresh, user, k=20, explain=True)
            return bool(body["items"][0]["title"] == "Renamed")

        await wait_until(renamed_there)
        assert after == await recommend(fresh, user, k=20, explain=True)


async def test_an_entry_of_another_release_is_a_miss_not_an_error(
        cached: Settings, uncached: Settings, synth_dir: Path) -> None:
    """Processes of two releases may share the Redis (a rolling deploy): an entry written in
    another format is computed again, as the full path computes it, never an error."""
    user = social_user(synth_dir)
    async with app_client(cached) as client, app_client(uncached) as fresh:
        first = await recommend(client, user, k=20)
        (key,) = list_keys(cached)
        store = redis.Redis.from_url(cached.redis_url)
        try:
            version = first["model_version"].encode()
            entry = (store.get(key) or b"")[len(version) + 1:]
            answer = rendered_of(entry)
            assert answer is not None
            # the previous release's entry: the list alone; and bytes nobody can read
            alone = entry[entry.index(answer.items_json) + len(answer.items_json):]
            for older in (alone, b"\xff" * 64):
                store.set(key, version + b"\x02" + older, px=60_000)
                assert await recommend(client, user, k=20) == \
                    await recommend(fresh, user, k=20)
        finally:
            store.close()


async def test_a_cached_new_product_is_served_by_another_process_until_withdrawn(
        cached: Settings, synth_dir: Path) -> None:
    """A stored list names a live item by id; another process (its own catalogue) serves it
    from that list, on every read, until the item is withdrawn: then neither does, still
    from the stored list."""
    user = data.main_category_user(synth_dir, "outdoor")
    boots = {"title": "Summit Trail Waterproof Hiking Boots", "category": "outdoor",
             "tags": ["hiking", "boots"], "description": "Leather boots for long hikes."}
    async with app_client(cached) as writer, app_client(cached) as other:
        put = await writer.put("/items/new-boots", json=boots, headers=CATALOG)
        assert put.status_code == 200, put.text
        await wait_until(lambda: knows(other, "new-boots"))
        first = await recommend(writer, user, k=100)
        assert "new-boots" in ids(first)
        assert len(list_keys(cached)) == 1
        before = await hits(other)
        for _ in range(3):  # every read of the stored list, in either process
            assert await recommend(other, user, k=100) == first
        assert await hits(other) == before + 3
        withdrawn = await writer.delete("/items/new-boots", headers=CATALOG)
        assert withdrawn.status_code == 200, withdrawn.text
        await wait_until(lambda: gone(other, user, "new-boots"))
        for client in (writer, other):
            before = await hits(client)
            after = ids(await recommend(client, user, k=100))
            assert len(after) == 100 and "new-boots" not in after
            assert await hits(client) == before + 1, "served from the stored list"


async def hits(client: Any) -> float:
    """The process's socialrec_list_cache_total{result="hit"}."""
    text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("socialrec_list_cache_total{") and 'result="hit"' in line)


async def knows(client: Any, item: str) -> bool:
    return (await client.get(f"/items/{item}")).status_code == 200


async def gone(client: Any, user: str, item: str) -> bool:
    return item not in ids(await recommend(client, user, k=100))


async def wait_until(check: Any, within_s: float = 3.0) -> None:
    """The catalogue's poll brings a change to every process within a second."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "not within the catalogue's propagation window"
        await asyncio.sleep(0.05)


async def test_ttl_zero_writes_no_cache_key(cached: Settings, uncached: Settings,
                                            synth_dir: Path) -> None:
    users = sorted(data.histories(synth_dir))[:5]
    async with app_client(uncached) as client:
        for user in users:
            await recommend(client, user, k=10)
    assert list_keys(uncached) == []
    async with app_client(cached) as client:
        for user in users:
            await recommend(client, user, k=10)
    assert len(list_keys(cached)) == len(users)


async def test_erasure_removes_the_cached_lists_naming_the_user(
        cached: Settings, synth_dir: Path) -> None:
    """Their own list, and the lists of their followers that name them as a friend who
    engaged."""
    user = social_user(synth_dir)
    sync = redis.Redis.from_url(cached.redis_url)
    try:
        async with app_client(cached) as client:
            body = await recommend(client, user, k=100, explain=True)
            friend = next(f for i in body["items"] for r in i["reasons"]
                          for f in r.get("friends", []))
            await recommend(client, friend, k=10)
            lists = [k for k in holders(sync, cached.key_prefix, friend) if k.endswith(":list")]
            assert len(lists) == 2, lists
            erased = await client.delete(f"/users/{friend}", headers=ADMIN)
            assert erased.status_code == 200, erased.text
        assert holders(sync, cached.key_prefix, friend) == []
    finally:
        sync.close()


async def test_concurrent_misses_of_a_user_compute_the_list_once(
        cached: Settings, uncached: Settings, synth_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests for a user that arrive while their list is computed wait for it: one
    computation, not one per request (under load those misses fed on themselves)."""
    user = social_user(synth_dir)
    computed = []
    ranked = Recommender.ranked

    def counting(self: Recommender, *args: Any, **kwargs: Any) -> Any:
        computed.append(1)
        return ranked(self, *args, **kwargs)

    monkeypatch.setattr(Recommender, "ranked", counting)
    async with app_client(cached) as client, app_client(uncached) as fresh:
        answers = await asyncio.gather(*(recommend(client, user, k=20, explain=True)
                                         for _ in range(8)))
        assert len(computed) == 1
        assert all(a == answers[0] for a in answers)
        assert answers[0] == await recommend(fresh, user, k=20, explain=True)


async def test_a_request_after_an_event_never_gets_a_list_computed_before_it(
        cached: Settings, uncached: Settings, synth_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that joins a computation whose read preceded the user's acknowledged event
    does not get that list (its write finds the lease gone): it computes its own."""
    user = social_user(synth_dir)
    async with app_client(uncached) as fresh:
        bought = ids(await recommend(fresh, user, k=20))[0]
    read_user = RedisStore.read_user
    joiner: list[asyncio.Future[dict[str, Any]]] = []

    async def event_after_read(self: RedisStore, user_id: str, *args: Any,
                               **kwargs: Any) -> Any:
        read = await read_user(self, user_id, *args, **kwargs)
        if not joiner:
            event = {"event_id": "mid-1", "user_id": user, "type": "purchase",
                     "item_id": bought}
            assert (await client.post("/events", json={"events": [event]})).status_code == 202
            # a request sent after the 202, while this one's list is still being computed
            joiner.append(asyncio.ensure_future(recommend(client, user, k=20)))
            await asyncio.sleep(0.05)
        return read

    monkeypatch.setattr(RedisStore, "read_user", event_after_read)
    async with app_client(cached) as client, app_client(uncached) as fresh:
        first = await recommend(client, user, k=20)
        assert bought in ids(first), "computed from the state read before the event"
        after = await joiner[0]
        assert bought not in ids(after)
        assert after == await recommend(fresh, user, k=20)


async def test_requests_that_joined_a_voided_computation_share_the_next_one(
        cached: Settings, uncached: Settings, synth_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's event lands between the first computation's read and its write: the
    requests that joined it get no list from it, and compute the next one once, together
    (each computed its own before), and what they get reflects the event."""
    user = social_user(synth_dir)
    async with app_client(uncached) as fresh:
        bought = ids(await recommend(fresh, user, k=20))[0]
    read_user = RedisStore.read_user
    posted: list[bool] = []
    computed = []
    ranked = Recommender.ranked

    def counting(self: Recommender, *args: Any, **kwargs: Any) -> Any:
        computed.append(1)
        return ranked(self, *args, **kwargs)

    async def event_after_first_read(self: RedisStore, user_id: str, *args: Any,
                                     **kwargs: Any) -> Any:
        read = await read_user(self, user_id, *args, **kwargs)
        if not posted:
            posted.append(True)
            await asyncio.sleep(0.05)  # the other requests join this computation
            event = {"event_id": "mid-2", "user_id": user, "type": "purchase",
                     "item_id": bought}
            assert (await client.post("/events", json={"events": [event]})).status_code == 202
        return read

    monkeypatch.setattr(Recommender, "ranked", counting)
    monkeypatch.setattr(RedisStore, "read_user", event_after_first_read)
    async with app_client(cached) as client, app_client(uncached) as fresh:
        first, *joiners = await asyncio.gather(*(recommend(client, user, k=20)
                                                 for _ in range(8)))
        assert bought in ids(first), "computed from the state read before the event"
        assert len(computed) == 2
        after = await recommend(fresh, user, k=20)
        assert bought not in ids(after)
        assert all(j == after for j in joiners)


async def test_a_computed_list_stores_the_users_new_vector_with_it(
        cached: Settings, uncached: Settings, synth_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After the user's event, the next request encodes their history once and caches that
    vector with the list (one write): when the list is gone, it is computed again from the
    cached vector, without encoding the user again."""
    user = social_user(synth_dir)
    encoded: list[int] = []
    encode = Recommender.encode

    def counting(self: Recommender, histories: Any) -> Any:
        encoded.append(len(histories))
        return encode(self, histories)

    async with app_client(cached) as client, app_client(uncached) as fresh:
        bought = ids(await recommend(client, user, k=20))[0]
        event = {"event_id": "own-vec", "user_id": user, "type": "purchase", "item_id": bought}
        assert (await client.post("/events", json={"events": [event]})).status_code == 202
        monkeypatch.setattr(Recommender, "encode", counting)
        after = await recommend(client, user, k=20)
        assert encoded == [1], "the user's history, encoded once"
        sync = redis.Redis.from_url(cached.redis_url)
        try:
            sync.delete(*list_keys(cached))
        finally:
            sync.close()
        assert await recommend(client, user, k=20) == after
        assert encoded == [1], "the second computation read the vector stored with the list"
        assert after == await recommend(fresh, user, k=20)
