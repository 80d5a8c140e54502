"""A retried batch is applied once even when the retry races the original: the same batch
posted several times at once changes histories and popularity as one batch would, the log holds
each id once, and the responses' accepted counts add up to the batch size."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import httpx
import pytest

from app.config import Settings
from app.events import event_weight, type_weights
from app.serving.artifacts import read_manifest
from tests.support.auth import ADMIN
from tests.support.client import app_client
from tests.support.log import live_counts, log_fields

COPIES = 4
USERS = 20


def batch() -> list[dict]:
    """999 events (with the one added below, the most one batch may hold): fresh users'
    purchases, views with a value and follows; the test adds one event on an item a loaded
    user already has (its weight must grow by exactly one event)."""
    events = []
    for n in range(999):
        user = f"idem-{n % USERS}"
        if n % 10 == 9:
            events.append({"event_id": f"i{n}", "user_id": user, "type": "follow",
                           "friend_id": f"idem-{(n + 1) % USERS}"})
        else:
            kind = "purchase" if n % 2 else "view"
            events.append({"event_id": f"i{n}", "user_id": user, "type": kind,
                           "item_id": f"p{n:05d}", "value": float(n % 4), "timestamp": 1e9 + n})
    return events


async def history(client: httpx.AsyncClient, user: str) -> dict[str, float]:
    body = (await client.get(f"/users/{user}", headers=ADMIN)).json()
    return {h["item_id"]: h["weight"] for h in body["history"]}


@pytest.mark.parametrize(("copies", "reorder"), [(2, False), (COPIES, False), (COPIES, True)],
                         ids=["twice", "four-times", "four-times-reordered"])
async def test_the_same_batch_posted_at_once_is_applied_once(loaded: Settings, copies: int,
                                                            reorder: bool) -> None:
    """`reorder`: the copies list the events in different orders (a client that retries a
    batch rebuilt from a queue), so two copies would meet in the middle."""
    weights = type_weights(loaded.event_weights, read_manifest(loaded.artifacts).event_weights)
    events = batch()
    async with app_client(loaded) as client:
        known = await history(client, "u0001")
        old_item, old_weight = next(iter(known.items()))
        events.append({"event_id": "i-known", "user_id": "u0001", "type": "click",
                       "item_id": old_item})
        copies_sent = [events] * copies
        if reorder:
            copies_sent = [events, events[::-1], *(random.Random(n).sample(events, len(events))
                                                   for n in range(copies - 2))]
        responses = await asyncio.gather(*(client.post("/events", json={"events": sent})
                                           for sent in copies_sent))
        assert [r.status_code for r in responses] == [202] * copies
        bodies = [r.json() for r in responses]
        assert sum(b["accepted"] for b in bodies) == len(events), bodies
        assert sum(b["duplicates"] for b in bodies) == (copies - 1) * len(events), bodies

        expected: dict[str, dict[str, float]] = {}
        for e in events:
            if "item_id" in e and e["user_id"] != "u0001":
                expected.setdefault(e["user_id"], {})[e["item_id"]] = event_weight(
                    e["type"], e.get("value"), weights)
        for user, items in expected.items():
            got = await history(client, user)
            assert got == pytest.approx(items, rel=1e-5), user  # stored as %.6g
        assert (await history(client, "u0001"))[old_item] == pytest.approx(rel=1e-5, expected=
            old_weight + event_weight("click", None, weights))
        friends = (await client.get("/users/idem-9", headers=ADMIN)).json()["friends"]
        assert friends == [{"user_id": "idem-10", "weight": 1.0}]

    logged = Counter(f["event_id"] for f in log_fields(loaded))
    popularity = live_counts(loaded)
    assert logged == Counter(e["event_id"] for e in events), "each id logged exactly once"
    behaviour = Counter(e["item_id"] for e in events if "item_id" in e)
    assert popularity == behaviour, "popularity counted once per event"


async def test_a_retry_after_a_lost_answer_reports_duplicates(client: httpx.AsyncClient) -> None:
    """The client cannot tell a lost 202 from a failure; retrying is safe and says so."""
    events = [{"event_id": f"lost-{n}", "user_id": "lost", "type": "view", "item_id": f"p{n}"}
              for n in range(3)]
    first = await client.post("/events", json={"events": events})
    again = await client.post("/events", json={"events": [*events, {
        "event_id": "lost-new", "user_id": "lost", "type": "view", "item_id": "p9"}]})
    assert first.json() == {"accepted": 3, "duplicates": 0}
    assert again.json() == {"accepted": 1, "duplicates": 3}
    history = (await client.get("/users/lost", headers=ADMIN)).json()["history"]
    assert sorted(h["item_id"] for h in history) == ["p0", "p1", "p2", "p9"]
    assert {h["weight"] for h in history} == {1.0}
