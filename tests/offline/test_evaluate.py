"""The metrics of docs/CLI.md on hand-computed cases, the bucket report's per-user comparison,
and the truncated-history protocol's choice of items and its bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.offline.evaluate import (
    UserRanking,
    _changed_hits,
    metrics_at,
    most_popular,
    paired_bootstrap,
    per_user,
    popular_share,
    social_gain,
    truncate,
)


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


def test_per_user_metrics_are_what_metrics_at_averages() -> None:
    rankings = [UserRanking(0, [5, 1, 7], {1, 9}), UserRanking(1, [2, 3, 4], {4})]
    each = per_user(rankings, 3)
    means = metrics_at(rankings, [3], n_items=10)
    for name, values in each.items():
        assert len(values) == 2
        assert means[name] == pytest.approx(values.mean())
    assert each["recall@3"].tolist() == [0.5, 1.0]


def test_truncation_is_seeded_nested_and_keeps_recency_order() -> None:
    histories = [[(i, 1.0) for i in range(20)], [(100 + i, 1.0) for i in range(8)], []]
    one = truncate(histories, [0, 1], 1)
    three = truncate(histories, [0, 1], 3)
    assert truncate(histories, [1], 3)[1] == three[1]  # independent of the other users asked
    assert truncate(histories, [0, 1], 3, seed=1) != three
    for u in (0, 1):
        assert len(one[u]) == 1 and len(three[u]) == 3
        assert set(one[u]) <= set(three[u]) <= set(histories[u])
        positions = [histories[u].index(p) for p in three[u]]
        assert positions == sorted(positions)
    assert truncate(histories, [0], 0) == {0: []}


def test_paired_bootstrap_interval_excludes_zero_only_for_a_real_difference() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(500)
    better = paired_bootstrap(base + 0.05 + rng.normal(0, 0.1, 500), base)
    assert 0 < better["low"] < better["mean"] < better["high"]
    noise = paired_bootstrap(base + rng.normal(0, 0.1, 500), base)
    assert noise["low"] < 0 < noise["high"]


def test_social_gain_is_the_paired_per_user_difference_with_an_interval() -> None:
    full = [UserRanking(u, [1, 2], {1}) for u in range(30)]
    alone = [UserRanking(u, [1, 2] if u % 3 else [3, 4], {1}) for u in range(30)]
    gain = social_gain(list(zip(full, alone, strict=True)), k=2)
    recall = gain["recall@2"]
    assert recall["mean"] == pytest.approx(10 / 30)  # every third user gained one full hit
    assert 0 < recall["low"] < recall["mean"] < recall["high"] <= 1
    assert set(gain) == {"recall@2", "ndcg@2"}


def test_popularity_bias_counts_slots_taken_by_the_top_items() -> None:
    popularity = np.array([5.0, 50.0, 1.0, 30.0] + [0.0] * 196)  # 200 items: top 1 % = 2
    top = most_popular(popularity)
    assert top == {1, 3}
    rankings = [UserRanking(0, [1, 2, 3], {9}), UserRanking(1, [0, 2, 4], {9})]
    assert popular_share(rankings, top, [1, 3]) == {"popular_share@1": 0.5,
                                                    "popular_share@3": pytest.approx(2 / 6)}
