"""The ALS iteration rule: a fixed budget that validation can only cut short; an evaluation
counts as progress only with a relative NDCG@20 gain of `min_als_gain`."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tqdm import tqdm

from app.offline.model import FoldInEncoder
from app.offline.train import TrainConfig, _fit_with_validation, _sample


class Scripted:
    """A validator whose NDCG@20 follows a script, one value per evaluation."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.calls = 0

    def __call__(self, encoder: FoldInEncoder) -> dict[str, float]:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {"recall@20": value, "ndcg@20": value}


def histories(n_users: int = 40, n_items: int = 30) -> list[list[tuple[int, float]]]:
    rng = np.random.default_rng(0)
    return [[(int(i), 1.0) for i in rng.choice(n_items, 6, replace=False)]
            for _ in range(n_users)]


def fit(values: list[float], **config: float) -> tuple[int, int, Scripted]:
    cfg = TrainConfig(dim=4, threads=1, **config)  # type: ignore[arg-type]
    validator = Scripted(values)
    fitted = _fit_with_validation(histories(), validator, 40, 30, 1.0, cfg,
                                  tqdm(disable=True))
    return fitted.iterations, fitted.iterations_run, validator


def test_gains_below_the_minimum_do_not_count_and_patience_stops_early() -> None:
    # evaluations at 2, 4, 6, 8: +0.1 % at 4 and 6 is below the 0.2 % minimum
    chosen, run, validator = fit([0.100, 0.1001, 0.1002, 0.1002], iterations=20, eval_every=2,
                                 patience=3, min_als_gain=0.002)
    assert (chosen, run, validator.calls) == (2, 8, 4)


def test_a_real_gain_moves_the_choice() -> None:
    chosen, run, _ = fit([0.100, 0.110, 0.105, 0.105, 0.105], iterations=20, eval_every=2,
                         patience=3, min_als_gain=0.002)
    assert (chosen, run) == (4, 10)


def test_validation_never_runs_past_the_budget() -> None:
    still_improving = [0.1 * 1.01 ** n for n in range(50)]
    chosen, run, validator = fit(still_improving, iterations=10, eval_every=2, patience=3)
    assert (chosen, run, validator.calls) == (10, 10, 5)
    # an odd budget is still scored at its last iteration
    chosen, run, _ = fit(still_improving, iterations=7, eval_every=2, patience=3)
    assert (chosen, run) == (7, 7)


def test_the_als_validation_sample_is_seeded_and_bounded() -> None:
    users = list(range(0, 20000, 3))
    picked = _sample(users, 2000, seed=7)
    assert len(picked) == 2000 and picked == sorted(picked) and set(picked) <= set(users)
    assert picked == _sample(users, 2000, seed=7)
    assert _sample(users[:50], 2000, seed=7) == users[:50]
