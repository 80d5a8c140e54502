"""Run this repository's commands as a user does: a child Python process, no SOCIALREC_*
variables inherited from the test run except those given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "model_artifacts" / "demo"


def command_env(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALREC_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), clean.get("PYTHONPATH")]))
    clean.setdefault("OMP_NUM_THREADS", "1")
    return clean | env


def run_module(module: str, *args: str, cwd: Path = REPO, timeout: float = 120,
               **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                          env=command_env(**env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
