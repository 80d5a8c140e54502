"""Popular fill: the order popular items are served in, and the score each one shows.

The shown score is the number the order is sorted by, so it never increases down a list: the
item's event count in the training data for the model's own order, its live count (behaviour
events the service logged) for the live order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Popularity:
    items: np.ndarray  # item indices, most popular first (int64)
    scores: np.ndarray  # the score each shows, aligned with `items`, non-increasing (float32)

    @classmethod
    def of_counts(cls, counts: np.ndarray) -> Popularity:
        """Every item by its count, ties in index order."""
        order = np.argsort(-counts, kind="stable").astype(np.int64)
        return cls(order, counts[order].astype(np.float32))

    def with_live(self, items: np.ndarray, counts: np.ndarray, complete: bool) -> Popularity:
        """The live order: `items` (live counts `counts`, non-increasing) first, then the other
        items in this order. Those show a live count too: 0 when `complete` (every live count
        was read), else the lowest count read, the most any of them can have."""
        rest = self.items[~np.isin(self.items, items)]
        floor = 0.0 if complete or not len(counts) else float(counts[-1])
        return Popularity(np.concatenate([items.astype(np.int64), rest]),
                          np.concatenate([counts.astype(np.float32),
                                          np.full(len(rest), floor, dtype=np.float32)]))
