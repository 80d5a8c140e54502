"""Filter stage: drop seen and caller-excluded items (categories are filtered in retrieval)."""

from __future__ import annotations

import numpy as np


def keep(candidates: np.ndarray, banned: np.ndarray) -> np.ndarray:
    """Boolean mask over `candidates` (item ids, -1 = empty slot) of the ones that may be shown."""
    mask = candidates >= 0
    if len(banned) and len(candidates):
        # = ~np.isin(candidates, banned), by binary search: several times faster for the few
        # hundred candidates and few dozen banned items of a request
        ranked = np.sort(banned)
        at = np.minimum(np.searchsorted(ranked, candidates), len(ranked) - 1)
        mask &= ranked[at] != candidates
    return mask
