"""Retrieve stage: inner-product candidates from the FAISS index."""

from __future__ import annotations

import faiss
import numpy as np


def retrieve(index: faiss.Index, vectors: np.ndarray, n: int,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-`n` (scores, ids) per row of `vectors`; `allowed` (item ids) restricts the search
    inside FAISS so a narrow category filter still yields `n` candidates. Missing slots are -1.

    Indexes with exact re-scoring (IndexRefine) filter inside their IVF lists; PQ fast-scan
    codes without lists take no ID filter, so a filtered search there runs exact over the raw
    vectors the index keeps for the re-scoring."""
    n = max(1, min(n, index.ntotal))
    queries = np.ascontiguousarray(vectors, dtype=np.float32)
    if allowed is None:
        return index.search(queries, n)
    selector = faiss.IDSelectorBatch(allowed.astype(np.int64))
    if isinstance(index, faiss.IndexRefine):
        base = faiss.downcast_index(index.base_index)
        if not isinstance(base, faiss.IndexIVF):
            exact = faiss.downcast_index(index.refine_index)
            return exact.search(queries, n, params=faiss.SearchParameters(sel=selector))
        # every params object stays referenced here until the search returns
        inner = faiss.SearchParametersIVF(sel=selector, nprobe=base.nprobe)
        params = faiss.IndexRefineSearchParameters(k_factor=index.k_factor,
                                                   base_index_params=inner)
        return index.search(queries, n, params=params)
    return index.search(queries, n, params=_search_params(index, selector))


def _search_params(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    if hasattr(index, "hnsw"):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    if hasattr(index, "nprobe"):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    return faiss.SearchParameters(sel=selector)
