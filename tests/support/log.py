"""The partitioned event log as tests read it: every entry through the export's own reader,
the live counts summed over every partition."""

from __future__ import annotations

from collections import Counter
from typing import cast

from app.config import Settings
from app.store.bulk import read_log, sync_client
from app.store.keys import Keys, readable_log_tags


def log_fields(settings: Settings) -> list[dict[str, str]]:
    """Every log entry's fields, in the export's order."""
    client = sync_client(None, settings)
    try:
        return [f for page in read_log(client, Keys(settings.key_prefix)) for f in page]
    finally:
        client.close()


def live_counts(settings: Settings) -> Counter[str]:
    """Item id → behaviour events counted, summed over the partitions."""
    keys = Keys(settings.key_prefix)
    client = sync_client(None, settings)
    counts: Counter[str] = Counter()
    try:
        for tag in readable_log_tags(cast("set[bytes]", client.smembers(keys.log_partitions))):
            scored = cast("list[tuple[bytes, float]]",
                          client.zrange(keys.popularity(tag), 0, -1, withscores=True))
            for item, count in scored:
                counts[item.decode()] += int(count)
    finally:
        client.close()
    return counts
