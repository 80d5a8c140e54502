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


# Seconds, not minutes, per model: enough to tell a sound model from a broken one.
FAST = TrainConfig(dim=16, iterations=4, patience=2, epochs=10, match_weights="0",
                   history_bands="0,3", max_band_users=200, refit_full=False, text=False)


def train_flags(config: TrainConfig) -> list[str]:
    """The `socialrec train`/`retrain` flags that give `config`."""
    flags = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags
