"""Redis memory per user and per event, measured with MEMORY USAGE on keys the service's own
store code writes (RedisStore.apply, save_states) into a redis-server of this tool's own.

    python -m bench.memory [--id-len 8] [--events 10000]

Prints one markdown table: each per-user key kind at its bound (the default settings), and the
bytes one event adds to the log and the de-duplication markers."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings
from app.store.keys import log_partition, log_partition_tags
from app.store.redis_store import Event, RedisStore, VectorState, connect, decode_history
from app.tools.local_redis import LocalRedis
from bench.common import machine, table

DIM = 129  # the shipped demo model's embedding size
FRIENDS = 200  # friend-list size measured (the list has no cap: bytes per friend matter)
MARKER_EVENTS = 1000  # events of one user within the de-duplication TTL


def ident(kind: str, n: int, length: int) -> str:
    return f"{kind}{n:0{max(1, length - len(kind))}d}"[:max(length, len(kind) + 1)]


async def measure(settings: Settings, id_len: int, events: int) -> list[list[str]]:
    store = RedisStore(connect(settings.model_copy(update={"redis_timeout_s": 30.0})), settings)
    k, u = store.keys, ident("u", 0, id_len)

    def part(user: str) -> str:
        return log_partition(user, settings.log_partitions)
    usage = store.client.memory_usage

    async def bytes_of(key: str) -> int:
        return int(await usage(key, samples=0) or 0)

    # The user: history and seen set at their caps (one event per new item, as live traffic
    # grows them), friends, followers, a cached vector, markers for MARKER_EVENTS events.
    items = [ident("p", n, id_len) for n in range(settings.seen_len)]
    for start in range(0, len(items), 500):
        await store.apply([Event(ident("e", n, id_len), u, "view", item_id=item,
                                 timestamp=1.7e9 + n)
                           for n, item in enumerate(items[start:start + 500], start)])
    await store.apply([Event(ident("f", n, id_len), u, "follow", friend_id=ident("v", n, id_len))
                       for n in range(FRIENDS)])
    await store.apply([Event(ident("g", n, id_len), ident("v", n, id_len), "follow",
                             friend_id=u) for n in range(FRIENDS)])
    hist = settings.history_len
    read = decode_history(await store.client.hgetall(k.history(u)))
    await store.save_states({u: VectorState(np.zeros(DIM, np.float32), np.arange(hist),
                                            np.ones(hist, np.float32), read)}, "m-000000000000")
    marked = settings.seen_len + FRIENDS
    rows = [["key (per user)", "bound", "bytes (MEMORY USAGE)"],
            ["`:hist`", f"{hist} items (`SOCIALREC_HISTORY_LEN`)",
             f"{await bytes_of(k.history(u)):,}"],
            ["`:seen`", f"{settings.seen_len} items (`SOCIALREC_SEEN_LEN`)",
             f"{await bytes_of(k.seen(u)):,}"],
            ["`:vec`", f"one vector ({DIM} floats) + {hist} items; TTL 7 days",
             f"{await bytes_of(k.vector(u)):,}"],
            ["`:friends`", f"{FRIENDS} friends (grows with the friends followed)",
             f"{await bytes_of(k.friends(u)):,}"],
            ["`:followed`", f"{FRIENDS} users followed", f"{await bytes_of(k.followed(u)):,}"],
            ["`:followers`", f"{FRIENDS} followers", f"{await bytes_of(k.followers(u)):,}"],
            ["`:applied`", f"{marked} events within `SOCIALREC_DEDUP_TTL_S`",
             f"{await bytes_of(k.applied(u)):,}"],
            ["`{log:…}:ev:<user>`", f"{marked} events within `SOCIALREC_DEDUP_TTL_S`",
             f"{await bytes_of(k.logged(part(u), u)):,}"]]

    async def log_bytes() -> tuple[int, int]:
        """Bytes and entries of the whole log, every partition."""
        tags = log_partition_tags(settings.log_partitions)
        return (sum([await bytes_of(k.events(t)) for t in tags]),
                sum([await store.client.xlen(k.events(t)) for t in tags]))

    # Per event: the log entry (stream memory over many users' events) and both markers.
    before, logged = await log_bytes()
    users = [ident("w", n, id_len) for n in range(events // 10)]
    for start in range(0, events, 1000):
        await store.apply([Event(ident("e", n, id_len), users[n % len(users)], "purchase",
                                 item_id=items[n % len(items)], value=1.0,
                                 timestamp=1.7e9 + n)
                           for n in range(start, min(events, start + 1000))])
    after, entries = await log_bytes()
    stream = (after - before) / (entries - logged)
    one = [(await bytes_of(k.applied(w)) + await bytes_of(k.logged(part(w), w))) / 10
           for w in users[:50]]
    rows += [["per event: log entry", f"`SOCIALREC_STREAM_MAXLEN` ({settings.stream_maxlen:,})",
              f"{stream:,.0f}"],
             ["per event: both markers (users with 10 events each)",
              "until `SOCIALREC_DEDUP_TTL_S`", f"{float(np.mean(one)):,.0f}"]]
    await store.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id-len", type=int, default=8, help="length of every id (max 128)")
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, LocalRedis(Path(tmp)) as server:
        settings = Settings(redis_url=server.url, key_prefix="mem")
        rows: Any = asyncio.run(measure(settings, args.id_len, args.events))
        version = redis_version(server.url)
    print(f"ids of {args.id_len} characters, default settings, Redis {version}; "
          f"{machine(('redis',))}")
    print(table(rows))


def redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


if __name__ == "__main__":
    main()
