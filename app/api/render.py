"""The items of a list as the API shows them (/recommend and /items/{id}/similar alike)."""

from __future__ import annotations

from typing import Any

from app.serving.catalog import CatalogView
from app.serving.pipeline import Basis, Scored


def item_body(catalog: CatalogView, s: Scored, explain: bool, friend_ids: bool,
              personal: bool = False) -> dict[str, Any]:
    """A `RecommendedItem` as a plain dict (written straight to JSON), described as the live
    catalogue says. `personal`: the list was made from the user's own history, so an item it
    carried is "similar to history"."""
    item_id, title, category = catalog.describe(s.item)
    item: dict[str, Any] = {"item_id": item_id, "score": round(s.score, 6)}
    if title:
        item["title"] = title
    if category:
        item["category"] = category
    if explain:
        item["reasons"] = reasons(s, personal, friend_ids)
    return item


def reasons(s: Scored, personal: bool, friend_ids: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if s.friends:
        engaged: dict[str, Any] = {"kind": "friends_engaged", "friend_count": len(s.friends)}
        if friend_ids:
            engaged["friends"] = list(s.friends)
        out.append(engaged)
    if s.popular or s.basis is Basis.POPULARITY:
        out.append({"kind": "popular"})
    elif s.basis is Basis.ITEM:
        out.append({"kind": "similar_to_item"})
    elif s.basis is Basis.HISTORY and personal:
        out.append({"kind": "similar_to_history"})
    elif s.basis is Basis.FRIENDS and not s.friends:
        out.append({"kind": "friends_taste"})
    return out
