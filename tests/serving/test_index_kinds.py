"""Every index kind the exporter builds loads as an artifact and serves the same
recommendations as exact search: the approximate kinds' search settings come back from the
manifest, the rerank reads the vectors the index keeps, and the scores stay exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset
from app.offline.evaluate import user_states
from app.offline.export import build_index
from app.serving.artifacts import ModelArtifacts
from app.serving.pipeline import Query, Recommender


def _with_index(artifacts_dir: Path, out: Path, kind: str) -> Path:
    """The tiny model with its item index rebuilt as `kind`, tuned on its users' vectors."""
    folder = Path(shutil.copytree(artifacts_dir, out))
    flat = Recommender(ModelArtifacts.load(artifacts_dir))
    vectors = np.array(flat.artifacts.item_vectors)
    index, info = build_index(vectors, kind=kind, queries=vectors[::3] + 0.1)
    faiss.write_index(index, str(folder / info.file))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["index"] = info.model_dump()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("kind", ["pqfs", "ivf"])
def test_approximate_indexes_serve_what_exact_search_serves(
        kind: str, artifacts_dir: Path, synth_dir: Path, tmp_path: Path) -> None:
    exact = Recommender(ModelArtifacts.load(artifacts_dir))
    loaded = ModelArtifacts.load(_with_index(artifacts_dir, tmp_path / kind, kind))
    approx = Recommender(loaded)
    assert loaded.manifest.index.kind == kind
    assert loaded.index.k_factor == loaded.manifest.index.params["k_factor"]
    if kind == "ivf":
        assert faiss.extract_index_ivf(loaded.index).nprobe == \
            loaded.manifest.index.params["nprobe"]
    assert np.array_equal(loaded.item_vectors, exact.artifacts.item_vectors)
    data = load_dataset(synth_dir, DEFAULT_EVENT_WEIGHTS)
    users = [u for u in range(data.n_users) if data.histories[u]][:60]
    states = user_states(exact, data, users)
    same = 0
    for u in users:
        want = exact.recommend(states[u], Query(k=10))
        got = approx.recommend(states[u], Query(k=10))
        same += [s.item for s in got.items] == [s.item for s in want.items]
        for s in got.items:  # whatever was retrieved is scored as exact search scores it
            match = next((w for w in want.items if w.item == s.item), None)
            if match is not None:
                assert s.score == pytest.approx(match.score, rel=1e-4, abs=1e-4)
    assert same >= 0.9 * len(users)
