"""GET /items/{item_id}/similar."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from app.api.deps import StateDep
from app.api.render import items_json
from app.api.schemas import Id, Problem, SimilarItems
from app.events import ID_PATTERN
from app.serving import online

router = APIRouter(tags=["recommend"])


def _no_values() -> list[str]:
    # not `list`: see app/api/routes/recommend.py
    return []


@router.get("/items/{item_id}/similar", response_model=SimilarItems,
            response_model_exclude_none=True,
            responses={404: {"model": Problem, "description": "nothing describes the item"}})
async def similar(
    *,
    state: StateDep,
    item_id: Annotated[str, Path(pattern=ID_PATTERN, description="the item to find neighbours of")],
    k: Annotated[int, Query(ge=1, le=100, description="list length")] = 20,
    user_id: Annotated[str | None, Query(pattern=ID_PATTERN, description="personalise for this "
                                         "user: their seen items are left out and their taste "
                                         "and friends order the neighbours")] = None,
    exclude: Annotated[list[Id], Query(max_length=1000, default_factory=_no_values,
                                       description="item ids not to return")],
    category: Annotated[list[str], Query(max_length=100, default_factory=_no_values,
                                         description="keep only these categories")],
    explain: Annotated[bool, Query(description="add reasons to each item")] = False,
) -> Response:
    recommender = state.models.current
    request = online.SimilarRequest(item_id=item_id, k=k, user_id=user_id,
                                    exclude=tuple(exclude), categories=frozenset(category))
    catalog = state.catalog(recommender)
    try:
        served = await online.similar(recommender, state.store, request,
                                      state.popular_for(recommender.version), catalog)
    except online.UnknownItem:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"item {item_id!r} is unknown: neither the model nor the catalogue "
                            "knows it") from None
    if served.degraded:
        state.metrics.fallbacks.labels("store_unavailable").inc()
    body = {"item_id": item_id, "model_version": served.model_version,
            "degraded": served.degraded,
            "items": orjson.Fragment(items_json(catalog, served.items, explain,
                                                state.settings.reason_friend_ids))}
    return Response(orjson.dumps(body), media_type="application/json")
