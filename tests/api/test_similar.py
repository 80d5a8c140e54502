"""GET /items/{item_id}/similar: neighbours, filters, personalisation, reasons, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.tools.local_redis import free_port
from tests.support import data
from tests.support.auth import CATALOG, CATALOG_TOKEN
from tests.support.client import app_client
from tests.support.lists import ids, similar


def busy_user(synth_dir: Path) -> str:
    """A user with a long history and friends who did things."""
    hist, friends = data.histories(synth_dir), data.friends(synth_dir)
    return max((u for u in hist if friends.get(u)), key=lambda u: (len(hist[u]), u))


async def test_neighbours_share_the_item_category(client: httpx.AsyncClient,
                                                  synth_dir: Path) -> None:
    cats = data.item_categories(synth_dir)
    popular = ids((await client.get("/recommend/nobody", params={"k": 20})).json())
    items = sorted(cats)[:40:4]
    same, base = 0.0, 0.0
    for item in items:
        body = await similar(client, item, k=20)
        assert body["item_id"] == item and body["degraded"] is False
        assert body["model_version"].startswith("m-")
        assert len(body["items"]) == 20 and item not in ids(body)
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert all(i["title"] and i["category"] for i in body["items"])
        same += sum(cats[i] == cats[item] for i in ids(body)) / 20
        base += sum(cats[i] == cats[item] for i in popular) / 20
    assert same > 2 * base  # neighbours are about the item, not what is popular


async def test_exclude_and_category_filters(client: httpx.AsyncClient, synth_dir: Path) -> None:
    cats = data.item_categories(synth_dir)
    item = sorted(cats)[7]
    first = ids(await similar(client, item, k=10))
    assert ids(await similar(client, item, k=9, exclude=first[:3]))[:7] == first[3:10]
    other = sorted(set(cats.values()) - {cats[item]})[0]
    body = await similar(client, item, k=10, category=other)
    assert {cats[i] for i in ids(body)} == {other}


async def test_with_a_user_their_seen_items_go_and_friends_are_named(
        client: httpx.AsyncClient, synth_dir: Path) -> None:
    user = busy_user(synth_dir)
    hist, friends = data.histories(synth_dir), data.friends(synth_dir)
    item = sorted(hist[user])[0]
    anonymous = await similar(client, item, k=50)
    assert set(ids(anonymous)) & hist[user]  # the test means something
    body = await similar(client, item, k=50, user_id=user, explain=True)
    assert not set(ids(body)) & hist[user]
    named = 0
    for entry in body["items"]:
        kinds = [r["kind"] for r in entry["reasons"]]
        assert kinds[-1] == "similar_to_item"
        for reason in entry["reasons"]:
            if reason["kind"] == "friends_engaged":
                named += 1
                assert reason["friend_count"] == len(reason["friends"])
                for friend in reason["friends"]:
                    assert friend in friends[user] and entry["item_id"] in hist[friend]
    assert named  # the busiest user's friends engaged with some neighbours


async def test_a_user_orders_the_neighbours_with_their_taste(client: httpx.AsyncClient,
                                                             synth_dir: Path,
                                                             artifacts_dir: Path) -> None:
    # the user's weight is chosen on validation: on this shop, tastes follow categories
    manifest = json.loads((artifacts_dir / "manifest.json").read_text())
    assert manifest["similar"]["user_weight"] > 0
    hist, cats = data.histories(synth_dir), data.item_categories(synth_dir)
    users = sorted(u for u in hist if len(hist[u]) >= 10)[:12]
    closer = 0
    for user in users:
        taste = data.category_profile(hist[user], cats)
        item = sorted(hist[user])[0]
        mine = ids(await similar(client, item, k=10, user_id=user))
        anonymous = [i for i in ids(await similar(client, item, k=100))
                     if i not in hist[user]][:10]
        closer += sum(taste[cats[i]] for i in mine) > sum(taste[cats[i]] for i in anonymous)
    assert closer >= 0.75 * len(users)


async def test_unknown_item_is_404_and_bad_parameters_are_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/never-described-x/similar")
    assert response.status_code == 404
    assert "never-described-x" in response.json()["detail"]
    for path, params, field in [
            ("/items/p00001/similar", {"k": 0}, "k"),
            ("/items/p00001/similar", {"k": 101}, "k"),
            ("/items/p00001/similar", {"k": "many"}, "k"),
            ("/items/p00001/similar", {"user_id": "bad id!"}, "user_id"),
            ("/items/p00001/similar", {"exclude": "x" * 200}, "exclude"),
            ("/items/p00001/similar", {"explain": "maybe"}, "explain"),
            ("/items/" + "x" * 200 + "/similar", {}, "item_id")]:
        response = await client.get(path, params=params)
        assert response.status_code == 422, (params, response.text)
        assert field in {str(part) for e in response.json()["detail"] for part in e["loc"]}


async def test_redis_down_gives_the_anonymous_list_marked_degraded(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with app_client(down) as client:
        plain = await similar(client, "p00001", k=5)
        body = await similar(client, "p00001", k=5, user_id="u0001")
    assert plain["degraded"] is False
    assert body["degraded"] is True and ids(body) == ids(plain)


async def test_openapi_documents_the_route(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    route = spec["paths"]["/items/{item_id}/similar"]["get"]
    assert {p["name"] for p in route["parameters"]} == {"item_id", "k", "user_id", "exclude",
                                                        "category", "explain"}
    assert {"200", "404", "422"} <= set(route["responses"])
    kinds = spec["components"]["schemas"]["Reason"]["properties"]["kind"]["enum"]
    assert "similar_to_item" in kinds


@pytest.fixture
async def shop(loaded: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service with catalogue writes on."""
    async with app_client(loaded.model_copy(update={"catalog_token": CATALOG_TOKEN})) as c:
        yield c


