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

    def logged(self, user_id: str) -> str:
        """ZSET event_id → expiry: this user's events already in the log. In the log's slot,
        keyed like `applied` by user, so both steps de-duplicate the same events."""
        return f"{self.prefix}:{{log}}:ev:{user_id}"

    def user_keys(self, user_id: str) -> tuple[str, ...]:
        """Every key in the user's slot that holds the user's data."""
        return (self.history(user_id), self.friends(user_id), self.vector(user_id),
                self.seen(user_id), self.applied(user_id), self.followers(user_id),
                self.followed(user_id))

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
