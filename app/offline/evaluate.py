"""Offline evaluation through the serving pipeline (metrics as defined in docs/CLI.md).

Every test user is ranked by `Recommender.recommend` — the code the HTTP service runs — with the
user's whole train set excluded; ablations switch the social stages or the rerank off.

The truncated-history protocol measures the users a shop has most of: every test user with at
least `max(TRUNCATED)` train items is ranked again knowing only n of them (a seeded random
choice, the same for every variant and nested across n), friends unchanged, all train items
still excluded. n = 0 is a friends-only user.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from app.offline.dataset import Dataset
from app.offline.export import one_openmp_thread
from app.serving.encode import History
from app.serving.pipeline import FlatItems, Friends, Query, Recommender, UserState

BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1-5", 1, 5), ("6-20", 6, 20), (">20", 21, math.inf))
VARIANTS: dict[str, dict[str, bool]] = {
    "full": {"social": True, "rerank_stage": True},
    "no_social": {"social": False, "rerank_stage": True},
    "no_rerank": {"social": True, "rerank_stage": False},
}
POPULAR_SHARE = 0.01  # "the most popular items" of the popularity-bias measure: the top 1 %
TRUNCATED: tuple[int, ...] = (0, 1, 2, 3, 5)
TRUNCATION_SEED = 0
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class UserRanking:
    user: int
    ranked: list[int]
    relevant: set[int]


def per_user(rankings: Iterable[UserRanking], k: int) -> dict[str, np.ndarray]:
    """Recall, NDCG, Precision and HitRate at `k` of each user, in ranking order — the one
    implementation of the metric definitions (means, bootstraps and the trainer's validation
    all read it)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    rows = []
    for r in rankings:
        top = r.ranked[:k]
        hits = np.fromiter((i in r.relevant for i in top), dtype=bool, count=len(top))
        n_hit = int(hits.sum())
        idcg = discounts[: min(k, len(r.relevant))].sum()
        rows.append((n_hit / len(r.relevant), float(discounts[: len(top)][hits].sum()) / idcg,
                     n_hit / k, float(n_hit > 0)))
    table = np.asarray(rows, dtype=np.float64).reshape(len(rows), 4)
    return {f"{name}@{k}": table[:, c]
            for c, name in enumerate(("recall", "ndcg", "precision", "hitrate"))}