async def test_unavailable_and_withdrawn_items_are_never_neighbours(
        shop: httpx.AsyncClient, synth_dir: Path) -> None:
    user = busy_user(synth_dir)
    item = sorted(data.histories(synth_dir)[user])[0]
    before = ids(await similar(shop, item, k=20))
    personal = ids(await similar(shop, item, k=20, user_id=user))
    gone = [*before[:3], personal[0]]
    for i in gone[:3]:
        response = await shop.put(f"/items/{i}", json={"available": False}, headers=CATALOG)
        assert response.status_code == 200, response.text
    assert (await shop.delete(f"/items/{gone[3]}", headers=CATALOG)).status_code == 200
    for params in ({}, {"user_id": user}, {"category": data.item_categories(synth_dir)[gone[0]]}):
        assert not set(gone) & set(ids(await similar(shop, item, k=50, **params))), params
    for i in gone:  # back when available again
        await shop.put(f"/items/{i}", json={"available": True}, headers=CATALOG)
    assert set(gone[:3]) <= set(ids(await similar(shop, item, k=20)))


async def test_a_new_product_has_neighbours_and_is_one(shop: httpx.AsyncClient,
                                                       synth_dir: Path) -> None:
    cats = data.item_categories(synth_dir)
    text = {"title": "Summit Trail Waterproof Hiking Boots", "category": "outdoor",
            "tags": ["hiking", "boots"], "description": "Leather boots for long hikes."}
    response = await shop.post("/items", json={"items": [
        {"item_id": "new-boots-a", **text},
        {"item_id": "new-boots-b", **text, "category": "new-boots"}]}, headers=CATALOG)
    assert response.status_code == 200, response.text
    # neighbours by its text vector (the tiny model's text projection is too rough to say
    # which category they are in; bench/quality measures the neighbours)
    body = await similar(shop, "new-boots-a", k=20, explain=True)
    assert len(body["items"]) == 20 and "new-boots-a" not in ids(body)
    assert all(i["reasons"] == [{"kind": "similar_to_item"}] for i in body["items"])
    assert all(i in cats or i == "new-boots-b" for i in ids(body))
    # a live product is found in the side index (its category holds nothing else)
    assert ids(await similar(shop, "new-boots-a", k=5, category="new-boots")) == ["new-boots-b"]
    await shop.delete("/items/new-boots-b", headers=CATALOG)
    assert ids(await similar(shop, "new-boots-a", k=5, category="new-boots")) == []
