"""The Dockerfile's install step, run for real in a fresh venv: a broken dependency list, or
PyTorch leaking into the service image, fails here without a Docker engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_service_installs_without_torch(tmp_path: Path) -> None:
    project = tmp_path / "src"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".run", "__pycache__", "*.egg-info", "model_artifacts", "tests"))
    venv = tmp_path / "venv"
    env_python = Path(sys.executable).resolve()
    result = subprocess.run(
        ["sh", str(ROOT / "docker/install-service.sh"), str(venv), str(project)],
        capture_output=True, text=True, timeout=600,
        env={"PATH": f"{env_python.parent}:/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    installed = subprocess.run([str(venv / "bin/pip"), "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout.lower()
    assert "torch" not in installed
    for package in ("fastapi", "onnxruntime", "faiss-cpu", "redis", "hiredis"):
        assert package in installed, package
    # The inspector page's files are package data, not code: a wheel without them has no /ui.
    script = ("from importlib.resources import files; "
              "print(*sorted(p.name for p in (files('app.ui') / 'static').iterdir()))")
    listed = subprocess.run([str(venv / "bin/python"), "-c", script],
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == ["index.html", "inspector.css", "inspector.js"]
