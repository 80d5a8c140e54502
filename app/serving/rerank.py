"""Rerank stage: retrieval score + the match function + social proof (docs/ARTIFACTS.md)."""

from __future__ import annotations

import numpy as np

from app.serving.artifacts import RerankParams


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
           social: np.ndarray, params: RerankParams,
           item_norms: np.ndarray | None = None) -> np.ndarray:
    """Final scores for candidates: `scores` are inner products, `social` the summed tie weights
    of friends who engaged with each candidate (log-damped: the tenth friend adds less)."""
    final = scores.astype(np.float32, copy=True)
    if params.match_weight:
        final += params.match_weight * match(user, item_vectors, item_norms)
    if params.social_weight:
        final += params.social_weight * np.log1p(social)
    return final
