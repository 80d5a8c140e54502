"""`socialrec delete-user`: the operator's erasure, the same store code as `DELETE /users/{id}`."""

from __future__ import annotations

import asyncio

from app.config import Settings
from app.events import ID_PATTERN, ID_RE
from app.store.redis_store import Erased, RedisStore, connect


class UserIdError(ValueError):
    """Not an id the service accepts."""


def delete_user(user_id: str, redis_url: str | None = None,
                settings: Settings | None = None) -> Erased:
    """Erase one user (app.store.redis_store RedisStore.erase); raises UserIdError for an id
    the service could never have accepted, a Redis error when Redis fails."""
    if not ID_RE.match(user_id):
        raise UserIdError(f"user_id {user_id!r} is not a valid id (pattern {ID_PATTERN})")
    settings = settings or Settings()
    if redis_url is not None:
        settings = settings.model_copy(update={"redis_url": redis_url})
    return asyncio.run(_erase(settings, user_id))


async def _erase(settings: Settings, user_id: str) -> Erased:
    # Each call is one script over at most a page of the log: the service's short timeout
    # would do, but an operator's command may wait longer for a busy Redis.
    patient = settings.model_copy(update={"redis_timeout_s": max(5.0,
                                                                 settings.redis_timeout_s)})
    store = RedisStore(connect(patient), patient)
    try:
        return await store.erase(user_id)
    finally:
        await store.close()
