"""Schemathesis against the app's own OpenAPI document, in-process over ASGI, with every check:
every route gets a few hundred generated requests, valid and invalid; none may answer 5xx,
every answer must match the status codes, content types and schemas the document declares,
requests the document calls invalid must be rejected and requests it calls valid accepted.

The document is the one the app serves once it runs the shipped demo model (it names that
model's event types); it is built at import, as schemathesis' parametrisation needs it then."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

from app.api.contract import event_types, with_event_types
from app.config import Settings
from app.events import SOCIAL_TYPES
from app.main import create_app
from app.serving.holder import ModelHolder
from tests.support.auth import ADMIN_TOKEN, CATALOG_TOKEN

pytestmark = pytest.mark.slow

EXAMPLES_PER_ROUTE = int(os.environ.get("SOCIALREC_FUZZ_EXAMPLES", "300"))
CONFIG = schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_ROUTE, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
})
DEMO = Path(__file__).resolve().parents[2] / "model_artifacts" / "demo"
# Both tokens set: a request without one must get 401 (the routes exist, the caller is not
# authenticated), as the contract documents.
SETTINGS = Settings(artifacts=DEMO, admin_token=ADMIN_TOKEN, catalog_token=CATALOG_TOKEN)
DOCUMENT = with_event_types(create_app(SETTINGS).openapi(),
                            event_types(SETTINGS, ModelHolder.load(DEMO, 1).current))
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def follows_oneself(body: object) -> bool:
    """The one rule of the contract JSON Schema cannot state, as it compares two fields: a user
    cannot follow or unfollow themselves."""
    events = body.get("events") if isinstance(body, dict) else None
    return isinstance(events, list) and any(
        isinstance(e, dict) and isinstance(e.get("type"), str) and e["type"] in SOCIAL_TYPES
        and "user_id" in e and e.get("friend_id") == e["user_id"] for e in events)


@pytest.fixture(scope="module")
def live_app(redis_url: str) -> Iterator[FastAPI]:
    """The same app, started (demo model loaded, Redis on its own key prefix)."""
    prefix = f"srtest-fuzz-{uuid.uuid4().hex[:8]}"
    app = create_app(SETTINGS.model_copy(update={"redis_url": redis_url, "key_prefix": prefix}))
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


@schema.parametrize()
def test_no_server_error_and_the_service_keeps_the_documented_contract(
        case: schemathesis.Case, live_app: FastAPI) -> None:
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and follows_oneself(case.body):
        response = case.call(app=live_app)
        assert response.status_code == 422
        assert "friend_id must differ from user_id" in response.text
        return
    case.call_and_validate(app=live_app)
