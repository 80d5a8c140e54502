"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import StateDep
from app.api.schemas import Status
from app.serving.online import STORE_ERRORS

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Status, response_model_exclude_none=True)
async def healthz() -> Status:
    return Status(status="ok")


@router.get("/readyz", response_model=Status, response_model_exclude_none=True,
            responses={503: {"model": Status, "description": "not ready, with the reason"}})
async def readyz(state: StateDep) -> Status | JSONResponse:
    model = state.models.current
    reason = None
    if model is None:
        reason = f"model not loaded: {state.models.error or 'loading'}"
    else:
        try:
            await asyncio.wait_for(state.store.ping(), state.settings.redis_timeout_s * 2)
        except (TimeoutError, *STORE_ERRORS) as exc:
            reason = f"redis unreachable: {type(exc).__name__}"
    version = model.version if model else None
    if reason:
        body = Status(status="unavailable", model_version=version, reason=reason)
        return JSONResponse(body.model_dump(exclude_none=True),
                            status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Status(status="ready", model_version=version)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                             "description": "Prometheus text format"}})
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
