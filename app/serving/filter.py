"""Filter stage: drop seen and caller-excluded items (categories are filtered in retrieval)."""

from __future__ import annotations

import numpy as np


def keep(candidates: np.ndarray, *banned: np.ndarray) -> np.ndarray:
    """Boolean mask over `candidates` (item ids, -1 = empty slot) of the ones that may be
    shown: in none of the `banned` arrays, each sorted ascending (the catalogue's unavailable
    items are kept sorted, and a shop may have thousands: sorting them again per request cost
    more than the rest of a cached list's filtering)."""
    mask = candidates >= 0
    for ranked in banned:
        if len(ranked) and len(candidates):
            # = ~np.isin(candidates, ranked), by binary search: several times faster for the
            # few hundred candidates of a request
            at = np.minimum(np.searchsorted(ranked, candidates), len(ranked) - 1)
            mask &= ranked[at] != candidates
    return mask
