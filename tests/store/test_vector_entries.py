"""Vector cache entries that carry the history they were encoded from: the layout round-trips,
anything else is a miss, an entry is invalidated with the history and never outlives a history
change that raced its write; friends' entries are read in one round trip on a single Redis and
on a cluster."""

from __future__ import annotations

import numpy as np
import pytest

from app.store.redis_store import (
    Event,
    RedisStore,
    VectorState,
    decode_state,
    decode_states,
    encode_state,
)
from app.store.seen import item_tag

VECTOR = np.arange(5, dtype=np.float32) / 7
ITEMS = np.array([4, 1, 3], dtype=np.int64)
WEIGHTS = np.array([2.0, 1.0, 0.5], dtype=np.float32)


def view(n: int, user: str) -> Event:
    return Event(event_id=f"{user}-e{n}", user_id=user, type="view", item_id=f"i{n}",
                 timestamp=1_700_000_000 + n)


def test_entry_layout_round_trips() -> None:
    entry = decode_state(encode_state(VECTOR, ITEMS, WEIGHTS, "m-1"), "m-1")
    assert entry is not None
    assert np.array_equal(entry.vector, VECTOR)
    assert np.array_equal(entry.items, ITEMS) and entry.items.dtype == np.int64
    assert np.array_equal(entry.weights, WEIGHTS)


@pytest.mark.parametrize("raw", [
    encode_state(VECTOR, ITEMS, WEIGHTS, "m-12"),  # another model version
    encode_state(VECTOR, ITEMS, WEIGHTS, "m-1")[:-1],  # truncated
    b"m-1\x01\x05",  # no header
    b"m-1\x00" + VECTOR.tobytes(),  # a bare vector, without its history
    b"",
    None,
])
def test_foreign_or_broken_entries_are_misses(raw: bytes | None) -> None:
    assert decode_state(raw, "m-1") is None


def test_entries_decoded_together_are_the_entries_decoded_one_by_one() -> None:
    rng = np.random.default_rng(0)
    raws: list[bytes | None] = []
    for n in range(12):
        items = rng.integers(0, 1000, size=n % 4)
        raws.append(encode_state(rng.random(5).astype(np.float32), items,
                                 rng.random(len(items)).astype(np.float32), "m-1"))
    raws[3] = None
    raws[5] = encode_state(VECTOR, ITEMS, WEIGHTS, "m-2")
    raws[7] = raws[7][:-1] if raws[7] else raws[7]
    batch = decode_states(raws, "m-1")
    singles = [decode_state(r, "m-1") for r in raws]
    assert batch.found == [e is not None for e in singles]
    assert batch.vectors.shape == (sum(batch.found), 5)
    for single, got in zip(singles, batch.entries(), strict=True):
        if single is None:
            assert got is None
            continue
        assert got is not None
        assert np.array_equal(got.vector, single.vector)
        assert np.array_equal(got.items, single.items) and got.items.dtype == np.int64
        assert np.array_equal(got.weights, single.weights)
    empty = decode_states([], "m-1")
    assert empty.found == [] and empty.vectors.shape[0] == 0 and len(empty.items) == 0


async def test_entries_are_read_in_one_round_trip_and_invalidated_by_events(
        store: RedisStore) -> None:
    await store.apply([view(1, "a"), view(2, "b")])
    history = (await store.histories(["a"]))[0]
    await store.save_states({"a": VectorState(VECTOR, ITEMS, WEIGHTS, history)}, "m-1")
    batch = await store.cached_vectors(["a", "b", "ghost"], "m-1")
    a, b, ghost = batch.entries()
    assert a is not None and np.array_equal(a.items, ITEMS)
    assert b is None and ghost is None
    assert (await store.cached_vectors(["a"], "m-2")).found == [False]
    assert np.array_equal((await store.user("a", "m-1", 10)).vector, VECTOR)
    await store.apply([view(3, "a")])
    assert (await store.cached_vectors(["a"], "m-1")).found == [False], \
        "new behaviour drops it"


async def test_an_entry_whose_history_changed_meanwhile_is_not_kept(store: RedisStore) -> None:
    await store.apply([view(1, "a")])
    read = (await store.histories(["a"]))[0]
    await store.apply([view(2, "a")])  # lands between the read and the write
    await store.save_states({"a": VectorState(VECTOR, ITEMS, WEIGHTS, read)}, "m-1")
    assert (await store.cached_vectors(["a"], "m-1")).found == [False]


async def test_histories_and_user_raw(store: RedisStore) -> None:
    await store.apply([view(1, "a"), view(2, "a"),
                       Event("f", "a", "follow", friend_id="b", value=0.5)])
    assert [[i for i, _ in h] for h in await store.histories(["a", "ghost"])] == [
        ["i2", "i1"], []]
    raw = await store.user_raw("a", "m-1", 10)
    assert len(raw.history) == 2 and raw.friends == [("b", 0.5)] and raw.entry is None
    assert raw.seen == b"".join(item_tag(i) for i in ("i1", "i2"))


async def test_the_users_vector_is_stored_with_their_list_under_the_lease(
        store: RedisStore) -> None:
    await store.apply([view(1, "a")])
    read = await store.read_user("a", "m-1", 10, ranked=True)
    assert read.lease is not None and read.raw is not None
    own = VectorState(VECTOR, ITEMS, WEIGHTS, [])
    assert await store.save_ranked("a", read.lease, "m-1", b"list", 30_000, own)
    entry = (await store.cached_vectors(["a"], "m-1")).entries()[0]
    assert entry is not None and np.array_equal(entry.vector, VECTOR)
    assert np.array_equal(entry.items, ITEMS)


async def test_an_event_between_the_read_and_the_list_write_keeps_the_vector_out(
        store: RedisStore) -> None:
    await store.apply([view(1, "a")])
    read = await store.read_user("a", "m-1", 10, ranked=True)
    assert read.lease is not None
    await store.apply([view(2, "a")])  # the vector would be of the older history
    own = VectorState(VECTOR, ITEMS, WEIGHTS, [])
    assert not await store.save_ranked("a", read.lease, "m-1", b"list", 30_000, own)
    assert (await store.cached_vectors(["a"], "m-1")).found == [False]
    assert (await store.read_user("a", "m-1", 10, ranked=True)).ranked is None
