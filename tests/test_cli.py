"""`socialrec` reports an operator's mistake in one line on stderr and a non-zero exit, never a
traceback."""

from __future__ import annotations

import subprocess

import pytest

from app.cli import main
from app.tools.local_redis import free_port
from tests.support.processes import DEMO, run_module


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unreachable_redis_is_one_line() -> None:
    port = free_port()  # nothing listens there
    result = run_module("app.cli", "load", str(DEMO), str(DEMO / "data"),
                        "--redis-url", f"redis://127.0.0.1:{port}/0")
    line = one_error_line(result)
    assert "Redis" in line and f"127.0.0.1:{port}" in line


def test_unreachable_redis_from_the_environment_is_one_line(tmp_path) -> None:
    port = free_port()
    result = run_module("app.cli", "events-export", str(tmp_path / "events.csv"),
                        SOCIALREC_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert f"127.0.0.1:{port}" in one_error_line(result)


def test_delete_user_failures_are_one_line() -> None:
    port = free_port()
    unreachable = run_module("app.cli", "delete-user", "u1",
                             "--redis-url", f"redis://127.0.0.1:{port}/0")
    assert f"127.0.0.1:{port}" in one_error_line(unreachable)
    assert "user_id" in one_error_line(run_module("app.cli", "delete-user", "not an id"))


@pytest.mark.parametrize("command", [
    ["load", str(DEMO), str(DEMO / "data")],
    ["serve", "--port", str(free_port())],  # refused before anything listens
])
def test_placeholder_admin_token_is_one_line_naming_the_variable(command: list[str]) -> None:
    # Exactly what an operator types after reading "SOCIALREC_ADMIN_TOKEN=... make run".
    result = run_module("app.cli", *command, SOCIALREC_ADMIN_TOKEN="...")
    line = one_error_line(result)
    assert "SOCIALREC_ADMIN_TOKEN" in line and "16 characters" in line


@pytest.mark.parametrize(("variable", "value"), [
    ("SOCIALREC_REDIS_URL", "localhost:6379"),
    ("SOCIALREC_EVENT_WEIGHTS", "{not json"),
    ("SOCIALREC_HISTORY_LEN", "-3"),
])
def test_bad_settings_are_one_line_naming_the_variable(tmp_path, variable: str,
                                                        value: str) -> None:
    result = run_module("app.cli", "events-export", str(tmp_path / "events.csv"),
                        **{variable: value})
    assert variable in one_error_line(result)


def test_bad_redis_url_flag_is_a_usage_error() -> None:
    result = run_module("app.cli", "load", str(DEMO), str(DEMO / "data"),
                        "--redis-url", "localhost:6379")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--redis-url" in result.stderr and "not a Redis URL" in result.stderr


def test_serve_with_a_missing_artifact_folder_is_one_line(tmp_path) -> None:
    result = run_module("app.cli", "serve", "--port", str(free_port()),
                        SOCIALREC_ARTIFACTS=str(tmp_path / "missing"))
    assert "manifest.json" in one_error_line(result)


@pytest.mark.parametrize(("setup", "flags", "named"), [
    ("", ["--data", "missing-folder"], "--data"),
    ("", ["--metric", "mrr@10"], "--metric"),
    ("", ["--holdout", "1.5"], "--holdout"),
    ("current-folder", [], "not a link"),
    ("", [], "Redis"),  # nothing listens on the port of --redis-url
])
def test_retrain_problems_are_one_line_and_change_nothing(
        tmp_path, capsys: pytest.CaptureFixture[str], setup: str, flags: list[str],
        named: str) -> None:
    # In this process: a child would spend most of its time importing PyTorch for the flags.
    root = tmp_path / "root"
    if setup == "current-folder":
        (root / "current").mkdir(parents=True)  # a hand-made folder where the link belongs
    code = main(["retrain", "--data", str(DEMO / "data"), "--artifacts-root", str(root),
                 "--redis-url", f"redis://127.0.0.1:{free_port()}/0", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and named in err[0]
    assert not (root / "versions").exists()
