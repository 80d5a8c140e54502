"""Every place under a key prefix where a string still appears: key names and contents of every
type the service writes (strings, hashes, sets, sorted sets, streams)."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster


def holders(client: redis.Redis | RedisCluster, prefix: str, needle: str) -> list[str]:
    """The keys under `prefix` whose name or content contains `needle` (a cluster client
    scans every node)."""
    found = []
    raw = needle.encode()
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        if raw in key or any(raw in part for part in _contents(client, key)):
            found.append(key.decode(errors="replace"))
    return sorted(found)


def _contents(client: Any, key: bytes) -> list[bytes]:
    kind = client.type(key).decode()
    if kind == "string":
        return [client.get(key) or b""]
    if kind == "hash":
        return [b for kv in client.hgetall(key).items() for b in kv]
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    if kind == "stream":
        return [b for _, fields in client.xrange(key) for kv in fields.items() for b in kv]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    return []  # the key expired between SCAN and TYPE
