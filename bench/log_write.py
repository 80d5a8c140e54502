"""Where event writes land on a Redis Cluster, and what they cost each master: the same events
stored through the service's own store code (RedisStore.apply: the log script and the state
script of every event) into a 3-master cluster of this tool's own, once with the log in one
partition (as before partitioning: one hot slot) and once with the default partition count.

    python -m bench.log_write [--events 60000] [--users 20000] [--batch 500] [--fsync always]

Prints, per layout and master: the log entries it holds and the Redis CPU time it spent
(`used_cpu_user + used_cpu_sys` from INFO: the server's own work, though a loaded machine
still inflates it), plus the CPU per event summed over the masters, and the memory of the log:
bytes per stream entry and per popularity count (one per item and partition). The events/s
figure is what this one Python client sent; it is bound by the client and the disk, not by
Redis. AOF is on (`appendfsync always` by default, as docs/OPERATIONS.md requires)."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import redis.cluster

from app.config import Settings
from app.store.keys import Keys, log_partition_tags
from app.store.redis_store import Event, RedisStore, connect
from app.tools.local_redis import LocalRedisCluster
from bench.common import machine, table


def events_of(n: int, users: int) -> list[Event]:
    return [Event(f"e{k}", f"user-{k * 7919 % users:06d}", "view", item_id=f"p{k % 5000:05d}",
                  timestamp=1.7e9 + k) for k in range(n)]


def cpu_by_master(client: redis.cluster.RedisCluster) -> dict[str, float]:
    return {node.name: float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            for node in client.get_primaries()
            for info in [client.info("cpu", target_nodes=node)]}


async def store_all(settings: Settings, events: list[Event], batch: int) -> float:
    """Seconds to store every event, batch by batch, as POST /events does."""
    store = RedisStore(connect(settings), settings)
    try:
        await store.register_log_partitions()
        start = time.perf_counter()
        for at in range(0, len(events), batch):
            await store.apply(events[at:at + batch])
        return time.perf_counter() - start
    finally:
        await store.close()


def measure(url: str, partitions: int, events: list[Event], batch: int) -> list[list[str]]:
    settings = Settings(redis_url=url, redis_cluster=True, key_prefix=f"lw{partitions}",
                        log_partitions=partitions, redis_timeout_s=30.0)
    client = redis.cluster.RedisCluster.from_url(url)
    try:
        before = cpu_by_master(client)
        seconds = asyncio.run(store_all(settings, events, batch))
        spent = {name: cpu - before[name] for name, cpu in cpu_by_master(client).items()}
        keys = Keys(settings.key_prefix)
        entries = dict.fromkeys(spent, 0)
        for tag in log_partition_tags(partitions):
            entries[client.get_node_from_key(keys.events(tag)).name] += int(
                client.xlen(keys.events(tag)))
        stream = sum(int(client.memory_usage(keys.events(t), samples=0) or 0)
                     for t in log_partition_tags(partitions))
        pops = [keys.popularity(t) for t in log_partition_tags(partitions)]
        counts = sum(int(client.zcard(p)) for p in pops)
        pop = sum(int(client.memory_usage(p, samples=0) or 0) for p in pops)
    finally:
        client.close()
    total = sum(spent.values())
    rows = [[f"{partitions}", name, f"{entries[name]:,} ({entries[name] / len(events):.0%})",
             f"{spent[name]:.2f} s ({spent[name] / total:.0%})"] for name in sorted(spent)]
    rows.append([f"{partitions}", "all", f"{sum(entries.values()):,}",
                 f"{total:.2f} s = {total / len(events) * 1e6:.0f} µs/event; client "
                 f"{len(events) / seconds:,.0f} events/s"])
    rows.append([f"{partitions}", "memory", f"{stream / len(events):.0f} B per entry",
                 f"popularity: {counts:,} counts, {pop / counts:.0f} B each"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--fsync", choices=("always", "everysec"), default="always")
    args = parser.parse_args(argv)
    events = events_of(args.events, args.users)
    default = Settings.model_fields["log_partitions"].default
    rows = [["log partitions", "master", "log entries", "Redis CPU"]]
    with tempfile.TemporaryDirectory() as tmp, \
            LocalRedisCluster(Path(tmp), appendonly=True,
                              extra=("--appendfsync", args.fsync)) as cluster:
        for partitions in (1, default):
            rows += measure(cluster.url, partitions, events, args.batch)
    print(f"{args.events:,} view events of {args.users:,} users in batches of {args.batch}, "
          f"3 masters, AOF fsync {args.fsync}; load {os.getloadavg()[0]:.1f}; "
          f"{machine(('redis',))}")
    print(table(rows))


if __name__ == "__main__":
    main()
