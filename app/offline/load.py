"""`socialrec load`: bootstrap Redis with a dataset's histories and friendships."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from app.config import Settings
from app.events import type_weights
from app.offline.dataset import Dataset, load_dataset
from app.serving.artifacts import read_manifest
from app.store.bulk import UserSnapshot, replace_users, sync_client
from app.store.keys import Keys

BATCH_USERS = 500


def load_into_redis(artifact_dir: Path, data_dir: Path, redis_url: str | None = None,
                    settings: Settings | None = None, progress: bool = True) -> int:
    """Write every user's recent history (capped, recency preserved), seen set and friends in
    pipelined batches, weighing events as the service does. Existing keys of the same users are
    replaced, so loading twice is harmless. Returns the number of users written."""
    settings = settings or Settings()
    manifest = read_manifest(artifact_dir)
    data = load_dataset(data_dir, type_weights(settings.event_weights, manifest.event_weights))
    client = sync_client(redis_url, settings)
    keys = Keys(settings.key_prefix)
    try:
        with tqdm(total=data.n_users, desc="load users", disable=not progress) as bar:
            for start in range(0, data.n_users, BATCH_USERS):
                batch = range(start, min(start + BATCH_USERS, data.n_users))
                replace_users(client, keys, [_snapshot(data, u) for u in batch], settings)
                bar.update(len(batch))
    finally:
        client.close()
    return data.n_users


def _snapshot(data: Dataset, u: int) -> UserSnapshot:
    items, users = data.items.ids, data.users.ids
    return UserSnapshot(user_id=users[u],
                        history=[(items[i], w) for i, w in data.histories[u]],
                        friends=[(users[f], w) for f, w in data.friends[u]])
