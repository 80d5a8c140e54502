"""GET /recommend/{user_id}."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from app.api.deps import StateDep, Turn
from app.api.quick import QuickRecommendRoute
from app.api.render import ItemsJson
from app.api.schemas import Id, Recommendations
from app.events import ID_PATTERN
from app.serving import online
from app.serving.pipeline import Strategy

# The hot route: plainly spelled requests skip FastAPI's generic handler (app.api.quick).
router = APIRouter(tags=["recommend"], route_class=QuickRecommendRoute)
# The status logged (and counted in socialrec_http_requests_total) for a request whose client
# went away while it waited for a turn: nginx's "client closed request"; nobody reads it.
CLIENT_GONE = 499


def _no_values() -> list[str]:
    # A plain function, not `list`: pydantic inspects the factory's signature on every call,
    # and for a builtin that means parsing its text signature (~45 µs per parameter).
    return []


@router.get("/recommend/{user_id}", response_model=Recommendations,
            response_model_exclude_none=True)
async def recommend(
    *,
    # One dependency only: FastAPI resolves each one per request, ~40 µs apiece here.
    state: StateDep,
    request: Request,
    user_id: Annotated[str, Path(pattern=ID_PATTERN, description="any user id; unknown = cold")],
    k: Annotated[int, Query(ge=1, le=100, description="list length")] = 20,
    exclude_seen: Annotated[bool, Query(description="drop items in the user's history")] = True,
    # Lists default to empty, not null: a query string cannot carry a null, so the schema
    # should not offer one.
    exclude: Annotated[list[Id], Query(max_length=1000, default_factory=_no_values,
                                       description="item ids not to return")],
    category: Annotated[list[str], Query(max_length=100, default_factory=_no_values,
                                         description="keep only these categories")],
    explain: Annotated[bool, Query(description="add reasons to each item")] = False,
    social: Annotated[bool, Query(description="false: rank from the user's own taste only, "
                                  "without the friends' vectors and engagement (to compare "
                                  "what the friends add)")] = True,
) -> Response:
    recommender = state.models.current
    wanted = online.Request(user_id=user_id, k=k, exclude_seen=exclude_seen,
                            exclude=tuple(exclude), categories=frozenset(category),
                            social=social)
    catalog = state.catalog(recommender)
    render = ItemsJson(catalog, explain, state.settings.reason_friend_ids)
    popular = state.popular_for(recommender.version)
    async with state.turn() as turn:
        # A client that gave up while the request waited (its own timeout, under overload)
        # reads no answer: computing one would spend a turn the requests behind it need.
        if turn is Turn.WAITED and await request.is_disconnected():
            return Response(status_code=CLIENT_GONE)
        served = await online.recommend(
            recommender, state.store, wanted, render, catalog, popular,
            state.settings.cache_ttl_s, state.flights) if turn is not Turn.SHED else \
            online.without_user(recommender, wanted, render, catalog, popular, state.unread)
    metrics = state.metrics
    metrics.child(metrics.list_cache, served.cache).inc()
    metrics.child(metrics.strategies, served.strategy.value).inc()
    if served.degraded:
        metrics.child(metrics.fallbacks,
                      "overloaded" if turn is Turn.SHED else "store_unavailable").inc()
    elif served.popular_fill and served.strategy is not Strategy.POPULAR:
        metrics.child(metrics.fallbacks, "popular_fill").inc()
    # The `Recommendations` body (response_model: the documented contract, exclude_none),
    # written straight to JSON bytes: building and re-validating pydantic models per item
    # cost more than the rest of the response path.
    body = {"user_id": user_id, "model_version": served.model_version,
            "strategy": served.strategy.value, "degraded": served.degraded,
            "items": orjson.Fragment(served.items_json)}
    return Response(orjson.dumps(body), media_type="application/json")
