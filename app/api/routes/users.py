"""GET /users/{user_id}: the user as the service sees them; DELETE: erase the user."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from app.api.deps import EraserDep, RecommenderDep, StoreDep, UserDataDep
from app.api.schemas import Friend, HistoryEntry, Problem, Removed, UserErased, UserView
from app.events import ID_PATTERN
from app.serving.artifacts import ItemCatalog
from app.store.redis_store import STORE_ERRORS

router = APIRouter(tags=["users"])
log = logging.getLogger(__name__)
UserId = Annotated[str, Path(pattern=ID_PATTERN)]
_TOKEN_ANSWERS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "no bearer token (a token is configured)"},
    403: {"model": Problem, "description": "wrong token"},
}


@router.get("/users/{user_id}", response_model=UserView, response_model_exclude_none=True,
            dependencies=[UserDataDep],
            responses={**_TOKEN_ANSWERS,
                       503: {"model": Problem, "description": "the store is unavailable"}})
async def get_user(user_id: UserId, store: StoreDep,
                   recommender: RecommenderDep) -> UserView:
    try:
        record = await store.user(user_id, recommender.version,
                                  recommender.manifest.blend.max_friends)
    except STORE_ERRORS:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "store unavailable") from None
    catalog = recommender.artifacts.catalog
    return UserView(
        user_id=user_id,
        history=[_entry(catalog, i, w) for i, w in record.history],
        friends=[Friend(user_id=f, weight=w) for f, w in record.friends],
    )


@router.delete("/users/{user_id}", response_model=UserErased, dependencies=[EraserDep],
               responses={401: _TOKEN_ANSWERS[401],
                          403: {"model": Problem, "description": "wrong token, or erasure is "
                                "disabled (no SOCIALREC_ADMIN_TOKEN)"},
                          503: {"model": Problem, "description": "the store failed part-way; "
                                "retry: a retry finishes the erasure"}})
async def delete_user(user_id: UserId, store: StoreDep) -> UserErased:
    """Erase everything held about the user: history, seen set, friend list, the user's
    entries in other users' friend lists, cached vector, de-duplication markers and the
    user's events in the durable log. Idempotent: a repeat removes nothing and answers 200."""
    try:
        erased = await store.erase(user_id)
    except STORE_ERRORS:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "store unavailable; the erasure may be partial, retry") from None
    log.info("user erased: %s", erased)
    return UserErased(user_id=user_id, removed=Removed(**dataclasses.asdict(erased)))


def _entry(catalog: ItemCatalog, item_id: str, weight: float) -> HistoryEntry:
    """Title and category when the model's catalogue describes the item (empty = absent)."""
    index = catalog.index.get(item_id)
    if index is None:
        return HistoryEntry(item_id=item_id, weight=weight, known_to_model=False)
    return HistoryEntry(item_id=item_id, weight=weight, known_to_model=True,
                        title=catalog.titles[index] or None,
                        category=catalog.categories[index] or None)
