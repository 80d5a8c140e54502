"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import StateDep
from app.api.schemas import Status
from app.store.redis_store import STORE_ERRORS

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Status, response_model_exclude_none=True)
async def healthz() -> Status:
    return Status(status="ok")


@router.get("/readyz", response_model=Status, response_model_exclude_none=True,
            responses={503: {"model": Status, "description": "not ready, with the reason"}})
async def readyz(state: StateDep) -> Status | JSONResponse:
    # A process that could not follow a reload still serves its model correctly: it stays
    # ready, and says so.
    models = state.models
    version, reload_error = models.current.version, models.follow_error
    try:
        await asyncio.wait_for(state.store.ping(), state.settings.redis_timeout_s * 2)
        # Not ready on a Redis that may evict durable state: it would lose histories silently.
        risk = await asyncio.wait_for(state.store.eviction_risk(),
                                      state.settings.redis_timeout_s * 2)
    except (TimeoutError, *STORE_ERRORS) as exc:
        risk = f"redis unreachable: {type(exc).__name__}"
    if risk is not None:
        body = Status(status="unavailable", model_version=version, reason=risk,
                      reload_error=reload_error)
        return JSONResponse(body.model_dump(exclude_none=True),
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Status(status="ready", model_version=version, reload_error=reload_error)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format"}})
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
