"""POST /events: validated, de-duplicated, logged and applied — or 503, never a lost 202."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping

import orjson
from fastapi import APIRouter, HTTPException, Response, status
from fastapi.exceptions import RequestValidationError

from app.api.deps import StateDep
from app.api.schemas import EventIn, EventsAccepted, EventsIn, Problem
from app.config import Settings
from app.events import SOCIAL_TYPES, event_weight, type_weights
from app.serving.pipeline import Recommender
from app.store.redis_store import STORE_ERRORS, Event

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)


@router.post("/events", status_code=status.HTTP_202_ACCEPTED, response_model=EventsAccepted,
             responses={400: {"model": Problem, "description": "the body is not UTF-8 text"},
                        413: {"model": Problem, "description": "the body is over the size limit"},
                        422: {"description": "invalid event; the detail names the field"},
                        503: {"model": Problem,
                              "description": "the events could not be stored; retry"}})
async def post_events(body: EventsIn, state: StateDep) -> Response:
    # One dependency, as on the recommend route: FastAPI resolves each one per request.
    settings, recommender, metrics = state.settings, state.models.current, state.metrics
    weights = _weights(settings, recommender)
    _check_types(body.events, accepted_types(settings, recommender))
    events = [_to_event(e, weights) for e in body.events]
    try:
        applied = await state.store.apply(events)
    except STORE_ERRORS as exc:
        log.warning("event batch not stored: %s", type(exc).__name__)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "events could not be stored; retrying the same batch is safe") from None
    # one increment per type, not per event (a labelled child lookup each)
    ingested = Counter(event.type for event, ok in zip(events, applied, strict=True) if ok)
    for kind, count in ingested.items():
        metrics.child(metrics.events, kind).inc(count)
    duplicates = applied.count(False)
    metrics.duplicates.inc(duplicates)
    # The `EventsAccepted` body (response_model), written straight to JSON: FastAPI would
    # validate and serialise the model again on every request.
    return Response(orjson.dumps({"accepted": len(events) - duplicates,
                                  "duplicates": duplicates}),
                    status_code=status.HTTP_202_ACCEPTED, media_type="application/json")


def _weights(settings: Settings, recommender: Recommender) -> Mapping[str, float]:
    return type_weights(settings.event_weights, recommender.manifest.event_weights)


def accepted_types(settings: Settings, recommender: Recommender) -> frozenset[str]:
    return SOCIAL_TYPES | frozenset(_weights(settings, recommender))


def _check_types(events: list[EventIn], known: frozenset[str]) -> None:
    errors = [{"type": "value_error", "loc": ("body", "events", n, "type"),
               "msg": f"unknown event type; expected one of {sorted(known)}", "input": e.type}
              for n, e in enumerate(events) if e.type not in known]
    if errors:
        raise RequestValidationError(errors)


def _to_event(e: EventIn, weights: Mapping[str, float]) -> Event:
    # Without a client event_id a retry cannot be recognised; a fresh id still logs it once.
    return Event(event_id=e.event_id or uuid.uuid4().hex, user_id=e.user_id, type=e.type,
                 item_id=e.item_id, friend_id=e.friend_id, value=e.value, timestamp=e.timestamp,
                 weight=event_weight(e.type, e.value, weights))