def metrics_at(rankings: Iterable[UserRanking], ks: Iterable[int],
               n_items: int) -> dict[str, float]:
    """Recall, NDCG, Precision, HitRate averaged over users, and catalogue coverage, at each K."""
    rankings = list(rankings)
    out: dict[str, float] = {}
    for k in ks:
        out |= {name: float(v.mean()) if len(v) else 0.0
                for name, v in per_user(rankings, k).items()}
        out[f"coverage@{k}"] = len({i for r in rankings for i in r.ranked[:k]}) / n_items
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> dict[str, float]:
    """Mean of the per-user difference a − b and its 95 % percentile interval, users
    resampled with replacement."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not len(diff):
        return {"mean": 0.0, "low": 0.0, "high": 0.0}
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for s in range(0, samples, 256):  # (256, users) index blocks: bounded memory
        block = rng.integers(0, len(diff), size=(min(256, samples - s), len(diff)))
        means[s: s + len(block)] = diff[block].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high)}


def truncate(histories: list[list[tuple[int, float]]], users: Iterable[int], n: int,
             seed: int = TRUNCATION_SEED) -> dict[int, list[tuple[int, float]]]:
    """n of each user's items chosen at random, kept in recency order. The permutation is
    seeded per user, so a user's choice does not depend on who else is asked for, and the
    n-item set lies inside the (n+1)-item one."""
    out = {}
    for u in users:
        order = np.random.default_rng([seed, u]).permutation(len(histories[u]))
        out[u] = [histories[u][j] for j in np.sort(order[:n]).tolist()]
    return out


def _encode(recommender: Recommender, histories: list[History], batch: int = 512) -> np.ndarray:
    return np.concatenate([recommender.encode(histories[s: s + batch])
                           for s in range(0, max(len(histories), 1), batch)])


def user_states(recommender: Recommender, data: Dataset, users: Iterable[int],
                known: dict[int, list[tuple[int, float]]] | None = None) -> dict[int, UserState]:
    """Assemble each user's state as the service would: capped recent history, own vector, and
    the friends' own vectors and recent items. `known` replaces some users' own histories
    (truncated ones); their friends are still seen with everything they did."""
    cap = recommender.manifest.max_history
    users = list(users)
    friend_lists = {u: data.friends[u][: recommender.manifest.blend.max_friends] for u in users}
    # only these users and their friends are encoded: a sample's states cost the sample, not
    # the whole shop
    needed = sorted(set(users).union(*({f for f, _ in fr} for fr in friend_lists.values())))
    histories = {u: History.of(data.histories[u][:cap]) for u in needed}
    encoded = _encode(recommender, [histories[u] for u in needed])
    vectors = dict(zip(needed, encoded, strict=True))
    replaced = sorted(set(users) & set(known or {}))
    own = {u: (histories[u], vectors[u]) for u in users}
    if known and replaced:
        mine = [History.of(known[u][:cap]) for u in replaced]
        own |= dict(zip(replaced, zip(mine, _encode(recommender, mine), strict=True),
                        strict=True))
    states = {}
    for u, (history, vector) in own.items():
        fr = friend_lists[u]
        friends = Friends(ids=[data.users.ids[f] for f, _ in fr],
                          vectors=np.asarray([vectors[f] for f, _ in fr], dtype=encoded.dtype
                                             ).reshape(len(fr), encoded.shape[1]),
                          ties=np.asarray([w for _, w in fr], dtype=np.float32),
                          items=FlatItems.of([histories[f].items for f, _ in fr]))
        states[u] = UserState(history=history, friends=friends, vector=vector)
    return states


def rank_users(recommender: Recommender, data: Dataset, test: dict[int, set[int]], k: int,
               social: bool = True, rerank_stage: bool = True,
               states: dict[int, UserState] | None = None) -> list[UserRanking]:
    return rank_within(recommender, data, test, k, None, states, social, rerank_stage)


def rank_within(recommender: Recommender, data: Dataset, test: dict[int, set[int]], k: int,
                within: np.ndarray | None, states: dict[int, UserState] | None = None,
                social: bool = True, rerank_stage: bool = True) -> list[UserRanking]:
    """`within`: rank only these items (ascending indices), e.g. the new products."""
    states = states or user_states(recommender, data, test)
    out = []
    with one_openmp_thread():
        for u, relevant in test.items():
            seen = np.fromiter((i for i, _ in data.histories[u]), dtype=np.int64)
            query = Query(k=k, exclude_seen=True, exclude=seen, within=within)
            rec = recommender.recommend(states[u], query, social=social,
                                        rerank_stage=rerank_stage)
            out.append(UserRanking(u, [s.item for s in rec.items], relevant))
    return out


def similar_queries(data: Dataset, users: Iterable[int],
                    seed: int = TRUNCATION_SEED) -> dict[int, int]:
    """Each user's query item for the similar-items protocol: one of their train items, the
    seeded choice of the truncated-history protocol at n = 1."""
    return {u: h[0][0] for u, h in truncate(data.histories, users, 1, seed).items() if h}


def rank_similar(recommender: Recommender, data: Dataset, test: dict[int, set[int]], k: int,
                 queries: dict[int, int],
                 states: dict[int, UserState] | None = None) -> list[UserRanking]:
    """The similar items of each user's query item (`Recommender.similar`, the code of
    GET /items/{id}/similar), all the user's train items excluded; personalised for the user
    when `states` has them."""
    vectors = recommender.artifacts.item_vectors
    out = []
    with one_openmp_thread():
        for u, relevant in test.items():
            seen = np.fromiter((i for i, _ in data.histories[u]), dtype=np.int64)
            item = queries[u]
            ranked = recommender.similar(vectors[item], Query(k=k, exclude=seen),
                                         None if states is None else states[u], item=item)
            out.append(UserRanking(u, [s.item for s in ranked], relevant))
    return out


def evaluate_similar(recommender: Recommender, data: Dataset, test: dict[int, set[int]],
                     ks: tuple[int, ...] = (10, 20),
                     states: dict[int, UserState] | None = None) -> dict[str, Any]:
    """Similar items on a split: for every test user, the neighbours of one of their train items
    (seeded) scored against their test items — without the user (`item`) and personalised
    (`user`)."""
    test = {u: items for u, items in test.items() if items and data.histories[u]}
    queries = similar_queries(data, test)
    states = states or user_states(recommender, data, test)
    return {"users": len(test),
            "item": metrics_at(rank_similar(recommender, data, test, max(ks), queries), ks,
                               data.n_items),
            "user": metrics_at(rank_similar(recommender, data, test, max(ks), queries, states),
                               ks, data.n_items)}


def evaluate(recommender: Recommender, data: Dataset, test: dict[int, set[int]],
             ks: tuple[int, ...] = (10, 20), progress: bool = True,
             curve_ks: tuple[int, ...] = (),
             cold_items: np.ndarray | None = None) -> dict[str, Any]:
    """The report of docs/CLI.md: full pipeline, ablations, history-length buckets, user count,
    and each variant's share of recommendations from the most popular items. With `curve_ks`,
    `report["curves"]` holds every variant's metrics at those cut-offs too; with `cold_items`
    (item indices of a new-product split), `report["cold_items"]` their own section."""
    test = {u: items for u, items in test.items() if items}
    states = user_states(recommender, data, test)
    report: dict[str, Any] = {"buckets": {}}
    rankings: dict[str, list[UserRanking]] = {}
    top = most_popular(recommender.artifacts.popularity)
    for name, flags in tqdm(VARIANTS.items(), desc="evaluate", disable=not progress):
        rankings[name] = rank_users(recommender, data, test, max(ks + curve_ks), states=states,
                                    social=flags["social"], rerank_stage=flags["rerank_stage"])
        report[name] = metrics_at(rankings[name], ks, data.n_items)
        report[name] |= popular_share(rankings[name], top, ks)
    if curve_ks:
        report["curves"] = {name: metrics_at(rs, curve_ks, data.n_items)
                            for name, rs in rankings.items()}
    for label, lo, hi in BUCKETS:
        def member(r: UserRanking, lo: float = lo, hi: float = hi) -> bool:
            return lo <= len(data.histories[r.user]) <= hi

        bucket = {name: metrics_at(filter(member, rs), ks, data.n_items)
                  for name, rs in rankings.items()}
        pairs = [(f, n) for f, n in zip(rankings["full"], rankings["no_social"], strict=True)
                 if member(f)]
        report["buckets"][label] = bucket.pop("full") | bucket | {
            "users": len(pairs), "social_changes_hits": _changed_hits(pairs, max(ks)),
            "social_gain": social_gain(pairs, max(ks))}
    report["users"] = len(test)
    report["truncated"] = evaluate_truncated(recommender, data, test, ks)
    if cold_items is not None:
        report["cold_items"] = evaluate_cold(recommender, data, test, cold_items, ks, states)
    return report


def most_popular(popularity: np.ndarray, share: float = POPULAR_SHARE) -> set[int]:
    """The `share` most popular items (at least one) by the model's training popularity."""
    n = max(1, math.ceil(share * len(popularity)))
    return set(np.argsort(-popularity, kind="stable")[:n].tolist())


