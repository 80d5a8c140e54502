"""GET /recommend/{user_id}: strategies, filters, explanations, validation."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.config import Settings
from tests.support import data
from tests.support.client import app_client
from tests.support.lists import ids, recommend


def user_with_history_and_friends(synth_dir: Path) -> str:
    hist, friends = data.histories(synth_dir), data.friends(synth_dir)
    return next(u for u in sorted(hist) if u in friends and data.purchases(synth_dir).get(u))


async def test_known_user_gets_personal_social_without_what_they_bought(
        client: httpx.AsyncClient, synth_dir: Path) -> None:
    user = user_with_history_and_friends(synth_dir)
    body = await recommend(client, user, k=20)
    assert body["strategy"] == "personal_social"
    assert body["degraded"] is False
    assert len(body["items"]) == 20
    assert not set(ids(body)) & data.purchases(synth_dir)[user]
    assert all(i["title"] for i in body["items"])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_unknown_user_gets_popular_not_404(client: httpx.AsyncClient) -> None:
    body = await recommend(client, "never-seen-before", k=10)
    assert body["strategy"] == "popular"
    assert len(body["items"]) == 10


async def test_new_user_with_friends_gets_their_taste(client: httpx.AsyncClient,
                                                      synth_dir: Path) -> None:
    hist, cats = data.histories(synth_dir), data.item_categories(synth_dir)
    friends = [u for u in sorted(hist) if len(hist[u]) >= 20][:3]
    events = [{"user_id": "newcomer", "type": "follow", "friend_id": f} for f in friends]
    assert (await client.post("/events", json={"events": events})).status_code == 202

    body = await recommend(client, "newcomer", k=20)
    popular = await recommend(client, "nobody-at-all", k=20)
    assert body["strategy"] == "social_cold_start"
    taste = data.category_profile(set().union(*(hist[f] for f in friends)), cats)

    def closeness(items: list[str]) -> float:
        return sum(taste[cats[i]] for i in items) / len(items)

    assert closeness(ids(body)) > 1.2 * closeness(ids(popular))


async def test_purchases_move_a_category_up_at_once(client: httpx.AsyncClient,
                                                    synth_dir: Path) -> None:
    user = user_with_history_and_friends(synth_dir)
    cats = data.item_categories(synth_dir)
    before = await recommend(client, user, k=50)
    target = min(sorted(set(cats.values())),
                 key=lambda c: sum(cats[i] == c for i in ids(before)))
    bought = [i for i in sorted(cats) if cats[i] == target][:6]
    events = [{"event_id": f"buy-{n}", "user_id": user, "type": "purchase", "item_id": i}
              for n, i in enumerate(bought)]
    first = await client.post("/events", json={"events": events})
    assert first.json() == {"accepted": 6, "duplicates": 0}

    after = await recommend(client, user, k=50)
    assert sum(cats[i] == target for i in ids(after)) > sum(cats[i] == target for i in ids(before))
    assert not set(bought) & set(ids(after)), "just-bought items are excluded"

    again = await client.post("/events", json={"events": events})
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 6}
    assert ids(await recommend(client, user, k=50)) == ids(after)


async def test_popular_lists_show_the_live_counts_they_are_ordered_by(loaded: Settings) -> None:
    """Once live popularity is read, a cold user's list is in live-count order and shows
    those counts: the items least popular in training, bought live, lead with their live
    counts, and no score below is higher."""
    items = [r["item_id"] for r in json.loads((loaded.artifacts / "items.json").read_text())]
    least = [items[i] for i in np.argsort(np.load(loaded.artifacts / "popularity.npy"))[:2]]
    events = [{"event_id": f"hot-{n}", "user_id": f"fan-{n}", "type": "purchase",
               "item_id": least[n % 2]} for n in range(5)]  # 3 for least[0], 2 for least[1]
    async with app_client(loaded) as client:
        assert (await client.post("/events", json={"events": events})).status_code == 202
    async with app_client(loaded) as client:  # a fresh process reads live popularity at start
        deadline = time.monotonic() + 10
        while ids(body := await recommend(client, "nobody-yet", k=10))[:2] != least:
            assert time.monotonic() < deadline, "live popularity never read"
            await asyncio.sleep(0.05)
    assert body["strategy"] == "popular"
    scores = [i["score"] for i in body["items"]]
    assert scores[:2] == [3.0, 2.0]
    assert scores == sorted(scores, reverse=True)


async def test_exclude_seen_remembers_far_beyond_the_history(
        client: httpx.AsyncClient, loaded: Settings, synth_dir: Path) -> None:
    """The history keeps the 50 most recent items for the encoder; everything a user engaged
    with before stays excluded, whether `socialrec load` wrote it or live events did."""
    hist = data.histories(synth_dir)
    heavy = max(sorted(hist), key=lambda u: len(hist[u]))
    assert len(hist[heavy]) > loaded.history_len
    assert not set(ids(await recommend(client, heavy, k=100))) & hist[heavy]

    # a shopper buys 120 items, first the ones recommended to them
    catalogue = sorted(data.item_categories(synth_dir))
    first = ids(await recommend(client, "shopper", k=100))
    bought = first + [i for i in catalogue if i not in first][:20]
    events = [{"event_id": f"b{n}", "user_id": "shopper", "type": "purchase", "item_id": i,
               "timestamp": 1.7e9 + n} for n, i in enumerate(bought)]
    assert (await client.post("/events", json={"events": events})).status_code == 202
    assert not set(ids(await recommend(client, "shopper", k=100))) & set(bought)


async def test_follow_names_the_friend_who_bought_the_item(client: httpx.AsyncClient,
                                                          synth_dir: Path) -> None:
    cats = data.item_categories(synth_dir)
    item = sorted(cats)[7]
    events = [{"user_id": "friend-x", "type": "purchase", "item_id": item},
              {"user_id": "fan", "type": "follow", "friend_id": "friend-x"}]
    assert (await client.post("/events", json={"events": events})).status_code == 202

    body = await recommend(client, "fan", k=100, explain="true")
    assert body["strategy"] == "social_cold_start"
    reasons = {i["item_id"]: i["reasons"] for i in body["items"]}
    assert item in reasons
    assert {"kind": "friends_engaged", "friend_count": 1, "friends": ["friend-x"]} in reasons[item]


async def test_reasons_can_count_friends_without_naming_them(loaded: Settings,
                                                             synth_dir: Path) -> None:
    """For shops that show reasons to end users: the friends' number, never their ids."""
    item = sorted(data.item_categories(synth_dir))[7]
    async with app_client(loaded.model_copy(update={"reason_friend_ids": False})) as client:
        events = [{"user_id": "friend-y", "type": "purchase", "item_id": item},
                  {"user_id": "friend-z", "type": "purchase", "item_id": item},
                  {"user_id": "fan2", "type": "follow", "friend_id": "friend-y"},
                  {"user_id": "fan2", "type": "follow", "friend_id": "friend-z"}]
        assert (await client.post("/events", json={"events": events})).status_code == 202
        body = await recommend(client, "fan2", k=100, explain="true")
    reasons = {i["item_id"]: i["reasons"] for i in body["items"]}
    assert {"kind": "friends_engaged", "friend_count": 2} in reasons[item]
    assert "friend-y" not in json.dumps(body)


