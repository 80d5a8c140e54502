"""The synthetic dataset: deterministic, in the docs/DATA.md layout, and with the social structure
it promises (homophily plus behaviour that only friends explain)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from app.config import DEFAULT_EVENT_WEIGHTS
from app.offline.dataset import Dataset, load_dataset
from app.offline.synth import SynthSummary, write_synthetic_dataset

FILES = ("interactions.csv", "social.csv", "items.csv")
HEADERS = {
    "interactions.csv": "user_id,item_id,event,value,timestamp",
    "social.csv": "user_id,friend_id,weight",
    "items.csv": "item_id,title,category,tags",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    folder = tmp_path_factory.mktemp("synth")
    return folder, write_synthetic_dataset(folder, seed=7)


@pytest.fixture(scope="module")
def loaded(synth: tuple[Path, SynthSummary]) -> Dataset:
    return load_dataset(synth[0], DEFAULT_EVENT_WEIGHTS)


def rows(folder: Path, name: str) -> list[dict[str, str]]:
    with (folder / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- determinism and layout


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = write_synthetic_dataset(tmp_path / "a", n_users=120, n_items=300, seed=3)
    second = write_synthetic_dataset(tmp_path / "b", n_users=120, n_items=300, seed=3)
    assert first == second
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "a", n_users=120, n_items=300, seed=3)
    write_synthetic_dataset(tmp_path / "b", n_users=120, n_items=300, seed=4)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_headers_are_exactly_the_spec_ones(synth: tuple[Path, SynthSummary]) -> None:
    folder, _ = synth
    for name, header in HEADERS.items():
        assert (folder / name).read_text(encoding="utf-8").split("\n", 1)[0] == header


def test_summary_matches_the_files(synth: tuple[Path, SynthSummary]) -> None:
    folder, summary = synth
    interactions, social = rows(folder, "interactions.csv"), rows(folder, "social.csv")
    assert summary.interactions == len(interactions)
    assert summary.friend_edges == len(social)
    assert summary.items == len(rows(folder, "items.csv")) == 1200
    users = {r["user_id"] for r in interactions} | {r["user_id"] for r in social}
    assert summary.users == len(users) == 600
    with_history = {r["user_id"] for r in interactions}
    with_friends = {r["user_id"] for r in social}
    assert summary.users_without_history == len(with_friends - with_history)
    assert summary.isolated_users == len(with_history - with_friends)


def test_items_have_ids_readable_titles_categories_and_tags(
    synth: tuple[Path, SynthSummary],
) -> None:
    items = rows(synth[0], "items.csv")
    assert [r["item_id"] for r in items] == [f"p{i:05d}" for i in range(len(items))]
    assert 8 <= len({r["category"] for r in items}) <= 12
    for r in items:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9'&-]*( [A-Za-z0-9'&-]+){2,}", r["title"]), r["title"]
        tags = r["tags"].split(";")
        assert 2 <= len(tags) <= 4 and all(re.fullmatch(r"[a-z-]+", t) for t in tags), r["tags"]
    assert len({r["title"] for r in items}) > 0.95 * len(items)


def test_interactions_follow_a_funnel_with_increasing_timestamps(
    synth: tuple[Path, SynthSummary],
) -> None:
    interactions = rows(synth[0], "interactions.csv")
    events = Counter(r["event"] for r in interactions)
    assert set(events) == {"view", "click", "cart", "purchase", "rate"}
    assert events["view"] > events["click"] > events["cart"] > events["purchase"] > events["rate"]
    assert events["view"] > 5 * events["purchase"]
    for r in interactions:
        assert re.fullmatch(r"u\d{4}", r["user_id"]) and re.fullmatch(r"p\d{5}", r["item_id"])
        assert r["value"] in ({"1", "2", "3", "4", "5"} if r["event"] == "rate" else {""})
    times = [int(r["timestamp"]) for r in interactions]
    assert times == sorted(times)
    assert times[0] > 1_500_000_000


def test_friendships_are_mutual_weighted_and_without_self_loops(
    synth: tuple[Path, SynthSummary],
) -> None:
    social = rows(synth[0], "social.csv")
    edges = {(r["user_id"], r["friend_id"]): float(r["weight"]) for r in social}
    assert len(edges) == len(social)
    for (a, b), w in edges.items():
        assert a != b
        assert 0 < w <= 1
        assert edges[(b, a)] == w


def test_loads_with_the_offline_loader(synth: tuple[Path, SynthSummary], loaded: Dataset) -> None:
    _, summary = synth
    assert loaded.n_users == summary.users
    assert loaded.n_items == summary.items
    assert {m.category for m in loaded.item_meta.values()} >= {"electronics", "books", "kitchen"}
    no_history_with_friends = [u for u in range(loaded.n_users)
                               if not loaded.histories[u] and loaded.friends[u]]
    assert len(no_history_with_friends) == summary.users_without_history
    assert 0.03 * summary.users <= len(no_history_with_friends) <= 0.08 * summary.users
    assert all(loaded.histories[u] or loaded.friends[u] for u in range(loaded.n_users))


def test_larger_sizes_by_argument(tmp_path: Path) -> None:
    summary = write_synthetic_dataset(tmp_path, n_users=1500, n_items=4000, seed=1)
    assert (summary.users, summary.items) == (1500, 4000)
    assert summary.interactions > 50_000


@pytest.mark.parametrize(("users", "items"), [(5, 100), (100, 3)])
def test_too_small_sizes_are_refused(tmp_path: Path, users: int, items: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        write_synthetic_dataset(tmp_path, n_users=users, n_items=items)


# ---------------------------------------------------------------- social structure


def user_item_matrix(ds: Dataset) -> np.ndarray:
    x = np.zeros((ds.n_users, ds.n_items))
    for u, history in enumerate(ds.histories):
        for i, w in history:
            x[u, i] = w
    return x


def friend_and_random_pairs(ds: Dataset, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    friends = np.array([(u, f) for u in range(ds.n_users) for f, _ in ds.friends[u]
                        if active[u] and active[f]])
    rng = np.random.default_rng(0)
    candidates = np.flatnonzero(active)
    random = rng.choice(candidates, size=(4000, 2))
    return friends, random[random[:, 0] != random[:, 1]]


def test_friends_share_taste_far_more_than_random_pairs(loaded: Dataset) -> None:
    x = user_item_matrix(loaded) > 0
    categories = sorted({m.category for m in loaded.item_meta.values()})
    item_cat = np.array([categories.index(loaded.item_meta[i].category)
                         for i in range(loaded.n_items)])
    profile = np.zeros((loaded.n_users, len(categories)))
    for c in range(len(categories)):
        profile[:, c] = x[:, item_cat == c].sum(axis=1)
    active = x.sum(axis=1) > 0
    unit = profile / np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
    friends, random = friend_and_random_pairs(loaded, active)

    def category_cosine(pairs: np.ndarray) -> float:
        return float(np.mean(np.sum(unit[pairs[:, 0]] * unit[pairs[:, 1]], axis=1)))

    def item_jaccard(pairs: np.ndarray) -> float:
        a, b = x[pairs[:, 0]], x[pairs[:, 1]]
        return float(np.mean((a & b).sum(axis=1) / (a | b).sum(axis=1)))

    assert len(friends) > 1000
    assert category_cosine(friends) > category_cosine(random) + 0.2
    assert item_jaccard(friends) > 2.5 * item_jaccard(random)


def test_blending_friends_measurably_improves_a_simple_recommender(loaded: Dataset) -> None:
    """A low-rank model scores held-out items; adding the tie-weighted mean of the friends'
    vectors must raise Recall@20 clearly — the planted social effect is learnable."""
    rng = np.random.default_rng(0)
    x = user_item_matrix(loaded)
    held_out: dict[int, np.ndarray] = {}
    for u, history in enumerate(loaded.histories):
        if len(history) >= 5:
            items = np.array([i for i, _ in history])
            held_out[u] = rng.choice(items, size=len(items) // 5, replace=False)
            x[u, held_out[u]] = 0
    x = np.log1p(x)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    factors = np.linalg.svd(x, full_matrices=False)[2][:48].T
    users = x @ factors

    def recall(alpha: float) -> float:
        scores = []
        for u, test in held_out.items():
            vector = users[u].copy()
            if loaded.friends[u]:
                ids, ties = (np.array(v) for v in zip(*loaded.friends[u], strict=True))
                vector += alpha * (ties @ users[ids.astype(np.int64)]) / ties.sum()
            s = factors @ vector
            s[x[u] > 0] = -np.inf
            top = np.argpartition(-s, 20)[:20]
            scores.append(np.isin(test, top).mean())
        return float(np.mean(scores))

    assert recall(0.5) > 1.15 * recall(0.0)


def test_activity_scales_the_events(tmp_path: Path) -> None:
    quiet = write_synthetic_dataset(tmp_path / "quiet", n_users=300, n_items=200, seed=0,
                                    activity=4.0)
    busy = write_synthetic_dataset(tmp_path / "busy", n_users=300, n_items=200, seed=0,
                                   activity=16.0)
    assert 2.5 * quiet.interactions < busy.interactions < 5.5 * quiet.interactions
    with pytest.raises(ValueError, match="activity"):
        write_synthetic_dataset(tmp_path / "bad", n_users=300, n_items=200, activity=0.5)
