"""The demo model shipped in git loads, is of the current format, and recommends."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import load_dataset
from app.serving.artifacts import FORMAT_VERSION, ModelArtifacts
from app.serving.encode import History
from app.serving.pipeline import Query, Recommender, Strategy, UserState
from app.serving.text import ItemDescription

DEMO = Path(__file__).resolve().parents[2] / "model_artifacts" / "demo"


def test_shipped_demo_loads_in_the_current_format() -> None:
    artifacts = ModelArtifacts.load(DEMO)
    assert artifacts.manifest.format_version == FORMAT_VERSION
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < 30 * 2**20  # small enough for git; the int8 text encoder is 23 MB of it


def test_demo_ships_the_text_encoder_for_new_products() -> None:
    artifacts = ModelArtifacts.load(DEMO)
    assert artifacts.text is not None
    vector = artifacts.text.item_vector(ItemDescription(
        "Northpeak Waterproof Hiking Boots", "outdoor", ("hiking", "waterproof")))
    assert vector.shape == (artifacts.manifest.embedding_dim,) and np.isfinite(vector).all()
    taste = artifacts.item_vectors[:, :-1]  # the last coordinate is popularity
    mean = taste.mean(axis=0)  # directions relative to the catalogue's mean item
    centred = taste - mean
    cosine = centred @ (vector[:-1] - mean) / np.linalg.norm(centred, axis=1).clip(1e-12)
    nearest = np.argsort(-cosine)[:10]
    assert sum(artifacts.catalog.categories[i] == "outdoor" for i in nearest) >= 6


def test_demo_data_matches_the_model_and_recommends() -> None:
    recommender = Recommender(ModelArtifacts.load(DEMO))
    data = load_dataset(DEMO / "data", DEFAULT_EVENT_WEIGHTS)
    assert recommender.artifacts.catalog.ids == data.items.ids
    user = next(u for u in range(data.n_users) if data.histories[u])
    rec = recommender.recommend(UserState(history=History.of(data.histories[user])), Query(k=5))
    assert rec.strategy is Strategy.PERSONAL
    assert len(rec.items) == 5
    assert all(recommender.artifacts.catalog.titles[s.item] for s in rec.items)
