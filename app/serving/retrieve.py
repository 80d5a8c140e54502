"""Retrieve stage: inner-product candidates from the FAISS index."""

from __future__ import annotations

import faiss
import numpy as np


def retrieve(index: faiss.Index, vectors: np.ndarray, n: int,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-`n` (scores, ids) per row of `vectors`; `allowed` (item ids) restricts the search
    inside FAISS so a narrow category filter still yields `n` candidates. Missing slots are -1.

    PQ fast-scan codes take no ID filter: a filtered search on that kind runs exact over the
    raw vectors the index keeps for its re-scoring."""
    n = max(1, min(n, index.ntotal))
    queries = np.ascontiguousarray(vectors, dtype=np.float32)
    if allowed is None:
        return index.search(queries, n)
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.refine_index)
    params = _search_params(index, faiss.IDSelectorBatch(allowed.astype(np.int64)))
    return index.search(queries, n, params=params)


def _search_params(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    if hasattr(index, "hnsw"):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    if hasattr(index, "nprobe"):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    return faiss.SearchParameters(sel=selector)
