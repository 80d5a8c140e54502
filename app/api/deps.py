"""Dependency aliases: routes receive lifespan-created state through these, never globals."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.metrics import Metrics
from app.serving.catalog import Catalogue, CatalogView
from app.serving.holder import ModelHolder
from app.serving.online import Flights, Unread
from app.serving.pipeline import Recommender
from app.serving.popular import Popularity
from app.store.redis_store import RedisStore


class Turn(Enum):
    """How a /recommend request got its turn (`AppState.turn`)."""

    FREE = "free"  # at once
    WAITED = "waited"  # after others: its client may have gone meanwhile
    SHED = "shed"  # none within SOCIALREC_RECOMMEND_WAIT_S: answer without the user's state


@dataclass
class AppState:
    """Everything the lifespan creates; lives on `app.state.socialrec`."""

    settings: Settings
    store: RedisStore
    models: ModelHolder
    metrics: Metrics
    catalogue: Catalogue
    turns: asyncio.Semaphore  # SOCIALREC_RECOMMEND_CONCURRENCY (`turn`)
    live_popular: tuple[str, Popularity] | None = None  # (model version, live order)
    flights: Flights = field(default_factory=Flights)  # lists being computed, for joiners
    unread: Unread = field(default_factory=Unread)  # answers written without a user's state

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[Turn]:
        """One of the SOCIALREC_RECOMMEND_CONCURRENCY /recommend requests worked on at once,
        after those that came first; SHED when none came within SOCIALREC_RECOMMEND_WAIT_S
        (the caller answers without the user's state). Without a bound, an overloaded process
        starts every request it accepted: each computed list then waits behind hundreds of
        others between its read and its write, the user's events in that window void it
        (app.serving.online, Flights), fewer lists are stored, more requests compute — a
        slowdown that feeds on itself (docs/BENCHMARKS.md, the list cache's open loop).
        Without the deadline, a sustained overload would queue requests without bound."""
        turn = Turn.FREE
        if self.turns.locked():
            turn = Turn.WAITED
            with self.metrics.recommend_waiting.track_inprogress():
                try:
                    async with asyncio.timeout(self.settings.recommend_wait_s or None):
                        await self.turns.acquire()
                except TimeoutError:
                    turn = Turn.SHED
        else:
            await self.turns.acquire()  # a free turn: taken without waiting
        if turn is Turn.SHED:
            yield turn
            return
        try:
            yield turn
        finally:
            self.turns.release()

    def catalog(self, model: Recommender) -> CatalogView:
        """The live catalogue as `model` serves it (availability filter, side index)."""
        return self.catalogue.view(model.artifacts)

    def popular_for(self, version: str) -> Popularity | None:
        """The live popularity order, if it was computed for this model's catalogue."""
        if self.live_popular is None or self.live_popular[0] != version:
            return None
        return self.live_popular[1]


# Dependencies are `async def`: FastAPI runs a plain `def` dependency in its thread pool, a
# thread hop per dependency and request for work that takes nanoseconds.
async def get_state(request: Request) -> AppState:
    return request.app.state.socialrec


async def get_settings(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_store(state: Annotated[AppState, Depends(get_state)]) -> RedisStore:
    return state.store


async def get_metrics(state: Annotated[AppState, Depends(get_state)]) -> Metrics:
    return state.metrics


async def get_recommender(state: Annotated[AppState, Depends(get_state)]) -> Recommender:
    return state.models.current


_bearer = HTTPBearer(auto_error=False)


async def require_admin(settings: Annotated[Settings, Depends(get_settings)],
                        credentials: Annotated[HTTPAuthorizationCredentials | None,
                                               Depends(_bearer)]) -> None:
    """Admin routes are off without a configured token; the comparison is constant-time."""
    if settings.admin_token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "admin routes are disabled")
    _check_token(settings.admin_token, credentials)


async def guard_user_data(settings: Annotated[Settings, Depends(get_settings)],
                          credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                 Depends(_bearer)]) -> None:
    """GET /users/{id}: the admin token when one is configured, open otherwise."""
    if settings.admin_token is not None:
        _check_token(settings.admin_token, credentials)


async def require_catalog_writer(
        settings: Annotated[Settings, Depends(get_settings)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Catalogue writes: only with SOCIALREC_CATALOG_TOKEN; without one configured they are
    off (403, like erasure: the route exists, the configuration refuses)."""
    if settings.catalog_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "catalogue writes are disabled: set SOCIALREC_CATALOG_TOKEN to "
                            "enable them")
    _check_token(settings.catalog_token, credentials)


async def require_eraser(settings: Annotated[Settings, Depends(get_settings)],
                         credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                Depends(_bearer)]) -> None:
    """DELETE /users/{id}: only with the admin token; without one configured nobody may erase
    (403: the route exists and the user may exist, the server's configuration refuses)."""
    if settings.admin_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "erasure is disabled: set SOCIALREC_ADMIN_TOKEN to enable it")
    _check_token(settings.admin_token, credentials)


def _check_token(token: str, credentials: HTTPAuthorizationCredentials | None) -> None:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token")


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[RedisStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
AdminDep = Depends(require_admin)
UserDataDep = Depends(guard_user_data)
EraserDep = Depends(require_eraser)
CatalogWriterDep = Depends(require_catalog_writer)
