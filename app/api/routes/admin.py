"""POST /admin/reload: swap in freshly exported artifacts, or refuse and keep serving."""

from __future__ import annotations

import logging
import os
import socket
from functools import partial

from fastapi import APIRouter, HTTPException, status

from app.api.deps import AdminDep, StateDep
from app.api.schemas import Problem, Reloaded
from app.serving.artifacts import ArtifactError
from app.store.redis_store import STORE_ERRORS

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])
log = logging.getLogger(__name__)


@router.post("/reload", response_model=Reloaded,
             responses={401: {"model": Problem, "description": "no bearer token"},
                        403: {"model": Problem, "description": "wrong token"},
                        404: {"model": Problem,
                              "description": "admin routes are disabled (no token configured)"},
                        409: {"model": Problem,
                              "description": "the artifacts were refused; the old model serves"},
                        503: {"model": Problem,
                              "description": "the store did not answer, so the other processes "
                                             "could not be told; the old model serves; retry"}})
async def reload(state: StateDep) -> Reloaded:
    """Load the artifact folder again in every API process: this one validates it and
    announces its version in Redis; every worker and replica swaps within about a second."""
    previous = state.models.current.version
    origin = f"{socket.gethostname()}:{os.getpid()}"
    try:
        fresh = await state.models.reload(partial(state.store.publish_reload, origin=origin))
    except ArtifactError as exc:
        state.metrics.reloads.labels("refused").inc()
        log.error("reload refused: %s", exc)
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"artifacts refused, still serving {previous}: {exc}") from None
    except STORE_ERRORS as exc:
        state.metrics.reloads.labels("unannounced").inc()
        log.error("reload not announced: %s", type(exc).__name__)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"the store is unavailable, so the reload could not reach the other "
                            f"processes; still serving {previous}; retry") from None
    state.metrics.reloads.labels("ok").inc()
    state.metrics.model_swapped(fresh.version, fresh.manifest.created_at)
    log.info("model reloaded: %s -> %s", previous, fresh.version)
    return Reloaded(model_version=fresh.version, previous_version=previous)
