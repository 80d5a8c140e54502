"""Similar-items stage: the neighbour query of an item vector (`Recommender.similar` runs it).

An item's neighbours are the items whose taste points the same way: the query is the item's
taste direction (unit length) with the popularity weight in the last coordinate, so the inner
product FAISS computes is t̂_q · t_j + weight · popularity_j — the same index and the same
search as /recommend, for a learned vector or one projected from text alike. For a user, the
neighbours are ordered by similarity + user_weight × the score /recommend gives the item for
that user (blended taste, popularity prior and friends' engagement), so the list stays about
the item while the user's taste decides among its neighbours.
"""

from __future__ import annotations

import numpy as np


def neighbour_query(vector: np.ndarray, popularity_weight: float) -> np.ndarray:
    """(D,) query for the neighbours of an item with item vector `vector` (taste + popularity
    coordinate); the caller checks the taste is not all zero."""
    taste = vector[:-1].astype(np.float32)
    query = np.empty(len(vector), dtype=np.float32)
    query[:-1] = taste / max(float(np.linalg.norm(taste)), 1e-12)
    query[-1] = popularity_weight
    return query

