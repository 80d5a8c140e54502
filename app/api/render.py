"""The items of a list as the API shows them (/recommend and /items/{id}/similar alike)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.serving.catalog import CatalogView
from app.serving.pipeline import Basis, Recommendation, Scored, Strategy

_MEMO = "item-json"
PERSONAL = {Strategy.PERSONAL, Strategy.PERSONAL_SOCIAL}


@dataclass(frozen=True, slots=True)
class ItemsJson:
    """/recommend's rendering of a list's items (app.serving.online `Render`)."""

    catalog: CatalogView
    explain: bool
    friend_ids: bool

    @property
    def key(self) -> int:
        return self.explain | self.friend_ids << 1

    def __call__(self, recommendation: Recommendation) -> bytes:
        return items_json(self.catalog, recommendation.items, self.explain, self.friend_ids,
                          personal=recommendation.strategy in PERSONAL)


def items_json(catalog: CatalogView, items: Sequence[Scored], explain: bool,
               friend_ids: bool, personal: bool = False) -> bytes:
    """The list's `RecommendedItem`s as one JSON array, described as the live catalogue says;
    the bytes orjson would write for the same dicts, key order included (`orjson.Fragment`
    puts them in a body). Each item's id,
    title and category are written to JSON once per catalogue state (the catalogue's memo),
    not for every request that shows it. `personal`: the list was made from the user's own
    history, so an item it carried is "similar to history"."""
    memo = catalog.memo(_MEMO)
    out = []
    for s in items:
        parts = memo.get(s.item)
        if parts is None:
            parts = memo[s.item] = _parts(catalog, s.item)
        head, tail = parts
        body = head + orjson.dumps(round(s.score, 6)) + tail
        if explain:
            body += b',"reasons":' + orjson.dumps(reasons(s, personal, friend_ids))
        out.append(body + b"}")
    return b"[" + b",".join(out) + b"]"


def _parts(catalog: CatalogView, item: int) -> tuple[bytes, bytes]:
    """What comes before an item's score and after it: `{"item_id":…,"score":` and
    `,"title":…,"category":…` (empty ones left out)."""
    item_id, title, category = catalog.describe(item)
    rest: dict[str, str] = {}
    if title:
        rest["title"] = title
    if category:
        rest["category"] = category
    return (orjson.dumps({"item_id": item_id})[:-1] + b',"score":',
            b"," + orjson.dumps(rest)[1:-1] if rest else b"")


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
