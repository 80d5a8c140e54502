"""POST /events: validation names the field, duplicates are counted, limits hold."""

from __future__ import annotations

import httpx
import pytest

from app.config import Settings
from tests.support.auth import ADMIN
from tests.support.log import log_fields


async def post(client: httpx.AsyncClient, events: list[dict]) -> httpx.Response:
    return await client.post("/events", json={"events": events})


async def test_accepts_behaviour_and_follows(client: httpx.AsyncClient) -> None:
    response = await post(client, [
        {"event_id": "a1", "user_id": "alice", "type": "view", "item_id": "p00001"},
        {"event_id": "a2", "user_id": "alice", "type": "rate", "item_id": "p00002", "value": 4},
        {"event_id": "a3", "user_id": "alice", "type": "follow", "friend_id": "bob"},
        {"user_id": "alice", "type": "purchase", "item_id": "not-in-the-catalogue"},
    ])
    assert response.status_code == 202
    assert response.json() == {"accepted": 4, "duplicates": 0}
    user = (await client.get("/users/alice", headers=ADMIN)).json()
    assert [f["user_id"] for f in user["friends"]] == ["bob"]
    history = {h["item_id"]: h for h in user["history"]}
    assert history["not-in-the-catalogue"]["known_to_model"] is False
    assert user["history"][0]["item_id"] == "not-in-the-catalogue", "most recent first"


async def test_unfollow_removes_the_friend(client: httpx.AsyncClient) -> None:
    await post(client, [{"user_id": "carol", "type": "follow", "friend_id": "dave"}])
    await post(client, [{"user_id": "carol", "type": "unfollow", "friend_id": "dave"}])
    assert (await client.get("/users/carol", headers=ADMIN)).json()["friends"] == []


async def test_same_ids_in_one_batch_count_once(client: httpx.AsyncClient) -> None:
    event = {"event_id": "twice", "user_id": "erin", "type": "click", "item_id": "p00003"}
    response = await post(client, [event, event])
    assert response.json() == {"accepted": 1, "duplicates": 1}


async def test_an_event_id_is_unique_per_user(client: httpx.AsyncClient,
                                             loaded: Settings) -> None:
    """Another user's event with the same id is another event: applied and in the durable log,
    as its 202 promises; the same user's is a duplicate."""
    for user, item in (("ann", "p00001"), ("ben", "p00002"), ("ann", "p00003")):
        await post(client, [{"event_id": "shared", "user_id": user, "type": "view",
                             "item_id": item}])
    for user, item in (("ben", "p00002"), ("ann", "p00001")):
        history = (await client.get(f"/users/{user}", headers=ADMIN)).json()["history"]
        assert [h["item_id"] for h in history] == [item]
    assert sorted((f["user_id"], f["item_id"]) for f in log_fields(loaded)) == [
        ("ann", "p00001"), ("ben", "p00002")]


@pytest.mark.parametrize(("event", "loc"), [
    ({"user_id": "u", "type": "teleport", "item_id": "p1"}, ["body", "events", 1, "type"]),
    ({"user_id": "u", "type": "view"}, ["body", "events", 1]),
    ({"user_id": "u", "type": "follow"}, ["body", "events", 1]),
    ({"user_id": "bad id", "type": "view", "item_id": "p1"}, ["body", "events", 1, "user_id"]),
    ({"user_id": "u", "type": "view", "item_id": "p" * 129}, ["body", "events", 1, "item_id"]),
    ({"user_id": "u", "type": "rate", "item_id": "p1", "value": -1},
     ["body", "events", 1, "value"]),
    ({"user_id": "u", "type": "view", "item_id": "p1", "colour": "red"},
     ["body", "events", 1, "colour"]),
])
async def test_invalid_event_is_422_naming_index_and_field(client: httpx.AsyncClient,
                                                           event: dict, loc: list) -> None:
    good = {"user_id": "u", "type": "view", "item_id": "p1"}
    response = await post(client, [good, event])
    assert response.status_code == 422
    assert loc in [err["loc"][: len(loc)] for err in response.json()["detail"]]
    user = (await client.get("/users/u", headers=ADMIN)).json()
    assert user["history"] == [], "nothing half-applied"


async def test_nan_and_infinity_are_rejected(client: httpx.AsyncClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = ('{"events": [{"user_id": "u", "type": "rate", "item_id": "p1", "value": '
                + literal + "}]}")
        response = await client.post("/events", content=body,
                                     headers={"content-type": "application/json"})
        assert response.status_code == 422, literal


@pytest.mark.parametrize("field", ["value", "timestamp"])
@pytest.mark.parametrize("wrong", [True, False, "5", [1]])
async def test_numbers_must_be_json_numbers(client: httpx.AsyncClient, field: str,
                                            wrong: object) -> None:
    """As the OpenAPI document says: `false` is not a timestamp of 0 (schemathesis found it)."""
    response = await post(client, [{"user_id": "u", "type": "rate", "item_id": "p1",
                                     field: wrong}])
    assert response.status_code == 422
    assert ["body", "events", 0, field] in [e["loc"][:4] for e in response.json()["detail"]]
    fine = await post(client, [{"user_id": "u", "type": "rate", "item_id": "p1", field: 3}])
    assert fine.status_code == 202


async def test_batch_limits(client: httpx.AsyncClient) -> None:
    assert (await post(client, [])).status_code == 422
    many = [{"user_id": "u", "type": "view", "item_id": f"p{n}"} for n in range(1001)]
    response = await post(client, many)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events"]


async def test_oversized_body_is_413_before_parsing(client: httpx.AsyncClient,
                                                    loaded: Settings) -> None:
    body = b'{"events": [' + b" " * loaded.max_body_bytes + b"]}"
    response = await client.post("/events", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "detail" in response.json()
