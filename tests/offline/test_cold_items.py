"""New products end to end: `socialrec split --cold-items` → train (the new products have no
interaction, so their vectors come from their text) → `socialrec evaluate`'s cold_items section,
ranked through the serving pipeline among the new products only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset, load_test
from app.offline.evaluate import UserRanking, metrics_at
from app.offline.split import read_cold_items
from app.serving.artifacts import ModelArtifacts
from tests.support.models import train_tiny


@pytest.mark.slow
def test_new_products_are_ranked_from_their_text(synth_dir: Path, tmp_path: Path) -> None:
    split = tmp_path / "split"
    assert main(["split", str(synth_dir), str(split), "--cold-items", "0.25",
                 "--test-fraction", "0.1", "--seed", "1"]) == 0
    model = train_tiny(split, tmp_path / "model")
    artifacts = ModelArtifacts.load(model)
    cold_ids = read_cold_items(split) or []
    sources = {i: artifacts.catalog.vector_sources[artifacts.catalog.index[i]] for i in cold_ids}
    assert set(sources.values()) == {"text"}

    assert main(["evaluate", str(model), str(split), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    cold = report["cold_items"]
    assert cold["items"] == len(cold_ids)
    assert set(cold["full"]) >= {"recall@20", "ndcg@20", "precision@20", "hitrate@20"}

    # the same users, ranking the same new products at random
    data = load_dataset(split, DEFAULT_EVENT_WEIGHTS)
    members = {data.items.index[i] for i in cold_ids}
    test = {u: s & members for u, s in load_test(split, data).items() if s & members}
    assert cold["users"] == len(test) > 20
    pool = np.asarray(sorted(members))
    rng = np.random.default_rng(0)
    random = metrics_at([UserRanking(u, rng.permutation(pool)[:20].tolist(), s)
                         for u, s in test.items()], (20,), len(pool))
    assert cold["full"]["recall@20"] >= 1.5 * random["recall@20"], (cold, random)
    assert cold["full"]["ndcg@20"] >= 1.5 * random["ndcg@20"], (cold, random)


def test_cold_items_unknown_to_the_catalogue_are_one_error_line(
        synth_dir: Path, artifacts_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    split = tmp_path / "split"
    assert main(["split", str(synth_dir), str(split), "--cold-items", "0.1"]) == 0
    (split / "cold_items.txt").write_text("no-such-item\n", encoding="utf-8")
    assert main(["evaluate", str(artifacts_dir), str(split)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cold_items.txt" in err[0] and "no-such-item" in err[0]
