"""The user routes' access rules and the erasure over HTTP: with the admin token configured
both need it; without one GET is open and DELETE is refused."""

from __future__ import annotations

import httpx

from app.config import Settings
from tests.support.auth import ADMIN
from tests.support.client import app_client

WRONG = {"Authorization": "Bearer not-the-admin-token-at-all"}


async def test_with_a_token_both_user_routes_need_it(client: httpx.AsyncClient) -> None:
    for method in ("GET", "DELETE"):
        missing = await client.request(method, "/users/u0001")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert (await client.request(method, "/users/u0001", headers=WRONG)).status_code == 403
    assert (await client.get("/users/u0001", headers=ADMIN)).json()["history"], "still there"


async def test_without_a_token_get_is_open_and_delete_is_off(loaded: Settings) -> None:
    async with app_client(loaded.model_copy(update={"admin_token": None})) as client:
        assert (await client.get("/users/u0001")).status_code == 200
        # What curl sends with an unset $SOCIALREC_ADMIN_TOKEN (the README's example)
        empty = {"Authorization": "Bearer "}
        assert (await client.get("/users/u0001", headers=empty)).status_code == 200
        refused = await client.delete("/users/u0001", headers=ADMIN)
        assert refused.status_code == 403
        assert "SOCIALREC_ADMIN_TOKEN" in refused.json()["detail"]
        assert (await client.get("/users/u0001")).json()["history"], "nothing erased"


async def test_delete_erases_answers_what_and_is_idempotent(client: httpx.AsyncClient) -> None:
    events = [{"event_id": "x1", "user_id": "u0001", "type": "view", "item_id": "p00001"}]
    assert (await client.post("/events", json={"events": events})).status_code == 202
    before = (await client.get("/users/u0001", headers=ADMIN)).json()
    assert before["history"] and before["friends"]

    answer = await client.delete("/users/u0001", headers=ADMIN)
    assert answer.status_code == 200
    removed = answer.json()["removed"]
    assert answer.json()["user_id"] == "u0001"
    assert removed["history_items"] == len(before["history"])
    assert removed["friends"] >= len(before["friends"])
    assert removed["log_events"] == 1 and removed["event_markers"] == 2
    assert removed["follower_links"] > 0, "the synthetic graph has followers of u0001"

    after = (await client.get("/users/u0001", headers=ADMIN)).json()
    assert after["history"] == [] and after["friends"] == []
    again = await client.delete("/users/u0001", headers=ADMIN)
    assert again.status_code == 200 and set(again.json()["removed"].values()) == {0}
    assert (await client.post("/events", json={"events": events})).json()["accepted"] == 1, \
        "its de-dup markers went too: the same event id is new again"


async def test_delete_rejects_a_malformed_id(client: httpx.AsyncClient) -> None:
    answer = await client.delete("/users/bad%20id", headers=ADMIN)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["path", "user_id"]


async def test_a_wrong_method_names_both_user_methods(client: httpx.AsyncClient) -> None:
    answer = await client.put("/users/u0001")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, DELETE"