async def test_exclude_and_category_keep_the_list_k_long(client: httpx.AsyncClient,
                                                         synth_dir: Path) -> None:
    user = user_with_history_and_friends(synth_dir)
    cats = data.item_categories(synth_dir)
    first = ids(await recommend(client, user, k=10))
    body = await recommend(client, user, k=10, exclude=first[:5])
    assert len(body["items"]) == 10
    assert not set(first[:5]) & set(ids(body))

    wanted = sorted(set(cats.values()))[:2]
    body = await recommend(client, user, k=30, category=wanted)
    assert len(body["items"]) == 30
    assert {i["category"] for i in body["items"]} <= set(wanted)


@pytest.mark.parametrize(("path", "field"), [
    ("/recommend/u1?k=0", "k"),
    ("/recommend/u1?k=101", "k"),
    ("/recommend/u1?k=abc", "k"),
    ("/recommend/bad%20id", "user_id"),
    ("/recommend/" + "x" * 129, "user_id"),
    ("/recommend/u1?exclude=no%20spaces", "exclude"),
])
async def test_malformed_input_is_422_naming_the_field(client: httpx.AsyncClient, path: str,
                                                       field: str) -> None:
    response = await client.get(path)
    assert response.status_code == 422
    assert field in {str(part) for err in response.json()["detail"] for part in err["loc"]}


async def test_social_false_ranks_as_if_the_user_had_no_friends(client: httpx.AsyncClient,
                                                                synth_dir: Path) -> None:
    user = user_with_history_and_friends(synth_dir)
    with_friends = await recommend(client, user, k=20, explain=True)
    own = await recommend(client, user, k=20, explain=True, social=False)
    assert with_friends["strategy"] == "personal_social"
    assert own["strategy"] == "personal"
    assert ids(own) != ids(with_friends)
    assert not any(r["kind"] == "friends_engaged" for i in own["items"] for r in i["reasons"])

    events = [{"user_id": user, "type": "unfollow", "friend_id": f}
              for f in data.friends(synth_dir)[user]]
    assert (await client.post("/events", json={"events": events})).status_code == 202
    assert await recommend(client, user, k=20, explain=True) == own


async def test_one_view_gets_a_list_about_that_item(client: httpx.AsyncClient,
                                                    synth_dir: Path) -> None:
    """The most common first event in a shop. A fold-in from one light event is short, so the
    list used to fall to ties (every score 0.0) among items the model knows nothing about,
    each called "similar to history". It must be about the viewed item, with distinct scores,
    and say "similar_to_history" only where the history carries the item."""
    cats = data.item_categories(synth_dir)
    bought = data.histories(synth_dir)
    counts = {i: sum(i in h for h in bought.values()) for i in cats}
    viewed = sorted((i for i in cats if counts[i] >= 3), key=lambda i: (-counts[i], i))[::10][:8]
    same = similar = similar_same = 0
    for n, item in enumerate(viewed):
        user = f"one-view-{n}"
        event = {"user_id": user, "type": "view", "item_id": item}
        assert (await client.post("/events", json={"events": [event]})).status_code == 202
        body = await recommend(client, user, k=10, explain=True)
        assert body["strategy"] == "personal"
        scores = [i["score"] for i in body["items"]]
        assert len(set(scores)) == len(scores), scores  # ranked, not tied
        for i in body["items"]:
            same += cats[i["item_id"]] == cats[item]
            if {"kind": "similar_to_history"} in i["reasons"]:
                similar += 1
                similar_same += cats[i["item_id"]] == cats[item]
    shown = 10 * len(viewed)
    share = {c: sum(v == c for v in cats.values()) / len(cats) for c in set(cats.values())}
    assert same / shown >= 0.5 > 2 * max(share.values()), (same, shown, share)
    assert similar_same >= 0.8 * similar
