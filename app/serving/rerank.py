"""Rerank stage: retrieval score + the match function on the taste coordinates + social proof
(docs/ARTIFACTS.md)."""

from __future__ import annotations

import numpy as np

from app.serving.artifacts import HistoryBand


def match(user: np.ndarray, items: np.ndarray,
          item_norms: np.ndarray | None = None) -> np.ndarray:
    """The match function cos(x_i, x_u) / (1 + ||x_i − x_u||) for one user (D,) vs items (n, D);
    `item_norms` (n,) are the items' norms when the caller has them precomputed."""
    if item_norms is None:
        item_norms = np.linalg.norm(items, axis=1)
    norms = item_norms * max(float(np.linalg.norm(user)), 1e-12)
    cos = (items @ user) / np.maximum(norms, 1e-12)
    return cos / (1.0 + np.linalg.norm(items - user, axis=1))


def rerank(user: np.ndarray, item_vectors: np.ndarray, scores: np.ndarray,
           social: np.ndarray, band: HistoryBand,
           item_norms: np.ndarray | None = None) -> np.ndarray:
    """Final scores for candidates: `scores` are the retrieval inner products, `social` the
    summed tie weights of friends who engaged with each candidate (log-damped: the tenth friend
    adds less). The match function compares tastes only: the vectors' last coordinate is the
    popularity prior, not taste (`item_norms` are the taste parts' norms)."""
    final = scores.astype(np.float32, copy=True)
    if band.match_weight:
        final += band.match_weight * match(user[:-1], item_vectors[:, :-1], item_norms)
    if band.social_weight:
        final += band.social_weight * np.log1p(social)
    return final
