"""GET /users/{user_id}: the user as the service sees them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from app.api.deps import RecommenderDep, StoreDep
from app.api.schemas import Friend, HistoryEntry, Problem, UserView
from app.events import ID_PATTERN
from app.serving.artifacts import ItemCatalog
from app.store.redis_store import STORE_ERRORS

router = APIRouter(tags=["users"])


@router.get("/users/{user_id}", response_model=UserView, response_model_exclude_none=True,
            responses={503: {"model": Problem, "description": "the store is unavailable"}})
async def get_user(user_id: Annotated[str, Path(pattern=ID_PATTERN)], store: StoreDep,
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


def _entry(catalog: ItemCatalog, item_id: str, weight: float) -> HistoryEntry:
    """Title and category when the model's catalogue describes the item (empty = absent)."""
    index = catalog.index.get(item_id)
    if index is None:
        return HistoryEntry(item_id=item_id, weight=weight, known_to_model=False)
    return HistoryEntry(item_id=item_id, weight=weight, known_to_model=True,
                        title=catalog.titles[index] or None,
                        category=catalog.categories[index] or None)
