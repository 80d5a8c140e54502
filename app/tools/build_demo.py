"""`make demo-model`: regenerate the shipped demo — a synthetic shop and a model trained on it,
deterministic by seed. The dataset is kept in `<folder>/data` so `make run` can load users."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

DEMO_USERS, DEMO_ITEMS, DEMO_SEED = 600, 1200, 7


def build(folder: Path) -> None:
    from app.offline.synth import write_synthetic_dataset
    from app.offline.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_synthetic_dataset(data, n_users=DEMO_USERS, n_items=DEMO_ITEMS, seed=DEMO_SEED)
        manifest = train(data, folder, TrainConfig(seed=DEMO_SEED))
        shutil.copytree(data, folder / "data")
    print(f"demo model {manifest.model_version} in {folder}")


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "model_artifacts/demo"))
