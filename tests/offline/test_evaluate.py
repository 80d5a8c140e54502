"""The metrics of docs/CLI.md on hand-computed cases, and the bucket report's per-user
comparison."""

from __future__ import annotations

import math

import pytest

from app.offline.evaluate import UserRanking, _changed_hits, metrics_at


def test_metrics_by_hand() -> None:
    rankings = [UserRanking(0, [5, 1, 7], {1, 9}), UserRanking(1, [2, 3, 4], {4})]
    m = metrics_at(rankings, [3], n_items=10)
    assert m["recall@3"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["hitrate@3"] == 1.0
    # user 0: hit at rank 2 of an ideal 2 hits; user 1: hit at rank 3 of an ideal 1
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg1 = 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert m["coverage@3"] == pytest.approx(6 / 10)


def test_metrics_cut_at_k() -> None:
    m = metrics_at([UserRanking(0, [5, 1, 7], {7})], [1, 3], n_items=10)
    assert m["recall@1"] == 0.0 and m["recall@3"] == 1.0


def test_changed_hits_counts_users_not_means() -> None:
    full = [UserRanking(0, [1, 2], {1, 2}), UserRanking(1, [3, 4], {9}),
            UserRanking(2, [5, 6], {7})]
    no_social = [UserRanking(0, [1, 8], {1, 2}), UserRanking(1, [3, 4], {9}),
                 UserRanking(2, [7, 6], {7})]
    assert _changed_hits(list(zip(full, no_social, strict=True)), k=2) == {
        "k": 2, "more": 1, "fewer": 1}
    # beyond k nothing counts
    assert _changed_hits(list(zip(full, no_social, strict=True)), k=1) == {
        "k": 1, "more": 0, "fewer": 1}
