"""Filter stage: drop seen and caller-excluded items (categories are filtered in retrieval)."""

from __future__ import annotations

import numpy as np


def keep(candidates: np.ndarray, banned: np.ndarray) -> np.ndarray:
    """Boolean mask over `candidates` (item ids, -1 = empty slot) of the ones that may be shown."""
    return (candidates >= 0) & ~np.isin(candidates, banned)
