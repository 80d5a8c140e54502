"""The OpenAPI document as strict as the service: an event's `type` is an enum of the types the
served model accepts (its event weights, or the operator's, plus follow/unfollow), and each type
requires its target (`item_id` for behaviour, `friend_id` for follows). Generated clients and
fuzzers see the real contract; the document follows a reload that changes the types."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from app.api.routes.events import accepted_types
from app.config import Settings
from app.events import ID_PATTERN, SOCIAL_TYPES
from app.serving.pipeline import Recommender

Document = dict[str, Any]


def publish_event_types(app: FastAPI) -> None:
    """Replace `app.openapi` (FastAPI's documented way to extend the document)."""
    static = app.openapi
    built: dict[tuple[str, ...], Document] = {}

    def openapi() -> Document:
        state = getattr(app.state, "socialrec", None)
        if state is None:  # not started: no model, so no list of types yet
            return static()
        types = event_types(state.settings, state.models.current)
        if types not in built:
            built.clear()
            built[types] = with_event_types(static(), types)
        return built[types]

    app.openapi = openapi  # type: ignore[method-assign]


def event_types(settings: Settings, recommender: Recommender) -> tuple[str, ...]:
    return tuple(sorted(accepted_types(settings, recommender)))


def with_event_types(document: Document, types: tuple[str, ...]) -> Document:
    """`document` (FastAPI's, unchanged) with the event contract of these types."""
    document = copy.deepcopy(document)
    event = document["components"]["schemas"]["EventIn"]
    event["properties"]["type"] = {**event["properties"]["type"], "enum": list(types)}
    event["properties"]["type"].pop("pattern", None)
    social = sorted(SOCIAL_TYPES)
    event["allOf"] = [{
        "if": {"properties": {"type": {"enum": social}}},
        "then": _requires("friend_id"),
        "else": _requires("item_id"),
    }]
    return document


def _requires(field: str) -> Document:
    return {"required": [field], "properties": {field: {"type": "string", "pattern": ID_PATTERN}}}
