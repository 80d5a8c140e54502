"""The repository's docs stand alone: nothing points at files a user of the project does not
have, and what users create by following the README stays out of git."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEXT = {".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".txt", ""}
# Written split so that this file does not match itself.
OUTSIDE = re.compile("SPEC" + r"\s*§|SPEC\.md|\.\./" + "shared|/work/" + "shared")


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    return [REPO / name for name in listed if name and Path(name).suffix in TEXT]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout")
def test_no_file_cites_a_document_users_do_not_have() -> None:
    hits = []
    for path in tracked_files():
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                 .splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "cite the repo's docs/ instead:\n" + "\n".join(hits)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout")
@pytest.mark.parametrize("path", ["data/shop/interactions.csv", "data/split/train.csv",
                                  "model_artifacts/shop/manifest.json",
                                  ".run/redis/appendonly.aof", ".mypy_cache/x"])
def test_what_the_readme_creates_is_ignored_by_git(path: str) -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
    assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs a git checkout")
@pytest.mark.parametrize("path", ["model_artifacts/demo/manifest.json",
                                  "model_artifacts/demo/data/interactions.csv"])
def test_the_shipped_demo_model_is_not_ignored(path: str) -> None:
    # The user's data/ and models must not hide the demo model or its own data folder.
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 1
