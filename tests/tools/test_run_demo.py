"""`make run` (app/tools/run_demo.py) as a user meets it: the Redis it starts keeps what was
posted across a restart, and a bad setting is one line, not a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.tools.local_redis import free_port
from tests.support.processes import DEMO, command_env, run_module


@contextmanager
def make_run(cwd: Path, port: int, redis_url: str) -> Iterator[str]:
    """`make run` in `cwd` until the block ends, then Ctrl-C, as a user stops it."""
    env = command_env(SOCIALREC_PORT=str(port), SOCIALREC_REDIS_URL=redis_url,
                      SOCIALREC_ARTIFACTS=str(DEMO))
    log = (cwd / "run.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "app.tools.run_demo"], cwd=cwd, env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (cwd / "run.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "make run did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.mark.slow
def test_what_was_posted_survives_a_restart_of_make_run(tmp_path: Path) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"  # so make run starts its own Redis
    port = free_port()
    event = {"event_id": "restart-1", "user_id": "newcomer", "type": "follow",
             "friend_id": "u0001"}
    with make_run(tmp_path, port, nothing_there) as base:
        posted = httpx.post(f"{base}/events", json={"events": [event]}, timeout=10)
        assert posted.status_code == 202, posted.text
    assert "stopped the redis-server" in (tmp_path / "run.log").read_text()
    assert (tmp_path / ".run" / "redis").is_dir()
    with make_run(tmp_path, port, nothing_there) as base:
        user = httpx.get(f"{base}/users/newcomer", timeout=10).json()
        again = httpx.post(f"{base}/events", json={"events": [event]}, timeout=10).json()
    assert user["friends"] == [{"user_id": "u0001", "weight": 1.0}]
    assert again == {"accepted": 0, "duplicates": 1}


def test_a_bad_setting_is_one_line(tmp_path: Path) -> None:
    result = run_module("app.tools.run_demo", cwd=tmp_path, SOCIALREC_ADMIN_TOKEN="...",
                        SOCIALREC_PORT=str(free_port()),
                        SOCIALREC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                        SOCIALREC_ARTIFACTS=str(DEMO))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SOCIALREC_ADMIN_TOKEN" in errors[0], result.stderr[-2000:]


def test_a_bad_port_is_one_line(tmp_path: Path) -> None:
    result = run_module("app.tools.run_demo", cwd=tmp_path, SOCIALREC_PORT="eighty")
    assert result.returncode != 0
    assert result.stderr.strip() == "error: SOCIALREC_PORT: 'eighty' is not a TCP port number"
