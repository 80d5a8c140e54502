"""Read the synthetic dataset the way a test reasons about it: by ids and categories."""

from __future__ import annotations

import csv
import random
import shutil
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


def main_category_user(data_dir: Path, category: str) -> str:
    """A user most of whose history is in `category`."""
    cats = item_categories(data_dir)
    for user, items in sorted(histories(data_dir).items()):
        profile = category_profile(items, cats)
        if len(items) >= 5 and profile.most_common(1)[0][0] == category \
                and profile[category] >= 0.6 * len(items):
            return user
    raise AssertionError(f"no user mostly in {category}")


def split_by_time(data_dir: Path, base_dir: Path, live_share: float,
                  live_from: float) -> list[dict[str, str | float]]:
    """Write the older rows of `data_dir` as a base dataset into `base_dir` (with its
    social.csv and items.csv) and return the newest `live_share` of the rows as events for
    POST /events, their timestamps moved to start at `live_from` in the same order."""
    with (data_dir / "interactions.csv").open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = sorted(reader, key=lambda r: float(r["timestamp"]))
    cut = len(rows) - round(live_share * len(rows))
    base_dir.mkdir(parents=True, exist_ok=True)
    with (base_dir / "interactions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[:cut])
    for name in ("social.csv", "items.csv"):
        shutil.copyfile(data_dir / name, base_dir / name)
    shift = live_from - float(rows[cut]["timestamp"])
    live: list[dict[str, str | float]] = [
        {"event_id": f"live-{n}", "user_id": r["user_id"], "type": r["event"],
         "item_id": r["item_id"], "timestamp": float(r["timestamp"]) + shift,
         **({"value": float(r["value"])} if r["value"] else {})}
        for n, r in enumerate(rows[cut:])]
    return live


def scramble_items(data_dir: Path, out_dir: Path, seed: int = 0) -> None:
    """A copy of a dataset whose interactions name the wrong items (a broken export): every
    row's item id replaced by another row's, at random."""
    shutil.copytree(data_dir, out_dir)
    with (data_dir / "interactions.csv").open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    items = [r["item_id"] for r in rows]
    random.Random(seed).shuffle(items)
    with (out_dir / "interactions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(r | {"item_id": i} for r, i in zip(rows, items, strict=True))
