"""`socialrec load`: bootstrap Redis with a dataset's histories and friendships."""

from __future__ import annotations

from pathlib import Path

import redis
from redis.cluster import ClusterPipeline, RedisCluster
from tqdm import tqdm

from app.config import DEFAULT_EVENT_WEIGHTS, Settings
from app.offline.dataset import Dataset, load_dataset
from app.serving.artifacts import read_manifest
from app.store.keys import Keys
from app.store.redis_store import history_entry

BATCH_USERS = 500


def sync_client(url: str | None, settings: Settings) -> redis.Redis | RedisCluster:
    """A blocking client for the offline commands; a cluster client when the settings say
    `redis_cluster` (then `url` is any seed node)."""
    options = {"socket_timeout": max(5.0, settings.redis_timeout_s)}
    if settings.redis_cluster:
        client: redis.Redis | RedisCluster = RedisCluster.from_url(
            url or settings.redis_url, **options)
    else:
        client = redis.Redis.from_url(url or settings.redis_url, **options)
    try:
        client.ping()
    except BaseException:
        client.close()
        raise
    return client


def load_into_redis(artifact_dir: Path, data_dir: Path, redis_url: str | None = None,
                    settings: Settings | None = None, progress: bool = True) -> int:
    """Write every user's recent history (capped, recency preserved) and friends in pipelined
    batches. Existing keys of the same users are replaced, so loading twice is harmless.
    Returns the number of users written."""
    settings = settings or Settings()
    manifest = read_manifest(artifact_dir)
    data = load_dataset(data_dir, settings.event_weights or manifest.event_weights
                        or DEFAULT_EVENT_WEIGHTS)
    client = sync_client(redis_url, settings)
    keys = Keys(settings.key_prefix)
    users = range(data.n_users)
    try:
        with tqdm(total=data.n_users, desc="load users", disable=not progress) as bar:
            for start in range(0, data.n_users, BATCH_USERS):
                pipe = client.pipeline(transaction=False)
                for u in users[start: start + BATCH_USERS]:
                    _write_user(pipe, keys, data, u, settings.history_len)
                pipe.execute()
                bar.update(min(BATCH_USERS, data.n_users - start))
    finally:
        client.close()
    return data.n_users


def _write_user(pipe: redis.client.Pipeline | ClusterPipeline, keys: Keys, data: Dataset,
                u: int, cap: int) -> None:
    user_id = data.users.ids[u]
    history = data.histories[u][:cap]
    for key in (keys.history(user_id), keys.friends(user_id), keys.vector(user_id)):
        pipe.delete(key)
    if history:
        # Dataset order becomes recency 1..n (older than any live event's unix time).
        n = len(history)
        pipe.hset(keys.history(user_id), mapping={
            data.items.ids[i]: history_entry(w, n - rank) for rank, (i, w) in enumerate(history)})
    if data.friends[u]:
        pipe.hset(keys.friends(user_id),
                  mapping={data.users.ids[f]: w for f, w in data.friends[u]})
