"""Stored lists expire spread over the last fifth of SOCIALREC_CACHE_TTL_S, never after it."""

from __future__ import annotations

import random

from app.serving.online import LIST_TTL_JITTER, list_ttl_ms


def test_list_lifetimes_are_spread_and_never_past_the_ttl() -> None:
    rng = random.Random(0)
    lifetimes = [list_ttl_ms(30, rng.random()) for _ in range(2000)]
    assert max(lifetimes) <= 30_000
    assert min(lifetimes) >= 30_000 * (1 - LIST_TTL_JITTER)
    # spread over the whole window, not a handful of values
    assert max(lifetimes) - min(lifetimes) > 0.9 * 30_000 * LIST_TTL_JITTER
    assert len(set(lifetimes)) > 1000
    assert list_ttl_ms(1, 0.999) >= 1
