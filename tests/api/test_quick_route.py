"""The lean GET /recommend route (app.api.quick) is the plain FastAPI route with a shortcut:
the same OpenAPI document, the same answer (200 or 422, body included) for every request, and
the shortcut really taken for plainly spelled requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Depends, FastAPI, Path
from fastapi.routing import APIRoute
from starlette.requests import Request

from app.api import quick
from app.api.deps import StateDep
from app.api.routes import recommend
from app.config import Settings
from app.events import ID_PATTERN
from app.main import create_app

PLAIN = "/plain"
UserId = Annotated[str, Path(pattern=ID_PATTERN)]


def the_route() -> APIRoute:
    (route,) = [r for r in recommend.router.routes
                if isinstance(r, APIRoute) and r.path == "/recommend/{user_id}"]
    assert isinstance(route, quick.QuickRecommendRoute)
    return route


def plain_router(prefix: str = "") -> APIRouter:
    """The same endpoint, declared the same way, as FastAPI's own APIRoute."""
    route = the_route()
    router = APIRouter(tags=["recommend"])
    router.add_api_route(prefix + route.path, route.endpoint, methods=["GET"],
                         response_model=route.response_model,
                         response_model_exclude_none=route.response_model_exclude_none)
    assert type(router.routes[0]) is APIRoute
    return router


def test_the_openapi_document_is_the_plain_routes() -> None:
    lean, plain = FastAPI(title="t", version="1"), FastAPI(title="t", version="1")
    lean.include_router(recommend.router)
    plain.include_router(plain_router())
    assert lean.openapi() == plain.openapi()
    assert "/recommend/{user_id}" in lean.openapi()["paths"]


@pytest.fixture
async def both(loaded: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service with the plain route beside the lean one, under PLAIN."""
    app = create_app(loaded)
    app.include_router(plain_router(PLAIN))
    async with LifespanManager(app) as manager:
        # the live popularity order is computed in the background: both routes must see it
        for _ in range(200):
            if app.state.socialrec.live_popular is not None:
                break
            await asyncio.sleep(0.05)
        assert app.state.socialrec.live_popular is not None
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


QUERIES = [
    "", "k=5", "k=100", "k=1&explain=true&social=false&exclude_seen=false",
    "exclude=i1&exclude=i2&category=c1&category=nope", "unknown=1&k=7",
    # spellings pydantic accepts that the shortcut leaves to it
    "k=+5", "k=05", "k=%205", "explain=yes", "explain=1", "explain=TRUE", "social=off",
    "k=5&k=6", "explain=true&explain=false",
    # invalid
    "k=0", "k=101", "k=abc", "k=", "k=2.0", "k=1000000", "explain=maybe", "exclude_seen=",
    "exclude=bad%20id", "exclude=" + "x" * 129, "exclude=ok%0A",
    "&".join(["exclude=x"] * 1001), "&".join(["category=c"] * 101), "k=0&explain=maybe",
]
USERS = ["u1", "u0007", "never-seen", "a%20b", "x" * 129, "ok%0A", "a.b:c-d_e"]


@pytest.mark.parametrize("user", USERS)
async def test_every_answer_is_the_plain_routes(both: httpx.AsyncClient, user: str) -> None:
    for query in QUERIES:
        lean = await both.get(f"/recommend/{user}?{query}")
        plain = await both.get(f"{PLAIN}/recommend/{user}?{query}")
        assert (lean.status_code, lean.json()) == (plain.status_code, plain.json()), query
        assert lean.headers["content-type"] == plain.headers["content-type"]


def request(path_user: str, query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": f"/recommend/{path_user}",
                    "query_string": query.encode(), "headers": [],
                    "path_params": {"user_id": path_user}})


def shortcut(user: str, query: str) -> dict[str, Any] | None:
    route = the_route()
    user_id = quick._pattern(route.dependant.path_params[0].field_info.metadata)
    assert user_id is not None
    params = {p.name: quick._param(p.name, p.alias, p.field_info)
              for p in route.dependant.query_params}
    return quick.quick_args(request(user, query), user_id, params)


def test_plain_requests_take_the_shortcut_with_the_declared_defaults() -> None:
    assert shortcut("u1", "") == {"user_id": "u1", "k": 20, "exclude_seen": True,
                                  "exclude": [], "category": [], "explain": False,
                                  "social": True}
    assert shortcut("u1", "k=5&explain=true&exclude=a&exclude=b&category=c&social=false"
                    "&exclude_seen=false&other=1") == {
        "user_id": "u1", "k": 5, "exclude_seen": False, "exclude": ["a", "b"],
        "category": ["c"], "explain": True, "social": False}


@pytest.mark.parametrize("user, query", [
    ("u1", "k=0"), ("u1", "k=101"), ("u1", "k=+5"), ("u1", "explain=yes"), ("u1", "k=1&k=2"),
    ("u1", "exclude=a%20b"), ("u1\n", ""), ("x" * 129, ""),
    ("u1", "&".join(["category=c"] * 101))])
def test_anything_else_goes_to_fastapi(user: str, query: str) -> None:
    assert shortcut(user, query) is None


def test_a_declaration_the_shortcut_cannot_read_fails_at_startup() -> None:
    async def readable(*, state: StateDep, user_id: UserId, k: int = 1) -> None:
        return None

    async def floating(*, state: StateDep, user_id: UserId, k: float = 1.0) -> None:
        return None

    router = APIRouter(route_class=quick.QuickRecommendRoute)
    router.add_api_route("/readable/{user_id}", readable, methods=["GET"])
    with pytest.raises(TypeError, match="not supported"):
        router.add_api_route("/recommend/{user_id}", floating, methods=["GET"])


async def _caller() -> str:
    return "checked"


def test_a_dependency_the_shortcut_would_skip_fails_at_startup() -> None:
    async def guarded(*, state: StateDep, user_id: UserId,
                      who: Annotated[str, Depends(_caller)]) -> None:
        return None

    async def plain(*, state: StateDep, user_id: UserId) -> None:
        return None

    router = APIRouter(route_class=quick.QuickRecommendRoute)
    with pytest.raises(TypeError, match="skip any other dependency"):
        router.add_api_route("/recommend/{user_id}", guarded, methods=["GET"])
    guarded_router = APIRouter(route_class=quick.QuickRecommendRoute,
                               dependencies=[Depends(_caller)])
    with pytest.raises(TypeError, match="skip any other dependency"):
        guarded_router.add_api_route("/recommend/{user_id}", plain, methods=["GET"])
