"""GET /recommend writes its JSON body directly (orjson): it must still be exactly the
documented `Recommendations` model with nulls left out, and a cached user answers the same as
on the first (uncached) request."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.api.schemas import Recommendations
from tests.support import data


def user_with_history_and_friends(synth_dir: Path) -> str:
    hist, friends = data.histories(synth_dir), data.friends(synth_dir)
    return next(u for u in sorted(hist) if u in friends and data.purchases(synth_dir).get(u))


def no_nulls(value: object) -> bool:
    if isinstance(value, dict):
        return all(v is not None and no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(no_nulls(v) for v in value)
    return True


async def test_body_is_the_documented_model_without_nulls(client: httpx.AsyncClient,
                                                          synth_dir: Path) -> None:
    user = user_with_history_and_friends(synth_dir)
    for params in ({"k": 15}, {"k": 15, "explain": "true"}):
        response = await client.get(f"/recommend/{user}", params=params)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        model = Recommendations.model_validate(body)
        assert body == model.model_dump(mode="json", exclude_none=True)
        assert no_nulls(body)
        assert all(("reasons" in i) == ("explain" in params) for i in body["items"])


async def test_cached_state_answers_like_the_first_request(client: httpx.AsyncClient,
                                                           synth_dir: Path) -> None:
    user = user_with_history_and_friends(synth_dir)
    first = (await client.get(f"/recommend/{user}", params={"k": 30})).json()
    again = (await client.get(f"/recommend/{user}", params={"k": 30})).json()
    assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in first["items"]]
    assert [i["score"] for i in again["items"]] == [i["score"] for i in first["items"]]
