"""The live catalogue: PUT/POST/DELETE /items (SOCIALREC_CATALOG_TOKEN), GET /items/{item_id}."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status

from app.api.deps import AppState, CatalogWriterDep, StateDep
from app.api.schemas import ItemIn, ItemOut, ItemsIn, ItemsWritten, ItemWithdrawn, Problem
from app.events import ID_PATTERN
from app.serving.catalog import text_vectors
from app.store.catalog import CatalogItem, encode_vector
from app.store.redis_store import STORE_ERRORS

router = APIRouter(tags=["catalogue"])
log = logging.getLogger(__name__)
ItemId = Annotated[str, Path(pattern=ID_PATTERN)]
_WRITE_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body is not UTF-8 text"},
    413: {"model": Problem, "description": "the body is over the size limit"},
    401: {"model": Problem, "description": "no bearer token"},
    403: {"model": Problem, "description": "wrong token, or catalogue writes are disabled "
          "(no SOCIALREC_CATALOG_TOKEN)"},
    503: {"model": Problem, "description": "the store is unavailable or did not answer within "
          "SOCIALREC_CATALOG_WRITE_TIMEOUT_S; the write may or may not have been stored: retry "
          "(writes are idempotent)"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "neither the catalogue nor the model knows the item, "
          "or it was withdrawn"}}


@router.get("/items/{item_id}", response_model=ItemOut, responses=_NOT_FOUND)
async def get_item(item_id: ItemId, state: StateDep) -> ItemOut:
    """The item as this process serves it: the catalogue's fields over the model's, whether
    it may be recommended, and where its vector comes from."""
    return _served(state, item_id)


@router.put("/items/{item_id}", response_model=ItemOut, dependencies=[CatalogWriterDep],
            responses=_WRITE_ANSWERS)
async def put_item(item_id: ItemId, body: ItemIn, state: StateDep) -> ItemOut:
    """Create or update one item (only the fields given change; a withdrawn item comes back).
    An item the model does not know gets its vector from its text and is recommendable at
    once, in every process within a second."""
    await _write(state, [(item_id, body)])
    return _served(state, item_id)


@router.post("/items", response_model=ItemsWritten, dependencies=[CatalogWriterDep],
             responses=_WRITE_ANSWERS)
async def post_items(body: ItemsIn, state: StateDep) -> ItemsWritten:
    """PUT for 1..1000 items at once, written atomically (one script)."""
    statuses = await _write(state, [(item.item_id, item) for item in body.items])
    counts = Counter(statuses)
    return ItemsWritten(created=counts[2], updated=counts[1], unchanged=counts[0])


@router.delete("/items/{item_id}", response_model=ItemWithdrawn,
               dependencies=[CatalogWriterDep], responses={**_WRITE_ANSWERS, **_NOT_FOUND})
async def delete_item(item_id: ItemId, state: StateDep) -> ItemWithdrawn:
    """Withdraw the item: never recommended again, by any route in any process, within a
    second; a PUT brings it back. Idempotent."""
    catalogue = state.catalogue
    try:
        record = await catalogue.store.get(item_id)
        known = item_id in state.models.current.artifacts.catalog.index
        if record is None and not known:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown item {item_id!r}")
        statuses = await catalogue.store.put([(item_id, {"withdrawn": True})])
    except STORE_ERRORS:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "store unavailable; retry (a withdrawal is idempotent)") from None
    await _apply_now(state)
    return ItemWithdrawn(item_id=item_id, withdrawn=True, changed=statuses[0] != 0)


async def _write(state: AppState, items: Sequence[tuple[str, ItemIn]]) -> list[int]:
    """Merge the given fields over the stored records, compute the text vectors of the items
    the served model does not know (in a worker thread), write everything in one script.
    Per item: 0 unchanged, 1 updated, 2 created."""
    model = state.models.current
    store = state.catalogue.store
    fields = set(ItemIn.model_fields)
    changes = [(item_id, {**body.model_dump(exclude_none=True, include=fields),
                          "withdrawn": False})
               for item_id, body in items]
    try:
        stored = await store.get_many([item_id for item_id, _ in items])
        merged = [dataclasses.replace(old or CatalogItem(item_id), **fields)
                  for (item_id, fields), old in zip(changes, stored, strict=True)]
        todo = [m for m in merged if m.item_vector(model.version) is None]
        vectors = await asyncio.to_thread(text_vectors, model.artifacts, todo)
        raw = {m.item_id: encode_vector(vectors[m.item_id], model.version, m.text_digest())
               for m in todo if m.item_id in vectors}
        statuses = await store.put(changes, raw)
    except STORE_ERRORS:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "store unavailable; retry (writes are idempotent)") from None
    await _apply_now(state)
    return statuses


async def _apply_now(state: AppState) -> None:
    """This process serves its own write at once; the others within their next poll."""
    with contextlib.suppress(*STORE_ERRORS):
        await state.catalogue.poll()


def _served(state: AppState, item_id: str) -> ItemOut:
    model = state.models.current
    view = state.catalog(model).view(item_id)
    record = state.catalogue.records.get(item_id)
    if record is not None and record.withdrawn:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id!r} was withdrawn")
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown item {item_id!r}")
    return ItemOut(item_id=item_id, title=view.title, category=view.category,
                   tags=list(record.tags) if record is not None else [],
                   description=record.description if record is not None else "",
                   available=view.available, known_to_model=view.known_to_model,
                   vector_source=view.vector_source)  # type: ignore[arg-type]
