"""Read the synthetic dataset the way a test reasons about it: by ids and categories."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path


def item_categories(data_dir: Path) -> dict[str, str]:
    with (data_dir / "items.csv").open(encoding="utf-8") as fh:
        return {r["item_id"]: r["category"] for r in csv.DictReader(fh)}


def histories(data_dir: Path, event: str | None = None) -> dict[str, set[str]]:
    """Items each user interacted with (only through `event` when given)."""
    out: dict[str, set[str]] = defaultdict(set)
    with (data_dir / "interactions.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if event is None or r["event"] == event:
                out[r["user_id"]].add(r["item_id"])
    return out


def purchases(data_dir: Path) -> dict[str, set[str]]:
    return histories(data_dir, "purchase")


def friends(data_dir: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    with (data_dir / "social.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            out[r["user_id"]].append(r["friend_id"])
    return out


def category_profile(items: set[str], categories: dict[str, str]) -> Counter[str]:
    return Counter(categories[i] for i in items)
