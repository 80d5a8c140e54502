"""The demo model shipped in git loads, is of the current format, and recommends."""

from __future__ import annotations

from pathlib import Path

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset
from app.serving.artifacts import FORMAT_VERSION, ModelArtifacts
from app.serving.encode import History
from app.serving.pipeline import Query, Recommender, Strategy, UserState

DEMO = Path(__file__).resolve().parents[2] / "model_artifacts" / "demo"


def test_shipped_demo_loads_in_the_current_format() -> None:
    artifacts = ModelArtifacts.load(DEMO)
    assert artifacts.manifest.format_version == FORMAT_VERSION
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < 10 * 2**20


def test_demo_data_matches_the_model_and_recommends() -> None:
    recommender = Recommender(ModelArtifacts.load(DEMO))
    data = load_dataset(DEMO / "data", DEFAULT_EVENT_WEIGHTS)
    assert recommender.artifacts.catalog.ids == data.items.ids
    user = next(u for u in range(data.n_users) if data.histories[u])
    rec = recommender.recommend(UserState(history=History.of(data.histories[user])), Query(k=5))
    assert rec.strategy is Strategy.PERSONAL
    assert len(rec.items) == 5
    assert all(recommender.artifacts.catalog.titles[s.item] for s in rec.items)