def popular_share(rankings: Iterable[UserRanking], top: set[int],
                  ks: Iterable[int]) -> dict[str, float]:
    """Popularity bias: the share of all top-K slots taken by the `top` items, at each K."""
    rankings = list(rankings)
    out = {}
    for k in ks:
        slots = sum(len(r.ranked[:k]) for r in rankings)
        hits = sum(i in top for r in rankings for i in r.ranked[:k])
        out[f"popular_share@{k}"] = hits / slots if slots else 0.0
    return out


def evaluate_truncated(recommender: Recommender, data: Dataset, test: dict[int, set[int]],
                       ks: tuple[int, ...] = (10, 20),
                       lengths: tuple[int, ...] = TRUNCATED) -> dict[str, dict[str, Any]]:
    """The truncated-history protocol (module docstring): per n, `full` and `no_social`
    metrics, the user count, and `social_gain`: the mean per-user difference full − no_social
    at the largest K with its paired-bootstrap 95 % interval."""
    test = {u: items for u, items in test.items()
            if items and len(data.histories[u]) >= max(lengths)}
    k = max(ks)
    out: dict[str, dict[str, Any]] = {}
    for n in lengths:
        states = user_states(recommender, data, test,
                             known=truncate(data.histories, test, n))
        entry: dict[str, Any] = {"users": len(test)}
        rankings = {name: rank_users(recommender, data, test, k, states=states, **VARIANTS[name])
                    for name in ("full", "no_social")}
        for name, ranked in rankings.items():
            entry[name] = metrics_at(ranked, ks, data.n_items)
        entry["social_gain"] = social_gain(
            list(zip(rankings["full"], rankings["no_social"], strict=True)), k)
        out[str(n)] = entry
    return out


