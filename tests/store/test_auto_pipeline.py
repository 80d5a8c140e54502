"""Auto-pipelining on a single Redis: a script call made while none is on the way goes out at
once, the calls concurrent requests make meanwhile in one event-loop iteration go out as one
pipeline, and each caller gets exactly its own outcome."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.config import Settings
from app.store import redis_store, scripts
from app.store.redis_store import (
    AUTO_PIPELINE_CALLS,
    Event,
    RedisStore,
    UserRead,
    VectorState,
    connect,
)
from app.tools.local_redis import free_port

FRIENDS = 100
USERS = [f"u{n}" for n in range(40)]


@pytest.fixture
def store_settings(redis_url: str, key_prefix: str) -> Settings:
    """A single Redis only (the conftest's `store` uses it): on a cluster every call goes alone."""
    return Settings(redis_url=redis_url, key_prefix=key_prefix)


class Sent:
    """What the store's client sends: each single command's name, each pipeline's commands'
    names; `started` is set when a pipeline is sent."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.single: list[str] = []
        self.pipelines: list[list[str]] = []
        self.started = asyncio.Event()
        command, pipeline = client.execute_command, client.pipeline

        async def counted_command(*args: Any, **options: Any) -> Any:
            self.single.append(str(args[0]))
            return await command(*args, **options)

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = pipeline(*args, **kwargs)
            execute = pipe.execute

            async def counted_execute(raise_on_error: bool = True) -> Any:
                self.pipelines.append([str(a[0]) for a, _ in pipe.command_stack])
                self.started.set()
                return await execute(raise_on_error=raise_on_error)

            pipe.execute = counted_execute
            return pipe

        monkeypatch.setattr(client, "execute_command", counted_command)
        monkeypatch.setattr(client, "pipeline", counted_pipeline)

    def clear(self) -> None:
        self.single.clear()
        self.pipelines.clear()
        self.started.clear()


def summary(read: UserRead) -> tuple[Any, ...]:
    """A read's content, comparable with ==."""
    raw, entries = read.raw, read.friend_entries
    assert raw is not None
    return (raw.history, raw.friends, raw.seen,
            None if raw.entry is None else raw.entry.vector.tolist(),
            entries.found, entries.vectors.tolist(), entries.items.tolist())


async def users_with_friends(store: RedisStore) -> None:
    """Each user viewed two items and follows the next two users; every other user has a
    cached vector, so the reads return friends' entries too."""
    events = []
    for n, u in enumerate(USERS):
        events += [Event(f"{u}-a", u, "view", item_id=f"i{n}", timestamp=1e9 + n),
                   Event(f"{u}-b", u, "view", item_id=f"i{n + 1}", timestamp=1e9 + n),
                   Event(f"{u}-f1", u, "follow", friend_id=USERS[(n + 1) % len(USERS)]),
                   Event(f"{u}-f2", u, "follow", friend_id=USERS[(n + 2) % len(USERS)])]
    await store.apply(events)
    histories = await store.histories(USERS)
    await store.save_states(
        {u: VectorState(np.full(4, n, dtype=np.float32), np.array([n], dtype=np.int64),
                        np.ones(1, dtype=np.float32), history)
         for n, (u, history) in enumerate(zip(USERS, histories, strict=True)) if n % 2},
        "v1")


async def test_concurrent_calls_go_out_as_one_pipeline_with_each_callers_own_result(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await users_with_friends(store)
    sent = Sent(store.client, monkeypatch)
    alone = [summary(await store.read_user(u, "v1", FRIENDS)) for u in USERS]
    # a call alone is a plain EVALSHA: no pipeline
    assert sent.single == ["EVALSHA"] * len(USERS) and sent.pipelines == []
    sent.clear()
    # so is a batch of one, made while another call is on the way
    first = asyncio.create_task(store.read_user(USERS[0], "v1", FRIENDS))
    await asyncio.sleep(0)
    assert summary(await store.read_user(USERS[1], "v1", FRIENDS)) == alone[1]
    assert summary(await first) == alone[0]
    assert sent.single == ["EVALSHA"] * 2 and sent.pipelines == []
    sent.clear()
    together = await asyncio.gather(*(store.read_user(u, "v1", FRIENDS) for u in USERS))
    assert [summary(r) for r in together] == alone
    # the first call goes at once, the others made meanwhile together
    assert sent.single == ["EVALSHA"] and sent.pipelines == [["EVALSHA"] * (len(USERS) - 1)]
    sent.clear()
    leased = await asyncio.gather(*(store.read_user(u, "v1", FRIENDS, ranked=True)
                                    for u in USERS))
    assert all(r.lease is not None for r in leased)
    assert await asyncio.gather(*(
        store.save_ranked(u, r.lease or b"", "v1", f"list of {u}".encode(), 30_000)
        for u, r in zip(USERS, leased, strict=True))) == [True] * len(USERS)
    hits = await asyncio.gather(*(store.read_user(u, "v1", FRIENDS, ranked=True)
                                  for u in USERS))
    assert [r.ranked for r in hits] == [f"list of {u}".encode() for u in USERS]
    assert sent.single == ["EVALSHA"] * 3
    assert sent.pipelines == [["EVALSHA"] * (len(USERS) - 1)] * 3


async def test_a_burst_is_split_into_bounded_pipelines(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await users_with_friends(store)
    sent = Sent(store.client, monkeypatch)
    calls = 1 + 2 * AUTO_PIPELINE_CALLS + 5
    reads = await asyncio.gather(*(store.read_user(USERS[n % len(USERS)], "v1", FRIENDS)
                                   for n in range(calls)))
    assert len(sent.single) == 1
    assert [len(p) for p in sent.pipelines] == [AUTO_PIPELINE_CALLS, AUTO_PIPELINE_CALLS, 5]
    assert [r.raw and r.raw.friends for r in reads[:len(USERS)]] == \
        [r.raw and r.raw.friends for r in reads[len(USERS):2 * len(USERS)]]


async def test_a_failing_call_fails_only_its_caller(
        store: RedisStore, store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    await users_with_friends(store)
    sync = redis.Redis.from_url(store_settings.redis_url)
    sync.rpush(store.keys.history("broken"), "not a hash")  # WRONGTYPE for the user read
    sync.close()
    sent = Sent(store.client, monkeypatch)
    users = [*USERS[:3], "broken", *USERS[3:6]]
    reads = await asyncio.gather(*(store.read_user(u, "v1", FRIENDS) for u in users),
                                 return_exceptions=True)
    assert sent.pipelines == [["EVALSHA"] * (len(users) - 1)]
    assert isinstance(reads[3], ResponseError) and "WRONGTYPE" in str(reads[3])
    assert [summary(r) for r in reads if isinstance(r, UserRead)] == [
        summary(await store.read_user(u, "v1", FRIENDS)) for u in users if u != "broken"]


async def test_only_the_calls_unknown_to_the_server_are_sent_again_with_the_script(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart or failover Redis answers NOSCRIPT: simulated with a script text this
    server has never seen (SCRIPT FLUSH would touch a shared Redis)."""
    await users_with_friends(store)
    leases = [(await store.read_user(u, "v1", FRIENDS, ranked=True)).lease for u in USERS[:3]]
    monkeypatch.setattr(redis_store, "_READ_USER", redis_store._Script.of(
        scripts.READ_USER + f"\n-- {uuid.uuid4().hex}\n"))
    sent = Sent(store.client, monkeypatch)
    saved, *reads = await asyncio.gather(
        asyncio.gather(*(store.save_ranked(u, lease or b"", "v1", b"list", 30_000)
                         for u, lease in zip(USERS[:3], leases, strict=True))),
        *(store.read_user(u, "v1", FRIENDS) for u in USERS[3:6]))
    assert saved == [True] * 3
    # the first list write goes at once
    assert sent.single == ["EVALSHA"] and sent.pipelines == [["EVALSHA"] * 5, ["EVAL"] * 3]
    sent.clear()
    # the script is known now: each read runs once, as EVALSHA
    assert [summary(r) for r in reads] == [
        summary(r) for r in await asyncio.gather(*(store.read_user(u, "v1", FRIENDS)
                                                   for u in USERS[3:6]))]
    assert sent.pipelines == [["EVALSHA"] * 2]


async def test_a_caller_that_goes_away_leaves_the_others_served(
        store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await users_with_friends(store)
    alone = [summary(await store.read_user(u, "v1", FRIENDS)) for u in USERS[:6]]
    sent = Sent(store.client, monkeypatch)
    first = asyncio.create_task(store.read_user(USERS[0], "v1", FRIENDS))  # goes at once
    tasks = [asyncio.create_task(store.read_user(u, "v1", FRIENDS)) for u in USERS[:6]]
    await asyncio.sleep(0)  # every call is queued, the batch not yet sent
    tasks[0].cancel()  # before the batch is sent: not sent for
    await asyncio.wait_for(sent.started.wait(), 5)
    tasks[1].cancel()  # while its reply is on the way
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert [type(r) for r in done[:2]] == [asyncio.CancelledError] * 2
    assert [summary(r) for r in [await first, *done[2:]]] == [alone[0], *alone[2:]]
    assert sent.pipelines == [["EVALSHA"] * 5]
    await store.close()  # the batch's task ended cleanly (close raises what it raised)


async def test_closing_the_store_answers_the_calls_queued_first(store: RedisStore) -> None:
    await users_with_friends(store)
    tasks = [asyncio.create_task(store.read_user(u, "v1", FRIENDS)) for u in USERS[:4]]
    await asyncio.sleep(0)  # every call is queued, the batch not yet sent
    await store.close()
    # the first went at once, by its caller; the batch of the others is answered
    assert all(t.done() and t.result().raw is not None for t in tasks[1:])
    await tasks[0]


async def test_an_unreachable_redis_fails_every_call_of_the_batch(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    down = store_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    store = RedisStore(connect(down), down)
    sent = Sent(store.client, monkeypatch)
    failed = await asyncio.gather(*(store.read_user(u, "v1", FRIENDS) for u in USERS[:4]),
                                  return_exceptions=True)
    await store.close()
    assert sent.single == ["EVALSHA"] and sent.pipelines == [["EVALSHA"] * 3]
    assert all(isinstance(f, RedisConnectionError) for f in failed)
