"""A tiny but real model: `socialrec train` on the synthetic shop, small enough for tests."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from app.offline.train import TrainConfig, train

TINY = TrainConfig(dim=32, iterations=12, patience=3, epochs=40,
                   match_weights="0,0.5")


def train_tiny(data_dir: Path, out: Path, seed: int = 0) -> Path:
    """Different seeds give different models (and model versions) on the same data."""
    train(data_dir, out, dataclasses.replace(TINY, seed=seed), progress=False)
    return out


def replace_folder(source: Path, target: Path) -> None:
    """Put a copy of `source` at `target` as a deployment would: staged, then renamed."""
    staging = target.with_name(target.name + ".new")
    shutil.copytree(source, staging)
    shutil.rmtree(target)
    staging.rename(target)
