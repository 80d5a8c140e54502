"""POST /admin/reload: swap in freshly exported artifacts, or refuse and keep serving."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status

from app.api.deps import AdminDep, StateDep
from app.api.schemas import Problem, Reloaded
from app.serving.artifacts import ArtifactError

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])
log = logging.getLogger(__name__)


@router.post("/reload", response_model=Reloaded,
             responses={401: {"model": Problem, "description": "no bearer token"},
                        403: {"model": Problem, "description": "wrong token"},
                        404: {"model": Problem,
                              "description": "admin routes are disabled (no token configured)"},
                        409: {"model": Problem,
                              "description": "the artifacts were refused; the old model serves"}})
async def reload(state: StateDep) -> Reloaded:
    previous = state.models.current.version if state.models.current else None
    try:
        fresh = await state.models.reload()
    except ArtifactError as exc:
        state.metrics.reloads.labels("refused").inc()
        log.error("reload refused: %s", exc)
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"artifacts refused, still serving {previous}: {exc}") from None
    state.metrics.reloads.labels("ok").inc()
    state.metrics.model_swapped(fresh.version, fresh.manifest.created_at)
    log.info("model reloaded: %s -> %s", previous, fresh.version)
    return Reloaded(model_version=fresh.version, previous_version=previous)
