"""App factory and lifespan: everything stateful is created here and put on `app.state`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import faiss
import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from app import __version__
from app.api.contract import publish_event_types
from app.api.deps import AppState
from app.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from app.api.routes import admin, events, items, ops, recommend, similar, ui, users
from app.config import Settings
from app.metrics import Metrics
from app.serving.artifacts import ArtifactError
from app.serving.catalog import CATALOG_POLL_MAX_S, CATALOG_POLL_S, Catalogue
from app.serving.holder import ModelHolder
from app.store.catalog import WRITE_CONNECTIONS, CatalogStore
from app.store.redis_store import STORE_ERRORS, RedisStore, connect

log = logging.getLogger(__name__)
POPULARITY_REFRESH_S = 30.0
# How often each process looks for a reload another one accepted: one small read per poll.
RELOAD_POLL_S = 0.5
LIVE_POPULAR_TOP = 1000


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    # /docs with its JavaScript, CSS and icon served by the service itself (from the
    # fastapi-offline package), not a CDN: the page works air-gapped. No validator badge:
    # Swagger UI would send the document to validator.swagger.io for it. No /redoc: ReDoc
    # fetches its logo from its CDN.
    app = FastAPIOffline(title="socialrec", version=__version__, redoc_url=None,
                         lifespan=_lifespan(settings, metrics),
                         description="Social recommendations: your taste, blended with your "
                                     "friends'.",
                         swagger_ui_parameters={"validatorUrl": None},
                         telemetry={"tracing": settings.opentelemetry,
                                    "metrics": settings.opentelemetry,
                                    "logs": settings.opentelemetry})
    for module in (recommend, similar, events, users, items, ops):
        app.include_router(module.router)
    if settings.admin_token is not None:
        app.include_router(admin.router)
    if settings.ui:
        app.include_router(ui.router)
    publish_event_types(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Starlette types a handler as taking any Exception; this one is registered for one class.
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    return app


def _lifespan(settings: Settings,
              metrics: Metrics) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Single queries are 2-67x slower with several OpenMP threads on small machines.
        faiss.omp_set_num_threads(1)
        try:
            models = await asyncio.to_thread(ModelHolder.load, settings.artifacts,
                                             settings.onnx_threads)
        except ArtifactError as exc:
            detail = str(exc).removeprefix(f"{settings.artifacts}: ")
            message = f"cannot serve the artifacts in {settings.artifacts}: {detail}"
            log.critical(message)
            raise StartupError(message) from None
        model = models.current
        metrics.model_swapped(model.version, model.manifest.created_at)
        store = RedisStore(connect(settings), settings)
        catalogue = Catalogue(CatalogStore(store.client, store.keys, connect(
            settings, settings.catalog_write_timeout_s, WRITE_CONNECTIONS)))
        models.prepare = catalogue.prepare  # a model swaps in with its live catalogue built
        state = AppState(settings=settings, store=store, models=models, metrics=metrics,
                         catalogue=catalogue,
                         turns=asyncio.Semaphore(settings.recommend_concurrency))
        app.state.socialrec = state
        await _warn_of_eviction(store, settings.redis_timeout_s * 2)
        await _read_catalogue(state)
        await _register_log_partitions(store)
        stopping = asyncio.Event()
        tasks = _background(state, stopping)
        log.info("serving model %s from %s", model.version, settings.artifacts)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # GC's full collections, which otherwise walk it again and again under load.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            # Let an in-flight Redis call finish (bounded by its timeout) instead of
            # cancelling it half-way through the connection's protocol.
            stopping.set()
            await asyncio.gather(*tasks)
            await catalogue.close()
            await catalogue.store.close()
            await store.close()
            metrics.close()

    return lifespan


async def _warn_of_eviction(store: RedisStore, timeout_s: float) -> None:
    """Say at start-up when Redis may evict durable state (also a 503 reason of /readyz);
    a Redis that does not answer yet is /readyz's to report."""
    try:
        risk = await asyncio.wait_for(store.eviction_risk(), timeout_s)
    except (TimeoutError, *STORE_ERRORS):
        return
    if risk is not None:
        log.warning("%s: user state would be lost silently when Redis fills up", risk)


async def _register_log_partitions(store: RedisStore) -> None:
    """Register the log partitions this process writes at start-up, so that its events do not
    depend on the registry's node later; when Redis does not answer yet, the first event
    registers them. Bounded by the client's own timeouts: cancelling a pipeline half-read
    (asyncio.wait_for) would leave its replies on a pooled connection for the next caller."""
    with contextlib.suppress(*STORE_ERRORS):
        await store.register_log_partitions()


