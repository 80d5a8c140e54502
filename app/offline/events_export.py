"""`socialrec events-export`: the durable event log back into the dataset layout, so that
retraining consumes live behaviour."""

from __future__ import annotations

import csv
from pathlib import Path

from tqdm import tqdm

from app.config import Settings
from app.events import SOCIAL_TYPES
from app.store.bulk import read_log, sync_client
from app.store.keys import Keys

INTERACTION_HEADER = ["user_id", "item_id", "event", "value", "timestamp", "event_id"]
SOCIAL_HEADER = ["user_id", "friend_id", "weight", "event", "timestamp", "event_id"]


def export_events(out_csv: Path, redis_url: str | None = None,
                  settings: Settings | None = None, progress: bool = True) -> tuple[int, int]:
    """Write behaviour rows to `out_csv` and follow/unfollow rows to `social_events.csv`
    beside it, in log order. Returns (behaviour rows, social rows)."""
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
    finally:
        client.close()
    return counts[0], counts[1]
