"""The live catalogue while Redis is away and after it restarts (AOF): degraded answers keep the
last known availability, and the catalogue survives Redis' restart."""

from __future__ import annotations

from app.config import Settings
from app.tools.local_redis import LocalRedis
from tests.support.auth import CATALOG, CATALOG_TOKEN
from tests.support.client import app_client


async def test_degraded_answers_keep_the_last_known_availability_and_redis_restarts_keep_it(
        own_settings: Settings, own_redis: LocalRedis) -> None:
    settings = own_settings.model_copy(update={"catalog_token": CATALOG_TOKEN})
    async with app_client(settings) as client:
        popular = [i["item_id"] for i in
                   (await client.get("/recommend/anyone", params={"k": 10})).json()["items"]]
        gone = popular[:3]
        for item in gone:
            response = await client.put(f"/items/{item}", json={"available": False},
                                        headers=CATALOG)
            assert response.status_code == 200
        boots = {"title": "Summit Trail Hiking Boots", "category": "outdoor"}
        assert (await client.put("/items/new-boots", json=boots, headers=CATALOG)
                ).status_code == 200
        own_redis.stop()
        body = (await client.get("/recommend/anyone", params={"k": 50})).json()
        assert body["degraded"] is True and len(body["items"]) == 50
        assert not {i["item_id"] for i in body["items"]} & set(gone)
        refused = await client.put("/items/other", json=boots, headers=CATALOG)
        assert refused.status_code == 503
        assert (await client.get("/items/new-boots")).json()["vector_source"] == "text"
        own_redis.start()
    async with app_client(settings) as client:  # a fresh process reads it all back
        assert (await client.get(f"/items/{gone[0]}")).json()["available"] is False
        assert (await client.get("/items/new-boots")).json()["title"] == boots["title"]
        assert (await client.get("/items/other")).status_code == 404
