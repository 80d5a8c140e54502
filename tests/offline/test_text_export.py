"""The item text encoder offline: the ONNX export agrees with the PyTorch sentence model, and
the projection gives an item without interactions a vector among its text neighbours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from app.offline.text import _gram, _scale, _solve, fit_projection, load_sentence_model
from app.serving.artifacts import ModelArtifacts
from app.serving.text import ItemDescription, feature_matrix
from tests.support.data import item_categories

# int8 per-channel weights: the embeddings move a little, the neighbourhoods do not
MIN_COSINE, MEAN_COSINE = 0.95, 0.985


def _texts(artifacts: ModelArtifacts) -> list[str]:
    records = json.loads((artifacts.folder / "items.json").read_text(encoding="utf-8"))
    return [ItemDescription(r.get("title", ""), r.get("category", ""),
                            tuple(t for t in r.get("tags", "").split(";") if t)).text()
            for r in records]


@pytest.mark.slow
def test_onnx_encoder_matches_the_pytorch_sentence_model(artifacts_dir: Path) -> None:
    artifacts = ModelArtifacts.load(artifacts_dir)
    assert artifacts.text is not None
    texts = [*_texts(artifacts)[:64], "", "a", "Northpeak " * 200]  # empty, tiny, truncated
    onnx = artifacts.text.embed(texts)
    model = load_sentence_model()
    model.max_seq_length = artifacts.text.info.max_tokens
    reference = model.encode(texts, batch_size=16, normalize_embeddings=True)
    cosine = (onnx * reference).sum(axis=1) / np.linalg.norm(onnx, axis=1)
    assert cosine.min() >= MIN_COSINE and cosine.mean() >= MEAN_COSINE, (cosine.min(),
                                                                         cosine.mean())
    # int8 dynamic quantization scales activations per batch, so a text's vector depends a
    # little on its batch mates (and on their padding): one at a time stays within tolerance
    alone = np.concatenate([artifacts.text.embed([t]) for t in texts[:8]])
    assert (alone * onnx[:8]).sum(axis=1).min() >= MIN_COSINE


def test_untrained_items_get_vectors_among_their_text_neighbours(artifacts_dir: Path,
                                                                 synth_dir: Path) -> None:
    """The synthetic shop's products nobody interacted with sit, in the item-vector space,
    among learned items of their own category: as often as learned items themselves do, and
    far more often than chance."""
    artifacts = ModelArtifacts.load(artifacts_dir)
    catalog = artifacts.catalog
    sources = np.asarray(catalog.vector_sources)
    cold, warm = np.flatnonzero(sources == "text"), np.flatnonzero(sources == "model")
    assert len(cold) >= 5, "the synthetic shop has items nobody interacted with"
    categories = item_categories(synth_dir)
    # Taste coordinates (the last one is popularity) relative to the catalogue's mean item: a
    # projection's prediction is the mean plus what the text adds, and only that part orders
    # items for a user.
    taste = artifacts.item_vectors[:, :-1]
    centred = taste - taste[warm].mean(axis=0)
    vectors = centred / np.linalg.norm(centred, axis=1, keepdims=True).clip(1e-12)

    def same_category_share(items: np.ndarray) -> float:
        shares = []
        for i in items:
            others = warm[warm != i]
            nearest = others[np.argsort(-(vectors[others] @ vectors[i]))[:10]]
            mine = categories[catalog.ids[i]]
            shares.append(np.mean([categories[catalog.ids[n]] == mine for n in nearest]))
        return float(np.mean(shares))

    counts = np.unique([categories[catalog.ids[i]] for i in warm], return_counts=True)[1]
    chance = float(((counts / counts.sum()) ** 2).sum())
    learned, from_text = same_category_share(warm), same_category_share(cold)
    assert from_text >= 0.9 * learned and from_text >= 4 * chance, (from_text, learned, chance)


def test_projection_is_a_ridge_regression_with_a_free_intercept() -> None:
    rng = np.random.default_rng(0)
    x = np.hstack([rng.normal(size=(200, 5)), np.ones((200, 1))]).astype(np.float32)
    true = rng.normal(size=(6, 3)).astype(np.float32)
    y = x @ true
    np.testing.assert_allclose(fit_projection(x, y, 0.0), true, atol=1e-4)
    shrunk = fit_projection(x, y + 100.0, 1e6)
    # a huge ridge removes the slopes but never the intercept (the targets' mean)
    assert np.abs(shrunk[:-1]).max() < 0.01
    np.testing.assert_allclose(shrunk[-1], (y + 100.0).mean(axis=0), rtol=1e-3)


def test_sparse_label_gram_gives_the_dense_ridge_solution() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(size=(300, 4)).astype(np.float32)
    labels = (rng.random((300, 7)) < 0.2).astype(np.float32)
    y = rng.normal(size=(300, 2)).astype(np.float32)
    gram, rhs = _gram(e, sp.csr_matrix(labels), y)
    for weight in (0.0, 0.5, 2.0):
        dense = fit_projection(feature_matrix(e, labels, weight), y, 3.0)
        np.testing.assert_allclose(_solve(gram, rhs, _scale(4, 7, weight), 3.0)
                                   [np.r_[0:4, 11]], dense[np.r_[0:4, 11]], atol=1e-4)
        if weight:  # label columns are used scaled: their weights absorb the scale
            np.testing.assert_allclose(_solve(gram, rhs, _scale(4, 7, weight), 3.0)[4:11],
                                       dense[4:11], atol=1e-4)
