"""GET /users/{user_id}: the user as the service sees them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from app.api.deps import RecommenderDep, StoreDep
from app.api.schemas import Friend, HistoryEntry, Problem, UserView
from app.events import ID_PATTERN
from app.serving.online import STORE_ERRORS

router = APIRouter(tags=["users"])


@router.get("/users/{user_id}", response_model=UserView,
            responses={503: {"model": Problem, "description": "the store is unavailable"}})
async def get_user(user_id: Annotated[str, Path(pattern=ID_PATTERN)], store: StoreDep,
                   recommender: RecommenderDep) -> UserView:
    try:
        record = await store.user(user_id, recommender.version)
    except STORE_ERRORS:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "store unavailable") from None
    known = recommender.artifacts.catalog.index
    return UserView(
        user_id=user_id,
        history=[HistoryEntry(item_id=i, weight=w, known_to_model=i in known)
                 for i, w in record.history],
        friends=[Friend(user_id=f, weight=w) for f, w in record.friends],
    )
