"""The items' JSON is written from per-item parts memoised per catalogue state: the same bytes
as orjson writes for the plain dicts, and a catalogue change shows at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.api.render import items_json, reasons
from app.serving.artifacts import ModelArtifacts
from app.serving.catalog import CatalogView
from app.serving.pipeline import Basis, Scored
from app.store.catalog import CatalogItem


def plain(catalog: CatalogView, items: list[Scored], explain: bool, friend_ids: bool,
          personal: bool) -> bytes:
    """The dicts the API wrote before, one per item."""
    out = []
    for s in items:
        item_id, title, category = catalog.describe(s.item)
        item: dict[str, Any] = {"item_id": item_id, "score": round(s.score, 6)}
        if title:
            item["title"] = title
        if category:
            item["category"] = category
        if explain:
            item["reasons"] = reasons(s, personal, friend_ids)
        out.append(item)
    return orjson.dumps(out)


def test_items_json_is_the_plain_dicts_bytes_and_follows_the_catalogue(
        artifacts_dir: Path) -> None:
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    catalog = CatalogView(artifacts)
    catalog.apply(CatalogItem("live-1", title='A "quoted" é title', category=""),
                  np.ones(catalog.dim, dtype=np.float32))
    live = catalog.lookup("live-1")
    assert live is not None
    items = [Scored(0, 0.123456789, ("f1", "f2"), False, Basis.FRIENDS),
             Scored(live, -1.5, (), False, Basis.HISTORY),
             Scored(2, 3.0, (), True, Basis.POPULARITY),
             Scored(0, 1e-9, (), False, Basis.FRIENDS)]
    for explain in (False, True):
        for friend_ids in (False, True):
            for personal in (False, True):
                got = items_json(catalog, items, explain, friend_ids, personal)
                assert got == plain(catalog, items, explain, friend_ids, personal)
    first = catalog.item_id(0)
    catalog.apply(CatalogItem(first, title="Renamed", category="new-category"), None)
    body = orjson.loads(items_json(catalog, items[:1], False, False))
    assert body == [{"item_id": first, "score": 0.123457, "title": "Renamed",
                     "category": "new-category"}]
    assert items_json(catalog, [], False, False) == b"[]"
