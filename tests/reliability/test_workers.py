"""`socialrec serve --workers 2` as a real process tree on the real Redis: a reload reaches
both workers, a refused one neither, and any worker's `/metrics` reports both of them, also
after a worker died and was replaced."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.tools.local_redis import free_port
from tests.support.auth import ADMIN_TOKEN
from tests.support.models import replace_folder
from tests.support.serve import ServeProcess, socialrec_command

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# A reload must reach every worker "within a second or two"; each one polls every 0.5 s and
# then loads the model.
RELOAD_REACH_S = 2.0


def fresh_get(url: str) -> httpx.Response:
    """One request on a new connection, so the kernel hands it to either worker."""
    return httpx.get(url, timeout=5.0)


def scrape(server: ServeProcess) -> dict[str, list[Sample]]:
    text = fresh_get(server.url + "/metrics").text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def served_versions(server: ServeProcess) -> dict[str, str]:
    """pid → the model version that worker serves, from one scrape."""
    return {s.labels["pid"]: s.labels["version"]
            for s in scrape(server)["socialrec_model_info"] if s.value == 1}


def wait_for(check: Callable[[], bool], within: float) -> float:
    """Seconds until `check()` held; fails the test past `within`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


def readyz_versions(server: ServeProcess, n: int = 20) -> set[str]:
    return {fresh_get(server.url + "/readyz").json()["model_version"] for _ in range(n)}


@pytest.fixture
def two_workers(serve: Callable[..., ServeProcess], redis_url: str, key_prefix: str,
                artifacts_dir: Path, tmp_path: Path) -> ServeProcess:
    folder = tmp_path / "live"
    shutil.copytree(artifacts_dir, folder)
    server = serve(redis_url, workers=2, SOCIALREC_ARTIFACTS=str(folder),
                   SOCIALREC_KEY_PREFIX=key_prefix, SOCIALREC_ADMIN_TOKEN=ADMIN_TOKEN).start()
    wait_for(lambda: len(served_versions(server)) == 2, within=60.0)
    return server


def test_a_reload_reaches_both_workers_and_a_refused_one_neither(
        two_workers: ServeProcess, second_artifacts_dir: Path, tmp_path: Path) -> None:
    server, folder = two_workers, tmp_path / "live"
    old = set(served_versions(server).values())
    assert len(old) == 1

    replace_folder(second_artifacts_dir, folder)
    reloaded = httpx.post(server.url + "/admin/reload", headers=AUTH, timeout=30.0)
    assert reloaded.status_code == 200, reloaded.text
    new = reloaded.json()["model_version"]
    assert {new} != old
    took = wait_for(lambda: set(served_versions(server).values()) == {new}, within=RELOAD_REACH_S)
    print(f"both workers serve {new} {took:.2f} s after the reload answered")
    assert readyz_versions(server) == {new}
    # Each worker logs what it did, in the service's log format.
    log = server.log_path.read_text()
    assert log.count(f"app.api.routes.admin model reloaded: {next(iter(old))} -> {new}") == 1
    assert log.count(f"app.main followed a reload to model {new}") == 1

    (folder / "items.faiss").write_bytes(b"corrupted")
    refused = httpx.post(server.url + "/admin/reload", headers=AUTH, timeout=30.0)
    assert refused.status_code == 409
    time.sleep(1.0)  # two polls of every worker
    assert set(served_versions(server).values()) == {new}
    assert readyz_versions(server) == {new}


def test_any_scrape_counts_every_worker_and_forgets_dead_ones(
        two_workers: ServeProcess) -> None:
    server = two_workers
    for n in range(40):
        assert fresh_get(f"{server.url}/recommend/u{n:04d}?k=5").status_code == 200

    def recommend_count(samples: dict[str, list[Sample]]) -> float:
        return sum(s.value for s in samples["socialrec_http_requests"]
                   if s.name == "socialrec_http_requests_total"
                   and s.labels["route"] == "/recommend/{user_id}")

    # Whichever worker answers the scrape, it reports both workers' requests.
    for _ in range(10):
        assert recommend_count(scrape(server)) == 40

    pids = set(served_versions(server))
    victim = int(min(pids))
    os.kill(victim, signal.SIGKILL)  # no shutdown: its files stay behind
    # uvicorn's supervisor starts a replacement worker.
    wait_for(lambda: len(set(served_versions(server)) - pids) == 1, within=60.0)
    samples = scrape(server)
    live_pids = {s.labels["pid"] for s in samples["socialrec_model_info"]}
    assert str(victim) not in live_pids and len(live_pids) == 2
    assert {s.labels["pid"] for s in samples["socialrec_model_stale"]} == live_pids
    assert recommend_count(samples) == 40  # the dead worker's requests still count


@pytest.mark.parametrize("workers", [1, 2])
def test_artifacts_refused_at_start_stop_serve_with_a_failure_status(
        workers: int, redis_url: str, key_prefix: str, artifacts_dir: Path,
        tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(artifacts_dir, folder)
    (folder / "items.faiss").write_bytes(b"corrupted")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SOCIALREC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(SOCIALREC_REDIS_URL=redis_url, SOCIALREC_KEY_PREFIX=key_prefix,
               SOCIALREC_ARTIFACTS=str(folder), OMP_NUM_THREADS="1")
    done = subprocess.run([*socialrec_command(), "serve", "--port", str(free_port()),
                           "--workers", str(workers)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 3
    assert f"cannot serve the artifacts in {folder}: cannot read artifact" in done.stderr
