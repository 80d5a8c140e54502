"""POST /admin/reload: token checks, atomic swap under load, refusal of broken artifacts."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.config import Settings
from app.main import StartupError
from app.tools.local_redis import free_port
from tests.support.auth import ADMIN_TOKEN
from tests.support.client import app_client
from tests.support.models import replace_folder

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def own_artifacts(loaded: Settings, tmp_path: Path) -> Settings:
    """A private copy of the model folder, so a test may overwrite it."""
    folder = tmp_path / "live"
    shutil.copytree(loaded.artifacts, folder)
    return loaded.model_copy(update={"artifacts": folder})


async def traffic(client: httpx.AsyncClient, stop: asyncio.Event, statuses: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        response = await client.get(f"/recommend/u{n % 300:04d}", params={"k": 10})
        statuses.append(response.status_code)


async def test_admin_is_off_without_a_token(loaded: Settings) -> None:
    async with app_client(loaded.model_copy(update={"admin_token": None})) as client:
        response = await client.post("/admin/reload", headers=AUTH)
        assert response.status_code == 404


async def test_missing_or_wrong_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/admin/reload")).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * 30}
    assert (await client.post("/admin/reload", headers=wrong)).status_code == 403


@pytest.mark.parametrize("token", ["changeme", "", "   ", "short"])
def test_placeholder_tokens_are_refused_at_startup(token: str) -> None:
    with pytest.raises(ValidationError, match="SOCIALREC_ADMIN_TOKEN"):
        Settings(admin_token=token)


async def test_reload_swaps_the_model_with_no_failed_request(own_artifacts: Settings,
                                                            second_artifacts_dir: Path) -> None:
    async with app_client(own_artifacts) as client:
        old = (await client.get("/readyz")).json()["model_version"]
        stop = asyncio.Event()
        statuses: list[int] = []
        workers = [asyncio.create_task(traffic(client, stop, statuses)) for _ in range(4)]
        await asyncio.sleep(0.2)
        replace_folder(second_artifacts_dir, own_artifacts.artifacts)
        reloaded = await client.post("/admin/reload", headers=AUTH)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*workers)

        assert reloaded.status_code == 200, reloaded.text
        new = reloaded.json()["model_version"]
        assert new != old and reloaded.json()["previous_version"] == old
        assert (await client.get("/recommend/u0001")).json()["model_version"] == new
        assert len(statuses) > 10 and set(statuses) == {200}


async def test_corrupt_artifacts_are_refused_and_the_old_model_serves(
        own_artifacts: Settings) -> None:
    async with app_client(own_artifacts) as client:
        old = (await client.get("/readyz")).json()["model_version"]
        (own_artifacts.artifacts / "items.faiss").write_bytes(b"corrupted")
        response = await client.post("/admin/reload", headers=AUTH)
        assert response.status_code == 409
        assert "refused" in response.json()["detail"]
        body = (await client.get("/recommend/u0001")).json()
        assert body["model_version"] == old
        assert len(body["items"]) == 20


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)


async def versions(*clients: httpx.AsyncClient) -> list[str]:
    return [(await c.get("/readyz")).json()["model_version"] for c in clients]


async def test_a_reload_reaches_every_process(own_artifacts: Settings,
                                              second_artifacts_dir: Path) -> None:
    """Two app instances on one Redis prefix stand for two workers (or replicas): a reload
    received by one is served by both within a second or two."""
    async with app_client(own_artifacts) as first, app_client(own_artifacts) as second:
        old = (await versions(first))[0]
        replace_folder(second_artifacts_dir, own_artifacts.artifacts)
        reloaded = await first.post("/admin/reload", headers=AUTH)
        assert reloaded.status_code == 200, reloaded.text
        new = reloaded.json()["model_version"]
        assert new != old

        async def both_new() -> bool:
            return await versions(first, second) == [new, new]

        assert await eventually(both_new, within=2.0), await versions(first, second)
        assert (await second.get("/recommend/u0001")).json()["model_version"] == new


async def test_a_refused_reload_leaves_every_process_on_the_old_model(
        own_artifacts: Settings) -> None:
    async with app_client(own_artifacts) as first, app_client(own_artifacts) as second:
        old = (await versions(first))[0]
        (own_artifacts.artifacts / "items.faiss").write_bytes(b"corrupted")
        assert (await first.post("/admin/reload", headers=AUTH)).status_code == 409
        await asyncio.sleep(1.0)  # two polls of every process
        assert await versions(first, second) == [old, old]


async def test_a_process_that_cannot_load_the_announced_model_keeps_its_own_and_says_so(
        own_artifacts: Settings, second_artifacts_dir: Path, tmp_path: Path) -> None:
    """A replica whose folder still holds the old model (not rolled out there yet) keeps
    serving it, stays ready, and reports the failed reload in /readyz and /metrics."""
    behind = tmp_path / "behind"
    shutil.copytree(own_artifacts.artifacts, behind)
    lagging = own_artifacts.model_copy(update={"artifacts": behind})
    async with app_client(own_artifacts) as first, app_client(lagging) as second:
        old = (await versions(second))[0]
        replace_folder(second_artifacts_dir, own_artifacts.artifacts)
        new = (await first.post("/admin/reload", headers=AUTH)).json()["model_version"]

        async def reported() -> bool:
            return "reload_error" in (await second.get("/readyz")).json()

        assert await eventually(reported, within=2.0)
        ready = await second.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["model_version"] == old
        assert new in ready.json()["reload_error"]
        assert (await second.get("/recommend/u0001")).json()["model_version"] == old
        families = {f.name: f for f in text_string_to_metric_families(
            (await second.get("/metrics")).text)}
        assert families["socialrec_model_stale"].samples[0].value == 1
        assert any(s.labels == {"outcome": "follow_failed"} and s.value == 1
                   for s in families["socialrec_model_reloads"].samples)

        # Once the folder holds it, the next reload brings this process along too.
        replace_folder(second_artifacts_dir, behind)
        assert (await first.post("/admin/reload", headers=AUTH)).status_code == 200

        async def caught_up() -> bool:
            return await versions(second) == [new]

        assert await eventually(caught_up, within=2.0)
        assert "reload_error" not in (await second.get("/readyz")).json()


async def test_a_reload_that_cannot_be_announced_swaps_nothing(own_artifacts: Settings,
                                                              second_artifacts_dir: Path) -> None:
    down = own_artifacts.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with app_client(down) as client:
        old = (await client.get("/recommend/u0001")).json()["model_version"]
        replace_folder(second_artifacts_dir, down.artifacts)
        response = await client.post("/admin/reload", headers=AUTH)
        assert response.status_code == 503
        assert old in response.json()["detail"]
        assert (await client.get("/recommend/u0001")).json()["model_version"] == old


async def test_artifacts_refused_at_start_stop_the_start_with_a_clear_message(
        own_artifacts: Settings) -> None:
    (own_artifacts.artifacts / "items.faiss").write_bytes(b"corrupted")
    expected = f"cannot serve the artifacts in {own_artifacts.artifacts}: cannot read artifact"
    with pytest.raises(StartupError, match="^" + re.escape(expected)):
        async with app_client(own_artifacts):
            pass
