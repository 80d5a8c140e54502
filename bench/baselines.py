"""The baselines of bench/quality, ranked for any known history (the truncated-history protocol
of app.offline.evaluate) and scored by the same metric code as socialrec:

- most popular: how many train users had each item;
- item-kNN: Σ over the known items of the cosine similarity of item columns of the binary
  train matrix;
- ALS: implicit's ALS on the binary train matrix, the user folded in from the known items
  alone (one exact least-squares step with the learned item factors, implicit's confidence
  α·1 on the known items);
- ALS + w · friends' mean vector: the same fold-in plus w times the mean of the friends' learned
  ALS user vectors; w is chosen per history length on a validation split carved from train.csv
  (ALS refitted on the kept part, the held-out part as relevant items) — never on test.csv.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from app.offline.dataset import Dataset, item_counts
from app.offline.evaluate import UserRanking, metrics_at, truncate
from app.offline.train import carve_validation

ALS_PARAMS = {"factors": 64, "regularization": 10.0, "alpha": 5.0, "iterations": 50,
              "random_state": 7}
FRIEND_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
VALIDATION_SEED = 7
Known = dict[int, list[tuple[int, float]]]
Scorer = Callable[[list[int], Known], np.ndarray]  # users, their known items → (U, n_items)
BATCH = 256


def binary_matrix(histories: list[list[tuple[int, float]]], n_items: int,
                  rows: list[int] | None = None) -> sp.csr_matrix:
    rows = list(range(len(histories))) if rows is None else rows
    r = [row for row, u in enumerate(rows) for _ in histories[u]]
    c = [i for u in rows for i, _ in histories[u]]
    return sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)),
                         shape=(len(rows), n_items))


def rank(scorer: Scorer, data: Dataset, test: dict[int, set[int]], known: Known,
         k: int) -> list[UserRanking]:
    """Top-k of every item outside the user's whole train set, from `scorer` on the known
    items (batched)."""
    users = list(test)
    out = []
    for s in range(0, len(users), BATCH):
        block = users[s: s + BATCH]
        scores = np.array(scorer(block, known), dtype=np.float64)  # a writable copy
        for row, u in enumerate(block):
            seen = [i for i, _ in data.histories[u]]
            scores[row, seen] = -np.inf
            top = np.argpartition(-scores[row], k)[:k]
            top = top[np.argsort(-scores[row, top], kind="stable")]
            out.append(UserRanking(u, top.tolist(), test[u]))
    return out


def popular_scorer(data: Dataset) -> Scorer:
    # Ties broken by item index, as the serving popularity order does.
    scores = item_counts(data.histories, data.n_items) - np.arange(data.n_items) * 1e-9

    def score(users: list[int], _known: Known) -> np.ndarray:
        return np.broadcast_to(scores, (len(users), data.n_items))

    return score


def knn_scorer(data: Dataset) -> Scorer:
    x = binary_matrix(data.histories, data.n_items)
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    xn = (x @ sp.diags(1.0 / np.maximum(norms, 1e-12))).tocsr()

    def score(users: list[int], known: Known) -> np.ndarray:
        h = binary_matrix([known[u] for u in users], data.n_items)
        h = h @ sp.diags(1.0 / np.maximum(norms, 1e-12))
        return np.asarray(((h @ xn.T) @ xn).todense())

    return score


@dataclass
class Als:
    user_factors: np.ndarray
    item_factors: np.ndarray
    seconds: float

    @classmethod
    def fit(cls, histories: list[list[tuple[int, float]]], n_items: int) -> Als:
        import threadpoolctl
        from implicit.als import AlternatingLeastSquares

        started = time.perf_counter()
        with threadpoolctl.threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(**ALS_PARAMS, num_threads=2)
            model.fit(binary_matrix(histories, n_items), show_progress=False)
        return cls(np.asarray(model.user_factors), np.asarray(model.item_factors),
                   time.perf_counter() - started)

    def fold_in(self, histories: list[list[tuple[int, float]]]) -> np.ndarray:
        """u = (YᵀY + λI + Σ (c−1) y yᵀ)⁻¹ Σ c y over the known items, c = α (implicit's
        confidence of a binary interaction); an empty history gives 0."""
        y = self.item_factors.astype(np.float64)
        gram = y.T @ y + ALS_PARAMS["regularization"] * np.eye(y.shape[1])
        c = ALS_PARAMS["alpha"]
        out = np.zeros((len(histories), y.shape[1]))
        for row, h in enumerate(histories):
            if h:
                yh = y[[i for i, _ in h]]
                out[row] = np.linalg.solve(gram + (c - 1) * yh.T @ yh, c * yh.sum(axis=0))
        return out

    def friends_mean(self, data: Dataset, users: list[int]) -> np.ndarray:
        out = np.zeros((len(users), self.user_factors.shape[1]))
        for row, u in enumerate(users):
            if data.friends[u]:
                out[row] = self.user_factors[[f for f, _ in data.friends[u]]].mean(axis=0)
        return out

    def scorer(self, data: Dataset, friend_weight: float = 0.0) -> Scorer:
        def score(users: list[int], known: Known) -> np.ndarray:
            vectors = self.fold_in([known[u] for u in users])
            if friend_weight:
                vectors = vectors + friend_weight * self.friends_mean(data, users)
            return vectors @ self.item_factors.T

        return score


def choose_friend_weights(data: Dataset, lengths: tuple[int, ...],
                          min_items: int, k: int = 20) -> dict[str, float]:
    """Per history length (and "full"), the w of FRIEND_WEIGHTS with the best validation
    Recall@k + NDCG@k: ALS fitted on the kept part of a split carved from train.csv, users
    with ≥ `min_items` kept items truncated as in the test protocol."""
    kept, held = carve_validation(data.histories, 0.2, VALIDATION_SEED)
    val = Dataset(users=data.users, items=data.items, histories=kept, friends=data.friends)
    als = Als.fit(kept, data.n_items)
    test = {u: items for u, items in held.items() if len(kept[u]) >= min_items}
    chosen = {}
    for n in (*lengths, None):
        known = {u: kept[u] for u in test} if n is None else truncate(kept, test, n)
        best = -1.0
        for w in FRIEND_WEIGHTS:
            if n == 0 and w == 0.0:
                continue
            m = metrics_at(rank(als.scorer(val, w), val, test, known, k), (k,), data.n_items)
            gain = m[f"recall@{k}"] + m[f"ndcg@{k}"]
            if gain > best:
                best, chosen["full" if n is None else str(n)] = gain, w
    return chosen
