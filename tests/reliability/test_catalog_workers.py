"""Availability across `socialrec serve --workers 2`: random catalogue changes sent to either
worker, random requests to either worker, and no item is ever served more than the propagation
window after a change made it unavailable."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.offline.load import load_into_redis
from tests.reliability.test_workers import served_versions, wait_for
from tests.support import data
from tests.support.auth import CATALOG, CATALOG_TOKEN
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.slow

# The documented bound: each process polls the catalogue every 0.25 s.
WINDOW_S = 1.0
ROUNDS = 60


def fresh(method: str, url: str, **kwargs: object) -> httpx.Response:
    """A new connection each time, so the kernel hands it to either worker."""
    return httpx.request(method, url, timeout=10.0, **kwargs)  # type: ignore[arg-type]


def test_no_unavailable_item_is_served_after_the_window_by_any_worker(
        serve: Callable[..., ServeProcess], redis_url: str, key_prefix: str,
        artifacts_dir: Path, synth_dir: Path) -> None:
    load_into_redis(artifacts_dir, synth_dir, settings=Settings(
        redis_url=redis_url, key_prefix=key_prefix, artifacts=artifacts_dir), progress=False)
    server: ServeProcess = serve(redis_url, workers=2, SOCIALREC_KEY_PREFIX=key_prefix,
                                 SOCIALREC_CATALOG_TOKEN=CATALOG_TOKEN).start()
    wait_for(lambda: len(served_versions(server)) == 2, within=60.0)
    users = ["nobody-known", *sorted(data.histories(synth_dir))[:5]]
    pool: list[str] = []
    for user in users:
        body = fresh("GET", f"{server.url}/recommend/{user}?k=10").json()
        pool += [i["item_id"] for i in body["items"] if i["item_id"] not in pool]
    rng = random.Random(13)
    changes: dict[str, list[tuple[float, bool]]] = {}  # item → (acknowledged at, served)
    checked = violations = 0
    for _ in range(ROUNDS):
        item = rng.choice(pool)
        served = rng.random() < 0.4
        if served:
            response = fresh("PUT", f"{server.url}/items/{item}", json={"available": True},
                             headers=CATALOG)
        elif rng.random() < 0.5:
            response = fresh("PUT", f"{server.url}/items/{item}", json={"available": False},
                             headers=CATALOG)
        else:
            response = fresh("DELETE", f"{server.url}/items/{item}", headers=CATALOG)
        assert response.status_code == 200, response.text
        changes.setdefault(item, []).append((time.monotonic(), served))
        for _ in range(rng.randint(1, 6)):
            user = rng.choice(users)
            sent = time.monotonic()
            # every list route: /recommend and /items/{id}/similar, with and without a user
            path = (f"/recommend/{user}?k=20" if rng.random() < 0.5 else
                    f"/items/{rng.choice(pool)}/similar?k=20&user_id={user}"
                    if rng.random() < 0.5 else f"/items/{rng.choice(pool)}/similar?k=20")
            body = fresh("GET", server.url + path).json()
            for shown in (i["item_id"] for i in body["items"]):
                history = changes.get(shown, [])
                settled = [s for t, s in history if t <= sent - WINDOW_S]
                recent = [s for t, s in history if t > sent - WINDOW_S]
                if settled and not settled[-1] and not any(recent):
                    violations += 1
                checked += 1
    assert checked > 0
    assert violations == 0
    # everything made available again comes back
    for item in pool:
        fresh("PUT", f"{server.url}/items/{item}", json={"available": True}, headers=CATALOG)
    time.sleep(WINDOW_S)
    first = pool[0]
    assert all(first in {i["item_id"] for i in fresh(
        "GET", f"{server.url}/recommend/nobody-known?k=20").json()["items"]} for _ in range(6))
