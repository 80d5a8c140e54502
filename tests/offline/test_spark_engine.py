"""`socialrec train --engine spark`: Spark MLlib's implicit ALS in local mode learns the item
factors; the fold-in encoder, band learning and export are the default engine's. The model
must load and rank about as well as the default engine's on the same split."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset, load_test
from app.offline.evaluate import evaluate
from app.offline.spark_als import java_runtime
from app.offline.split import split_dataset
from app.offline.synth import write_synthetic_dataset
from app.offline.train import TrainConfig, train
from app.serving.artifacts import ModelArtifacts
from app.serving.pipeline import Recommender

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(java_runtime() is None,
                       reason="no Java runtime (java on PATH or in JAVA_HOME): Spark cannot "
                              "start, so --engine spark cannot run here"),
]

# A tiny shop and model: Spark's start-up, not the data, is most of the test's time.
CONFIG = TrainConfig(dim=16, iterations=8, patience=3, epochs=20, match_weights="0",
                     text=False, max_band_users=200)
# Spark solves each row exactly and scales the ridge per row (ALS-WR), the default engine runs
# warm-started CG steps with one ridge: the factors differ, the ranking quality must not by
# more than this (absolute Recall@20 on the held-out items).
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spark-shop")
    write_synthetic_dataset(root / "raw", n_users=400, n_items=600, seed=3)
    split_dataset(root / "raw", root / "split", test_fraction=0.2, seed=0)
    return root / "split"


def recall_at_20(artifacts: Path, split: Path) -> float:
    recommender = Recommender(ModelArtifacts.load(artifacts))
    data = load_dataset(split, DEFAULT_EVENT_WEIGHTS)
    report = evaluate(recommender, data, load_test(split, data), (20,), progress=False)
    return float(report["full"]["recall@20"])


def test_spark_engine_trains_a_model_that_ranks_like_the_default(split: Path,
                                                                  tmp_path: Path) -> None:
    spark = train(split, tmp_path / "spark", TrainConfig(**{**vars(CONFIG), "engine": "spark",
                                                            "spark_master": "local[1]"}),
                  progress=False)
    default = train(split, tmp_path / "default", CONFIG, progress=False)
    assert spark.model["engine"] == "spark" and default.model["engine"] == "implicit"
    assert spark.item_count == default.item_count
    # Spark runs its iterations without handing them back: no early stopping
    assert spark.model["iterations"] == CONFIG.iterations
    ours, theirs = recall_at_20(tmp_path / "spark", split), recall_at_20(tmp_path / "default",
                                                                          split)
    assert theirs > 0.05
    assert ours >= theirs - TOLERANCE, (ours, theirs)


def test_an_unknown_engine_is_refused_before_reading_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine 'mapreduce'"):
        train(tmp_path / "missing", tmp_path / "out", TrainConfig(engine="mapreduce"),
              progress=False)