def social_gain(pairs: list[tuple[UserRanking, UserRanking]],
                k: int) -> dict[str, dict[str, float]]:
    """Recall and NDCG at `k`: the mean per-user difference full − no_social over the (full,
    no_social) ranking pairs, with its paired-bootstrap 95 % interval."""
    full = per_user([f for f, _ in pairs], k)
    alone = per_user([n for _, n in pairs], k)
    return {m: paired_bootstrap(full[m], alone[m]) for m in (f"recall@{k}", f"ndcg@{k}")}


def evaluate_cold(recommender: Recommender, data: Dataset, test: dict[int, set[int]],
                  cold_items: np.ndarray, ks: tuple[int, ...] = (10, 20),
                  states: dict[int, UserState] | None = None) -> dict[str, Any]:
    """New products: every test user with a held-out interaction on a cold item ranks the cold
    items only (their vectors come from their text), through the full pipeline."""
    cold = np.unique(cold_items.astype(np.int64))
    members = set(cold.tolist())
    cold_test = {u: items & members for u, items in test.items() if items & members}
    ranked = rank_within(recommender, data, cold_test, max(ks), cold, states)
    return {"full": metrics_at(ranked, ks, len(cold)), "users": len(cold_test),
            "items": len(cold)}


def _changed_hits(pairs: list[tuple[UserRanking, UserRanking]], k: int) -> dict[str, int]:
    """How many users the social stages gave more / fewer relevant items in their top-k than
    the no-social ablation: a small bucket's mean can hinge on one user."""
    diff = [len(set(f.ranked[:k]) & f.relevant) - len(set(n.ranked[:k]) & n.relevant)
            for f, n in pairs]
    return {"k": k, "more": sum(d > 0 for d in diff), "fewer": sum(d < 0 for d in diff)}


def format_report(report: dict[str, Any], ks: tuple[int, ...] = (10, 20)) -> str:
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "precision", "hitrate", "coverage")]
    rows = [("variant", *names)]
    for name in VARIANTS:
        rows.append((name, *(f"{report[name][n]:.4f}" for n in names)))
    for label, values in report["buckets"].items():
        for name in VARIANTS:
            v = values if name == "full" else values[name]
            rows.append((f"{label} ({values['users']} users) {name}",
                         *(f"{v[n]:.4f}" for n in names)))
    for n, entry in report.get("truncated", {}).items():
        for name in ("full", "no_social"):
            rows.append((f"{n} known items ({entry['users']} users) {name}",
                         *(f"{entry[name][c]:.4f}" for c in names)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    text = "\n".join(lines) + f"\nusers: {report['users']}"
    if "cold_items" in report:
        cold = report["cold_items"]
        text += (f"\ncold items ({cold['items']} new products, {cold['users']} users, ranked "
                 "among the new products only): " + "  ".join(
                     f"{n} {cold['full'][n]:.4f}" for n in names if not n.startswith("cov")))
    return text