async def _every(period_s: float, stopping: asyncio.Event,
                 tick: Callable[[], Awaitable[None]], max_period_s: float | None = None) -> None:
    """Run `tick` every `period_s` until `stopping`. A background loop must outlive any one
    failure: store errors are expected while Redis is away (the next tick catches up), and
    anything else is logged and retried too (redis-py's cluster client has raised
    AttributeError on a connection dropped mid-send), since a dead loop would silently
    freeze popularity, reloads or the catalogue in this process. With `max_period_s`, the
    wait doubles after each failing tick up to it, and is `period_s` again after a success: a
    fast poll does not hammer a Redis node that is down."""
    wait = period_s
    while not stopping.is_set():
        try:
            await tick()
            wait = period_s
        except STORE_ERRORS:
            wait = min(2 * wait, max_period_s or period_s)
        except Exception:
            wait = min(2 * wait, max_period_s or period_s)
            log.exception("background %s failed; retrying in %.2f s", tick.__name__, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), wait)


def _background(state: AppState, stopping: asyncio.Event) -> list[asyncio.Task[None]]:
    async def refresh_popularity() -> None:
        """Keep a live popularity order in memory: fresh trends when Redis answers, and
        still a list to serve from when it does not."""
        model = state.models.current
        live = await state.store.popular(LIVE_POPULAR_TOP)
        lookup = state.catalog(model).lookup  # live items count like the model's
        known = [(n, c) for i, c in live.counts if (n := lookup(i)) is not None]
        state.live_popular = (model.version, model.popular.with_live(
            np.fromiter((i for i, _ in known), dtype=np.int64, count=len(known)),
            np.fromiter((c for _, c in known), dtype=np.float32, count=len(known)),
            complete=live.complete))

    async def follow_catalogue() -> None:
        """Apply catalogue changes made through any process: availability reaches every
        process within CATALOG_POLL_S plus one read. While Redis is away the last state
        read stays."""
        try:
            await state.catalogue.poll()
        finally:
            state.metrics.catalog_generation.set(state.catalogue.generation)

    async def follow_reloads() -> None:
        """Swap in the model another process (worker or replica) accepted on
        `/admin/reload`."""
        try:
            notice = await state.store.last_reload()
            try:
                fresh = await state.models.follow(notice)
            except ArtifactError:
                log.error("%s; still serving %s", state.models.follow_error,
                          state.models.current.version)
                state.metrics.reloads.labels("follow_failed").inc()
                return
            if fresh is not None:
                log.info("followed a reload to model %s", fresh.version)
                state.metrics.reloads.labels("followed").inc()
                state.metrics.model_swapped(fresh.version, fresh.manifest.created_at)
        finally:
            state.metrics.model_stale.set(state.models.follow_error is not None)

    return [asyncio.create_task(_every(period, stopping, tick, longest))
            for period, tick, longest in (
                (POPULARITY_REFRESH_S, refresh_popularity, None),
                (RELOAD_POLL_S, follow_reloads, None),
                (CATALOG_POLL_S, follow_catalogue, CATALOG_POLL_MAX_S))]


async def _read_catalogue(state: AppState) -> None:
    """The live catalogue before the first request; with Redis away the service starts
    without it and the poll catches up."""
    try:
        await state.catalogue.poll()
    except STORE_ERRORS as exc:
        log.warning("live catalogue not read at start-up (%s); the poll retries",
                    type(exc).__name__)
    await state.catalogue.prepare(state.models.current.artifacts)


class StartupError(RuntimeError):
    """The service cannot start: the message says why, in one line."""


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the input back (it may be huge, hostile, or
    not even representable in JSON, like NaN)."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A 405's `Allow` lists every method the path has: Starlette names only the first route
    that matched the path, and GET and DELETE /users/{user_id} are two routes."""
    if exc.status_code == 405:
        allowed = [method for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
                   if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                          for route in request.app.router.routes)]
        exc = StarletteHTTPException(405, exc.detail,
                                     headers={**(exc.headers or {}), "Allow": ", ".join(allowed)})
    return await http_exception_handler(request, exc)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    route = getattr(request.scope.get("route"), "path", "<unmatched>")
    log.exception("unhandled error on %s", route)
    return JSONResponse({"detail": "internal error"}, status_code=500)
