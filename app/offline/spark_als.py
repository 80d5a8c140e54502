"""`socialrec train --engine spark`: the item factors from Spark MLlib's ALS with implicit
preferences, the rest of training unchanged (docs/OPERATIONS.md, "Training beyond one
machine").

Spark's implicit ALS solves the same weighted least squares as the default engine (confidence
1 + α·value on observed pairs, preference 1 there and 0 with confidence 1 elsewhere) with two
differences: each row's system is solved exactly (Cholesky) instead of by a few warm-started
CG steps, and the ridge term of a row is λ·(its number of observed pairs) (ALS-WR) instead
of λ. `regParam` is therefore λ divided by the mean number of pairs of a user with any, which
gives the average user the default engine's ridge (the fold-in encoder solves for users with
λ). The factorisation runs on the Spark master given (`local[2]` on one machine); the pairs
reach it as a CSV file in `stage_dir`, which on a cluster must be storage the executors read
(a shared mount or an object-store path Spark can read); only the item factors come back to
this process (n_items × D floats): the user factors stay on the cluster."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def java_runtime() -> str | None:
    """The `java` launcher Spark would start, or None where no Java runtime exists."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _session(master: str, driver_memory: str, partitions: int) -> Any:
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(master).appName("socialrec-train")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.memory", driver_memory)
             .config("spark.sql.shuffle.partitions", str(partitions))
             .config("spark.default.parallelism", str(partitions))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def fit_als_spark(users: np.ndarray, items: np.ndarray, values: np.ndarray, n_users: int,
                  n_items: int, dim: int, regularization: float, alpha: float, iterations: int,
                  seed: int, cg_steps: int = 3,
                  callback: Callable[[int, torch.Tensor, torch.Tensor], bool] | None = None,
                  threads: int = 0, master: str = "local[2]", driver_memory: str = "1g",
                  stage_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """fit_als's contract on Spark: `iterations` full ALS iterations, then `callback` once
    with the result (Spark runs the iterations without handing them back, so there is no early
    stopping). The user factors returned are empty (0, D): they stay on the cluster. `cg_steps`
    and `threads` are the default engine's; Spark solves exactly and sizes its own tasks."""
    if java_runtime() is None:
        raise RuntimeError("--engine spark needs a Java runtime (17 or newer): none found "
                           "on PATH or in JAVA_HOME")
    try:
        from pyspark.ml.recommendation import ALS
    except ImportError as exc:
        raise RuntimeError(f"--engine spark needs pyspark ({exc}): pip install "
                           "'socialrec[spark]'") from None
    observed = np.bincount(np.asarray(users), minlength=n_users)
    per_user = float(observed[observed > 0].mean()) if observed.any() else 1.0
    partitions = max(2, min(200, len(users) // 2_000_000 + 2))
    with tempfile.TemporaryDirectory(prefix="socialrec-spark-", dir=stage_dir) as tmp:
        pairs = Path(tmp) / "pairs.csv"
        np.savetxt(pairs, np.column_stack([users, items, values]), fmt=("%d", "%d", "%.7g"),
                   delimiter=",")
        spark = _session(master, driver_memory, partitions)
        try:
            spark.sparkContext.setCheckpointDir(str(Path(tmp) / "checkpoints"))
            ratings = spark.read.csv(str(pairs), schema="user INT, item INT, rating FLOAT")
            als = ALS(rank=dim, maxIter=iterations, regParam=regularization / per_user,
                      alpha=alpha, implicitPrefs=True, userCol="user", itemCol="item",
                      ratingCol="rating", seed=seed, checkpointInterval=10,
                      numUserBlocks=partitions, numItemBlocks=partitions)
            model = als.fit(ratings)
            item_f = np.zeros((n_items, dim), dtype=np.float32)
            for row in model.itemFactors.toLocalIterator():
                item_f[row["id"]] = row["features"]
        finally:
            spark.stop()
    user_t, item_t = torch.zeros(0, dim), torch.from_numpy(item_f)
    if callback is not None:
        callback(iterations, user_t, item_t)
    return user_t, item_t
