"""POST /admin/reload: token checks, atomic swap under load, refusal of broken artifacts."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from tests.conftest import ADMIN_TOKEN, app_client
from tests.support.models import train_tiny

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def second_model(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(synth_dir, tmp_path_factory.mktemp("second") / "artifacts", seed=1)


@pytest.fixture
def own_artifacts(loaded: Settings, tmp_path: Path) -> Settings:
    """A private copy of the model folder, so a test may overwrite it."""
    folder = tmp_path / "live"
    shutil.copytree(loaded.artifacts, folder)
    return loaded.model_copy(update={"artifacts": folder})


def replace_folder(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".new")
    shutil.copytree(source, staging)
    shutil.rmtree(target)
    staging.rename(target)


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
                                                            second_model: Path) -> None:
    async with app_client(own_artifacts) as client:
        old = (await client.get("/readyz")).json()["model_version"]
        stop = asyncio.Event()
        statuses: list[int] = []
        workers = [asyncio.create_task(traffic(client, stop, statuses)) for _ in range(4)]
        await asyncio.sleep(0.2)
        replace_folder(second_model, own_artifacts.artifacts)
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
