"""Operations endpoints and degraded behaviour when Redis is unreachable."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families

from app.config import DEFAULT_EVENT_WEIGHTS, Settings
from app.tools.local_redis import free_port
from tests.support.client import app_client


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"].startswith("m-")


@pytest.mark.parametrize("on", [False, True])
async def test_opentelemetry_providers_are_looked_up_only_when_asked_for(
        settings: Settings, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off by default: FastAPI looks for an OpenTelemetry SDK's providers on every request
    unless told not to, and without an SDK that is work for nothing."""
    looked = []
    lookup = trace.get_tracer_provider

    def counting() -> trace.TracerProvider:
        looked.append(1)
        return lookup()

    monkeypatch.setattr(trace, "get_tracer_provider", counting)
    async with app_client(settings.model_copy(update={"opentelemetry": on})) as client:
        looked.clear()
        assert (await client.get("/healthz")).status_code == 200
    assert bool(looked) is on


async def test_metrics_are_prometheus_text_labelled_by_route_template(
        client: httpx.AsyncClient) -> None:
    await client.get("/recommend/some-user-42")
    await client.post("/events", json={"events": [
        {"user_id": "m", "type": "view", "item_id": "p00001"}]})
    text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    routes = {s.labels.get("route") for s in families["socialrec_http_requests"].samples}
    assert "/recommend/{user_id}" in routes
    assert not any("some-user-42" in (r or "") for r in routes)
    events = families["socialrec_events_ingested"].samples
    assert any(s.labels.get("type") == "view" and s.value == 1 for s in events)
    assert "socialrec_model_info" in families
    assert "socialrec_recommend_strategy" in families


async def test_redis_down_degrades_instead_of_failing(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with app_client(down) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "redis" in ready.json()["reason"]
        body = (await client.get("/recommend/u0001", params={"k": 5})).json()
        assert body["degraded"] is True
        assert len(body["items"]) == 5
        response = await client.post("/events", json={"events": [
            {"user_id": "u", "type": "view", "item_id": "p00001"}]})
        assert response.status_code == 503


async def test_openapi_describes_every_route(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in ("/recommend/{user_id}", "/events", "/users/{user_id}", "/healthz", "/readyz",
                 "/metrics", "/admin/reload"):
        assert path in paths, path
    params = {p["name"] for p in paths["/recommend/{user_id}"]["get"]["parameters"]}
    assert params == {"user_id", "k", "exclude_seen", "exclude", "category", "explain",
                      "social"}
    assert {"202", "422", "503"} <= set(paths["/events"]["post"]["responses"])
    assert "503" in paths["/readyz"]["get"]["responses"]


async def test_openapi_names_the_event_types_the_served_model_accepts(
        client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    event = spec["components"]["schemas"]["EventIn"]
    accepted = sorted({*DEFAULT_EVENT_WEIGHTS, "follow", "unfollow"})
    assert event["properties"]["type"]["enum"] == accepted
    # ...and which target each needs, as the service enforces it.
    rule = event["allOf"][0]
    assert rule["if"]["properties"]["type"]["enum"] == ["follow", "unfollow"]
    assert rule["then"]["required"] == ["friend_id"] and rule["else"]["required"] == ["item_id"]
    for kind in accepted:
        target = "friend_id" if kind in rule["if"]["properties"]["type"]["enum"] else "item_id"
        body = {"events": [{"user_id": "schema-u", "type": kind, target: "p00001"}]}
        assert (await client.post("/events", json=body)).status_code == 202, kind


async def test_openapi_follows_the_operators_event_weights(loaded: Settings) -> None:
    own = loaded.model_copy(update={"event_weights": {"view": 1.0, "wishlist": 2.5}})
    async with app_client(own) as client:
        spec = (await client.get("/openapi.json")).json()
        types = spec["components"]["schemas"]["EventIn"]["properties"]["type"]["enum"]
        assert types == ["follow", "unfollow", "view", "wishlist"]
        refused = await client.post("/events", json={"events": [
            {"user_id": "u", "type": "purchase", "item_id": "p00001"}]})
        assert refused.status_code == 422
