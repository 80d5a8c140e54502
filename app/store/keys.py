"""Every Redis key the service uses. Per-user keys carry the hash tag `{u:ID}` so one user's
keys live in one Redis Cluster slot and a per-user Lua script stays legal there."""

from __future__ import annotations

from dataclasses import dataclass


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

    def applied(self, user_id: str, event_id: str) -> str:
        """Marker (with a TTL): this user's event already changed the user's state. In the
        user's slot so the check and the writes are one atomic script."""
        return f"{self.prefix}:{{u:{user_id}}}:ev:{event_id}"

    def logged(self, user_id: str, event_id: str) -> str:
        """Marker (with a TTL): this user's event is already in the log. In the log's slot,
        keyed like `applied` by (user, event id), so both steps de-duplicate the same events;
        the user id's length keeps the key unambiguous (ids may contain ':')."""
        return f"{self.prefix}:{{log}}:ev:{len(user_id)}:{user_id}:{event_id}"

    @property
    def events(self) -> str:
        """STREAM: the durable event log retraining reads."""
        return f"{self.prefix}:{{log}}:events"

    @property
    def popularity(self) -> str:
        """ZSET item_id → behaviour events seen live (kept in the log's slot, counted once)."""
        return f"{self.prefix}:{{log}}:pop"

    @property
    def reload(self) -> str:
        """HASH generation, version, origin: the last model reload an API process accepted.
        Every API process polls it and loads the same version (workers and replicas alike)."""
        return f"{self.prefix}:model:reload"
