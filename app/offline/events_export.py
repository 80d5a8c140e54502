"""`socialrec events-export`: the durable event log back into the dataset layout, so that
retraining consumes live behaviour — and the live catalogue as items.csv, so that it learns the
products added through the catalogue API."""

from __future__ import annotations

import csv
from pathlib import Path

import redis
from redis.cluster import RedisCluster
from tqdm import tqdm

from app.config import Settings
from app.events import SOCIAL_TYPES
from app.store.bulk import read_catalogue, read_log, sync_client
from app.store.keys import Keys

INTERACTION_HEADER = ["user_id", "item_id", "event", "value", "timestamp", "event_id"]
SOCIAL_HEADER = ["user_id", "friend_id", "weight", "event", "timestamp", "event_id"]
ITEM_HEADER = ["item_id", "title", "category", "tags"]


def export_events(out_csv: Path, redis_url: str | None = None,
                  settings: Settings | None = None, progress: bool = True) -> tuple[int, int]:
    """Write behaviour rows to `out_csv` and follow/unfollow rows to `social_events.csv`
    beside it, in log order, and the live catalogue to `items.csv` beside it
    (`export_catalogue`). Returns (behaviour rows, social rows)."""
    settings = settings or Settings()
    client = sync_client(redis_url, settings)
    social_path = out_csv.with_name("social_events.csv")
    counts = [0, 0]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    try:
        with out_csv.open("w", newline="", encoding="utf-8") as fi, \
                social_path.open("w", newline="", encoding="utf-8") as fs, \
                tqdm(desc="export events", unit="ev", disable=not progress) as bar:
            interactions, social = csv.writer(fi), csv.writer(fs)
            interactions.writerow(INTERACTION_HEADER)
            social.writerow(SOCIAL_HEADER)
            for page in read_log(client, Keys(settings.key_prefix)):
                for f in page:
                    if f["type"] in SOCIAL_TYPES:
                        social.writerow([f["user_id"], f["friend_id"], f["value"] or "1",
                                         f["type"], f["timestamp"], f["event_id"]])
                        counts[1] += 1
                    else:
                        interactions.writerow([f["user_id"], f["item_id"], f["type"],
                                               f["value"], f["timestamp"], f["event_id"]])
                        counts[0] += 1
                bar.update(len(page))
        export_catalogue(client, Keys(settings.key_prefix), out_csv.with_name("items.csv"))
    finally:
        client.close()
    return counts[0], counts[1]


def export_catalogue(client: redis.Redis | RedisCluster, keys: Keys, path: Path) -> int:
    """The items the catalogue API described, in the dataset's items.csv layout: one row per
    item with a title, category or tags (records that only set availability have none), the
    item's latest state, withdrawn and unavailable items included — availability is the
    service's to apply, and a model that learned them loses nothing. Returns the rows."""
    latest = {item.item_id: item for item in read_catalogue(client, keys)}
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(ITEM_HEADER)
        for item in latest.values():
            if item.title or item.category or item.tags:
                out.writerow([item.item_id, item.title, item.category, ";".join(item.tags)])
                rows += 1
    return rows
