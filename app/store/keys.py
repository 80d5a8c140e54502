"""Every Redis key the service uses. Per-user keys carry the hash tag `{u:ID}` so one user's
keys live in one Redis Cluster slot and a per-user Lua script stays legal there.

The event log is partitioned by user: partition P of N has the hash tag `log:N:P:J` (J picks a
slot in the middle of the P-th of N equal slot ranges, so a cluster whose masters hold equal
slot ranges, as `redis-cli --cluster create` makes them, gets the partitions evenly). Each
partition holds a stream, a popularity count and the "logged" markers of its users. The
unpartitioned layout (tag `log`) is still read, and every tag ever written is registered in
`log_partitions`, so readers find every partition whatever N writers use now.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# The hash tag of the log before it was partitioned: readers always include it.
LEGACY_LOG_TAG = "log"


@functools.cache
def log_partition_tags(n: int) -> tuple[str, ...]:
    """The hash tags of the N log partitions. Part of the stored layout: never change how they
    are derived (a changed derivation would write to partitions nobody registered before)."""
    if n < 1:
        raise ValueError(f"log partitions must be at least 1, not {n}")
    tags = []
    for p in range(n):
        low = p * REDIS_CLUSTER_HASH_SLOTS // n
        width = max(1, (p + 1) * REDIS_CLUSTER_HASH_SLOTS // n - low)
        window = range(low + width // 4, low + width // 4 + max(1, width // 2))
        j = 0
        while key_slot(f"log:{n}:{p}:{j}".encode()) not in window:
            j += 1
        tags.append(f"log:{n}:{p}:{j}")
    return tuple(tags)


def log_partition(user_id: str, n: int) -> str:
    """The tag of the partition that logs this user's events when the log has N partitions."""
    return log_partition_tags(n)[zlib.crc32(user_id.encode()) % n]


def readable_log_tags(registered: Iterable[bytes | str]) -> list[str]:
    """Every partition a reader must read: the registered ones and the unpartitioned log,
    in a fixed order (export ties are broken by it)."""
    tags = {t.decode() if isinstance(t, bytes) else t for t in registered}
    return sorted(tags | {LEGACY_LOG_TAG})


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sr"

    def history(self, user_id: str) -> str:
        """HASH item_id → "weight:recency" (capped at the configured history length)."""
        return f"{self.prefix}:{{u:{user_id}}}:hist"

    def friends(self, user_id: str) -> str:
        """HASH friend_id → tie weight (directed: whom this user follows)."""
        return f"{self.prefix}:{{u:{user_id}}}:friends"

    def vector(self, user_id: str) -> str:
        """STRING model_version + 0x01 + the user's own encoder output and the history it was
        encoded from (app.store.redis_store.encode_state)."""
        return f"{self.prefix}:{{u:{user_id}}}:vec"

    def seen(self, user_id: str) -> str:
        """STRING of 8-byte item tags (app.store.seen), oldest first: every item the user had
        behaviour with, bounded far beyond the history, for excluding seen items."""
        return f"{self.prefix}:{{u:{user_id}}}:seen"

    def followers(self, user_id: str) -> str:
        """SET of the users who have followed this user (the reverse of `friends`, so an
        erasure finds the friend lists that name the user). Only ever grows until one of the
        pair is erased: an unfollow keeps the pair, because removing it here could race a
        follow of the same pair still landing in the follower's slot. A superset is safe:
        the erasure's delete of an absent entry does nothing."""
        return f"{self.prefix}:{{u:{user_id}}}:followers"

    def followed(self, user_id: str) -> str:
        """SET of the users this user has followed (kept after unfollows, like `followers`):
        whose `followers` sets name this user."""
        return f"{self.prefix}:{{u:{user_id}}}:followed"

    def applied(self, user_id: str) -> str:
        """ZSET event_id → expiry (unix seconds): this user's events that already changed the
        user's state. In the user's slot so the check and the writes are one atomic script;
        one key per user, so an erasure finds every marker without scanning."""
        return f"{self.prefix}:{{u:{user_id}}}:applied"

    def logged(self, tag: str, user_id: str) -> str:
        """ZSET event_id → expiry: this user's events already in the log partition `tag`. In
        the partition's slot, keyed like `applied` by user, so both steps de-duplicate the same
        events."""
        return f"{self.prefix}:{{{tag}}}:ev:{user_id}"

    def ranked(self, user_id: str) -> str:
        """STRING, expiring: the user's ranked list (model version + the format byte + the list,
        app.serving.ranked) or, while one request computes it, a lease (0x00 + a token). Every
        event of the user deletes it (app.store.scripts APPLY_EVENT)."""
        return f"{self.prefix}:{{u:{user_id}}}:list"

    def vector_key_parts(self) -> tuple[str, str]:
        """What comes before and after a user id in `vector` keys, for a script that reads
        the vectors of users it learns of (the friends named in a friend list)."""
        head, tail = self.vector("\0").split("\0")
        return head, tail

    def user_keys(self, user_id: str) -> tuple[str, ...]:
        """Every key in the user's slot that holds the user's data."""
        return (self.history(user_id), self.friends(user_id), self.vector(user_id),
                self.seen(user_id), self.applied(user_id), self.followers(user_id),
                self.followed(user_id), self.ranked(user_id))

    def events(self, tag: str) -> str:
        """STREAM: one partition of the durable event log retraining reads."""
        return f"{self.prefix}:{{{tag}}}:events"

    def popularity(self, tag: str) -> str:
        """ZSET item_id → behaviour events seen live in partition `tag` (in the partition's
        slot, counted once; the live count of an item is the sum over partitions)."""
        return f"{self.prefix}:{{{tag}}}:pop"

    @property
    def log_partitions(self) -> str:
        """SET of every log partition tag ever written to: writers add theirs before their
        first event, so a reader that reads these (and the unpartitioned log) misses no entry,
        whatever partition count each writer was configured with."""
        return f"{self.prefix}:log:partitions"

    @property
    def reload(self) -> str:
        """HASH generation, version, origin: the last model reload an API process accepted.
        Every API process polls it and loads the same version (workers and replicas alike)."""
        return f"{self.prefix}:model:reload"

    def catalog_item(self, item_id: str) -> str:
        """HASH title, category, tags (JSON list), description, available, withdrawn (0/1),
        gen (the generation of its last change) and vector (the text vector and the model
        version that computed it, app.store.catalog.encode_vector). Every catalogue key is in
        the `{cat}` slot, so a bulk write is one script."""
        return f"{self.prefix}:{{cat}}:item:{item_id}"

    @property
    def catalog_changes(self) -> str:
        """ZSET item_id → generation of the item's last change: what every process polls."""
        return f"{self.prefix}:{{cat}}:changes"

    @property
    def catalog_generation(self) -> str:
        """STRING: the last catalogue generation handed out."""
        return f"{self.prefix}:{{cat}}:gen"
