"""The live items' side index: exact inner-product top-n while small, PQ fast-scan candidates
re-scored exactly once large, and never blind to a vector written after its codes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from app.serving.artifacts import ModelArtifacts
from app.serving.encode import Encoder, History
from app.serving.side import EXACT_MAX_ROWS, SideIndex
from app.serving.text import ItemDescription

DIM = 17


def filled(rows: np.ndarray, without_vector: frozenset[int] = frozenset()) -> SideIndex:
    side = SideIndex(DIM)
    for r, vector in enumerate(rows):
        assert side.append() == r
        if r not in without_vector:
            side.set(r, vector)
    return side


def coded(side: SideIndex) -> None:
    job = side.code_job()
    assert job is not None
    side.install(job())
    assert side.code_job() is None


def exact_top(rows: np.ndarray, query: np.ndarray, n: int,
              among: np.ndarray | None = None) -> set[int]:
    scores = rows @ query
    order = np.argsort(-scores, kind="stable")
    if among is not None:
        order = order[np.isin(order, among)]
    return set(order[:n].tolist())


def test_a_small_side_index_is_searched_exactly_and_skips_rows_without_a_vector() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((300, DIM)).astype(np.float32)
    side = filled(rows, without_vector=frozenset({5, 7}))
    assert side.code_job() is None  # below EXACT_MAX_ROWS: no codes
    rows[[5, 7]] = 0
    for query in rng.standard_normal((20, DIM)).astype(np.float32):
        scores, found = side.search(query, 25)
        best = exact_top(rows, query, 25, among=np.setdiff1d(np.arange(300), [5, 7]))
        assert set(found.tolist()) == best
        assert np.allclose(scores, rows[found] @ query, atol=1e-5)
    allowed = np.asarray([1, 5, 9, 11], dtype=np.int64)
    _, found = side.search(rows[9], 10, allowed)
    assert sorted(found.tolist()) == [1, 9, 11]


def test_a_large_side_index_finds_the_exact_top_rows_with_exact_scores() -> None:
    rng = np.random.default_rng(1)
    n = EXACT_MAX_ROWS + 1000
    rows = rng.standard_normal((n, DIM)).astype(np.float32) * \
        rng.uniform(0.2, 1.0, (n, 1)).astype(np.float32)
    side = filled(rows)
    coded(side)
    queries = rng.standard_normal((50, DIM)).astype(np.float32)
    hits = 0
    for query in queries:
        scores, found = side.search(query, 200)
        assert len(found) == 200 and len(set(found.tolist())) == 200
        assert np.allclose(scores, rows[found] @ query, atol=1e-5)
        hits += len(set(found.tolist()) & exact_top(rows, query, 200))
    assert hits >= 0.98 * 200 * len(queries)


def test_rows_written_after_the_codes_are_found_until_coded_again() -> None:
    rng = np.random.default_rng(2)
    n = EXACT_MAX_ROWS + 100
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    side = filled(rows)
    coded(side)
    query = rng.standard_normal(DIM).astype(np.float32)
    changed = int(np.argmin(rows @ query))  # the worst row becomes the best
    side.set(changed, 10 * query)
    appended = side.append()
    side.set(appended, 5 * query)
    _, found = side.search(query, 2)
    assert sorted(found.tolist()) == sorted([changed, appended])
    coded(side)  # the new row is coded; the changed one is still scored exactly
    _, found = side.search(query, 2)
    assert sorted(found.tolist()) == sorted([changed, appended])


def test_codes_are_made_again_once_many_rows_changed() -> None:
    rng = np.random.default_rng(3)
    n = EXACT_MAX_ROWS + 100
    side = filled(rng.standard_normal((n, DIM)).astype(np.float32))
    coded(side)
    for r in range(n // 16):
        side.set(r, rng.standard_normal(DIM).astype(np.float32))
    assert side.code_job() is None  # a few stale rows are scored exactly meanwhile
    for r in range(n // 16, n // 4):
        side.set(r, rng.standard_normal(DIM).astype(np.float32))
    coded(side)


def test_folded_codes_find_the_top_of_model_and_live_rows_together() -> None:
    # a model's items as the prefix, all-zero ones among them (items the model knows nothing
    # about: never proposed), and live rows beyond the exact-search size
    rng = np.random.default_rng(4)
    model = rng.standard_normal((700, DIM)).astype(np.float32)
    model[[3, 50]] = 0
    n = EXACT_MAX_ROWS + 500
    rows = rng.standard_normal((n, DIM)).astype(np.float32) * \
        rng.uniform(0.2, 1.0, (n, 1)).astype(np.float32)
    side = SideIndex(DIM, model)
    for vector in rows:
        side.set(side.append(), vector)
        assert not side.folded
    coded(side)
    assert side.folded
    everything = np.concatenate([model, rows])
    hits = 0
    for query in rng.standard_normal((50, DIM)).astype(np.float32):
        scores, found = side.search_all(query, 200)
        assert len(found) == 200 and len(set(found.tolist())) == 200
        assert not np.isin(found, [3, 50]).any()
        assert np.allclose(scores, everything[found] @ query, atol=1e-5)
        assert np.all(np.diff(scores) <= 0)  # best first
        hits += len(set(found.tolist()) & exact_top(everything, query, 200))
    assert hits >= 0.98 * 200 * 50
    # the live-only search still answers live rows (exactly: the codes hold the model's too)
    query = rng.standard_normal(DIM).astype(np.float32)
    _, found = side.search(query, 30)
    assert set(found.tolist()) == exact_top(rows, query, 30)


def test_folded_codes_follow_live_rows_written_after_them() -> None:
    rng = np.random.default_rng(5)
    model = rng.standard_normal((300, DIM)).astype(np.float32)
    rows = rng.standard_normal((EXACT_MAX_ROWS + 100, DIM)).astype(np.float32)
    side = SideIndex(DIM, model)
    for vector in rows:
        side.set(side.append(), vector)
    coded(side)
    query = rng.standard_normal(DIM).astype(np.float32)
    was_best = int(np.argmax(rows @ query))
    changed = int(np.argmin(rows @ query))  # the worst row becomes the best
    side.set(changed, 10 * query)
    side.set(was_best, -query)  # and the best the worst: its code is stale
    appended = side.append()
    side.set(appended, 5 * query)
    scores, found = side.search_all(query, 50)
    p = len(model)
    assert found[:2].tolist() == [p + changed, p + appended]
    assert p + was_best not in found.tolist()
    rows[changed], rows[was_best] = 10 * query, -query
    everything = np.concatenate([model, rows, 5 * query[None, :]])
    assert np.allclose(scores, everything[found] @ query, atol=1e-5)
    coded(side)  # the new row is coded with the model's; the changed ones still scored exactly
    _, again = side.search_all(query, 50)
    assert again[:2].tolist() == [p + changed, p + appended]
    assert p + was_best not in again.tolist()
    # one matrix holds the model's rows and the live ones as they are now, in the codes' order
    ids = np.asarray([3, p - 1, p + changed, p + was_best, p + appended], dtype=np.int64)
    assert np.array_equal(side.all_rows(ids), everything[ids])
    assert side.prefix_bytes == p * (side.code_bytes + 4 * DIM)


def test_folded_codes_on_a_trained_model_and_text_vectors_find_the_exact_top(
        artifacts_dir: Path, synth_dir: Path) -> None:
    # realistic vectors: a trained model's items as the prefix, new products' text vectors
    # (its text encoder) as the live rows, its user encoder's vectors of random histories as
    # queries, compared with brute force
    artifacts = ModelArtifacts.load(artifacts_dir, 1)
    assert artifacts.text is not None
    model = artifacts.item_vectors
    with (synth_dir / "items.csv").open(encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    categories = sorted({r["category"] for r in meta if r.get("category")})
    tags = sorted({t for r in meta for t in (r.get("tags") or "").split(";") if t})
    rng = np.random.default_rng(6)
    products = [ItemDescription(f"{rng.choice(categories)} product {n}",
                                str(rng.choice(categories)),
                                tuple(str(t) for t in rng.choice(tags, 3, replace=False)),
                                f"For {rng.choice(tags)} and {rng.choice(tags)}.")
                for n in range(EXACT_MAX_ROWS + 500)]
    live = artifacts.text.item_vectors(products).astype(np.float32)
    side = SideIndex(artifacts.item_vectors.shape[1], model)
    for vector in live:
        side.set(side.append(), vector)
    coded(side)
    encoder = Encoder(artifacts.session, artifacts.manifest.max_history)
    histories = []
    for _ in range(100):
        items = rng.choice(len(model), int(rng.integers(1, 30)), replace=False)
        histories.append(History(items.astype(np.int64), np.ones(len(items), dtype=np.float32)))
    queries = encoder(histories).astype(np.float32)
    everything = np.concatenate([model, live])
    informed = np.flatnonzero(np.any(everything != 0, axis=1))
    hits = 0
    for query in queries:
        scores, found = side.search_all(query, 200)
        assert np.allclose(scores, everything[found] @ query, atol=1e-4)
        hits += len(set(found.tolist()) & exact_top(everything, query, 200, among=informed))
    assert hits >= 0.99 * 200 * len(queries)
