"""Schemathesis against the app's own OpenAPI document, in-process over ASGI: every route gets a
few hundred generated requests, valid and invalid; none may answer 5xx, and every answer must
match the status codes, content types and schemas the document declares."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow

EXAMPLES_PER_ROUTE = 300
CONFIG = schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_ROUTE, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    # Every check but "schema-valid request accepted": the document cannot state the rules the
    # service also enforces with a 422 (an event type the model knows, item_id for behaviour and
    # friend_id for follows, friend differs from user). Invalid requests must still be rejected.
    "checks": {"positive_data_acceptance": {"enabled": False}},
})
# The document is static: an app that is never started serves it.
schema = schemathesis.openapi.from_dict(create_app(Settings(admin_token=ADMIN_TOKEN)).openapi(),
                                        config=CONFIG)


@pytest.fixture(scope="module")
def live_app(redis_url: str, artifacts_dir: Path) -> Iterator[FastAPI]:
    """The same app, started (model loaded, Redis on its own key prefix)."""
    prefix = f"srtest-fuzz-{uuid.uuid4().hex[:8]}"
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix, artifacts=artifacts_dir,
                              admin_token=ADMIN_TOKEN))
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


@schema.parametrize()
def test_no_server_error_and_responses_match_the_schema(case: schemathesis.Case,
                                                        live_app: FastAPI) -> None:
    case.call_and_validate(app=live_app)
