"""Reading the service's lists in API tests: a request that must succeed, and its item ids."""

from __future__ import annotations

from typing import Any

import httpx

Param = str | int | float | bool | list[str]


def ids(body: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in body["items"]]


async def recommend(client: httpx.AsyncClient, user: str, **params: Param) -> dict[str, Any]:
    response = await client.get(f"/recommend/{user}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def similar(client: httpx.AsyncClient, item: str, **params: Param) -> dict[str, Any]:
    response = await client.get(f"/items/{item}/similar", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
