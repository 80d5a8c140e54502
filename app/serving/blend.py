"""Blend stage: the user's own vector plus the tie-weighted mean of their friends' vectors."""

from __future__ import annotations

import numpy as np


def blend(own: np.ndarray, friend_vectors: np.ndarray, ties: np.ndarray,
          friend_weight: float) -> np.ndarray:
    """`own` is (D,), `friend_vectors` (F, D), `ties` (F,). The same formula is trained offline,
    where `friend_weight` is learned; with no friends the user's own vector is returned."""
    total = float(ties.sum()) if len(ties) else 0.0
    if total <= 0.0 or friend_weight == 0.0:
        return own
    return own + friend_weight * (ties @ friend_vectors) / total
