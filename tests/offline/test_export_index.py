"""The exporter's index choice: exact flat search for small catalogues, PQ fast-scan codes with
exact re-scoring for mid-sized ones, IVF-Flat above, each approximate kind calibrated to its
recall target on the queries it is given; HNSW on request. The served retrieval works on each."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from app.offline import export
from app.offline.export import (
    PQFS_MAX_ITEMS,
    PQFS_TARGET_RECALL,
    build_index,
    calibrate_nprobe,
    default_kind,
    ivf_nlist,
)
from app.serving.artifacts import stored_vectors
from app.serving.retrieve import retrieve


def clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)).astype(np.float32)
    return (centres[rng.integers(0, 40, n)]
            + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


def test_small_catalogues_get_exact_search() -> None:
    index, info = build_index(clustered(500))
    assert info.kind == "flat" and index.ntotal == 500


def test_large_catalogues_get_ivf_tuned_for_the_queries() -> None:
    x = clustered(6000)
    queries = clustered(300, seed=1)
    index, info = build_index(x, kind="ivf", queries=queries)
    assert info.kind == "ivf" and index.ntotal == 6000
    assert info.params["nlist"] == min(ivf_nlist(6000), 6000 // 39)
    lists = faiss.extract_index_ivf(index)
    assert lists.nprobe == info.params["nprobe"] <= info.params["nlist"]
    assert index.k_factor == info.params["k_factor"]
    _, truth = build_index(x, kind="flat")[0].search(queries, 50)
    scores, found = retrieve(index, queries, 50)
    assert _recall(found, truth) >= 0.9
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, x[found]), rtol=1e-5,
                               atol=1e-4)
    assert calibrate_nprobe(index, x, k=50, target=1.0, queries=queries) <= info.params["nlist"]


def test_filtered_ivf_search_stays_inside_the_allowed_items() -> None:
    x = clustered(6000)
    queries = clustered(20, seed=4)
    index, _ = build_index(x, kind="ivf", queries=queries)
    allowed = np.arange(0, 6000, 5)
    _, found = retrieve(index, queries, 30, allowed)
    assert np.isin(found[found >= 0], allowed).all()
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x[allowed])
    _, expected = flat.search(queries, 30)
    assert _recall(found, allowed[expected]) >= 0.9
    assert np.array_equal(stored_vectors(index), x)


def test_default_kind_by_catalogue_size() -> None:
    assert default_kind(500) == "flat"
    assert default_kind(20_000) == "pqfs"
    assert default_kind(PQFS_MAX_ITEMS + 1) == "ivf"
    assert default_kind(6000, flat_max_items=10_000) == "flat"


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def test_mid_catalogues_get_pq_codes_with_exact_rescoring() -> None:
    x = clustered(8000, d=32)
    calibration, held_out = clustered(300, d=32, seed=1), clustered(200, d=32, seed=2)
    index, info = build_index(x, flat_max_items=1000, queries=calibration)
    assert info.kind == "pqfs" and index.ntotal == 8000
    assert index.k_factor == info.params["k_factor"]
    exact = build_index(x, kind="flat")[0]
    _, truth = exact.search(held_out, 200)
    scores, found = retrieve(index, held_out, 200)
    assert _recall(found, truth) >= PQFS_TARGET_RECALL - 0.01  # queries it was not tuned on
    # the scores are exact inner products of the returned items, not code approximations
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", held_out, x[found]), rtol=1e-5,
                               atol=1e-4)
    assert np.array_equal(stored_vectors(index), x)


def test_filtered_search_on_pq_codes_is_exact_within_the_allowed_items() -> None:
    x = clustered(3000, d=16)
    index, _ = build_index(x, kind="pqfs")
    allowed = np.arange(0, 3000, 7)
    queries = clustered(5, d=16, seed=3)
    _, found = retrieve(index, queries, 20, allowed)
    flat = faiss.IndexFlatIP(16)
    flat.add(x[allowed])
    _, expected = flat.search(queries, 20)
    assert np.array_equal(found, allowed[expected])


def test_hnsw_on_request_and_unknown_kinds_refused() -> None:
    _, info = build_index(clustered(500), kind="hnsw")
    assert info.kind == "hnsw" and info.params["efSearch"] >= 1
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(clustered(10), kind="lsh")


def test_pq_codes_hold_a_dominant_popularity_coordinate_scaled_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # shop-like vectors: small taste coordinates, a popularity feature in [0, 1] last, and
    # users whose band weighs it -0.4: its lookup table sets fast-scan's shared 8-bit scale
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 31))
    taste = 0.05 * (centres[rng.integers(0, 40, 8000)] + 0.3 * rng.standard_normal((8000, 31)))
    popularity = rng.pareto(1.5, 8000)
    x = np.c_[taste, np.minimum(popularity / np.percentile(popularity, 99.9), 1)].astype(
        np.float32)

    def users(m: int, seed: int) -> np.ndarray:
        picks = np.random.default_rng(seed).integers(0, 8000, (m, 20))
        return np.c_[2 * x[picks, :-1].mean(1), np.full(m, -0.4)].astype(np.float32)

    calibration, held_out = users(300, 1), users(200, 2)
    index, info = build_index(x, flat_max_items=1000, queries=calibration)
    monkeypatch.setattr(export, "PQFS_POPULARITY_SCALES", (1.0,))
    _, unscaled = build_index(x, flat_max_items=1000, queries=calibration)
    assert info.params["popularity_scale"] < 1.0
    assert info.params["k_factor"] < unscaled.params["k_factor"]  # a cheaper search
    _, truth = build_index(x, kind="flat")[0].search(held_out, 200)
    scores, found = retrieve(index, held_out, 200)
    assert _recall(found, truth) >= PQFS_TARGET_RECALL - 0.01
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", held_out, x[found]), rtol=1e-5,
                               atol=1e-4)  # re-scored from the raw vectors, not the codes
    assert np.array_equal(stored_vectors(index), x)
