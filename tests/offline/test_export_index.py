"""The exporter's index choice: exact flat search for small catalogues, IVF-Flat above the
threshold with an nprobe calibrated to the wanted recall, HNSW on request."""

from __future__ import annotations

import numpy as np
import pytest

from app.offline.export import build_index, calibrate_nprobe, ivf_nlist


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
    index, info = build_index(x, flat_max_items=1000, queries=queries)
    assert info.kind == "ivf" and index.ntotal == 6000
    assert info.params["nlist"] == min(ivf_nlist(6000), 6000 // 39)
    assert index.nprobe == info.params["nprobe"] <= info.params["nlist"]
    _, truth = build_index(x, kind="flat")[0].search(queries, 50)
    _, found = index.search(queries, 50)
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    assert hits / truth.size >= 0.9
    assert calibrate_nprobe(index, x, k=50, target=1.0, queries=queries) <= info.params["nlist"]


def test_hnsw_on_request_and_unknown_kinds_refused() -> None:
    _, info = build_index(clustered(500), kind="hnsw")
    assert info.kind == "hnsw" and info.params["efSearch"] >= 1
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(clustered(10), kind="lsh")
